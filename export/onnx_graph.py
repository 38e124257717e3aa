"""The ONNX decode/prefill graph: the model as onnxruntime-genai's model builder would write a LLaMA, from this
project's own modules (one model definition; layer sharing as the model's schedule says).

    inputs   input_ids [1, T] int64; attention_mask [1, total] int64 (ones: total = positions held after this
             step); past_key_values.N.key / .value [1, Hkv, S, D], one pair per *executed* block
    outputs  logits [1, 1, V] (the last position's, what a generator samples from: onnxruntime-genai's builder
             writes this with its `prune_lm_head` option, and its runtime reads either shape), or [1, T, V] with
             `full_logits`; present.N.key / .value [1, Hkv, S, D]: the same buffers, written in place

S is the cache capacity: onnxruntime-genai allocates one buffer per pair and binds it as both past and present
(`past_present_share_buffer`), so a step copies no cache. Per executed block the attention is one
GroupQueryAttention (export/onnx_gqa.py) fed by one packed q/k/v MatMul, RoPE fused into it where the block
applies plain RoPE (R1's QK-norm after RoPE, NoPE blocks and attention temperature run outside it), norms are
SimplifiedLayerNormalization (onnxruntime fuses each with its residual Add at load), and every weight is a MatMul with a constant [in, out] operand, which the
quantizers of quant/onnx.py see (a stored block run twice reads the same initializers)."""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from mobilellm.models.model import RMSNorm, apply_rope, l2_norm

OPSET = 23  # RMSNormalization; onnxruntime (and -mobile) 1.23 or newer
INPUTS = ("input_ids", "attention_mask")
PAST, PRESENT = "past_key_values.%d.%s", "present.%d.%s"


def io_names(n_executed: int) -> tuple[list[str], list[str]]:
    kv = [(i, w) for i in range(n_executed) for w in ("key", "value")]
    return list(INPUTS) + [PAST % p for p in kv], ["logits"] + [PRESENT % p for p in kv]


class _LinearT(nn.Module):
    """y = x @ W^T with W^T stored: the graph gets MatMul(x, initializer) and no Transpose."""

    def __init__(self, weight_t: torch.Tensor):
        super().__init__()
        self.weight_t = nn.Parameter(weight_t.detach().contiguous(), requires_grad=False)

    @classmethod
    def of(cls, *linears: nn.Linear, release: bool = False) -> "_LinearT":
        """One MatMul for several linears reading the same input (q/k/v): their outputs side by side."""
        w = torch.cat([lin.weight.detach() for lin in linears]).t()
        if release:  # the caller's model is ours (consumed): its copies of these weights go now
            for lin in linears:
                lin.weight = nn.Parameter(torch.empty(0), requires_grad=False)
        return cls(w)

    def forward(self, x):
        return x @ self.weight_t


class _RMSNormOp(nn.Module):
    """F.rms_norm, which the exporter writes as one RMSNormalization op (opset 23) instead of seven."""

    def __init__(self, norm):
        super().__init__()
        self.weight, self.eps = norm.weight, norm.eps

    def forward(self, x):
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


class _Slot(nn.Module):
    """One executed block's cache pair: `past` in, `present` out (the same buffer at run time)."""
    past = present = None


class _GQAAttention(nn.Module):
    def __init__(self, attn, args, release: bool):
        super().__init__()
        self.H, self.Hkv, self.D, self.eps = attn.n_heads, attn.n_kv, attn.hd, attn.eps
        self.use_rope, self.qk_norm, self.temperature = attn.use_rope, attn.qk_norm, attn.temperature
        # GroupQueryAttention rotates q/k itself when RoPE is the last thing done to them (head_dim % 16 == 0)
        self.fused_rope = self.use_rope and not self.qk_norm and not self.temperature and self.D % 16 == 0
        self.interleaved = args.rope_interleaved
        self.qkv = _LinearT.of(attn.q_proj, attn.k_proj, attn.v_proj, release=release)
        self.o_proj = _LinearT.of(attn.o_proj, release=release)

    def forward(self, x, ctx, input_pos, start, slot):
        B, T, _ = x.shape
        qkv = self.qkv(x)  # [B, T, (H + 2 Hkv) D]
        if (self.use_rope and not self.fused_rope) or self.qk_norm or self.temperature:
            q, k, v = qkv.split([self.H * self.D, self.Hkv * self.D, self.Hkv * self.D], dim=-1)
            q, k = q.view(B, T, self.H, self.D), k.view(B, T, self.Hkv, self.D)  # [B, T, H(kv), D]
            if self.use_rope:
                q, k = apply_rope(q, ctx["cos"], ctx["sin"], ctx["rot"]), apply_rope(k, ctx["cos"], ctx["sin"], ctx["rot"])
            if self.qk_norm:  # after RoPE, as in Llama4TextAttention
                q, k = l2_norm(q, self.eps), l2_norm(k, self.eps)
            if self.temperature:
                q = q * ctx["temp"]
            qkv = torch.cat([q.reshape(B, T, -1), k.reshape(B, T, -1), v], dim=-1)
        pk, pv = slot.past
        y, slot_k, slot_v = torch.ops.mobilellm.gqa(qkv, pk, pv, ctx["seqlens_k"], ctx["total"], ctx["cos_cache"],
                                                    ctx["sin_cache"], self.H, self.Hkv, self.fused_rope,
                                                    self.interleaved, self.D ** -0.5)
        slot.present = (slot_k, slot_v)
        return self.o_proj(y)  # [B, T, dim]


