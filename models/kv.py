"""Swappable attention + KV-cache pieces, one instance per executed block.

Every kind takes q [B, T, H, D], k/v [B, T, Hkv, D] (RoPE applied) and the start position
input_pos [1], writes k/v at positions input_pos..input_pos+T-1, attends causally over the cache
and returns [B, T, H*D]. They differ only in how the export backends want the cache expressed:

  eager   buffers [B, Hkv, S, D], `index_copy_` + SDPA: the reference
  custom  buffers [B, S, Hkv, D], ExecuTorch's `llama::update_cache` + `llama::custom_sdpa`
  custom-int8  the same layout in int8 with per-token scales: `llama::custom_quantized_sdpa`
  state   buffers [B, Hkv, S, D], written as a slice at input_pos (Core ML turns it into state writes)
  io      no buffers: past k/v come in as tensors and the grown cache goes out (ONNX, which has
          no mutable state); `past` holds the cache in, `present` the cache out
  train   no cache: causal attention over the given sequence only, batched (training)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _causal_mask(input_pos, T: int, S: int, device) -> torch.Tensor:
    # [T, S] bool: query t (absolute position input_pos+t) may see key s iff s <= input_pos+t
    q_pos = input_pos[:1] + torch.arange(T, device=device)
    return torch.arange(S, device=device)[None, :] <= q_pos[:, None]


def _attend(q, k_all, v_all, input_pos):
    # q [B, T, H, D]; k_all/v_all [B, Hkv, S, D] -> [B, T, H*D]
    B, T, H, D = q.shape
    mask = _causal_mask(input_pos, T, k_all.shape[2], q.device)
    y = F.scaled_dot_product_attention(q.transpose(1, 2), k_all, v_all, attn_mask=mask, enable_gqa=True)
    return y.transpose(1, 2).reshape(B, -1, H * D)


def start_position(input_pos, T: int, S: int):
    """The start position as a SymInt torch.export can bound: 0 <= start, start + T <= S."""
    start = input_pos[0].item()
    torch._check(start >= 0)
    torch._check(start + T <= S)
    return start


class _BufferKV(nn.Module):
    layout = "BHSD"
    uses_start = False  # True: forward needs `start`, the start position as an int (see _start)

    def __init__(self, batch, max_seq_len, n_heads, n_kv, head_dim):
        super().__init__()
        shape = (batch, n_kv, max_seq_len, head_dim) if self.layout == "BHSD" else (batch, max_seq_len, n_kv, head_dim)
        self.register_buffer("k_cache", torch.zeros(shape), persistent=False)
        self.register_buffer("v_cache", torch.zeros(shape), persistent=False)

    def reset(self):
        self.k_cache.zero_()
        self.v_cache.zero_()


class EagerKV(_BufferKV):
    def forward(self, q, k, v, input_pos, start=None):
        pos = input_pos[:1] + torch.arange(k.shape[1], device=k.device)
        self.k_cache.index_copy_(2, pos, k.transpose(1, 2))
        self.v_cache.index_copy_(2, pos, v.transpose(1, 2))
        return _attend(q, self.k_cache, self.v_cache, input_pos)


class StateKV(_BufferKV):
    """For Core ML (torch.export -> ct.convert). Two things the converter needs: the write is a
    slice at a data-dependent start (slice_update -> write_state; index_put_ with a position
    tensor fails to convert), and GQA is done by grouping the query heads of each kv head,
    since Core ML's SDPA has no enable_gqa (and this avoids expanding the cache)."""

    uses_start = True

    def forward(self, q, k, v, input_pos, start=None):
        B, T, H, D = q.shape
        Hkv, S = self.k_cache.shape[1], self.k_cache.shape[2]
        G = H // Hkv
        self.k_cache[:, :, start:start + T] = k.transpose(1, 2)  # slice_scatter -> state write
        self.v_cache[:, :, start:start + T] = v.transpose(1, 2)
        qg = q.view(B, T, Hkv, G, D).permute(0, 2, 3, 1, 4).reshape(B, Hkv, G * T, D)  # [B, Hkv, G*T, D]
        mask = _causal_mask(input_pos, T, S, q.device).repeat(G, 1)  # [G*T, S]
        y = F.scaled_dot_product_attention(qg, self.k_cache, self.v_cache, attn_mask=mask)
        return y.view(B, Hkv, G, T, D).permute(0, 3, 1, 2, 4).reshape(B, T, H * D)  # [B, T, H*D]


