"""The MobileLLM network: LLaMA-style decoder, shared embedding, GQA, block-wise layer sharing.

MobileLLM-R1 (transformers' Llama4 text model, dense) is the same network with switches from
ModelArgs: Llama4's interleaved RoPE layout, weightless QK-norm, per-block RoPE on/off and
attention temperature tuning on NoPE blocks (transformers/models/llama4/modeling_llama4.py).

Module names follow the Hugging Face checkpoints (`model.layers.N.self_attn.q_proj`, ...) so a
released state dict loads with no renaming. The KV cache lives outside the stored blocks, in
`kv`: one attention/cache piece per *executed* block (see models/kv.py), because a shared block
run twice sees two different inputs and so writes two different keys/values per position.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from mobilellm.models.config import ModelArgs
from mobilellm.models.kv import KV_KINDS, make_kv, start_position


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        # Written for XNNPACK, which takes a 4-D mean over the two innermost dims only and a
        # reshape with at most one inferred (-1) and no symbolic size; anything it refuses would
        # split every block into extra partitions.
        B, _, D = x.shape
        x4 = x.unsqueeze(-1)  # [B, T, D, 1]
        ms = (x4 * x4).mean(dim=(2, 3), keepdim=True)  # [B, T, 1, 1]
        return (x4 * torch.rsqrt(ms + self.eps)).view(B, -1, D) * self.weight


def l2_norm(x, eps: float):
    """Llama4's weightless q/k norm over head_dim: x * rsqrt(mean(x^2) + eps) (Llama4TextL2Norm).
    x: [B, T, H, D]; the same XNNPACK-friendly 4-D mean as RMSNorm, on [B, T*H, D, 1]."""
    B, _, H, D = x.shape
    x4 = x.reshape(B, -1, D, 1)  # [B, T*H, D, 1]
    ms = (x4 * x4).mean(dim=(2, 3), keepdim=True)  # [B, T*H, 1, 1]
    return (x4 * torch.rsqrt(ms + eps)).view(B, -1, H, D)


def rope_tables(args: ModelArgs, n_pos: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """cos/sin [n_pos, head_dim] and the [head_dim, head_dim] 0/+-1 matrix R of the rotation partner:
    rotate-half (Hugging Face LLaMA) F.linear(x, R) == cat(-x2, x1), frequencies repeated per half; or
    Llama4's interleaved pairs (apply_rotary_emb: (x[2i], x[2i+1]) as one complex number)
    F.linear(x, R)[2i] == -x[2i+1], [2i+1] == x[2i], each frequency repeated per pair."""
    inv = 1.0 / (args.rope_theta ** (torch.arange(0, args.head_dim, 2, dtype=torch.float64) / args.head_dim))
    ang = torch.outer(torch.arange(n_pos, dtype=torch.float64), inv)  # [n_pos, head_dim/2]
    h = args.head_dim // 2
    rot = torch.zeros(args.head_dim, args.head_dim)
    if args.rope_interleaved:
        ang = ang.repeat_interleave(2, dim=1)
        idx = torch.arange(h)
        rot[2 * idx, 2 * idx + 1] = -1.0  # out[2i] = -x[2i+1]
        rot[2 * idx + 1, 2 * idx] = 1.0  # out[2i+1] = x[2i]
    else:
        ang = ang.repeat(1, 2)
        rot[:h, h:] = -torch.eye(h)  # out[:h] = -x2
        rot[h:, :h] = torch.eye(h)  # out[h:] = x1
    return ang.cos().float(), ang.sin().float(), rot


def temperature_table(args: ModelArgs, n_pos: int) -> torch.Tensor:
    """[n_pos] query scale of Llama4's attention temperature tuning on NoPE blocks (modeling_llama4.py)."""
    pos = torch.arange(n_pos, dtype=torch.float32)
    return torch.log1p(torch.floor((pos + 1.0) / args.floor_scale)) * args.attn_scale + 1.0


def apply_rope(x, cos, sin, rot):
    # x: [B, T, H, D]; cos/sin: [1, T, 1, D]. The partner as a linear with a 0/+-1 matrix (exact):
    # slicing a dynamic-length tensor, or a 4-D matmul's reshapes, would stay outside XNNPACK.
    return x * cos + F.linear(x, rot) * sin


