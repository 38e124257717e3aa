"""`mobilellm train`: a small MobileLLM trained on the standard library's sources and docs."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from mobilellm.errors import UserError

_HELP = {
    "model": "architecture preset to train (its vocabulary and context are set by --vocab-size/--seq-len)",
    "repeat": "immediate block-wise layer sharing: each stored block runs N times in a row (2 = LS)",
    "vocab_size": "SentencePiece pieces, trained on the same text (LLaMA conventions: unk 0, bos 1, eos 2)",
    "seq_len": "training window; also the saved model's context length",
    "sources": "comma-separated text sources: stdlib (the standard library's .py files), topics (pydoc's docs)",
    "save_every": "steps between resumable saves",
    "heldout_chars": "characters of held-out text written beside the checkpoint (for `mobilellm eval`)",
}


def add_arguments(p):
    from mobilellm.train.config import TrainConfig
    p.add_argument("--out", type=Path, required=True, help="checkpoint directory to write (resumed if interrupted)")
    p.add_argument("--force", action="store_true", help="start over even if --out holds a run")
    for f in dataclasses.fields(TrainConfig):
        listed = isinstance(f.default, tuple)  # e.g. sources: given comma-separated
        p.add_argument(f"--{f.name.replace('_', '-')}", dest=f"cfg_{f.name}", type=str if listed else type(f.default),
                       default=None, metavar="LIST" if listed else f.name.upper(),
                       help=f"{_HELP.get(f.name, f.name.replace('_', ' '))} "
                            f"(default {','.join(f.default) if listed else f.default})")


def config_from(ns):
    from mobilellm.train.config import TrainConfig
    values = {}
    for f in dataclasses.fields(TrainConfig):
        v = getattr(ns, f"cfg_{f.name}")
        if v is not None:
            values[f.name] = tuple(s.strip() for s in v.split(",") if s.strip()) if isinstance(f.default, tuple) else v
    cfg = TrainConfig(**values)
    cfg.model_args()  # unknown preset or context: fail before any work
    return cfg


def main(ns):
    from mobilellm.train.loop import train
    cfg = config_from(ns)
    if ns.out.exists() and not ns.out.is_dir():
        raise UserError(f"--out {ns.out} exists and is not a directory")
    train(cfg, ns.out, force=ns.force)
    return 0
