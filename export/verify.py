"""Does an artifact compute what the PyTorch model computes? One fixed check for every backend.

The check runs a fixed prompt (prefill) then decode steps through the artifact's own runtime and
through eager PyTorch, feeding both the same tokens (the fp32 model's greedy choices), and
compares every position's logits.

Two gates. The lowering gate holds the artifact to the quantized eager model it was lowered from
(`schemes.LOWERING`, tight, every scheme that has one): lowering must add no error. The scheme gate
holds it to eager fp32 with the scheme's own bound (`Scheme.vs_fp32`), on the positions where a
top-1 means something: all of them with trained weights; with random weights (near-tied logits)
only those whose fp32 top-1 margin exceeds twice the scheme's own logit error at that position
(measured on the quantized eager model), where quantization alone cannot flip the argmax. The error
against fp32 is reported for every position either way."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mobilellm.errors import VerificationError
from mobilellm.models.generate import complete_rows
from mobilellm.quant.schemes import LOWERING, Scheme, Thresholds

PROMPT_LEN, DECODE_STEPS = 16, 8


def fixed_prompt(vocab_size: int, seed: int = 1234) -> list[int]:
    rng = np.random.default_rng(seed)
    return [1] + [int(t) for t in rng.integers(3, vocab_size, PROMPT_LEN - 1)]


def run_fixed(runner, tokens: list[int] | None, prompt: list[int]) -> tuple[np.ndarray, list[int]]:
    """Logits [PROMPT_LEN + DECODE_STEPS, V]. If `tokens` is None the decode inputs are this
    runner's own greedy picks (the reference); otherwise the given ones (teacher forcing)."""
    runner.reset()
    first = runner.forward(prompt, 0)  # as a runner does: the prompt in one call, then one token per step
    rows, fed = [first[-1:]], []
    for i in range(DECODE_STEPS):
        nxt = int(np.argmax(rows[-1][-1])) if tokens is None else tokens[i]
        fed.append(nxt)
        rows.append(runner.forward([nxt], len(prompt) + i))
    # A program that returns the last position only: the prompt's other rows afterwards, one token at a time, so the
    # decode steps above read the cache slots the prompt's call wrote (a prefill that skipped them fails).
    earlier = complete_rows(runner, prompt, 0, first)[:-1]
    return np.concatenate([earlier] + rows, 0).astype(np.float64), fed


@dataclass(frozen=True)
class Reference:
    """Eager fp32's side of the check, recorded once: the prompt, the greedy tokens fed while
    decoding, and the logits at every position. Recorded before an export, so the fp32 model
    need not stay in memory beside the lowered program (a 1.5B model is 6 GB of fp32)."""

    prompt: list[int]
    fed: list[int]
    logits: np.ndarray  # [PROMPT_LEN + DECODE_STEPS, V] float64


def reference(fp32_runner) -> Reference:
    prompt = fixed_prompt(fp32_runner.vocab_size)
    logits, fed = run_fixed(fp32_runner, None, prompt)
    return Reference(prompt, fed, logits)


def replay(runner, ref: Reference) -> np.ndarray:
    """`runner`'s logits on the reference's prompt and decode tokens (teacher forcing)."""
    return run_fixed(runner, ref.fed, ref.prompt)[0]


PERTURBATION = 1e-6  # relative, at the input of the first block: a few float32 ulps


def replay_perturbed(runner, ref: Reference, eps: float = PERTURBATION, seed: int = 0) -> np.ndarray:
    """`replay` with the embedding output scaled by (1 + eps * N(0, 1)): the quantized eager model's own
    sensitivity to rounding. With random weights, per-token int8 activations flip a rounding step on some
    elements for any ulp-level change upstream, and deep stacks amplify the flips (measured: 1.5B W8A8
    eager moves by 1 - cosine = 0.0024 for eps = 1e-6; 125M by 0.0007, with 1e-5 the same: saturated).
    A faithful lowering computes the same arithmetic in another order, so it differs from eager by as much.
    None where the runner is not an eager MobileLLM (then the fixed bound stands)."""
    import torch
    emb = getattr(getattr(getattr(runner, "model", None), "model", None), "embed_tokens", None)
    if emb is None:  # not an eager MobileLLM (a PT2E-converted graph module): nothing to perturb, fixed bound
        return None
    g = torch.Generator().manual_seed(seed)
    hook = emb.register_forward_hook(
        lambda mod, inp, out: out * (1 + eps * torch.randn(out.shape, generator=g, dtype=out.dtype)))
    try:
        return replay(runner, ref)
    finally:
        hook.remove()