class Attention(nn.Module):
    def __init__(self, a: ModelArgs, layer: int):
        super().__init__()
        self.n_heads, self.n_kv, self.hd, self.eps = a.n_heads, a.n_kv_heads, a.head_dim, a.norm_eps
        self.use_rope = layer not in a.nope_layers
        self.qk_norm = a.qk_norm and self.use_rope  # Llama4 norms q/k on RoPE layers only
        self.temperature = a.attn_temperature_tuning and not self.use_rope
        self.q_proj = nn.Linear(a.dim, a.n_heads * a.head_dim, bias=False)
        self.k_proj = nn.Linear(a.dim, a.n_kv_heads * a.head_dim, bias=False)
        self.v_proj = nn.Linear(a.dim, a.n_kv_heads * a.head_dim, bias=False)
        self.o_proj = nn.Linear(a.n_heads * a.head_dim, a.dim, bias=False)

    def forward(self, x, rope, input_pos, start, kv):
        B = x.shape[0]
        cos, sin, rot, temp = rope[:4]
        if "qkv_proj" in self._modules:  # an export copy's fused projection (MobileLLM.fuse_projections)
            H, Hkv = self.n_heads, self.n_kv
            qkv = self.qkv_proj(x).view(B, -1, H + 2 * Hkv, self.hd)  # [B, T, H + 2 Hkv, D]
            if self.use_rope:  # every head in one rotation; v's pass through (cos 1, sin 0: MobileLLM.qkv_rope)
                qkv = apply_rope(qkv, *rope[4:6], rot)
            # split after the rotation, next to the cache ops (outside XNNPACK, which slices static shapes only)
            q, k, v = qkv[:, :, :H], qkv[:, :, H:H + Hkv], qkv[:, :, H + Hkv:]
        else:
            q = self.q_proj(x).view(B, -1, self.n_heads, self.hd)  # [B, T, H, D]
            k = self.k_proj(x).view(B, -1, self.n_kv, self.hd)  # [B, T, Hkv, D]
            v = self.v_proj(x).view(B, -1, self.n_kv, self.hd)
            if self.use_rope:
                q, k = apply_rope(q, cos, sin, rot), apply_rope(k, cos, sin, rot)
        if self.qk_norm:  # after RoPE, as in Llama4TextAttention
            q, k = l2_norm(q, self.eps), l2_norm(k, self.eps)
        if self.temperature:
            q = q * temp  # temp: [1, T, 1, 1]
        y = kv(q, k, v, input_pos, start)  # [B, T, H*D]
        return self.o_proj(y)


class MLP(nn.Module):
    def __init__(self, a: ModelArgs):
        super().__init__()
        self.gate_proj = nn.Linear(a.dim, a.ffn_hidden, bias=False)
        self.up_proj = nn.Linear(a.dim, a.ffn_hidden, bias=False)
        self.down_proj = nn.Linear(a.ffn_hidden, a.dim, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, a: ModelArgs, layer: int):
        super().__init__()
        self.self_attn = Attention(a, layer)
        self.mlp = MLP(a)
        self.input_layernorm = RMSNorm(a.dim, a.norm_eps)
        self.post_attention_layernorm = RMSNorm(a.dim, a.norm_eps)

    def forward(self, x, rope, input_pos, start, kv):
        h = x + self.self_attn(self.input_layernorm(x), rope, input_pos, start, kv)
        return h + self.mlp(self.post_attention_layernorm(h))


class Decoder(nn.Module):
    def __init__(self, a: ModelArgs):
        super().__init__()
        self.embed_tokens = nn.Embedding(a.vocab_size, a.dim)
        self.layers = nn.ModuleList(Block(a, i) for i in range(a.n_layers))  # stored blocks
        self.norm = RMSNorm(a.dim, a.norm_eps)