class CustomOpKV(_BufferKV):
    """ExecuTorch's LLM ops: cache layout [B, S, Hkv, D], GQA handled inside custom_sdpa."""

    layout = "BSHD"
    uses_start = True

    def __init__(self, *a):
        from mobilellm.export.executorch_blas import load_llm_kernels
        load_llm_kernels()  # registers llama::*, bound to ExecuTorch's BLAS as in every session of this process
        super().__init__(*a)

    def forward(self, q, k, v, input_pos, start=None):
        B, T, H, D = q.shape
        torch.ops.llama.update_cache(k, self.k_cache, start)
        torch.ops.llama.update_cache(v, self.v_cache, start)
        y = torch.ops.llama.custom_sdpa(q, self.k_cache, self.v_cache, start, None, 0.0, True)
        return y.view(B, -1, H * D)


class QuantizedCustomOpKV(CustomOpKV):
    """ExecuTorch's int8 cache (its QuantizedKVCache + QuantizedSDPA, examples/models/llama): keys and values
    stored int8, one asymmetric scale and zero point per position and head (per token), written with
    `llama::update_cache`; the query quantized the same way per call; attention by `llama::custom_quantized_sdpa`
    on the integers. A quarter of the fp32 cache's bytes read per decode step."""

    def __init__(self, batch, max_seq_len, n_heads, n_kv, head_dim):
        super().__init__(batch, max_seq_len, n_heads, n_kv, head_dim)
        shape, per = (batch, max_seq_len, n_kv, head_dim), (batch, max_seq_len, n_kv, 1)
        for name in ("k", "v"):
            self.register_buffer(f"{name}_cache", torch.zeros(shape, dtype=torch.int8), persistent=False)
            self.register_buffer(f"{name}_scales", torch.ones(per), persistent=False)
            self.register_buffer(f"{name}_zero_points", torch.zeros(per, dtype=torch.int8), persistent=False)

    @staticmethod
    def _quantize(x):  # [B, T, H, D] -> int8, scales [B, T, H, 1] fp32, zero points [B, T, H, 1] int8
        scales, zps = torch.ops.quantized_decomposed.choose_qparams_per_token_asymmetric.default(x, torch.int8)
        q = torch.ops.quantized_decomposed.quantize_per_token(x, scales, zps, -128, 127, torch.int8)
        return q, scales.to(torch.float32), zps.to(torch.int8)

    def reset(self):
        for name in ("k", "v"):
            getattr(self, f"{name}_cache").zero_()
            getattr(self, f"{name}_scales").fill_(1.0)
            getattr(self, f"{name}_zero_points").zero_()

    def forward(self, q, k, v, input_pos, start=None):
        B, T, H, D = q.shape
        for name, x in (("k", k), ("v", v)):
            xq, xs, xz = self._quantize(x)
            torch.ops.llama.update_cache(xq, getattr(self, f"{name}_cache"), start)
            torch.ops.llama.update_cache(xs, getattr(self, f"{name}_scales"), start)
            torch.ops.llama.update_cache(xz, getattr(self, f"{name}_zero_points"), start)
        qq, qs, qz = self._quantize(q)
        y = torch.ops.llama.custom_quantized_sdpa(qq, self.k_cache, self.v_cache, start, None, 0.0, True, None,
                                                  qz, qs, self.k_zero_points, self.k_scales, self.v_zero_points,
                                                  self.v_scales)
        return y.view(B, -1, H * D)


class IOKV(nn.Module):
    """Growing cache as plain tensors: present = cat(past, new) along the sequence axis."""

    uses_start = False

    def __init__(self, batch, max_seq_len, n_heads, n_kv, head_dim):
        super().__init__()
        self.empty = (batch, n_kv, 0, head_dim)
        self.reset()

    def reset(self):
        self.past = (torch.zeros(self.empty), torch.zeros(self.empty))
        self.present = None

    def forward(self, q, k, v, input_pos, start=None):
        pk, pv = self.past  # [B, Hkv, P, D] with P == input_pos
        k_all = torch.cat([pk, k.transpose(1, 2)], dim=2)
        v_all = torch.cat([pv, v.transpose(1, 2)], dim=2)
        self.present = self.past = (k_all, v_all)  # the next call continues from here
        return _attend(q, k_all, v_all, input_pos)


class NoCacheKV(nn.Module):
    """Training: every call is a whole sequence from position 0, so nothing is kept."""

    uses_start = False

    def __init__(self, *a):
        super().__init__()

    def reset(self):
        pass

    def forward(self, q, k, v, input_pos, start=None):
        B, T, H, D = q.shape
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                           is_causal=True, enable_gqa=True)
        return y.transpose(1, 2).reshape(B, T, H * D)


KV_KINDS = {"eager": EagerKV, "state": StateKV, "custom": CustomOpKV, "custom-int8": QuantizedCustomOpKV, "io": IOKV,
            "train": NoCacheKV}


def make_kv(kind, batch, max_seq_len, n_heads, n_kv, head_dim) -> nn.Module:
    return KV_KINDS[kind](batch, max_seq_len, n_heads, n_kv, head_dim)
