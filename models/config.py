"""MobileLLM architecture as data: one dataclass, named presets, Hugging Face config round-trip."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from mobilellm.errors import UserError

# Released sizes, from the paper and the facebook/MobileLLM-* configs (../shared/MOBILELLM.md).
_BASE = dict(vocab_size=32000, head_dim=64, norm_eps=1e-5, rope_theta=10000.0, context_len=2048)
PRESETS: dict[str, dict] = {
    "125M": dict(n_layers=30, n_heads=9, n_kv_heads=3, dim=576, ffn_hidden=1536),
    "350M": dict(n_layers=32, n_heads=15, n_kv_heads=5, dim=960, ffn_hidden=2560),
    "600M": dict(n_layers=40, n_heads=18, n_kv_heads=6, dim=1152, ffn_hidden=3072),
    "1B": dict(n_layers=54, n_heads=20, n_kv_heads=5, dim=1280, ffn_hidden=3584),
    "1.5B": dict(n_layers=54, n_heads=25, n_kv_heads=5, dim=1600, ffn_hidden=4352),
    # Not a released size: a few-layer model with the same shape rules, for tests and the
    # seconds-long smoke path. Kept here so tests shrink a real preset instead of inventing one.
    "tiny-random": dict(n_layers=2, n_heads=4, n_kv_heads=2, dim=64, ffn_hidden=160,
                        vocab_size=512, head_dim=16, context_len=256),
    # The architecture of the trained presets `tiny` / `tiny-LS` (models/trained/): deep and thin,
    # GQA, shared embedding, trained by `mobilellm train` on Python's own text.
    "tiny": dict(n_layers=8, n_heads=4, n_kv_heads=2, dim=128, ffn_hidden=352,
                 vocab_size=2048, head_dim=32, context_len=256),
}
for _name in ("125M", "350M"):
    PRESETS[f"LS-{_name}"] = dict(PRESETS[_name], repeat=2)
PRESETS["tiny-LS"] = dict(PRESETS["tiny"], repeat=2)

# Presets that ship trained weights (Hugging Face format, under models/trained/<name>/): the
# command, seed and loss curve that made each are in its training.json.
TRAINED = ("tiny", "tiny-LS")

ALIASES = {f"facebook/MobileLLM-{n}": n for n in ("125M", "350M", "600M", "1B", "1.5B")}
ALIASES.update({f"facebook/MobileLLM-{n}-layer-share": f"LS-{n}" for n in ("125M", "350M")})


@dataclass(frozen=True)
class ModelArgs:
    """Everything that fixes the network's shape. `repeat` is immediate block-wise sharing:
    each stored block runs `repeat` times in a row (L0,L0,L1,L1,... for repeat=2)."""

    n_layers: int
    n_heads: int
    n_kv_heads: int
    dim: int
    ffn_hidden: int
    vocab_size: int = 32000
    head_dim: int = 64
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    context_len: int = 2048
    repeat: int = 1
    share_embedding: bool = True
    name: str = field(default="custom", compare=False)

    def __post_init__(self):
        for f in ("n_layers", "n_heads", "n_kv_heads", "dim", "ffn_hidden", "vocab_size",
                  "head_dim", "context_len", "repeat"):
            if getattr(self, f) < 1:
                raise UserError(f"model config: {f} must be >= 1, got {getattr(self, f)}")
        if self.n_heads % self.n_kv_heads:
            raise UserError(f"model config: n_heads ({self.n_heads}) must be a multiple of "
                            f"n_kv_heads ({self.n_kv_heads}) for grouped-query attention")
        if self.head_dim % 2:
            raise UserError(f"model config: head_dim must be even for RoPE, got {self.head_dim}")

    # Derived shape facts -------------------------------------------------------------------
    @property
    def n_executed(self) -> int:
        """Blocks run per token; also the number of KV-cache slots."""
        return self.n_layers * self.repeat

    @property
    def schedule(self) -> list[int]:
        """Stored-block index for each executed block: [0,0,1,1,...] for repeat=2."""
        return [i for i in range(self.n_layers) for _ in range(self.repeat)]

    @property
    def layer_sharing(self) -> bool:
        return self.repeat > 1

    @property
    def variant(self) -> str:
        return f"{self.repeat}x{self.n_layers} shared" if self.layer_sharing else f"{self.n_layers} layers"

    def param_count(self) -> int:
        d, hd = self.dim, self.head_dim
        attn = d * self.n_heads * hd * 2 + d * self.n_kv_heads * hd * 2
        block = attn + 3 * d * self.ffn_hidden + 2 * d
        head = 0 if self.share_embedding else self.vocab_size * d
        return self.vocab_size * d + self.n_layers * block + d + head

    def kv_cache_bytes(self, max_seq_len: int, bytes_per_elem: int = 4) -> int:
        return 2 * self.n_executed * max_seq_len * self.n_kv_heads * self.head_dim * bytes_per_elem

    def replace(self, **changes) -> "ModelArgs":
        return dataclasses.replace(self, **changes)

    # Hugging Face config.json ---------------------------------------------------------------
    @classmethod
    def from_hf_config(cls, cfg: dict, name: str = "checkpoint") -> "ModelArgs":
        """Reads a facebook/MobileLLM-* config (model_type mobilellm) or a plain llama one.
        Unknown keys are ignored; missing required ones are named."""
        required = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
        missing = [k for k in required if k not in cfg]
        if missing:
            raise UserError(f"config.json lacks required keys: {', '.join(missing)}")
        mt = cfg.get("model_type", "llama")
        if mt not in ("mobilellm", "llama"):
            raise UserError(f"config.json model_type {mt!r} is not supported (valid: mobilellm, llama)")
        repeat = int(cfg.get("layer_repeat", 2 if cfg.get("layer_sharing", False) else 1))
        heads = int(cfg["num_attention_heads"])
        return cls(
            n_layers=int(cfg["num_hidden_layers"]), n_heads=heads,
            n_kv_heads=int(cfg.get("num_key_value_heads", heads)), dim=int(cfg["hidden_size"]),
            ffn_hidden=int(cfg["intermediate_size"]), vocab_size=int(cfg.get("vocab_size", 32000)),
            head_dim=int(cfg.get("head_dim", int(cfg["hidden_size"]) // heads)),
            norm_eps=float(cfg.get("rms_norm_eps", 1e-5)), rope_theta=float(cfg.get("rope_theta", 10000.0)),
            context_len=int(cfg.get("max_position_embeddings", 2048)), repeat=repeat,
            share_embedding=bool(cfg.get("share_embedding", True)), name=name,
        )

    def to_hf_config(self) -> dict:
        return {
            "architectures": ["MobileLLMForCausalLM"], "model_type": "mobilellm",
            "hidden_size": self.dim, "intermediate_size": self.ffn_hidden,
            "num_hidden_layers": self.n_layers, "num_attention_heads": self.n_heads,
            "num_key_value_heads": self.n_kv_heads, "head_dim": self.head_dim,
            "vocab_size": self.vocab_size, "rms_norm_eps": self.norm_eps, "rope_theta": self.rope_theta,
            "max_position_embeddings": self.context_len, "share_embedding": self.share_embedding,
            "layer_sharing": self.layer_sharing, "layer_repeat": self.repeat, "mlp_bias": False,
            "tie_word_embeddings": False, "hidden_act": "silu", "bos_token_id": 1, "eos_token_id": 2,
            "torch_dtype": "float32",
        }


def trained_checkpoint(name: str):
    """The shipped checkpoint directory of a trained preset, or None."""
    from pathlib import Path
    if name not in TRAINED:
        return None
    path = Path(__file__).parent / "trained" / name
    return path if (path / "config.json").is_file() else None


def preset_names() -> list[str]:
    return list(PRESETS) + list(ALIASES)


def from_name(name: str, **overrides) -> ModelArgs:
    """A preset by name or hub id, with field overrides (e.g. n_layers=60, repeat=3)."""
    key = ALIASES.get(name, name)
    if key not in PRESETS:
        raise UserError(f"unknown model {name!r}; valid: {', '.join(preset_names())}")
    fields = {**_BASE, **PRESETS[key]}
    fields.update({k: v for k, v in overrides.items() if v is not None})
    label = key
    if overrides.get("n_layers") not in (None, PRESETS[key]["n_layers"]) or \
            overrides.get("repeat") not in (None, PRESETS[key].get("repeat", 1)):
        rep = fields.get("repeat", 1)
        label = f"{key}-{rep}x{fields['n_layers']}" if rep > 1 else f"{key}-{fields['n_layers']}L"
    return ModelArgs(**fields, name=label)