class MobileLLM(nn.Module):
    """forward(tokens [B, T] int64, input_pos [1] int64 = start position) -> logits [B, T, V]
    ([B, 1, V] when `last_logits_only`: the last position's, all an LLM runner reads after a prefill).

    One call serves prefill (T tokens) and decode (T = 1); the cache keeps state between calls."""

    def __init__(self, args: ModelArgs, max_seq_len: int | None = None, kv_kind: str = "eager", batch: int = 1):
        super().__init__()
        self.args = args
        self.model = Decoder(args)
        if not args.share_embedding:
            self.lm_head = nn.Linear(args.dim, args.vocab_size, bias=False)
        self.max_seq_len = max_seq_len or args.context_len
        if self.max_seq_len > args.context_len:
            raise ValueError(f"max_seq_len {self.max_seq_len} exceeds the model context {args.context_len}")
        # Tables cover the positions the cache can hold (R1's 32k context would add 16 MB of constants).
        cos, sin, rot = rope_tables(args, self.max_seq_len)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.register_buffer("rope_rot", rot, persistent=False)
        uses_temp = args.attn_temperature_tuning and bool(args.nope_layers)
        self.register_buffer("attn_temp", temperature_table(args, self.max_seq_len) if uses_temp else None,
                             persistent=False)
        self.batch = batch
        self.released = False
        # Logits for the last position only (ExecuTorch's export_llama default, generate_full_logits=False): a
        # prefill then skips the output head for the other T - 1 rows, and the program plans no [T, V] output.
        self.last_logits_only = False
        self.block_schedule = args.schedule  # which stored block each executed step runs
        self.set_kv(kv_kind)

    def set_kv(self, kind: str) -> "MobileLLM":
        """Swap every executed block's attention/cache piece (fresh, empty caches)."""
        if kind not in KV_KINDS:
            raise ValueError(f"unknown kv kind {kind!r}; valid: {', '.join(KV_KINDS)}")
        a = self.args
        device = self.rope_rot.device
        self.kv_kind = kind
        self.kv = nn.ModuleList(
            make_kv(kind, self.batch, self.max_seq_len, a.n_heads, a.n_kv_heads, a.head_dim).to(device)
            for _ in range(a.n_executed))
        return self

    def reset_cache(self):
        for kv in self.kv:
            kv.reset()

    def output_weight(self) -> torch.Tensor:
        return self.model.embed_tokens.weight if self.args.share_embedding else self.lm_head.weight

    def forward(self, tokens: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
        if self.released:
            raise RuntimeError("this model's weights were released by an export that consumed it")
        T = tokens.shape[1]
        pos = input_pos[:1] + torch.arange(T, device=tokens.device)  # [T] absolute positions
        hd = self.args.head_dim
        if self.rope_cos is None:  # computed per call (rope_from_positions): no [max_seq_len, D] tables stored
            ang = pos.to(torch.float32).unsqueeze(1) * self.rope_inv  # [T, D], fp32 as Hugging Face computes it
            cos, sin = ang.cos().view(1, -1, 1, hd), ang.sin().view(1, -1, 1, hd)
        else:
            cos = self.rope_cos[pos].view(1, -1, 1, hd)  # [1, T, 1, D]
            sin = self.rope_sin[pos].view(1, -1, 1, hd)
        temp = self.attn_temp[pos].view(1, -1, 1, 1) if self.attn_temp is not None else None  # [1, T, 1, 1]
        rope = (cos, sin, self.rope_rot, temp, *self.qkv_rope(cos, sin))
        # Pieces that slice the cache get the start position as one SymInt, read once per call:
        # one unbacked symbol for the whole graph keeps torch.export and lowering linear in depth.
        start = start_position(input_pos, T, self.max_seq_len) if self.kv[0].uses_start else None
        h = self.model.embed_tokens(tokens)  # [B, T, dim]
        for i, layer in enumerate(self.block_schedule):  # immediate repeat: L0,L0,L1,L1,...
            h = self.model.layers[layer](h, rope, input_pos, start, self.kv[i])
        if self.last_logits_only:  # select + unsqueeze: a [:, -1:] slice of the dynamic length lowers, but
            h = h[:, -1].unsqueeze(1)  # XNNPACK refuses its static-quantized form at load (squeeze node)  [B, 1, dim]
        h = self.model.norm(h)
        if self.args.share_embedding and "lm_head" not in self._modules:
            return F.linear(h, self.output_weight())  # [B, T, vocab]
        return self.lm_head(h)

    def qkv_rope(self, cos, sin) -> tuple:
        """cos/sin over a fused projection's q, k and v heads [1, T, H + 2 Hkv, D]: v's heads pass through (cos 1,
        sin 0). Made once per call for every fused block (one graph node each, not four per block)."""
        if not hasattr(self, "rope_heads"):
            return (None, None)
        m = self.rope_heads
        return cos * m + (1 - m), sin * m

    def release_weights(self) -> "MobileLLM":
        """Drop every parameter and buffer's storage (an export that no longer needs the eager model, e.g.
        after the ONNX graph holds the weights): the model can no longer run, and says so."""
        for mod in self.modules():
            for name, p in list(mod._parameters.items()):
                if p is not None:
                    mod._parameters[name] = nn.Parameter(torch.empty(0, dtype=p.dtype), requires_grad=False)
            for name, b in list(mod._buffers.items()):
                if b is not None:
                    mod._buffers[name] = torch.empty(0, dtype=b.dtype)
        self.released = True
        return self

    def unshare_blocks(self) -> "MobileLLM":
        """For an export copy going to a backend that lowers in partitions (XNNPACK): one Block per executed
        step, a repeat being a deep copy with identical values. ExecuTorch would otherwise copy every shared
        constant into each partition that uses it, one whole-graph pass per constant (+30% lowering time at
        125M LS). The bytes are the same either way: the delegate's data store keeps identical tensors once."""
        if len(set(self.block_schedule)) < len(self.block_schedule):
            self.model.layers = nn.ModuleList(copy.deepcopy(self.model.layers[j]) for j in self.block_schedule)
            self.block_schedule = list(range(len(self.model.layers)))
        return self

    def fuse_projections(self) -> "MobileLLM":
        """For an export copy: each block's q/k/v projections become one linear (their weights stacked), so a
        step quantizes the attention input once and runs one GEMM for three, and RoPE rotates q and k in one op.
        Per-output-channel (and per-group) weight scales and per-token activation scales are those of the
        separate projections: quantized, the results are the same. Blocks with QK-norm or attention temperature
        (R1) stay unfused. gate/up stay separate: splitting a fused output needs a slice of a dynamic-length
        tensor, which XNNPACK leaves outside its partitions (one more delegate boundary a block)."""
        for blk in self.model.layers:
            a = blk.self_attn
            if "qkv_proj" in a._modules or a.qk_norm or a.temperature:
                continue
            a.qkv_proj = nn.Linear(a.q_proj.in_features, (a.n_heads + 2 * a.n_kv) * a.hd, bias=False)
            a.qkv_proj.weight = nn.Parameter(torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]).detach(),
                                             requires_grad=False)
            if not hasattr(self, "rope_heads"):  # every block has the same heads: one mask for all
                heads = torch.zeros(1, 1, a.n_heads + 2 * a.n_kv, 1)
                heads[:, :, :a.n_heads + a.n_kv] = 1.0
                self.register_buffer("rope_heads", heads, persistent=False)  # 1: rotated (q, k), 0: passed (v)
            del a.q_proj, a.k_proj, a.v_proj
        return self

    def rope_from_positions(self) -> "MobileLLM":
        """For an export copy: RoPE's cos/sin computed per call from the positions (T x D angles, fp32 as Hugging
        Face and optimum-executorch compute them) instead of gathered from [max_seq_len, D] tables: the tables are
        0.55 MB of a 125M file at 1,068 positions (1 MB at 2,048); a decode step does 64 sin/cos more."""
        inv = 1.0 / (self.args.rope_theta ** (torch.arange(0, self.args.head_dim, 2, dtype=torch.float64)
                                              / self.args.head_dim))
        inv = inv.repeat_interleave(2) if self.args.rope_interleaved else inv.repeat(2)  # the tables' column layout
        self.register_buffer("rope_inv", inv.float().to(self.rope_rot.device), persistent=False)
        self.rope_cos = self.rope_sin = None
        return self

    def tie_output_module(self) -> "MobileLLM":
        """Give the shared output projection its own nn.Linear holding the *same* Parameter as the
        embedding, so module-swapping quantizers (torchao) see and quantize it. For export copies."""
        if self.args.share_embedding and "lm_head" not in self._modules:
            self.lm_head = nn.Linear(self.args.dim, self.args.vocab_size, bias=False)
            self.lm_head.weight = self.model.embed_tokens.weight
        return self


def random_weights_label(seed: int) -> str:
    """How manifests and reports name seeded random weights (one spelling, so runs can reuse artifacts)."""
    return f"random (seed {seed}; no checkpoint given)"


def build(args: ModelArgs, seed: int = 0, max_seq_len: int | None = None, kv_kind: str = "eager") -> MobileLLM:
    """A model with seeded random weights (latency does not depend on weight values)."""
    g = torch.Generator().manual_seed(seed)
    m = MobileLLM(args, max_seq_len=max_seq_len, kv_kind=kv_kind)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02, generator=g)
    return m.eval().requires_grad_(False)
