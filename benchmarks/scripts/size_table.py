"""Export every MobileLLM size (random weights, the real architecture) and tabulate what it cost:
export seconds, peak resident memory (the export's own process), bytes per parameter, artifact size,
and decode ms where the backend runs here.

    python benchmarks/scripts/size_table.py --models 125M,350M,600M,1B,1.5B --out runs/sizes \\
        --jobs executorch:w8a8,onnx:w8a8,executorch:8da4w

A job is backend:scheme, optionally +emb8 (--quantize-embedding) and +ptd (--external-weights), e.g.
`executorch:w8a8+emb8+ptd` or `onnx:w8a8+emb8`: the embedding rows of issue 19.

Each export runs in its own process (`mobilellm export`), one at a time: the peak RSS in its
manifest (`export_peak_rss_mb`, ru_maxrss) is that export's alone. Decode: `mobilellm bench`, one
cold process. A row that fails keeps its one-line reason; the others still run.

How export time scales: `--layers 15,30,60` exports each model at those stored depths (its own width), and
the table ends with the fitted exponents of export seconds against executed blocks (same width) and
against executed parameters (same depth), per backend:scheme.

    python benchmarks/scripts/size_table.py --models 125M,350M,1B --layers 30 --jobs executorch:w8a8+emb8 --no-bench"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path


def _cli(*args, timeout=4 * 3600):
    return subprocess.run([sys.executable, "-m", "mobilellm.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


FLAGS = {"emb8": "--quantize-embedding", "ptd": "--external-weights"}


def _stored(m: dict) -> int:
    """Bytes on disk: the artifact and, with --external-weights, its .ptd (the manifest's file_bytes counts both)."""
    return m["sizes"]["file_bytes"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="125M,350M,600M,1B,1.5B,LS-125M,LS-350M")
    ap.add_argument("--jobs", default="executorch:w8a8,onnx:w8a8,executorch:8da4w", help="backend:scheme,...")
    ap.add_argument("--max-seq-len", type=int, default=512)
    ap.add_argument("--out", type=Path, default=Path("runs/sizes"))
    ap.add_argument("--no-bench", action="store_true")
    ap.add_argument("--layers", default="", help="stored blocks, comma-separated (default: each preset's own)")
    a = ap.parse_args(argv)
    depths = [None]
    if a.layers:
        parts = a.layers.split(",")
        if not all(n.isdigit() and int(n) > 0 for n in parts):
            ap.error(f"--layers takes positive integers, comma-separated; got {a.layers!r}")
        depths = [int(n) for n in parts]
    from mobilellm.errors import UserError
    from mobilellm.models.config import from_name
    for job in a.jobs.split(","):  # bad input: one line, before any export
        if job.count(":") != 1 or set(job.split(":")[1].split("+")[1:]) - set(FLAGS):
            ap.error(f"--jobs takes backend:scheme[+emb8][+ptd],...; got {job!r}")
    try:
        [from_name(m) for m in a.models.split(",")]
    except UserError as e:
        ap.error(str(e))
    rows = []
    for model, depth in ((m, d) for m in a.models.split(",") for d in depths):
        args = from_name(model) if depth is None else from_name(model, n_layers=depth)
        name = model if depth is None else f"{model}-{depth}L"
        for job in a.jobs.split(","):
            backend, spec = job.split(":")
            scheme, *flags = spec.split("+")
            out = a.out / f"{name}_{backend}_{spec}"
            p = _cli("export", "--model", model, "--backend", backend, "--quant", scheme, "--max-seq-len",
                     a.max_seq_len, "--out", out, "--force", "--json", *[FLAGS[f] for f in flags],
                     *(["--layers", depth] if depth is not None else []))
            row = {"model": name, "backend": backend, "scheme": spec, "params": args.param_count(),
                   "executed_blocks": args.n_executed, "width": args.dim}
            # a shared block's weights count once per run: the same depth unshared has the executed parameters
            executed = args.replace(n_layers=args.n_executed, repeat=1).param_count()
            if p.returncode != 0:
                row["error"] = (p.stderr.strip().splitlines() or ["?"])[-1][:200]
                rows.append(row)
                print(json.dumps(row), flush=True)
                continue
            m = json.loads(p.stdout)
            art = out / m["artifact"]
            row["executed_params"] = executed
            row.update(export_s=m["export_seconds"], peak_rss_mb=m["export_peak_rss_mb"],
                       lowering_s=next((v for k, v in m["export_step_seconds"].items() if k.startswith("lower")), None),
                       peak_bytes_per_param=round(m["export_peak_rss_mb"] * 2**20 / args.param_count(), 2),
                       peak_bytes_per_executed_param=round(m["export_peak_rss_mb"] * 2**20 / executed, 2),
                       size_mb=round(_stored(m) / 1e6, 1), bytes_per_param=round(_stored(m) / args.param_count(), 3),
                       embedding_mb=round(m["sizes"].get("embedding_bytes", 0) / 1e6, 1),
                       verified=(m.get("verification") or {}).get("passed"),
                       peak_step=next((k for k, v in (m.get("export_step_peak_rss_mb") or {}).items()
                                       if v >= m["export_peak_rss_mb"]), None))
            if not a.no_bench:
                b = _cli("bench", art, "--cold-runs", "1", "--iters", "20", "--warmup", "3", "--out", out / "bench.json")
                if b.returncode == 0:
                    recs = json.loads((out / "bench.json").read_text())["records"]
                    row["decode_ms"] = next((r["value"] for r in recs if r["metric"] == "decode_ms"
                                             and r["statistic"] == "median"), None)
            rows.append(row)
            print(json.dumps(row), flush=True)
    cols = ["model", "backend", "scheme", "executed_blocks", "export_s", "lowering_s", "peak_rss_mb", "peak_bytes_per_param",
            "peak_bytes_per_executed_param", "peak_step", "size_mb", "embedding_mb",
            "bytes_per_param", "decode_ms", "verified", "error"]
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r.get(c, "")) for c in cols) + " |")
    for line in exponents(rows):
        print(line)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "sizes.json").write_text(json.dumps(rows, indent=1))
    return 0


def exponents(rows: list[dict]) -> list[str]:
    """Least-squares slope of log(export s) on log(executed blocks) among rows of one width, and on
    log(executed params) among rows of one depth, per backend:scheme (two or more rows each)."""
    import math
    out = []
    for axis, same in (("executed_blocks", "width"), ("executed_params", "executed_blocks")):
        groups: dict = {}
        for r in rows:
            if "export_s" in r:
                groups.setdefault((r["backend"], r["scheme"], r[same]), []).append((r[axis], r["export_s"]))
        for (backend, scheme, fixed), pts in sorted(groups.items()):
            if len({x for x, _ in pts}) < 2:
                continue
            xs, ys = [math.log(x) for x, _ in pts], [math.log(y) for _, y in pts]
            mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
            k = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
            out.append(f"{backend}:{scheme}: export s ~ {axis}^{k:.2f} at {same} {fixed} ({len(pts)} rows)")
    return out


if __name__ == "__main__":
    sys.exit(main())
