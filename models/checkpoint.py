"""Local Hugging Face-format checkpoint directories, as released in facebook/MobileLLM-*.

Reads config.json plus weights from model.safetensors, sharded safetensors with
model.safetensors.index.json, or pytorch_model.bin (unpickled with weights_only=True, so a
pickle that would run code is refused). All name and dtype fixes live in `sanitize`.
"""
from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import torch

from mobilellm.errors import UserError
from mobilellm.models.config import ModelArgs
from mobilellm.models.model import MobileLLM

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def read_config(ckpt: Path) -> ModelArgs:
    ckpt = Path(ckpt)
    if not ckpt.is_dir():
        raise UserError(f"checkpoint {ckpt} is not a directory")
    path = ckpt / "config.json"
    if not path.is_file():
        raise UserError(f"checkpoint {ckpt} has no config.json")
    try:
        cfg = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(cfg, dict):
        raise UserError(f"{path} must hold a JSON object")
    return ModelArgs.from_hf_config(cfg, name=ckpt.name)


def read_weights(ckpt: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    ckpt = Path(ckpt)
    try:
        if (ckpt / "model.safetensors").is_file():
            return load_file(ckpt / "model.safetensors")
        index = ckpt / "model.safetensors.index.json"
        if index.is_file():
            try:
                shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            except (json.JSONDecodeError, KeyError, AttributeError) as e:
                raise UserError(f"{index} is not a safetensors index (needs weight_map): {e}") from None
            sd = {}
            for shard in shards:
                if not (ckpt / shard).is_file():
                    raise UserError(f"{index} names shard {shard}, which is missing")
                sd.update(load_file(ckpt / shard))
            return sd
        if (ckpt / "pytorch_model.bin").is_file():
            try:
                sd = torch.load(ckpt / "pytorch_model.bin", map_location="cpu", weights_only=True)
            except pickle.UnpicklingError as e:
                raise UserError(f"{ckpt / 'pytorch_model.bin'} was refused by the weights-only unpickler "
                                f"(it holds more than tensors, e.g. code): {str(e).splitlines()[0]}") from None
            if not isinstance(sd, dict):
                raise UserError(f"{ckpt / 'pytorch_model.bin'} does not hold a state dict")
            return sd.get("state_dict", sd) if "model.embed_tokens.weight" not in sd else sd
    except SafetensorError as e:
        raise UserError(f"checkpoint {ckpt}: corrupt safetensors file: {e}") from None
    except (RuntimeError, EOFError, OSError) as e:
        raise UserError(f"checkpoint {ckpt}: cannot read weights: {str(e).splitlines()[0]}") from None
    raise UserError(f"checkpoint {ckpt} has no weights; expected one of: {', '.join(WEIGHT_FILES)}")


# Llama4 (MobileLLM-R1) calls the dense MLP `feed_forward`; LLaMA and this model call it `mlp`.
_LLAMA4_MLP = (".feed_forward.", ".mlp.")


def sanitize(sd: dict[str, torch.Tensor], args: ModelArgs) -> dict[str, torch.Tensor]:
    """Checkpoint names -> ours. Drops the unused lm_head beside a shared embedding and rotary
    caches some exporters save; renames Llama4's feed_forward to mlp; everything becomes fp32."""
    out = {}
    for k, v in sd.items():
        if k.endswith("rotary_emb.inv_freq"):
            continue
        if k == "lm_head.weight" and args.share_embedding:
            continue
        if not torch.is_tensor(v):
            raise UserError(f"checkpoint entry {k} is not a tensor")
        if not v.dtype.is_floating_point:
            raise UserError(f"checkpoint tensor {k} has dtype {str(v.dtype).removeprefix('torch.')}; weights must be "
                            f"floating point (float32, float16, bfloat16)")
        if not torch.isfinite(v).all():
            bad = int((~torch.isfinite(v)).sum())
            raise UserError(f"checkpoint tensor {k} holds {bad} non-finite value(s) (NaN or inf) of {v.numel()}")
        if args.rope_interleaved:
            k = k.replace(*_LLAMA4_MLP)
        out[k] = v.float()
    return out


def check_tokenizer(ckpt: Path, args: ModelArgs) -> None:
    """A checkpoint's own tokenizer must have exactly the model's vocabulary size."""
    from mobilellm.models.tokenizer import Tokenizer, tokenizer_file
    path = tokenizer_file(ckpt)
    if path is not None:
        Tokenizer(path).check_vocab(args.vocab_size, exact=True)


def load_model(ckpt: Path, max_seq_len: int | None = None, kv_kind: str = "eager",
               repeat: int | None = None) -> MobileLLM:
    args = read_config(ckpt)
    if repeat is not None:
        args = args.replace(repeat=repeat)
    check_tokenizer(ckpt, args)
    sd = sanitize(read_weights(ckpt), args)
    model = MobileLLM(args, max_seq_len=max_seq_len, kv_kind=kv_kind)
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensor(s), e.g. {', '.join(missing[:3])}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} tensor(s), e.g. {', '.join(unexpected[:3])}")
        raise UserError(f"checkpoint {ckpt} does not match its config.json: " + "; ".join(parts))
    for k, v in expected.items():
        if tuple(sd[k].shape) != tuple(v.shape):
            raise UserError(f"checkpoint {ckpt}: tensor {k} has shape {tuple(sd[k].shape)}, "
                            f"config.json implies {tuple(v.shape)}")
    model.load_state_dict(sd, strict=True)
    return model.eval().requires_grad_(False)


