"""`mobilellm eval`: does an artifact still predict like the model it came from, on real text?

The artifact runs in its own runtime over held-out text through its KV cache (each window is fed
in chunks: a prefill, then continuations at growing positions); the eager fp32 model it was
exported from runs the same windows. Per artifact: perplexity, top-1 agreement with eager fp32,
and the mean KL divergence KL(fp32 || artifact) per predicted token."""
from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mobilellm.benchmarks.schema import METRICS
from mobilellm.errors import UserError
from mobilellm.models.generate import every_position


@dataclass(frozen=True)
class EvalConfig:
    window: int = 256        # tokens per window (bos + text), capped by the artifact's max_seq_len
    chunk: int = 64          # tokens per forward call through the cache
    max_tokens: int = 8192   # text tokens scored at most (whole windows)
    threads: int = 2

    def __post_init__(self):
        for f in ("window", "chunk", "max_tokens", "threads"):
            if getattr(self, f) < 1:
                raise UserError(f"--{f.replace('_', '-')} must be >= 1, got {getattr(self, f)}")
        if self.window < 2:
            raise UserError(f"--window must be >= 2 (one token and its successor), got {self.window}")


def windows(ids: list[int], bos: int, window: int, max_tokens: int) -> list[list[int]]:
    """Non-overlapping windows of the token stream, each opened with bos."""
    body = window - 1
    n = min(len(ids) // body, max(1, max_tokens // body))
    if n < 1:
        raise UserError(f"the text has {len(ids)} tokens; one window needs {body} (use a longer text or a smaller --window)")
    return [[bos] + ids[i * body:(i + 1) * body] for i in range(n)]


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def run_window(runner, ids: list[int], chunk: int) -> np.ndarray:
    """Logits [len(ids), V] computed through the runner's cache, `chunk` tokens per call."""
    runner.reset()
    return np.concatenate([every_position(runner, ids[i:i + chunk], i) for i in range(0, len(ids), chunk)], 0)


@dataclass
class Scores:
    nll: float = 0.0
    agree: int = 0
    kl: float = 0.0
    tokens: int = 0

    def add(self, got: np.ndarray, ref: np.ndarray, targets: np.ndarray) -> None:
        self.add_log_probs(log_softmax(got), log_softmax(ref), targets)

    def add_log_probs(self, lg: np.ndarray, lr: np.ndarray, targets: np.ndarray) -> None:
        if not np.all(np.isfinite(lg)):  # non-finite logits give non-finite log-probabilities
            raise UserError("the artifact produced non-finite logits")
        self.nll += float(-lg[np.arange(len(targets)), targets].sum())
        self.agree += int((lg.argmax(-1) == lr.argmax(-1)).sum())
        self.kl += float((np.exp(lr) * (lr - lg)).sum())
        self.tokens += len(targets)

    def metrics(self) -> dict:
        return {"perplexity": math.exp(self.nll / self.tokens), "top1_agreement": self.agree / self.tokens,
                "kl_divergence": self.kl / self.tokens}


def evaluate(session, reference, wins: list[list[int]], chunk: int, on_window=None) -> tuple[dict, dict]:
    """(artifact metrics, eager fp32 metrics); the reference's own agreement/KL are 1 and 0."""
    art, ref = Scores(), Scores()
    for w in wins:
        g = run_window(session, w, chunk)[:-1]
        lg, lr = log_softmax(g), log_softmax(every_position(reference, w, 0)[:-1])  # each once per window
        targets = np.asarray(w[1:])
        art.add_log_probs(lg, lr, targets)
        ref.add_log_probs(lr, lr, targets)
        if on_window:
            on_window(art)
    return art.metrics(), ref.metrics()


def merge_records(records: list[dict], seen: set, new: list[dict]) -> None:
    """Append `new` to `records`, keeping one eager fp32 row per model, metric and text however
    many artifacts of that model were scored."""
    for r in new:
        key = (r["backend"], r["model"], r["variant"], r["metric"], r["settings"]["text_sha256"], r.get("artifact"))
        if key not in seen:
            seen.add(key)
            records.append(r)


def text_settings(text: str, path: Path, cfg: EvalConfig, wins: list[list[int]], tokenizer: Path, chunk: int) -> dict:
    return {**asdict(cfg), "window": len(wins[0]), "chunk": chunk, "text": Path(path).name,
            "text_sha256": hashlib.sha256(text.encode()).hexdigest()[:16], "windows": len(wins),
            "scored_tokens": sum(len(w) - 1 for w in wins), "tokenizer": Path(tokenizer).name,
            "reference": "eager PyTorch fp32, the weights the artifact was exported from"}


def eval_artifact(path: Path, cfg: EvalConfig, text: Path | None = None, tokenizer: Path | None = None,
                  checkpoint: Path | None = None, log=print) -> tuple[list[dict], list[dict]]:
    """(records, missing rows) for one artifact; the eager fp32 reference's own rows are included."""
    from mobilellm.benchmarks.bench import base_fields, missing_record
    from mobilellm.export.base import get_backend
    from mobilellm.manifest import read_manifest
    from mobilellm.models.checkpoint import checkpoint_of, model_from_manifest
    from mobilellm.models.generate import EagerRunner
    from mobilellm.models.tokenizer import Tokenizer
    from mobilellm.train.data import read_text
    if not Path(path).exists():
        raise UserError(f"{path} does not exist")
    manifest = read_manifest(path, required=False)
    if manifest is None:
        raise UserError(f"{path} has no manifest ({Path(path).name}.manifest.json): without it the weights to compare "
                        f"against are unknown; export it with `mobilellm export`")
    backend = get_backend(manifest["backend"])
    why = backend.runtime_missing()
    if why:
        log(f"{Path(path).name}: not evaluated: {why}")
        return [], [missing_record(path, manifest, why, cfg.threads)]
    ckpt = checkpoint or checkpoint_of(manifest)
    tok_path = tokenizer or (Path(manifest["tokenizer"]) if manifest.get("tokenizer") else ckpt)
    if tok_path is None:
        raise UserError(f"{path}: no tokenizer known for this artifact; pass --tokenizer FILE")
    tok = Tokenizer(tok_path)
    vocab = manifest["model"]["args"]["vocab_size"]
    tok.check_vocab(vocab)
    text_path = text or (ckpt / "heldout.txt" if ckpt and (ckpt / "heldout.txt").is_file() else None)
    if text_path is None:
        raise UserError(f"{path}: no text to score; pass --text FILE (held-out text the model never trained on)")
    body = read_text(text_path)
    window = min(cfg.window, manifest["max_seq_len"])
    wins = windows(tok.encode(body, bos=False), tok.bos_id, window, cfg.max_tokens)
    reference = EagerRunner(model_from_manifest(manifest, max_seq_len=window, checkpoint=checkpoint))
    from mobilellm.export.base import open_artifact
    session = open_artifact(Path(path), manifest)
    log(f"{Path(path).name}: {len(wins)} windows of {window} tokens from {text_path}")
    chunk = min(cfg.chunk, manifest["max_seq_len"] - 1)  # one call holds at most max_seq_len - 1 tokens (ExecuTorch)
    try:
        got, ref = evaluate(session, reference, wins, chunk)
    except RuntimeError as e:
        raise UserError(f"{path}: the {backend.name} runtime failed while running it: {str(e).splitlines()[0]}") from None
    settings = text_settings(body, text_path, cfg, wins, tok.path, chunk)
    base = {**base_fields(path, manifest, cfg.threads), "settings": settings}
    ref_base = {k: v for k, v in base.items() if k not in ("artifact", "sha256")}
    ref_base.update(backend="eager", scheme="fp32")
    out = []
    for b, metrics in ((base, got), (ref_base, ref)):
        for metric, value in metrics.items():
            out.append({**b, "metric": metric, "unit": METRICS[metric], "value": round(value, 6),
                        "statistic": "mean", "samples": settings["scored_tokens"]})
    log(f"{Path(path).name}: perplexity {got['perplexity']:.3f} (eager fp32 {ref['perplexity']:.3f}, "
          f"{(got['perplexity'] / ref['perplexity'] - 1) * 100:+.2f}%), top-1 agreement {got['top1_agreement']:.4f}, "
          f"KL {got['kl_divergence']:.5f} nats over {settings['scored_tokens']} tokens")
    return out, []

