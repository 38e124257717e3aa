"""Flags shared by the commands that build a model; each maps to one ModelArgs field or loader input."""
from __future__ import annotations

import argparse
from pathlib import Path

from mobilellm.errors import UserError


def add_model_arguments(p: argparse.ArgumentParser, default_model: str = "125M") -> None:
    from mobilellm.models.config import preset_names
    g = p.add_argument_group("model")
    g.add_argument("--model", default=None, metavar="NAME",
                   help=f"preset or hub id (default {default_model}); one of: {', '.join(preset_names())}")
    g.add_argument("--checkpoint", type=Path, metavar="DIR",
                   help="local Hugging Face-format checkpoint dir (config.json + safetensors or pytorch_model.bin)")
    g.add_argument("--layer-sharing", choices=("on", "off"),
                   help="immediate block-wise sharing: each stored block runs twice (on) or once (off)")
    g.add_argument("--repeat", type=int, metavar="N", help="run each stored block N times in a row")
    g.add_argument("--layers", type=int, metavar="N", help="number of stored blocks (presets only)")
    g.add_argument("--seed", type=int, default=0, help="seed of the random weights when no checkpoint is given")
    p.set_defaults(_default_model=default_model)


def _repeat(ns, current: int) -> int:
    if ns.repeat is not None and ns.layer_sharing is not None:
        if (ns.repeat > 1) != (ns.layer_sharing == "on"):
            raise UserError(f"--repeat {ns.repeat} contradicts --layer-sharing {ns.layer_sharing}")
    if ns.repeat is not None:
        if ns.repeat < 1:
            raise UserError(f"--repeat must be >= 1, got {ns.repeat}")
        return ns.repeat
    if ns.layer_sharing == "on":
        return current if current > 1 else 2
    if ns.layer_sharing == "off":
        return 1
    return current


def resolve_trained(ns) -> None:
    """A preset that ships trained weights (tiny, tiny-LS) means its checkpoint, unless --layers
    asks for another depth (then it is an architecture with random weights like any preset)."""
    from mobilellm.models.config import trained_checkpoint
    if ns.checkpoint is None and ns.layers is None:
        trained = trained_checkpoint(ns.model or ns._default_model)
        if trained is not None:
            ns.checkpoint, ns.model = trained, None


def model_args(ns):
    """ModelArgs from --model/--checkpoint plus overrides, and a description of the weights."""
    from mobilellm.models.checkpoint import read_config
    from mobilellm.models.config import from_name
    resolve_trained(ns)
    if ns.checkpoint is not None:
        if ns.model is not None:
            raise UserError("give either --model or --checkpoint, not both")
        if ns.layers is not None:
            raise UserError("--layers cannot change a checkpoint's depth (its weights fix it)")
        args = read_config(ns.checkpoint)
        args = args.replace(repeat=_repeat(ns, args.repeat))
        from mobilellm.models.checkpoint import checkpoint_label
        return args, checkpoint_label(ns.checkpoint)
    if ns.layers is not None and ns.layers < 1:
        raise UserError(f"--layers must be >= 1, got {ns.layers}")
    base = from_name(ns.model or ns._default_model)
    args = from_name(ns.model or ns._default_model, n_layers=ns.layers, repeat=_repeat(ns, base.repeat))
    from mobilellm.models.model import random_weights_label
    return args, random_weights_label(ns.seed)


def build_model(ns, max_seq_len: int | None = None, kv_kind: str = "eager"):
    """(model, weights description). Loads --checkpoint, else seeded random weights."""
    from mobilellm.models.checkpoint import load_model
    from mobilellm.models.model import build
    args, weights = model_args(ns)
    if max_seq_len is not None and max_seq_len > args.context_len:
        raise UserError(f"--max-seq-len {max_seq_len} exceeds the model's context of {args.context_len} tokens")
    if ns.checkpoint is not None:
        return load_model(ns.checkpoint, max_seq_len=max_seq_len, kv_kind=kv_kind, repeat=args.repeat), weights
    return build(args, seed=ns.seed, max_seq_len=max_seq_len, kv_kind=kv_kind), weights
