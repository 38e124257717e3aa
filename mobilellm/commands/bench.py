"""`mobilellm bench ARTIFACT...`: load / init / execute latency, tokens/s, memory and size."""
from __future__ import annotations

import sys
from pathlib import Path


def add_arguments(p):
    p.add_argument("artifacts", nargs="+", type=Path, help=".pte / .onnx / .ort / .mlpackage, each with its manifest")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs before each timed series")
    p.add_argument("--iters", type=int, default=20, help="timed runs per series (per cold process)")
    p.add_argument("--threads", type=int, default=2, help="runtime threads")
    p.add_argument("--prompt-len", type=int, default=128, help="prefill length P; decode is timed at position P")
    p.add_argument("--gen-tokens", type=int, default=32, help="decode steps for tokens/s")
    p.add_argument("--cold-runs", type=int, default=3, help="fresh processes per artifact (load/init samples)")
    p.add_argument("--pairs", type=int, default=8,
                   help="with several artifacts, each round also opens all of them in one process and times their "
                        "decode in this many turns each, side by side (0: no paired processes)")
    p.add_argument("--positions", default="", help="extra decode positions to time, e.g. 1000 (comma-separated; "
                   "each needs position + warmup + iters below the artifact's max_seq_len)")
    p.add_argument("--out", type=Path, default=Path("results.json"), help="results file (schema mobilellm.results/1)")


def main(ns):
    from mobilellm.benchmarks import schema
    from mobilellm.benchmarks.bench import BenchConfig, bench
    from mobilellm.errors import UserError
    try:
        positions = tuple(int(x) for x in ns.positions.split(",") if x.strip())
    except ValueError:
        raise UserError(f"--positions must be comma-separated integers, got {ns.positions!r}") from None
    cfg = BenchConfig(warmup=ns.warmup, iters=ns.iters, threads=ns.threads, prompt_len=ns.prompt_len,
                      gen_tokens=ns.gen_tokens, cold_runs=ns.cold_runs, positions=positions, pairs=ns.pairs)

    def done(path, recs):
        m = {r["metric"]: r["value"] for r in recs if r["statistic"] in ("median", "single")}
        print(f"{path.name}: load {m.get('load_ms', 0):.1f} ms, init {m.get('init_ms', 0):.1f} ms, decode "
              f"{m.get('decode_ms', 0):.2f} ms ({m.get('decode_tokens_per_s', 0):.1f} tok/s)"
              + "".join(f", at {r['settings']['decode_position']}: {r['value']:.2f} ms" for r in recs
                        if r["metric"] == "decode_ms_at_position" and r["statistic"] == "median") + ", prefill "
              f"{m.get('prefill_tokens_per_s', 0):.0f} tok/s, RSS {m.get('rss_after_init_mb', 0):.0f} MB, "
              f"size {m.get('size_mb', 0):.1f} MB", flush=True)

    records, missing = [], []
    try:
        records, missing = bench(ns.artifacts, cfg, on_done=done)
    finally:  # a failure keeps every finished record
        if records or missing:
            schema.save(ns.out, records, missing)
            print(f"wrote {len(records)} records to {ns.out}", file=sys.stderr)
    for m in missing:
        print(f"{m['artifact']}: not measured: {m['reason']}")
    return 0