class _MLP(nn.Module):
    def __init__(self, mlp, release: bool):
        super().__init__()
        self.gate_proj = _LinearT.of(mlp.gate_proj, release=release)
        self.up_proj = _LinearT.of(mlp.up_proj, release=release)
        self.down_proj = _LinearT.of(mlp.down_proj, release=release)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class GenaiGraph(nn.Module):
    """forward(input_ids, attention_mask, past) -> (logits, presents). Built from a MobileLLM, sharing its
    embedding and norm parameters; `release=True` (the model is the caller's to consume) drops the model's
    copies of the weights it repacks as they are packed."""

    def __init__(self, model, release: bool = False, last_logits_only: bool = False):
        super().__init__()
        from mobilellm.export import onnx_gqa  # noqa: F401  registers mobilellm::gqa
        a = model.args
        self.last_logits_only = last_logits_only
        self.args, self.schedule, self.max_seq_len = a, list(model.block_schedule), model.max_seq_len
        dec = model.model
        self.embed_tokens, self.norm = dec.embed_tokens, _RMSNormOp(dec.norm)
        self.layers = nn.ModuleList()
        for blk in dec.layers:
            b = copy.copy(blk)  # the stored block's norms; its attention and MLP repacked
            b._modules = dict(blk._modules)
            b.self_attn, b.mlp = _GQAAttention(blk.self_attn, a, release), _MLP(blk.mlp, release)
            b.input_layernorm, b.post_attention_layernorm = _RMSNormOp(blk.input_layernorm), _RMSNormOp(blk.post_attention_layernorm)
            self.layers.append(b)
        head = model._modules.get("lm_head")  # the model's own rule (MobileLLM.forward): a head module if it has one
        tied = head is None or head.weight is dec.embed_tokens.weight
        self.head = None if tied else _LinearT.of(head, release=release)
        self.slots = [_Slot() for _ in self.schedule]  # one cache pair per executed block
        self.register_buffer("rope_cos", model.rope_cos, persistent=False)  # [S, D]: outside-GQA RoPE
        self.register_buffer("rope_sin", model.rope_sin, persistent=False)
        self.register_buffer("rope_rot", model.rope_rot, persistent=False)
        self.register_buffer("attn_temp", model.attn_temp, persistent=False)
        half = model.rope_cos[:, 0::2] if a.rope_interleaved else model.rope_cos[:, :a.head_dim // 2]
        self.register_buffer("cos_cache", half.contiguous(), persistent=False)  # [S, D/2]: frequency i in column i
        sin_half = model.rope_sin[:, 0::2] if a.rope_interleaved else model.rope_sin[:, :a.head_dim // 2]
        self.register_buffer("sin_cache", sin_half.contiguous(), persistent=False)
        self.outside_rope = any(isinstance(l.self_attn, _GQAAttention) and (l.self_attn.use_rope and not l.self_attn.fused_rope)
                                for l in self.layers)
        self.eval()

    def forward(self, input_ids, attention_mask, past):
        T, total = input_ids.shape[1], attention_mask.shape[1]
        ctx = {"seqlens_k": (attention_mask.sum(1) - 1).to(torch.int32),  # [B]: index of the last position held
               "total": torch.full((), total, dtype=torch.int32), "cos_cache": self.cos_cache, "sin_cache": self.sin_cache}
        if self.outside_rope or self.attn_temp is not None:
            pos = torch.arange(total - T, total)  # [T]: this step's positions
            hd = self.args.head_dim
            ctx.update(cos=self.rope_cos[pos].view(1, -1, 1, hd), sin=self.rope_sin[pos].view(1, -1, 1, hd),
                       rot=self.rope_rot, temp=None if self.attn_temp is None else self.attn_temp[pos].view(1, -1, 1, 1))
        for slot, kv in zip(self.slots, past):
            slot.past = kv
        h = self.embed_tokens(input_ids)  # [1, T, dim]
        for i, layer in enumerate(self.schedule):  # immediate repeat: L0,L0,L1,L1,...
            h = self.layers[layer](h, ctx, None, None, self.slots[i])
        h = self.norm(h)  # over every row: fused with the last residual sum (SkipSimplifiedLayerNormalization)
        if self.last_logits_only:  # the builder's prune_lm_head: Gather(-1) + Unsqueeze, then the head over one row;
            h = h[:, -1].unsqueeze(1)  # logits [1, 1, V], a static 1 onnxruntime-genai detects (Model::IsPruned)
        logits = self.head(h) if self.head is not None else F.linear(h, self.embed_tokens.weight)
        return logits, [s.present for s in self.slots]


def export_float(model, path, max_seq_len: int, release: bool = False, full_logits: bool = False) -> None:
    """The fp32 graph to `path`, its tensors streamed into `<path>.data` (no proto copy of them). Its logits are the
    last position's ([1, 1, V]) unless `full_logits` ([1, T, V])."""
    import onnx
    from mobilellm.export import onnx_gqa
    a = model.args
    g = GenaiGraph(model, release=release, last_logits_only=not full_logits)
    T, total, S = 2, 5, 8  # sample sizes other than 0/1, which torch.export would specialise
    n = len(g.schedule)  # executed blocks
    past = [tuple(torch.zeros(1, a.n_kv_heads, S, a.head_dim) for _ in range(2)) for _ in range(n)]
    seq = torch.export.Dim("sequence_length", min=1, max=max_seq_len)
    tot = torch.export.Dim("total_sequence_length", min=1, max=max_seq_len)
    cap = torch.export.Dim("past_sequence_length", min=2, max=max_seq_len)
    shapes = {"input_ids": {1: seq}, "attention_mask": {1: tot}, "past": [({2: cap}, {2: cap})] * n}
    ins, outs = io_names(n)
    prog = torch.onnx.export(g, (torch.zeros(1, T, dtype=torch.long), torch.ones(1, total, dtype=torch.long), past),
                             dynamo=True, dynamic_shapes=shapes, input_names=ins, output_names=outs,
                             opset_version=OPSET, verbose=False, custom_translation_table=onnx_gqa.TRANSLATIONS)
    prog.save(str(path), external_data=True)
    for v in prog.model.graph.initializers.values():  # the IR's references to the model's parameters: the
        v.const_value = None                         # exporter keeps its graph alive after `del prog`
    del prog, g
    proto = onnx.load(str(path), load_external_data=False)  # the graph only; the data file stays
    for n in proto.graph.node:  # per-node exporter notes: local source paths and stack traces
        del n.metadata_props[:]
        n.doc_string = ""
    fuse_norms(proto.graph)
    onnx.save(proto, str(path))


def fuse_norms(graph) -> int:
    """onnxruntime's norm ops, as its model builder writes them: RMSNormalization becomes
    SimplifiedLayerNormalization, and one fed by a residual Add becomes SkipSimplifiedLayerNormalization
    (com.microsoft: the Add and the norm in one kernel; output 3 is the sum, which the next residual reads).
    onnxruntime's own optimizer does not fuse these: the sum has a second reader. Returns the fused count."""
    from onnx import helper
    consts = {i.name for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    fused = 0
    for n in list(graph.node):
        if n.op_type != "RMSNormalization":
            continue
        eps = next((a.f for a in n.attribute if a.name == "epsilon"), 1e-5)
        add = producer.get(n.input[0])
        if add is None or add.op_type != "Add" or consts & set(add.input):  # not a residual sum of two activations
            n.op_type = "SimplifiedLayerNormalization"
            continue
        skip = helper.make_node("SkipSimplifiedLayerNormalization", [add.input[0], add.input[1], n.input[1]],
                                [n.output[0], "", "", add.output[0]], name=n.name + "_skip", domain="com.microsoft",
                                epsilon=eps)
        at = list(graph.node).index(add)
        graph.node.remove(n)
        graph.node.remove(add)
        graph.node.insert(at, skip)
        fused += 1
    return fused  # (the model already imports com.microsoft: GroupQueryAttention)
