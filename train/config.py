"""Training settings as data: one frozen dataclass; `mobilellm train` has one flag per field."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

from mobilellm.errors import UserError

SOURCES = ("stdlib", "topics")  # train/data.py: the standard library's .py files, pydoc's topics


@dataclass(frozen=True)
class TrainConfig:
    model: str = "tiny"             # architecture preset (models/config.py)
    repeat: int = 1                 # 2 = immediate block-wise layer sharing
    vocab_size: int = 2048          # SentencePiece pieces; the model's vocabulary
    seq_len: int = 256
    batch_size: int = 16
    steps: int = 1200
    lr: float = 3e-3
    min_lr: float = 3e-4
    warmup: int = 60
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0
    eval_every: int = 100
    save_every: int = 50
    eval_windows: int = 32
    heldout_chars: int = 60_000     # held-out text written beside the checkpoint for `eval`
    threads: int = 2
    sources: tuple[str, ...] = ("stdlib", "topics")

    def __post_init__(self):
        for f in ("vocab_size", "seq_len", "batch_size", "steps", "eval_every", "save_every", "threads"):
            if getattr(self, f) < 1:
                raise UserError(f"train: {f} must be >= 1, got {getattr(self, f)}")
        if self.repeat < 1:
            raise UserError(f"train: repeat must be >= 1, got {self.repeat}")
        unknown = [x for x in self.sources if x not in SOURCES]
        if unknown or not self.sources:
            raise UserError(f"unknown text source(s) {unknown}; valid: {', '.join(SOURCES)}")
        if self.vocab_size < 300:  # 256 byte-fallback pieces + specials + a few merges
            raise UserError(f"train: vocab_size must be >= 300 (byte fallback alone takes 259), got {self.vocab_size}")

    def model_args(self):
        from mobilellm.models.config import from_name
        base = from_name(self.model)
        if self.seq_len > base.context_len:
            raise UserError(f"train: seq_len {self.seq_len} exceeds the {self.model} context of {base.context_len}")
        return base.replace(vocab_size=self.vocab_size, repeat=self.repeat, context_len=self.seq_len,
                            name=self.model if self.repeat == 1 else f"{self.model}-LS")

    def settings_hash(self) -> str:
        d = dataclasses.asdict(self)
        for k in ("eval_every", "save_every", "threads"):  # do not change the result
            d.pop(k)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]
