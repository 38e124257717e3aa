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

# MobileLLM-R1 (facebookresearch/MobileLLM-R1 README "Model Architecture"; hub configs are transformers'
# `llama4_text`): dense GQA, tied embedding, 128,256-entry Llama-3 vocabulary, L2 QK-norm without
# weights, RoPE on every layer (`no_rope_layers` all 1) in Llama4's interleaved-pair layout, rope_theta
# 8e6, no rope scaling, no attention temperature tuning, 32k context. Layers/heads/kv heads/dim/hidden
# dim are from the official README; vocab_size, rope_theta, no_rope_layers, attn_temperature_tuning,
# attention_chunk_size (32768, i.e. no chunking within the context) and rope_scaling (null) are from a
# public transcription of the R1-360M config.json (vedantdere/MobileLLM-R1-Pytorch config.py), not from
# the hub files themselves, which are not reachable here; R1-140M's count (140,248,512) agrees with an
# independent one (bedio/MobileLLM-R1-140M-2x-HyperCloned). `--checkpoint` reads the real values.
_R1 = dict(vocab_size=128256, head_dim=64, norm_eps=1e-5, rope_theta=8e6, context_len=32768,
           rope_interleaved=True, qk_norm=True, bos_id=128000, eos_ids=(128001, 128008, 128009))
PRESETS.update({
    "R1-140M": dict(_R1, n_layers=15, n_heads=9, n_kv_heads=3, dim=576, ffn_hidden=2048),
    "R1-360M": dict(_R1, n_layers=15, n_heads=16, n_kv_heads=4, dim=1024, ffn_hidden=4096),
    "R1-950M": dict(_R1, n_layers=22, n_heads=24, n_kv_heads=6, dim=1536, ffn_hidden=6144),
    # Not released: R1's switches at tiny-random's size, for tests.
    "tiny-r1-random": dict(PRESETS["tiny-random"], rope_theta=8e6, rope_interleaved=True, qk_norm=True),
})

# Presets that ship trained weights (Hugging Face format, under models/trained/<name>/): the
# command, seed and loss curve that made each are in its training.json.
TRAINED = ("tiny", "tiny-LS")

ALIASES = {f"facebook/MobileLLM-{n}": n for n in ("125M", "350M", "600M", "1B", "1.5B")}
ALIASES.update({f"facebook/MobileLLM-{n}-layer-share": f"LS-{n}" for n in ("125M", "350M")})
ALIASES.update({f"facebook/MobileLLM-R1-{n}": f"R1-{n}" for n in ("140M", "360M", "950M")})

# What a llama4_text config.json must say for this (dense, full-attention) model to honour it.
LLAMA4_SUPPORTED = "a dense llama4_text model: moe_layers [] (or interleave_moe_layer_step 0), full attention"