def checkpoint_label(ckpt: Path) -> str:
    """How manifests name weights loaded from a checkpoint (random ones: `random_weights_label`)."""
    return f"checkpoint {Path(ckpt).resolve()}"


def checkpoint_of(manifest: dict) -> Path | None:
    """The checkpoint directory an artifact's manifest names (None for random weights)."""
    w = manifest["model"].get("weights", "")
    return Path(w[len("checkpoint "):]) if w.startswith("checkpoint ") else None


def model_from_manifest(manifest: dict, max_seq_len: int | None = None, kv_kind: str = "eager",
                        checkpoint: Path | None = None) -> MobileLLM:
    """The eager fp32 model an artifact was exported from, rebuilt from its manifest: the same
    checkpoint (at the artifact's repeat; `checkpoint` names it when it moved) or the same
    seeded random weights."""
    from mobilellm.models.model import build, random_weights_label
    mm = manifest["model"]
    args = ModelArgs(**{k: v for k, v in mm["args"].items() if k in ModelArgs.__dataclass_fields__})
    weights = mm.get("weights", "")
    ckpt = checkpoint or checkpoint_of(manifest)
    if ckpt is not None:
        if not ckpt.is_dir():
            raise UserError(f"the artifact was exported from checkpoint {ckpt}, which is not here; "
                            f"pass --checkpoint DIR to name its weights")
        return load_model(ckpt, max_seq_len=max_seq_len, kv_kind=kv_kind, repeat=args.repeat)
    m = re.fullmatch(r"random \(seed (\d+);.*", weights)
    if m and weights.startswith(random_weights_label(int(m[1]))):  # the spelling `random_weights_label` writes
        return build(args, seed=int(m[1]), max_seq_len=max_seq_len, kv_kind=kv_kind)
    raise UserError(f"cannot rebuild the weights the artifact came from ({weights!r}); pass --checkpoint DIR")


def save_checkpoint(model: MobileLLM, out: Path, fmt: str = "safetensors", dtype=torch.float32,
                    shard_bytes: int | None = None) -> Path:
    """Write config.json + weights in one of the released formats (used by tests and `train`)."""
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = model.args.to_hf_config()
    cfg["torch_dtype"] = str(dtype).removeprefix("torch.")
    sd = {k: v.detach().to(dtype).contiguous() for k, v in model.state_dict().items()}
    if model.args.rope_interleaved:  # written as llama4_text: transformers' names
        sd = {k.replace(*reversed(_LLAMA4_MLP)): v for k, v in sd.items()}
    if fmt == "bin":
        _atomic(out / "pytorch_model.bin", lambda p: torch.save(sd, p))
    elif fmt == "safetensors" and not shard_bytes:
        _atomic(out / "model.safetensors", lambda p: save_file(sd, p, metadata={"format": "pt"}))
    elif fmt == "safetensors":
        shards, cur, size = [], {}, 0
        for k, v in sd.items():
            if cur and size + v.numel() * v.element_size() > shard_bytes:
                shards.append(cur)
                cur, size = {}, 0
            cur[k] = v
            size += v.numel() * v.element_size()
        shards.append(cur)
        weight_map = {}
        for i, shard in enumerate(shards):
            name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            _atomic(out / name, lambda p, s=shard: save_file(s, p, metadata={"format": "pt"}))
            weight_map.update({k: name for k in shard})
        _atomic(out / "model.safetensors.index.json",
                lambda p: Path(p).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}, indent=1)))
    else:
        raise UserError(f"unknown checkpoint format {fmt!r}; valid: safetensors, bin")
    _atomic(out / "config.json", lambda p: Path(p).write_text(json.dumps(cfg, indent=2)))
    return out


def _atomic(path: Path, write) -> None:
    from mobilellm.io import atomic_path
    with atomic_path(path) as tmp:
        write(tmp)
