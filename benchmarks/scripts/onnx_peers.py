"""This project's ONNX export against onnxruntime-genai's model builder, on one Hugging Face checkpoint, timed in
one run through the same onnxruntime-genai generator (and this project's plain-session runner for its own files).

    pip install -e '.[peers]'          # onnxruntime-genai and transformers (the builder's), benchmark-only
    python benchmarks/scripts/onnx_peers.py --out runs/onnx_peers            # 125M shape, random weights
    python benchmarks/scripts/onnx_peers.py --checkpoint DIR --out OUT --sharing   # + LS-125M vs 125M

What it does, all in one run: writes the checkpoint (`--model`'s shape, seeded random weights, LLaMA format with
a word-level tokenizer) unless one is given; exports it with `mobilellm export --backend onnx` (`--scheme`,
tied embedding stored once) and with `python -m onnxruntime_genai.models.builder -p int8 -e cpu`, each timed
with its peak RSS (the builder's genai_config.json gets the same max_length and thread count as ours, so both
allocate the same cache); measures DRAM and one-block read bandwidth; then times every artifact in fresh
processes, in turn, `--passes` times (benchmarks/peer_measure.py: load / init ms, RSS after init, prefill
tokens/s for 128 tokens, decode ms/token at each position). Prints both passes and writes OUT/onnx_peers.json."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mobilellm.benchmarks import peers

MEASURE = "mobilellm.benchmarks.peer_measure"
COLS = ["pass", "name", "export_s", "export_peak_rss_mb", "size_mb", "load_ms", "init_ms", "rss_after_init_mb",
        "prefill_tokens_per_s"]


def export_ours(ckpt: Path, out: Path, scheme: str, msl: int, repeat: int = 1, extra=()) -> tuple[dict, Path]:
    cmd = [sys.executable, "-m", "mobilellm.cli", "export", "--checkpoint", ckpt, "--backend", "onnx", "--quant", scheme,
           "--max-seq-len", msl, "--out", out, "--force", "--repeat", repeat, *extra]
    wall, rss, _ = peers.timed(cmd)
    man = next(out.glob(f"*_onnx.onnx.manifest.json"))
    m = json.loads(man.read_text())
    art = out / m["artifact"]
    return {"export_s": round(wall, 1), "export_peak_rss_mb": rss, "size_mb": round(peers.dir_bytes(art) / 1e6, 1),
            "scheme": m["quant"]["scheme"]}, art


def export_builder(ckpt: Path, out: Path, msl: int, threads: int, precision: str,
                   extra: str = "") -> tuple[dict, Path]:
    cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", ckpt, "-o", out, "-p", precision, "-e", "cpu",
           "-c", out.parent / "builder_cache"] + (["--extra_options", *extra.split(",")] if extra else [])
    env = {**__import__("os").environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    wall, rss, _ = peers.timed(cmd, env=env)
    conf_path = out / "genai_config.json"
    conf = json.loads(conf_path.read_text())  # the same cache size and threads as ours
    conf["search"]["max_length"] = msl
    conf["model"]["context_length"] = msl
    conf["model"]["decoder"].setdefault("session_options", {})["intra_op_num_threads"] = threads
    conf_path.write_text(json.dumps(conf, indent=1))
    data = [f for f in out.iterdir() if f.name.startswith("model.onnx")]
    return {"export_s": round(wall, 1), "export_peak_rss_mb": rss,
            "size_mb": round(sum(f.stat().st_size for f in data) / 1e6, 1)}, out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", type=Path, help="a LLaMA-format HF checkpoint dir (default: written from --model)")
    ap.add_argument("--model", default="125M", help="the shape of the written checkpoint")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--scheme", default="w8a8-block", help="this project's scheme (w8a8-block = the builder's int8)")
    ap.add_argument("--precision", default="int8", choices=["int8", "int4"], help="the builder's -p")
    ap.add_argument("--positions", default="128,1000")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--passes", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sharing", action="store_true", help="also export LS (--repeat 2) from the same checkpoint")
    ap.add_argument("--also", default="", help="more of this project's schemes to time beside (e.g. w8a8)")
    ap.add_argument("--file", action="append", default=[], metavar="NAME=PATH",
                    help="an existing mobilellm .onnx to time beside through the plain session (e.g. an older export)")
    ap.add_argument("--builder-options", action="append", default=[], metavar="KEY=VALUE[,KEY=VALUE]",
                    help="one more builder export with these --extra_options, timed beside (e.g. prune_lm_head=true: "
                         "the last position's logits, as this project's graph returns by default)")
    ap.add_argument("--pte", action="append", default=[], metavar="NAME=PATH",
                    help="a mobilellm ExecuTorch .pte to time in the same run (e.g. 125M and LS-125M: sharing overhead)")
    a = ap.parse_args(argv)
    try:
        positions = [int(p) for p in a.positions.split(",")]
    except ValueError:
        ap.error(f"--positions takes comma-separated integers, got {a.positions!r}")
    for extra in a.builder_options:
        if not all(k.strip() and v.strip() for k, _, v in (kv.partition("=") for kv in extra.split(","))):
            ap.error(f"--builder-options takes KEY=VALUE[,KEY=VALUE], got {extra!r}")
    if len(set(a.builder_options)) < len(a.builder_options):
        ap.error("--builder-options: each set once (the same set twice would time one export twice under one name)")
    try:
        import onnxruntime_genai  # noqa: F401
    except ImportError:
        ap.error("onnxruntime-genai is not installed: pip install -e '.[peers]'")
    a.out.mkdir(parents=True, exist_ok=True)
    ckpt = a.checkpoint or peers.write_llama_checkpoint(a.model, a.out / "hf")
    msl = max(max(positions), 128) + a.steps + 10 + 8  # the longest position, its steps and warm-up, and spare
    rows, specs = {}, []
    facts, art = export_ours(ckpt, a.out / "ours", a.scheme, msl, extra=["--quantize-embedding"])
    facts["logits_rows"] = "last"  # the default graph (its -fl twin: every)
    rows["mobilellm"] = facts
    specs += [{"name": "mobilellm", "engine": "genai", "path": str(art.with_suffix(".genai"))},
              {"name": "mobilellm (plain session)", "engine": "ort", "path": str(art)}]
    rows["mobilellm (plain session)"] = facts
    for scheme in filter(None, a.also.split(",")):
        facts, art = export_ours(ckpt, a.out / f"ours-{scheme}", scheme, msl, extra=["--quantize-embedding"])
        rows[f"mobilellm {scheme}"] = facts
        specs.append({"name": f"mobilellm {scheme}", "engine": "genai", "path": str(art.with_suffix(".genai"))})
    if a.sharing:
        facts, art = export_ours(ckpt, a.out / "ours-LS", a.scheme, msl, repeat=2, extra=["--quantize-embedding"])
        rows["mobilellm LS"] = facts
        specs.append({"name": "mobilellm LS", "engine": "genai", "path": str(art.with_suffix(".genai"))})
    for f in a.file + a.pte:
        name, _, path = f.partition("=")
        if not Path(path).is_file():
            ap.error(f"{f}: no such file")
        rows[name] = {"size_mb": round(Path(path).stat().st_size / 1e6, 1)}
        specs.append({"name": name, "engine": "executorch" if path.endswith(".pte") else "ort", "path": path})
    for i, extra in enumerate([""] + a.builder_options):
        name = "onnxruntime-genai builder" + (f" ({extra})" if extra else "")
        facts, d = export_builder(ckpt, a.out / ("builder" + (f"-{i}" if i else "")), msl, a.threads, a.precision, extra)
        from mobilellm.export.genai import check_dir
        facts["logits_rows"] = "last" if check_dir(d)[1] else "every"  # what its prefill computes (a misspelt option shows)
        rows[name] = facts
        specs.append({"name": name, "engine": "genai", "path": str(d)})
    from mobilellm.models.config import ModelArgs
    cfg = json.loads((ckpt / "config.json").read_text())
    args = ModelArgs.from_hf_config(cfg)
    block = (args.param_count() - args.vocab_size * args.dim) // args.n_layers  # int8: a block's weights in bytes
    bw = [peers.read_bandwidth(a.threads, block) for _ in range(a.passes)]
    common = {"max_length": msl, "positions": positions, "steps": a.steps, "threads": a.threads,
              "vocab": cfg["vocab_size"]}
    results = peers.alternate(MEASURE, [{**common, **s} for s in specs], a.passes)
    out_rows = [{**rows[r["name"]], **r} for per_pass in results for r in per_pass]
    cols = COLS + [f"decode_ms_at_{p}" for p in positions] + ["logits_rows"]
    print(peers.table(out_rows, cols))
    print("\nread bandwidth (GB/s, torch.sum, %d threads), per pass: " % a.threads
          + "; ".join(f"DRAM {b['dram_read_gb_s']}, one int8 block ({b['block_bytes'] / 2**20:.1f} MiB) {b['block_read_gb_s']}"
                      for b in bw))
    (a.out / "onnx_peers.json").write_text(json.dumps({"rows": out_rows, "bandwidth": bw, "checkpoint": str(ckpt),
                                                       "command": " ".join(sys.argv)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
