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


def measure(path: Path, prompt_len: int, warmup: int, steps: int) -> dict:
    from mobilellm.export.backends.onnx import OnnxSession
    from mobilellm.manifest import read_manifest
    s = OnnxSession(path, read_manifest(path))
    t0 = time.perf_counter()
    s.load()
    t1 = time.perf_counter()
    s.init()
    t2 = time.perf_counter()
    ids = [1] + [(7 * i) % (s.vocab_size - 3) + 3 for i in range(prompt_len - 1)]
    s.reset()
    t3 = time.perf_counter()
    s.forward(ids, 0)
    prefill = time.perf_counter() - t3
    pos, times = prompt_len, []
    for i in range(warmup + steps):
        t = time.perf_counter()
        s.forward([(11 * i) % (s.vocab_size - 3) + 3], pos)
        times.append(time.perf_counter() - t)
        pos += 1
    timed = times[warmup:]
    return {"load_ms": (t1 - t0) * 1e3, "init_ms": (t2 - t1) * 1e3, "prefill_ms": prefill * 1e3,
            "decode_ms": statistics.median(timed) * 1e3, "decode_min_ms": min(timed) * 1e3,
            "decode_max_ms": max(timed) * 1e3}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="125M")
    p.add_argument("--schemes", default="fp32,w8a8")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-seq-len", type=int, default=512)
    p.add_argument("--prompt-len", type=int, default=16)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--out", type=Path, default=None, help="keep the artifacts here (default: a temporary dir)")
    a = p.parse_args(argv)
    os.environ["MOBILELLM_THREADS"] = str(a.threads)
    import torch
    torch.set_num_threads(a.threads)
    from mobilellm.export.base import ExportConfig, get_backend
    from mobilellm.export.pipeline import export_artifact
    from mobilellm.models.config import from_name
    from mobilellm.models.model import build
    out = a.out or Path(tempfile.mkdtemp(prefix="onnx_perf-"))
    model = build(from_name(a.model), seed=0, max_seq_len=a.max_seq_len)
    rows = []
    for scheme in a.schemes.split(","):
        t0 = time.perf_counter()
        path, m = export_artifact(model, "random (seed 0)", get_backend("onnx"),
                                  ExportConfig(quant=scheme, max_seq_len=a.max_seq_len), out, force=True)
        wall = time.perf_counter() - t0
        r = measure(path, a.prompt_len, a.warmup, a.steps)
        v = m["verification"]["vs_fp32"]
        rows.append({"scheme": scheme, "export_s": wall, "onnx_mb": m["sizes"]["file_bytes"] / 2**20,
                     "ort_mb": m["sizes"]["ort_file_bytes"] / 2**20, "top1": v["top1"], "cos": v["cosine_min"], **r})
    print(f"\n# {a.model} random weights, onnxruntime CPU, {a.threads} intra-op threads, {os.cpu_count()} cores; "
          f"prompt {a.prompt_len}, decode median of {a.steps} steps after {a.warmup} warmup; artifacts in {out}")
    cols = ["scheme", "export_s", "onnx_mb", "ort_mb", "load_ms", "init_ms", "prefill_ms", "decode_ms",
            "decode_min_ms", "top1", "cos"]
    print(" | ".join(f"{c:>13}" for c in cols))
    for r in rows:
        print(" | ".join(f"{r[c]:>13}" if isinstance(r[c], str) else f"{r[c]:>13.4g}" for c in cols))
    if {"fp32", "w8a8"} <= {r["scheme"] for r in rows}:
        by = {r["scheme"]: r for r in rows}
        speedup = by["fp32"]["decode_ms"] / by["w8a8"]["decode_ms"]
        verdict = "met" if speedup >= 2 else "NOT met"
        print(f"# W8A8 decode speed-up over fp32: {speedup:.2f}x (target >= 2x): {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
