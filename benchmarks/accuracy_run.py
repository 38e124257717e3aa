"""The accuracy half of `mobilellm run`: the trained presets (real weights, held-out text) are
exported with the run's scheme (by default; `accuracy_schemes` widens it, e.g. fp32,w8a8,8da4w),
then each artifact is scored by `accuracy.eval_artifact` against its eager fp32 model."""
from __future__ import annotations

import sys

# The bar this project holds W8A8 artifacts to (the paper: W8A8 costs < 0.5 points of zero-shot
# accuracy): perplexity on held-out text within 2% of eager fp32.
W8A8_PPL_BAR = 0.02


def plan_accuracy(cfg) -> tuple[list, list[dict]]:
    """(jobs, rows saying what is not evaluated here and why)."""
    from mobilellm.benchmarks.pipeline import Job
    from mobilellm.export.base import get_backend
    from mobilellm.models.checkpoint import read_config
    from mobilellm.models.config import trained_checkpoint
    jobs, missing = [], []
    for name in cfg.accuracy:
        ckpt = trained_checkpoint(name)
        if ckpt is None:
            missing.append({"artifact": name, "backend": "-", "scheme": "-", "variant": "-",
                            "reason": f"preset {name} has no trained weights here (mobilellm train --out models/trained/{name})"})
            continue
        args = read_config(ckpt)
        for b in cfg.backends:
            backend = get_backend(b)
            why = backend.runtime_missing()
            if why:  # scoring needs the runtime; the latency half still builds these backends
                missing.append({"artifact": f"{name} {b}", "backend": b, "scheme": "all", "variant": args.variant,
                                "reason": f"accuracy not evaluated: {why}"})
                continue
            for requested in cfg.accuracy_schemes:
                scheme, why = backend.resolve_scheme(requested)
                if scheme is None:
                    missing.append({"artifact": f"{name} {b}", "backend": b, "scheme": requested,
                                    "variant": args.variant, "reason": f"accuracy not evaluated: {why}"})
                elif not any(j.backend == b and j.scheme == scheme and j.args == args for j in jobs):
                    jobs.append(Job("accuracy", b, scheme, args, requested=requested, scheme_note=why if scheme else "",
                                    checkpoint=ckpt, max_seq_len=args.context_len))
    return jobs, missing


def eval_all(jobs: list, threads: int) -> tuple[list[dict], list[dict]]:
    from tqdm import tqdm

    from mobilellm.benchmarks.accuracy import EvalConfig, eval_artifact, merge_records
    from mobilellm.errors import UserError
    cfg = EvalConfig(threads=threads)
    records, missing, seen = [], [], set()
    for job in tqdm([j for j in jobs if j.path is not None], desc="accuracy", unit="artifact", file=sys.stderr):
        try:
            recs, miss = eval_artifact(job.path, cfg, log=lambda m: tqdm.write(f"  {m}", file=sys.stderr))
        except UserError as e:
            missing.append({"artifact": job.path.name, "backend": job.backend, "scheme": job.scheme,
                            "variant": job.args.variant, "reason": f"eval failed: {e}"})
            continue
        merge_records(records, seen, recs)
        missing += miss
    return records, missing
