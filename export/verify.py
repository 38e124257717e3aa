"""Does an artifact compute what the PyTorch model computes? One fixed check for every backend.

The check runs a fixed prompt (prefill) then decode steps through the artifact's own runtime and
through eager PyTorch, feeding both the same tokens (the fp32 model's greedy choices), and
compares every position's logits. Thresholds per scheme live here and nowhere else."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mobilellm.errors import VerificationError

PROMPT_LEN, DECODE_STEPS = 16, 8


@dataclass(frozen=True)
class Thresholds:
    min_top1: float  # fraction of positions whose argmax agrees with the reference
    min_cosine: float  # worst per-position cosine similarity of the logit vectors


# Against the fp32 eager model. Quantized schemes are also checked against their own quantized
# eager model (where the backend has one) with the fp32 thresholds: lowering must not add error.
THRESHOLDS = {
    "fp32": Thresholds(min_top1=1.0, min_cosine=0.9999),
    "fp16": Thresholds(min_top1=0.95, min_cosine=0.999),
    "w8": Thresholds(min_top1=0.9, min_cosine=0.995),
    "w8a8": Thresholds(min_top1=0.8, min_cosine=0.98),
    "w8a8-dynamic": Thresholds(min_top1=0.8, min_cosine=0.98),
    "w8a8-static": Thresholds(min_top1=0.7, min_cosine=0.95),
    "8da4w": Thresholds(min_top1=0.6, min_cosine=0.9),
}
SAME_SCHEME = Thresholds(min_top1=0.95, min_cosine=0.999)  # artifact vs its own quantized eager model


def fixed_prompt(vocab_size: int, seed: int = 1234) -> list[int]:
    rng = np.random.default_rng(seed)
    return [1] + [int(t) for t in rng.integers(3, vocab_size, PROMPT_LEN - 1)]


def run_fixed(runner, tokens: list[int] | None, prompt: list[int]) -> tuple[np.ndarray, list[int]]:
    """Logits [PROMPT_LEN + DECODE_STEPS, V]. If `tokens` is None the decode inputs are this
    runner's own greedy picks (the reference); otherwise the given ones (teacher forcing)."""
    runner.reset()
    rows = [runner.forward(prompt, 0)]
    fed = []
    for i in range(DECODE_STEPS):
        nxt = int(np.argmax(rows[-1][-1])) if tokens is None else tokens[i]
        fed.append(nxt)
        rows.append(runner.forward([nxt], len(prompt) + i))
    return np.concatenate(rows, 0).astype(np.float64), fed


def compare(logits: np.ndarray, ref: np.ndarray) -> dict:
    if not np.all(np.isfinite(logits)):
        return {"top1": 0.0, "cosine_min": 0.0, "cosine_mean": 0.0, "max_abs_err": float("inf"),
                "mean_abs_err": float("inf"), "positions": len(ref), "nonfinite": True}
    cos = (logits * ref).sum(-1) / (np.linalg.norm(logits, axis=-1) * np.linalg.norm(ref, axis=-1) + 1e-30)
    err = np.abs(logits - ref)
    return {"top1": float(np.mean(logits.argmax(-1) == ref.argmax(-1))), "cosine_min": float(cos.min()),
            "cosine_mean": float(cos.mean()), "max_abs_err": float(err.max()), "mean_abs_err": float(err.mean()),
            "positions": int(len(ref))}


def verify(session, fp32_runner, scheme: str, quant_runner=None) -> dict:
    """Report dict for the manifest; raises VerificationError (with the report) on a miss."""
    prompt = fixed_prompt(fp32_runner.vocab_size)
    ref, fed = run_fixed(fp32_runner, None, prompt)
    got, _ = run_fixed(session, fed, prompt)
    report = {"prompt_tokens": PROMPT_LEN, "decode_steps": DECODE_STEPS, "scheme": scheme,
              "vs_fp32": compare(got, ref), "thresholds_vs_fp32": THRESHOLDS[scheme].__dict__}
    failures = _misses(report["vs_fp32"], THRESHOLDS[scheme], "vs eager fp32")
    if quant_runner is not None:
        qref, _ = run_fixed(quant_runner, fed, prompt)
        report["vs_quantized_eager"] = compare(got, qref)
        report["quantized_eager_vs_fp32"] = compare(qref, ref)
        report["thresholds_vs_quantized_eager"] = SAME_SCHEME.__dict__
        failures += _misses(report["vs_quantized_eager"], SAME_SCHEME, "vs its quantized eager model")
    report["passed"] = not failures
    if failures:
        err = VerificationError("verification failed: " + "; ".join(failures))
        err.report = report
        raise err
    return report


def _misses(c: dict, t: Thresholds, label: str) -> list[str]:
    out = []
    if c["top1"] < t.min_top1:
        out.append(f"top-1 agreement {c['top1']:.3f} < {t.min_top1} {label}")
    if c["cosine_min"] < t.min_cosine:
        out.append(f"min cosine {c['cosine_min']:.5f} < {t.min_cosine} {label}")
    return out


def summary(report: dict) -> str:
    c = report["vs_fp32"]
    s = (f"top-1 {c['top1']:.3f}, cosine min {c['cosine_min']:.5f}, max|err| {c['max_abs_err']:.4g}, "
         f"mean|err| {c['mean_abs_err']:.4g} vs fp32 over {c['positions']} positions")
    if "vs_quantized_eager" in report:
        q = report["vs_quantized_eager"]
        s += f"; vs quantized eager: top-1 {q['top1']:.3f}, cosine min {q['cosine_min']:.5f}"
    return s