MAX_DIM = 1 << 20  # no width, depth, vocabulary or context of a sub-billion model comes near this
MAX_PARAMS = 20_000_000_000


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
    # Switches MobileLLM-R1 (transformers' Llama4 text model) needs; the defaults are the original MobileLLM.
    rope_interleaved: bool = False  # RoPE on pairs (x[2i], x[2i+1]) as Llama4 does; False: LLaMA's rotate-half
    qk_norm: bool = False  # Llama4's weightless RMS ("L2") norm of q and k per head, eps=norm_eps, RoPE layers only
    nope_layers: tuple[int, ...] = ()  # stored blocks that use no RoPE (Llama4 `no_rope_layers` entries equal to 0)
    attn_temperature_tuning: bool = False  # on NoPE blocks: q *= 1 + attn_scale * log1p(floor((pos+1)/floor_scale))
    floor_scale: int = 8192
    attn_scale: float = 0.1
    bos_id: int = 1  # special tokens the runners need (ExecuTorch's get_bos_id / get_eos_ids, generation's stop)
    eos_ids: tuple[int, ...] = (2,)
    name: str = field(default="custom", compare=False)

    def __post_init__(self):
        for f in ("n_layers", "n_heads", "n_kv_heads", "dim", "ffn_hidden", "vocab_size",
                  "head_dim", "context_len", "repeat"):
            v = getattr(self, f)
            if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= MAX_DIM:
                raise UserError(f"model config: {f} must be an integer in [1, {MAX_DIM}], got {v!r}")
        for f in ("norm_eps", "rope_theta"):
            v = getattr(self, f)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 < v < float("inf"):
                raise UserError(f"model config: {f} must be a positive finite number, got {v!r}")
        if self.param_count() > MAX_PARAMS:
            raise UserError(f"model config: {self.param_count():,} parameters is beyond what this tool exports "
                            f"(at most {MAX_PARAMS:,}; the largest MobileLLM has 1.5B)")
        if self.n_heads % self.n_kv_heads:
            raise UserError(f"model config: n_heads ({self.n_heads}) must be a multiple of "
                            f"n_kv_heads ({self.n_kv_heads}) for grouped-query attention")
        if self.head_dim % 2:
            raise UserError(f"model config: head_dim must be even for RoPE, got {self.head_dim}")
        object.__setattr__(self, "nope_layers", tuple(sorted(int(i) for i in self.nope_layers)))  # JSON gives lists
        object.__setattr__(self, "eos_ids", tuple(int(i) for i in self.eos_ids))
        bad = [t for t in (self.bos_id, *self.eos_ids) if not 0 <= t < self.vocab_size]
        if bad:
            raise UserError(f"model config: special token id(s) {bad} outside the vocabulary [0, {self.vocab_size})")
        bad = [i for i in self.nope_layers if not 0 <= i < self.n_layers]
        if bad:
            raise UserError(f"model config: nope_layers {bad} outside the {self.n_layers} stored blocks")
        if self.floor_scale < 1:
            raise UserError(f"model config: floor_scale must be >= 1, got {self.floor_scale}")

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
        """Reads a facebook/MobileLLM-* config (model_type mobilellm), a plain llama one, or a
        MobileLLM-R1 one (llama4_text). Unknown keys are ignored; missing required ones are named;
        a value the model cannot honour is refused with the field and the supported values."""
        try:
            return cls._from_hf_config(cfg, name)
        except (TypeError, ValueError, ArithmeticError, AttributeError) as e:  # a value of the wrong type or 0
            raise UserError(f"config.json holds a value of the wrong type or range: {e}") from None

    @classmethod
    def _from_hf_config(cls, cfg: dict, name: str) -> "ModelArgs":
        for key in _NUMERIC_KEYS:
            v = cfg.get(key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise UserError(f"config.json {key} must be a number, got {v!r}")
        mt = cfg.get("model_type", "llama")
        if mt not in ("mobilellm", "llama", "llama4_text"):
            raise UserError(f"config.json model_type {mt!r} is not supported (valid: mobilellm, llama, llama4_text)")
        ffn_key = "intermediate_size_mlp" if mt == "llama4_text" else "intermediate_size"
        required = ("hidden_size", ffn_key, "num_hidden_layers", "num_attention_heads")
        missing = [k for k in required if k not in cfg]
        if missing:
            raise UserError(f"config.json lacks required keys: {', '.join(missing)}")
        _refuse_unless(cfg, "hidden_act", ("silu",), "silu")
        _refuse_unless(cfg, "attention_bias", (False, None), False)
        _refuse_unless(cfg, "mlp_bias", (False, None), False)
        heads, n = int(cfg["num_attention_heads"]), int(cfg["num_hidden_layers"])
        fields = dict(
            n_layers=n, n_heads=heads, n_kv_heads=int(cfg.get("num_key_value_heads") or heads),
            dim=int(cfg["hidden_size"]), ffn_hidden=int(cfg[ffn_key]),
            head_dim=int(cfg.get("head_dim") or int(cfg["hidden_size"]) // heads),
            norm_eps=float(cfg.get("rms_norm_eps", 1e-5)), repeat=int(cfg.get("layer_repeat", 1)), name=name,
            **_special_tokens(cfg))
        if mt == "llama4_text":
            fields.update(_llama4_fields(cfg, n))
        else:
            fields.update(
                vocab_size=int(cfg.get("vocab_size", 32000)), rope_theta=_rope_theta(cfg, 10000.0),
                context_len=int(cfg.get("max_position_embeddings", 2048)),
                # a llama config says whether its head is tied; MobileLLM's say share_embedding (tied when absent)
                share_embedding=bool(cfg["tie_word_embeddings"] if mt == "llama" and "tie_word_embeddings" in cfg
                                     else cfg.get("share_embedding", True)))
            if "layer_repeat" not in cfg and cfg.get("layer_sharing", False):
                fields["repeat"] = 2
        return cls(**fields)

    def to_hf_config(self) -> dict:
        """config.json for this architecture: llama4_text (loadable by transformers' Llama4ForCausalLM)
        when it uses Llama4's RoPE layout, else the released MobileLLM format. `layer_repeat` is ours."""
        common = {
            "hidden_size": self.dim, "num_hidden_layers": self.n_layers, "num_attention_heads": self.n_heads,
            "num_key_value_heads": self.n_kv_heads, "head_dim": self.head_dim, "vocab_size": self.vocab_size,
            "rms_norm_eps": self.norm_eps, "rope_theta": self.rope_theta, "rope_scaling": None,
            "max_position_embeddings": self.context_len, "layer_repeat": self.repeat, "hidden_act": "silu",
            "torch_dtype": "float32",
        }
        if self.rope_interleaved:
            return {
                **common, "architectures": ["Llama4ForCausalLM"], "model_type": "llama4_text",
                "intermediate_size": self.ffn_hidden, "intermediate_size_mlp": self.ffn_hidden,
                "tie_word_embeddings": self.share_embedding, "use_qk_norm": self.qk_norm,
                "no_rope_layers": [0 if i in self.nope_layers else 1 for i in range(self.n_layers)],
                "attn_temperature_tuning": self.attn_temperature_tuning, "floor_scale": self.floor_scale,
                "attn_scale": self.attn_scale, "moe_layers": [], "num_local_experts": 0,
                "interleave_moe_layer_step": 0, "attention_chunk_size": None, "attention_bias": False,
                "bos_token_id": self.bos_id, "eos_token_id": list(self.eos_ids),
            }
        if self.qk_norm or self.nope_layers:
            raise UserError("model config: qk_norm and nope_layers need the llama4_text format "
                            "(rope_interleaved=True); the MobileLLM config.json has no such keys")
        return {
            **common, "architectures": ["MobileLLMForCausalLM"], "model_type": "mobilellm",
            "intermediate_size": self.ffn_hidden, "share_embedding": self.share_embedding,
            "layer_sharing": self.layer_sharing, "mlp_bias": False, "tie_word_embeddings": False,
            "bos_token_id": self.bos_id, "eos_token_id": self.eos_ids[0] if len(self.eos_ids) == 1 else list(self.eos_ids),
        }


_NUMERIC_KEYS = ("hidden_size", "intermediate_size", "intermediate_size_mlp", "num_hidden_layers",
                 "num_attention_heads", "num_key_value_heads", "head_dim", "vocab_size", "rms_norm_eps", "rope_theta",
                 "max_position_embeddings", "layer_repeat", "attention_chunk_size", "floor_scale", "attn_scale")


def _refuse_unless(cfg: dict, key: str, ok: tuple, supported) -> None:
    if key in cfg and cfg[key] not in ok:
        raise UserError(f"config.json {key} {cfg[key]!r} is not supported; supported: {key} {supported}")


def _rope_theta(cfg: dict, default: float) -> float:
    """RoPE base from `rope_parameters` (transformers 5) or `rope_theta` + `rope_scaling` (earlier
    files). Any scaling (llama3, yarn, linear, dynamic, ...) is refused: the tables here are plain RoPE."""
    for key in ("rope_parameters", "rope_scaling"):
        rp = cfg.get(key)
        if isinstance(rp, dict) and rp.get("rope_type", rp.get("type", "default")) != "default":
            raise UserError(f"config.json {key} rope_type {rp.get('rope_type', rp.get('type'))!r} is not "
                            f"supported; supported: {key} null or rope_type 'default' (no RoPE scaling)")
    rp = cfg.get("rope_parameters")
    theta = rp.get("rope_theta") if isinstance(rp, dict) else None
    return float(theta if theta is not None else cfg.get("rope_theta", default))


def _special_tokens(cfg: dict) -> dict:
    """bos_token_id / eos_token_id (an int or a list) where the config names them."""
    out = {}
    if isinstance(cfg.get("bos_token_id"), int) and not isinstance(cfg["bos_token_id"], bool):
        out["bos_id"] = cfg["bos_token_id"]
    eos = cfg.get("eos_token_id")
    eos = [eos] if isinstance(eos, int) else eos
    if isinstance(eos, list) and eos and all(isinstance(e, int) and not isinstance(e, bool) for e in eos):
        out["eos_ids"] = tuple(eos)
    return out


def _llama4_fields(cfg: dict, n: int) -> dict:
    """The llama4_text keys, read with transformers' Llama4TextConfig defaults (configuration_llama4.py)."""
    step = int(cfg.get("interleave_moe_layer_step", 1))
    moe = cfg.get("moe_layers")
    if moe is None:  # transformers: range(step - 1, n, step); step 0 (R1) would not get here in transformers
        moe = list(range(step - 1, n, step)) if step > 0 else []
    if moe:
        raise UserError(f"config.json moe_layers {list(moe)} (num_local_experts {cfg.get('num_local_experts', 16)}, "
                        f"interleave_moe_layer_step {step}): mixture-of-experts layers are not supported; "
                        f"supported: {LLAMA4_SUPPORTED}")
    # no_rope_layers: 1 = the layer uses RoPE, 0 = NoPE; empty or missing means every 4th layer is NoPE.
    interval = int(cfg.get("no_rope_layer_interval", 4))
    rope = list(cfg.get("no_rope_layers") or [int((i + 1) % interval != 0) for i in range(n)])
    if len(rope) < n:
        raise UserError(f"config.json no_rope_layers has {len(rope)} entries for {n} layers; supported: one per layer")
    context = int(cfg.get("max_position_embeddings", 4096 * 32))
    chunk = cfg.get("attention_chunk_size", 8192)
    types = cfg.get("layer_types") or ["chunked_attention" if r and chunk is not None else "full_attention"
                                       for r in rope[:n]]
    odd = sorted({t for t in types if t not in ("full_attention", "chunked_attention")})
    if odd:
        raise UserError(f"config.json layer_types {odd} are not supported; supported: {LLAMA4_SUPPORTED}")
    if "chunked_attention" in types and chunk is not None and int(chunk) < context:
        raise UserError(f"config.json attention_chunk_size {chunk} is below max_position_embeddings {context}: "
                        f"chunked attention is not supported; supported: attention_chunk_size null or "
                        f">= max_position_embeddings ({LLAMA4_SUPPORTED})")
    return dict(
        vocab_size=int(cfg.get("vocab_size", 202048)), rope_theta=_rope_theta(cfg, 500000.0), context_len=context,
        share_embedding=bool(cfg.get("tie_word_embeddings", False)), rope_interleaved=True,
        qk_norm=bool(cfg.get("use_qk_norm", True)), nope_layers=tuple(i for i in range(n) if not rope[i]),
        attn_temperature_tuning=bool(cfg.get("attn_temperature_tuning", True)),
        floor_scale=int(cfg.get("floor_scale", 8192)), attn_scale=float(cfg.get("attn_scale", 0.1)))


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
