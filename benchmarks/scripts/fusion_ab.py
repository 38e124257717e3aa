"""ExecuTorch export time with and without the fused q/k/v projection (MobileLLM.fuse_projections), interleaved.

    python benchmarks/scripts/fusion_ab.py --model tiny --passes 2

Exports the trained preset (or a random-weight preset) to ExecuTorch W8A8 with int8 embedding, no verification,
alternating fused and unfused, and prints each export's step seconds."""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--passes", type=int, default=2)
    ap.add_argument("--max-seq-len", type=int, default=64)
    a = ap.parse_args(argv)
    from mobilellm.errors import UserError
    from mobilellm.export.base import ExportConfig, get_backend
    from mobilellm.export.pipeline import export_artifact
    from mobilellm.models import model as M
    from mobilellm.models.checkpoint import load_model
    from mobilellm.models.config import from_name, trained_checkpoint
    if a.passes < 1:
        ap.error(f"--passes must be >= 1, got {a.passes}")
    try:
        args = from_name(a.model)
    except UserError as e:
        ap.error(str(e))
    fused = M.MobileLLM.fuse_projections
    ckpt = trained_checkpoint(a.model)
    try:
        for k in range(a.passes):
            for fuse in (True, False):
                M.MobileLLM.fuse_projections = fused if fuse else (lambda self: self)
                model = (load_model(ckpt, max_seq_len=a.max_seq_len) if ckpt else
                         M.build(args, max_seq_len=a.max_seq_len))
                t = time.perf_counter()
                with tempfile.TemporaryDirectory() as out:
                    _, m = export_artifact(model, "x", get_backend("executorch"),
                                           ExportConfig(quant="w8a8", max_seq_len=a.max_seq_len, quantize_embedding=True),
                                           Path(out), quiet=True, verify=False, consume=True)
                steps = {s: round(v, 1) for s, v in m["export_step_seconds"].items() if v > 1}
                print(f"pass {k + 1} {'fused' if fuse else 'unfused'}: {time.perf_counter() - t:.1f} s {steps}",
                      flush=True)
    finally:
        M.MobileLLM.fuse_projections = fused
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
