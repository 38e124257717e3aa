"""ONNX fp32 vs W8A8 on this machine: export wall time, file sizes, session load/creation time and
decode ms/token (median over timed steps after warmup). A benchmark script, not a test.

    python benchmarks/onnx_perf.py                      # 125M, random weights, 2 threads
    python benchmarks/onnx_perf.py --model tiny-random --steps 5 --max-seq-len 64

Target (issue): ONNX W8A8 decode at least 2x faster than ONNX fp32."""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


def open_timed(path: Path):
    from mobilellm.export.backends.onnx import OnnxSession
    from mobilellm.manifest import read_manifest
    s = OnnxSession(path, read_manifest(path))
    t0 = time.perf_counter()
    s.load()
    t1 = time.perf_counter()
    s.init()
    t2 = time.perf_counter()
    return s, {"load_ms": (t1 - t0) * 1e3, "init_ms": (t2 - t1) * 1e3}


def measure(sessions: dict, prompt_len: int, warmup: int, steps: int) -> dict:
    """Prefill then decode, the schemes interleaved step by step: on a shared machine, load from
    other jobs then falls on every scheme alike instead of on whichever ran last."""
    times = {k: {"prefill": [], "decode": []} for k in sessions}
    for k, s in sessions.items():
        s.reset()
    ids = [1] + [(7 * i) % 29000 + 3 for i in range(prompt_len - 1)]
    for k, s in sessions.items():
        t = time.perf_counter()
        s.forward(ids, 0)
        times[k]["prefill"].append(time.perf_counter() - t)
    for i in range(warmup + steps):
        for k, s in sessions.items():
            t = time.perf_counter()
            s.forward([(11 * i) % 29000 + 3], prompt_len + i)
            times[k]["decode"].append(time.perf_counter() - t)
    out = {}
    for k, t in times.items():
        timed = t["decode"][warmup:]
        out[k] = {"prefill_ms": t["prefill"][0] * 1e3, "decode_ms": statistics.median(timed) * 1e3,
                  "decode_min_ms": min(timed) * 1e3}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="125M")
    p.add_argument("--schemes", default="fp32,w8a8-static,w8a8-dynamic-per-tensor")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-seq-len", type=int, default=512)
    p.add_argument("--prompt-len", type=int, default=16)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--out", type=Path, default=None, help="keep the artifacts here (default: a temporary dir)")
    p.add_argument("--reuse", action="store_true", help="time the artifacts already in --out (no export)")
    a = p.parse_args(argv)
    os.environ["MOBILELLM_THREADS"] = str(a.threads)
    import torch
    torch.set_num_threads(a.threads)
    from mobilellm.export.base import ExportConfig, get_backend
    from mobilellm.export.pipeline import export_artifact
    from mobilellm.models.config import from_name
    from mobilellm.models.model import build
    out = a.out or Path(tempfile.mkdtemp(prefix="onnx_perf-"))
    model = build(from_name(a.model), seed=0, max_seq_len=a.max_seq_len)  # random weights: latency is the same
    from mobilellm.manifest import read_manifest
    rows, sessions = [], {}
    for scheme in a.schemes.split(","):
        path = out / f"{model.args.name}_{scheme}_onnx.onnx"
        t0 = time.perf_counter()
        if not (a.reuse and path.is_file()):
            path, _ = export_artifact(model, "random (seed 0)", get_backend("onnx"),
                                      ExportConfig(quant=scheme, max_seq_len=a.max_seq_len), out, force=True)
        m = read_manifest(path)
        wall = time.perf_counter() - t0 if not a.reuse else m["export_seconds"]
        sessions[scheme], r = open_timed(path)
        v = m["verification"]["vs_fp32"]
        rows.append({"scheme": scheme, "export_s": wall, "onnx_mb": m["sizes"]["file_bytes"] / 2**20,
                     "ort_mb": m["sizes"]["ort_file_bytes"] / 2**20, "top1": v["top1"], "cos": v["cosine_min"], **r})
    timed = measure(sessions, a.prompt_len, a.warmup, a.steps)
    for r in rows:
        r.update(timed[r["scheme"]])
    print(f"\n# {a.model} random weights, onnxruntime CPU, {a.threads} intra-op threads, {os.cpu_count()} cores; "
          f"prompt {a.prompt_len}, decode median of {a.steps} steps after {a.warmup} warmup, schemes interleaved; "
          f"artifacts in {out}" + (" (reused; export_s from the manifest)" if a.reuse else ""))
    cols = ["scheme", "export_s", "onnx_mb", "ort_mb", "load_ms", "init_ms", "prefill_ms", "decode_ms",
            "decode_min_ms", "top1", "cos"]
    print(" | ".join(f"{c:>13}" for c in cols))
    for r in rows:
        print(" | ".join(f"{r[c]:>13}" if isinstance(r[c], str) else f"{r[c]:>13.4g}" for c in cols))
    if {"fp32", "w8a8-static"} <= {r["scheme"] for r in rows}:
        by = {r["scheme"]: r for r in rows}
        speedup = by["fp32"]["decode_ms"] / by["w8a8-static"]["decode_ms"]
        verdict = "met" if speedup >= 2 else "NOT met"
        print(f"# W8A8 decode speed-up over fp32: {speedup:.2f}x (target >= 2x): {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