def compare(logits: np.ndarray, ref: np.ndarray) -> dict:
    if not np.all(np.isfinite(logits)):
        return {"top1": 0.0, "cosine_min": 0.0, "cosine_mean": 0.0, "max_abs_err": float("inf"),
                "mean_abs_err": float("inf"), "positions": len(ref), "nonfinite": True}
    cos = (logits * ref).sum(-1) / (np.linalg.norm(logits, axis=-1) * np.linalg.norm(ref, axis=-1) + 1e-30)
    err = np.abs(logits - ref)
    return {"top1": float(np.mean(logits.argmax(-1) == ref.argmax(-1))), "cosine_min": float(cos.min()),
            "cosine_mean": float(cos.mean()), "max_abs_err": float(err.max()), "mean_abs_err": float(err.mean()),
            "positions": int(len(ref))}


def decided_positions(ref: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """Positions whose fp32 top-1 margin exceeds twice the per-position logit error `noise`."""
    top2 = np.sort(ref, axis=-1)[:, -2:]
    return (top2[:, 1] - top2[:, 0]) > 2 * noise


def verify(session, fp32, scheme: Scheme, quantized=None, trained: bool = False, noise_proxy=None,
           perturbed=None) -> dict:
    """Report dict for the manifest; raises VerificationError (with the report) on a miss.

    `fp32`: a `Reference` or the fp32 eager runner; `quantized`: the quantized eager model's logits
    on that reference (`replay`), or its runner, or None where the backend has no such model.
    `noise_proxy`: where there is none, logits of another implementation of an int8 scheme on the
    same reference, used only to estimate the scheme's logit noise (which positions are decided).
    `perturbed`: the quantized eager model's logits under `replay_perturbed` (random weights only). Then
    the lowering's cosine bound is the fixed one or, where the eager model itself moves further under an
    ulp-level perturbation, twice that movement (two draws of the same rounding noise): an artifact may
    differ from its eager model by what rounding alone does, and no more."""
    recorded = fp32 if isinstance(fp32, Reference) else reference(fp32)
    ref = recorded.logits
    got = replay(session, recorded)
    t = scheme.vs_fp32
    report = {"prompt_tokens": PROMPT_LEN, "decode_steps": DECODE_STEPS, "scheme": scheme.name,
              "vs_fp32": compare(got, ref), "thresholds_vs_fp32": t.__dict__}
    failures = []
    noise = np.zeros(len(ref))
    qref = None
    if quantized is not None:
        qref = quantized if isinstance(quantized, np.ndarray) else replay(quantized, recorded)
        noise = np.abs(qref - ref).max(-1)
    elif noise_proxy is not None:
        noise = np.abs(noise_proxy - ref).max(-1)
        report["noise_estimate"] = "torchao w8a8 eager (this backend has no quantized eager model of its scheme)"
    # Random weights leave near-ties: a top-1 counts only where the fp32 margin exceeds twice the
    # scheme's own logit noise (then neither quantization nor a lowering within it can flip it).
    decided = np.ones(len(ref), bool) if trained else decided_positions(ref, noise)
    if qref is not None:
        report["vs_quantized_eager"] = compare(got, qref)
        report["quantized_eager_vs_fp32"] = compare(qref, ref)
        bound = LOWERING
        if perturbed is not None:
            sens = compare(perturbed, qref)
            rounding_bound = 1 - 2 * (1 - sens["cosine_min"])
            report["rounding_sensitivity"] = {
                "perturbation": f"embedding output x (1 + {PERTURBATION:g} N(0,1)), quantized eager vs itself",
                "vs_quantized_eager": sens, "cosine_bound": rounding_bound}
            if rounding_bound < LOWERING.min_cosine:
                bound = Thresholds(min_top1=LOWERING.min_top1, min_cosine=rounding_bound)
        report["thresholds_vs_quantized_eager"] = bound.__dict__
        lowering = dict(report["vs_quantized_eager"])
        if not trained:
            lowering["top1"] = float(np.mean(got[decided].argmax(-1) == qref[decided].argmax(-1))) if decided.any() else 1.0
            report["lowering_top1_gate"] = {"positions": int(decided.sum()), "of": int(len(ref)), "top1": lowering["top1"]}
        failures += _misses(lowering, bound, "vs its quantized eager model")
    report["fp32_top1_gate"] = {"weights": "trained" if trained else "random", "positions": int(decided.sum()),
                                "of": int(len(ref))}
    if report["vs_fp32"].get("nonfinite"):
        failures.append("non-finite logits")
    elif decided.any():
        top1 = float(np.mean(got[decided].argmax(-1) == ref[decided].argmax(-1)))
        report["fp32_top1_gate"]["top1"] = top1
        if top1 < t.min_top1:
            failures.append(f"top-1 agreement {top1:.3f} < {t.min_top1} vs eager fp32 on the {int(decided.sum())} "
                            f"positions whose fp32 margin exceeds the scheme's noise")
    if report["vs_fp32"]["cosine_min"] < t.min_cosine:
        failures.append(f"min cosine {report['vs_fp32']['cosine_min']:.5f} < {t.min_cosine} vs eager fp32")
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
