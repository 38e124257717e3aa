"""onnxruntime's GroupQueryAttention (com.microsoft) as a torch custom op, so `torch.onnx.export` writes the
attention of each executed block as the one fused node onnxruntime-genai's model builder emits for LLaMA:

    GroupQueryAttention(packed qkv [B, T, (H + 2 Hkv) D], -, -, past_key, past_value [B, Hkv, S, D],
                        seqlens_k [B] int32, total_sequence_length int32, cos_cache, sin_cache [S, D/2])
        -> output [B, T, H D], present_key, present_value [B, Hkv, S, D]

with the cache a fixed buffer of S positions that past and present share (`past_present_share_buffer`): the
step writes its T keys/values at positions total-T .. total-1 and attends causally over the first `total`.
RoPE is applied inside when `do_rotary` (half-split, or interleaved pairs); positions come from seqlens_k.

The torch side (`gqa`) is the same computation written with plain ops: it is what torch.export traces through
(its fake version gives the shapes) and what the tests hold the onnxruntime kernel to. Attribute and input
meanings: onnxruntime docs/ContribOperators.md, com.microsoft.GroupQueryAttention."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


@torch.library.custom_op("mobilellm::gqa", mutates_args=())
def gqa(qkv: Tensor, past_k: Tensor, past_v: Tensor, seqlens_k: Tensor, total_len: Tensor, cos: Tensor, sin: Tensor,
        num_heads: int, kv_num_heads: int, do_rotary: bool, interleaved: bool,
        scale: float) -> tuple[Tensor, Tensor, Tensor]:
    B, T, _ = qkv.shape
    D, H, Hkv = past_k.shape[3], num_heads, kv_num_heads
    q, k, v = qkv.split([H * D, Hkv * D, Hkv * D], dim=-1)
    q, k, v = q.view(B, T, H, D), k.view(B, T, Hkv, D), v.view(B, T, Hkv, D)
    total = int(total_len)
    start = total - T
    if do_rotary:
        c, s = cos[start:total][None, :, None], sin[start:total][None, :, None]  # [1, T, 1, D/2]
        q, k = _rotate(q, c, s, interleaved), _rotate(k, c, s, interleaved)
    pk, pv = past_k.clone(), past_v.clone()
    pk[:, :, start:total] = k.transpose(1, 2)
    pv[:, :, start:total] = v.transpose(1, 2)
    mask = torch.arange(total)[None, :] <= torch.arange(start, total)[:, None]  # [T, total]
    y = F.scaled_dot_product_attention(q.transpose(1, 2), pk[:, :, :total], pv[:, :, :total], attn_mask=mask,
                                       scale=scale, enable_gqa=True)  # [B, H, T, D]
    return y.transpose(1, 2).reshape(B, T, H * D), pk, pv


def _rotate(x, c, s, interleaved: bool):
    if interleaved:  # pairs (x[2i], x[2i+1]) rotate by frequency i
        x1, x2 = x[..., 0::2], x[..., 1::2]
        return torch.stack([x1 * c - x2 * s, x2 * c + x1 * s], -1).flatten(-2)
    h = x.shape[-1] // 2  # halves (x[i], x[i + D/2]) rotate by frequency i
    x1, x2 = x[..., :h], x[..., h:]
    return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], -1)


@gqa.register_fake
def _(qkv, past_k, past_v, seqlens_k, total_len, cos, sin, num_heads, kv_num_heads, do_rotary, interleaved, scale):
    B, T, _ = qkv.shape
    return qkv.new_empty(B, T, num_heads * past_k.shape[3]), torch.empty_like(past_k), torch.empty_like(past_v)


def _schema():
    """GroupQueryAttention's signature as far as this graph uses it (onnx ships no com.microsoft schemas)."""
    import onnx
    S = onnx.defs.OpSchema
    opt = S.FormalParameterOption.Optional
    P = lambda name, t, o=S.FormalParameterOption.Single: S.FormalParameter(name, t, param_option=o)  # noqa: E731
    ins = [P("query", "T"), P("key", "T", opt), P("value", "T", opt), P("past_key", "T", opt),
           P("past_value", "T", opt), P("seqlens_k", "M"), P("total_sequence_length", "M"),
           P("cos_cache", "T", opt), P("sin_cache", "T", opt)]
    outs = [P("output", "T"), P("present_key", "T"), P("present_value", "T")]
    attrs = [S.Attribute(n, t, "") for n, t in (("num_heads", S.AttrType.INT), ("kv_num_heads", S.AttrType.INT),
                                                ("do_rotary", S.AttrType.INT), ("rotary_interleaved", S.AttrType.INT),
                                                ("scale", S.AttrType.FLOAT))]
    return S("GroupQueryAttention", "com.microsoft", 1, inputs=ins, outputs=outs, attributes=attrs,
             type_constraints=[("T", ["tensor(float)"], ""), ("M", ["tensor(int32)"], "")])


def to_onnx(qkv, past_k, past_v, seqlens_k, total_len, cos, sin, num_heads, kv_num_heads, do_rotary, interleaved,
            scale):
    """The `custom_translation_table` entry for torch.onnx.export (dynamo): one GroupQueryAttention node."""
    from onnxscript.values import Op, Opset
    op = Op(Opset("com.microsoft", 1), "GroupQueryAttention", _schema())
    return op(qkv, None, None, past_k, past_v, seqlens_k, total_len, cos if do_rotary else None,
              sin if do_rotary else None, num_heads=num_heads, kv_num_heads=kv_num_heads, do_rotary=int(do_rotary),
              rotary_interleaved=int(interleaved), scale=float(scale))


TRANSLATIONS = {torch.ops.mobilellm.gqa.default: to_onnx}
