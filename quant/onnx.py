"""Quantization passes over an exported float ONNX graph, with `onnxruntime.quantization`.

Only the weight MatMuls are quantized (every `MatMul` whose right operand is a parameter: the
q/k/v/o, gate/up/down and output projections). Left in float on purpose:
  - the attention MatMuls (q @ k^T, p @ v): both operands are activations, the keys/values cross
    the graph boundary as the cache, and per-tensor int8 of softmax probabilities costs accuracy;
  - MatMuls with another constant (a RoPE rotate-half matrix): no speed to gain, q/k error to add;
  - Gather/GatherND over the embedding and RoPE tables, the causal mask (built with Range/
    LessOrEqual/Where, holding -inf): a quantized mask table gives -inf * 0 = NaN.
The passes, chosen by the scheme's fields (which scheme the backend offers is its table,
export/backends/onnx.py):
  static activations   QDQ static: int8 symmetric per-channel weights, uint8 asymmetric per-tensor
                       activations calibrated on text (MinMax over prefill and decode steps).
  dynamic, per-tensor  int8 per-channel weights, activations quantized per call (DynamicQuantizeLinear).
  float                no pass.
uint8 activations with int8 weights is the pairing MLAS, onnxruntime's CPU GEMM library, runs
natively on both targets: x86 VNNI `vpdpbusd` multiplies u8 by s8, and the ARM64 `udot`/`ummla`
kernels take u8 activations with weights of either sign. int8 activations are fast on ARM but go
through a slow path on x86 (per-channel S8S8 QDQ measured ~10x slower than U8S8 on the build machine).

x86 without VNNI (AVX2 only, e.g. the AMD EPYC build machines) runs U8S8 MatMulInteger with
`vpmaddubsw`, whose int16 pair sums saturate: a full-range per-token activation row against int8
weights came out up to 11% off an exact int64 product (onnxruntime's own docs name the effect and
the cure, U8U8). So every scheme stores its int8 symmetric weights shifted to uint8 with
zero point 128 (`unsigned_weights`): the same integers after the zero point is taken off, exact on
every CPU, and the ARM64 kernels take either sign at the same speed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import onnx
from onnx import numpy_helper

from mobilellm.errors import UserError


def _reader(feeds: Iterable[dict]):
    from onnxruntime.quantization import CalibrationDataReader

    class FeedReader(CalibrationDataReader):  # feeds: {input name: np.ndarray} per model call
        def __init__(self):
            self._it = iter(feeds)

        def get_next(self):
            return next(self._it, None)

    return FeedReader()


def _consumers(graph) -> dict[str, list]:
    """Tensor name -> the nodes that read it."""
    out: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            out.setdefault(i, []).append(n)
    return out


def materialize_transposed_weights(model: onnx.ModelProto, base_dir: Path | None = None) -> list[str]:
    """Replace `Transpose(initializer)` feeding MatMuls with one transposed initializer per source.

    The exporter writes the tied output projection as MatMul(h, Transpose(embed_tokens)), which a
    quantizer skips (its B is not a constant). One copy per *source* keeps a shared weight single.
    `base_dir`: where a graph loaded without its external data finds it (only the sources are read)."""
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    consumers = _consumers(g)
    made: dict[str, str] = {}
    drop = []
    for n in g.node:
        src = n.input[0] if n.op_type == "Transpose" and n.input else None
        perm = [list(a.ints) for a in n.attribute if a.name == "perm"]
        if src not in inits or perm not in ([[1, 0]], []) or len(inits[src].dims) != 2:
            continue
        users = consumers.get(n.output[0], [])
        if not users or not all(c.op_type == "MatMul" and c.input[1] == n.output[0] for c in users):
            continue
        if src not in made:
            made[src] = f"{src}_t"
            w = numpy_helper.to_array(inits[src], base_dir=str(base_dir or ""))
            g.initializer.append(numpy_helper.from_array(w.T.copy(), made[src]))
        for c in consumers[n.output[0]]:
            c.input[1] = made[src]
        drop.append(n)
    for n in drop:
        g.node.remove(n)
    return list(made)


def split_matmuls(model: onnx.ModelProto) -> tuple[list[str], list[str]]:
    """(weight MatMul node names, the other MatMul node names). A weight is an initializer that
    came from a model parameter (`...weight`, `...weight_t`); other constants, such as a RoPE
    rotation matrix, and activation operands stay float."""
    weights = {i.name for i in model.graph.initializer if "weight" in i.name}
    mm = [n for n in model.graph.node if n.op_type == "MatMul"]
    return [n.name for n in mm if n.input[1] in weights], [n.name for n in mm if n.input[1] not in weights]


def per_token_activations(model: onnx.ModelProto) -> int:
    """Turn quantize_dynamic's per-tensor activations into per-token ones, with standard ONNX ops.

    quantize_dynamic writes, per activation x feeding weight MatMuls,
        DynamicQuantizeLinear(x) -> xq, xs, xz   (one uint8 scale and zero point per tensor)
        MatMulInteger(xq, Wq, xz, Wz) -> Cast -> Mul(., Mul(xs, Ws))
    Here the scale and zero point become one per row (token) of x, the paper's per-token min-max:
        s = (max(row max, 0) - min(row min, 0)) / 255,  z = round(-min(row min, 0) / s)
        xq = clip(round(x / s) + z, 0, 255)
    MatMulInteger takes only a scalar activation zero point, so it runs with none and the product is
    corrected by z * colsum(Wq) (Wz is 0: weights are symmetric), after scaling:
        y = Cast(xq @ Wq) * (s * Ws) - (z * s) * colsum(Wq) * Ws.   Returns the quantizers rewritten."""
    from onnx import TensorProto, helper
    _name_nodes(model)
    post: dict[str, list] = {}  # Mul node name -> the correction nodes that follow it
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    consumers = _consumers(g)
    const = lambda name, v: g.initializer.append(numpy_helper.from_array(np.asarray(v, np.float32), name))  # noqa: E731
    const("pt_zero", 0.0)
    const("pt_255", 255.0)
    const("pt_eps", 1e-12)
    g.initializer.append(numpy_helper.from_array(np.array([-1], np.int64), "pt_axis"))
    new_nodes, done, reshaped = [], 0, set()
    for node in list(g.node):
        if node.op_type != "DynamicQuantizeLinear":
            new_nodes.append(node)
            continue
        x, (xq, xs, xz) = node.input[0], node.output
        p = f"{node.name}_pt"
        n = lambda op, ins, out, **kw: helper.make_node(op, ins, [out], name=f"{p}_{out}", **kw)  # noqa: E731
        zf = f"{p}_zf"
        new_nodes += [
            n("ReduceMax", [x, "pt_axis"], f"{p}_mx", keepdims=1), n("ReduceMin", [x, "pt_axis"], f"{p}_mn", keepdims=1),
            n("Max", [f"{p}_mx", "pt_zero"], f"{p}_hi"), n("Min", [f"{p}_mn", "pt_zero"], f"{p}_lo"),
            n("Sub", [f"{p}_hi", f"{p}_lo"], f"{p}_rng"), n("Div", [f"{p}_rng", "pt_255"], f"{p}_s0"),
            n("Max", [f"{p}_s0", "pt_eps"], xs),  # [1, T, 1]: replaces the tensor scale, fed to the scale Muls
            n("Neg", [f"{p}_lo"], f"{p}_nlo"), n("Div", [f"{p}_nlo", xs], f"{p}_z0"), n("Round", [f"{p}_z0"], zf),
            n("Div", [x, xs], f"{p}_xd"), n("Round", [f"{p}_xd"], f"{p}_xr"), n("Add", [f"{p}_xr", zf], f"{p}_xz"),
            n("Clip", [f"{p}_xz", "pt_zero", "pt_255"], f"{p}_xc"),
            n("Cast", [f"{p}_xc"], xq, to=TensorProto.UINT8),
            n("Mul", [zf, xs], f"{p}_zs"),  # z * s, [1, T, 1]
        ]
        for mm in consumers.get(xq, []):
            if mm.op_type != "MatMulInteger":
                raise UserError(f"per-token rewrite: {mm.name} ({mm.op_type}) consumes {xq}; expected MatMulInteger")
            w = numpy_helper.to_array(inits[mm.input[1]])
            wz = numpy_helper.to_array(inits[mm.input[3]]) if len(mm.input) > 3 and mm.input[3] in inits else 0
            if np.any(wz != 0):
                raise UserError(f"per-token rewrite: {mm.name} has non-symmetric weights")
            del mm.input[2:]  # no activation zero point: corrected below
            cast = next(c for c in consumers[mm.output[0]] if c.op_type == "Cast")
            mul = next(m for m in consumers[cast.output[0]] if m.op_type == "Mul")
            scales = next(i for i in mul.input if i != cast.output[0])  # Mul(xs, Ws)
            ws = next(i for i in next(m for m in consumers[xs] if m.output[0] == scales).input if i != xs)
            reshaped |= {xs, xz, scales}
            colsum = f"{mm.name}_colsum_ws"
            g.initializer.append(numpy_helper.from_array(
                (w.astype(np.float32).sum(0) * numpy_helper.to_array(inits[ws]).astype(np.float32)).astype(np.float32),
                colsum))
            out = mul.output[0]
            mul.output[0] = f"{out}_uncorrected"
            new_nodes_after = [helper.make_node("Mul", [f"{p}_zs", colsum], [f"{out}_corr"], name=f"{mm.name}_corr"),
                               helper.make_node("Sub", [mul.output[0], f"{out}_corr"], [out], name=f"{mm.name}_sub")]
            post.setdefault(mul.name, []).extend(new_nodes_after)
        done += 1
    ordered = []
    for node in new_nodes:
        ordered.append(node)
        ordered += post.pop(node.name, [])
    del g.node[:]
    g.node.extend(ordered)
    stale = [v for v in g.value_info if v.name in reshaped]  # the quantizer's scalar shapes, now one per token
    for v in stale:
        g.value_info.remove(v)
    used = {i for node in g.node for i in node.input}
    unused = [t for t in g.initializer if t.name not in used]  # the weight zero points no GEMM reads now
    for t in unused:
        g.initializer.remove(t)
    return done


def unsigned_weights(model: onnx.ModelProto) -> int:
    """Int8 weights as uint8 = W + 128 with zero point Wz + 128, for every MatMulInteger B (dynamic schemes)
    and every DequantizeLinear of a constant (QDQ static): zero point subtracted, the integers are the
    same, but onnxruntime then fuses U8U8 GEMMs instead of its AVX2 U8S8 kernel, which saturates.
    Returns the nodes changed."""
    from onnx import TensorProto
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    zero = "mmi_u8_zero"
    done, seen = 0, {}

    def u8(name):
        if name not in seen:
            seen[name] = f"{name}_u8"
            g.initializer.append(numpy_helper.from_array(
                (numpy_helper.to_array(inits[name]).astype(np.int16) + 128).astype(np.uint8), seen[name]))
        return seen[name]

    for n in g.node:
        if n.op_type == "MatMulInteger":
            w_at, z_at = 1, 3
        elif n.op_type == "DequantizeLinear":
            w_at, z_at = 0, 2
        else:
            continue
        w = n.input[w_at]
        if w not in inits or inits[w].data_type != TensorProto.INT8:
            continue
        ins = list(n.input) + [""] * (z_at + 1 - len(n.input))
        if ins[z_at] and ins[z_at] not in inits:
            continue  # a computed zero point: leave the node alone
        if n.op_type == "MatMulInteger" and not ins[2]:
            if zero not in inits:
                inits[zero] = numpy_helper.from_array(np.array(0, np.uint8), zero)
                g.initializer.append(inits[zero])
            ins[2] = zero
        ins[w_at] = u8(w)
        if ins[z_at]:
            ins[z_at] = u8(ins[z_at])
        else:  # no zero point: int8 0, now uint8 128
            shape = () if n.op_type == "MatMulInteger" else tuple(inits[ins[1]].dims)  # a zero point per scale
            zname = f"{n.name}_zp_u8"
            g.initializer.append(numpy_helper.from_array(np.full(shape, 128, np.uint8), zname))
            ins[z_at] = zname
        del n.input[:]
        n.input.extend(ins)
        done += 1
    used = {i for node in g.node for i in node.input}
    for t in [t for t in g.initializer if t.name not in used]:
        g.initializer.remove(t)
    return done


def share_embedding_table(model: onnx.ModelProto) -> dict:
    """Store the tied embedding once, as the output head's int8 weights: the token Gather reads the
    head's quantized [dim, vocab] matrix (per-vocab-row symmetric scale, the head's own integers and
    zero point) instead of the float table, which goes. Standard ONNX ops only:
        Gather(Wq, ids, axis=1) -> Transpose -> Cast -> Sub(zero point) -> Mul(Gather(scale, ids))
    Run after `unsigned_weights` on a dynamic scheme (MatMulInteger head). Returns the manifest facts."""
    from onnx import TensorProto, helper
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    gathers = [n for n in g.node if n.op_type == "Gather" and n.input[0].endswith("embed_tokens.weight")]
    heads = [n for n in g.node if n.op_type == "MatMulInteger" and gathers
             and n.input[1].startswith(gathers[0].input[0] + "_t")]
    if len(gathers) != 1 or len(heads) != 1:
        raise UserError("--quantize-embedding on onnx shares the output head's int8 weights with the token "
                        f"gather; this graph has {len(gathers)} table gather(s) and {len(heads)} quantized head(s)")
    gather, head = gathers[0], heads[0]
    table, wq, wz = gather.input[0], head.input[1], head.input[3]
    scale = [i for i in (table + "_t_scale",) if i in inits]
    if not scale or wq not in inits or wz not in inits:
        raise UserError("--quantize-embedding on onnx: the output head's scale or zero point is not a constant")
    ids, out, p = gather.input[1], gather.output[0], "emb_shared"
    n = lambda op, ins, o, **kw: helper.make_node(op, ins, [o], name=f"{p}_{o}", **kw)  # noqa: E731
    g.initializer.append(numpy_helper.from_array(np.array([-1], np.int64), f"{p}_last"))
    zero_per_row = len(inits[wz].dims) > 0
    nodes = [n("Gather", [wq, ids], f"{p}_q", axis=1),  # [dim, 1, T]
             n("Transpose", [f"{p}_q"], f"{p}_qt", perm=[1, 2, 0]),  # [1, T, dim]
             n("Cast", [f"{p}_qt"], f"{p}_qf", to=TensorProto.FLOAT)]
    if zero_per_row:
        nodes += [n("Gather", [wz, ids], f"{p}_z", axis=0), n("Cast", [f"{p}_z"], f"{p}_zf0", to=TensorProto.FLOAT),
                  n("Unsqueeze", [f"{p}_zf0", f"{p}_last"], f"{p}_zf")]
    else:
        nodes += [n("Cast", [wz], f"{p}_zf", to=TensorProto.FLOAT)]
    nodes += [n("Sub", [f"{p}_qf", f"{p}_zf"], f"{p}_c"),
              n("Gather", [scale[0], ids], f"{p}_s0", axis=0), n("Unsqueeze", [f"{p}_s0", f"{p}_last"], f"{p}_s"),
              helper.make_node("Mul", [f"{p}_c", f"{p}_s"], [out], name=f"{p}_out")]
    at = list(g.node).index(gather)
    g.node.remove(gather)
    for i, node in enumerate(nodes):
        g.node.insert(at + i, node)
    float_bytes = int(np.prod(inits[table].dims)) * 4
    if not any(table in node.input for node in g.node):
        g.initializer.remove(inits[table])
    return {"embedding": "int8 per-row symmetric, stored once: the token gather reads the output head's "
                         "quantized weights (Gather axis 1 + dequantize)", "embedding_float_bytes_dropped": float_bytes}


def _store_unsigned(q: onnx.ModelProto, dst: Path, what: str) -> str:
    """`unsigned_weights` on the quantized model, written back to `dst`; the manifest's description."""
    n = unsigned_weights(q)
    _save_single(q, dst)
    return f"uint8 = int8 + 128, zero point 128, in {n} {what} (U8U8: exact on x86 without VNNI, whose U8S8 kernel saturates)"


def _save_single(q: onnx.ModelProto, dst: Path) -> None:
    """The quantized model back into `dst`, tensors inline when they fit in one protobuf (int8 does up to
    ~1.5B parameters); the quantizer's external data file, now read into `q`, goes."""
    from mobilellm.export.backends.onnx import save_model
    for f in Path(dst).parent.glob(Path(dst).name + ".data"):
        f.unlink()
    save_model(q, dst, inline=True)


def _name_nodes(model: onnx.ModelProto) -> None:
    for i, n in enumerate(model.graph.node):  # the quantizers address nodes by name
        if not n.name:
            n.name = f"{n.op_type}_{i}"


# Float weight bytes one onnxruntime quantize_dynamic call may hold. It keeps three copies of the model it
# quantizes at once (the loaded model, a deep copy saved for shape inference, and that copy reloaded), so a
# 1.5B model (6 GB of fp32) in one call would peak near 19 GB; in calls of this many float weight bytes, ~1.5 GB.
PASS_WEIGHT_BYTES = 1 << 29


def _passes(model: onnx.ModelProto, weights: list[str], budget: int) -> list[list[str]]:
    """The weight MatMuls in groups of at most `budget` float bytes, in graph order. MatMuls that share an
    activation (q/k/v, gate/up) or a weight (a block run twice) stay in one group: onnxruntime gives each
    activation one DynamicQuantizeLinear and each weight one quantized initializer per call."""
    inits = {i.name: i for i in model.graph.initializer}
    nodes = {n.name: n for n in model.graph.node}
    parent = {w: w for w in weights}

    def find(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a
    by_operand: dict[str, str] = {}
    for w in weights:
        for operand in nodes[w].input[:2]:
            if operand in by_operand:
                parent[find(w)] = find(by_operand[operand])
            by_operand.setdefault(operand, w)
    groups: dict[str, list[str]] = {}
    for w in weights:
        groups.setdefault(find(w), []).append(w)
    out, size = [[]], 0
    for g in groups.values():  # dict order: first appearance in the graph
        b = sum(4 * int(np.prod(inits[i].dims)) for i in {nodes[n].input[1] for n in g})
        if out[-1] and size + b > budget:
            out.append([])
            size = 0
        out[-1] += g
        size += b
    return out


def _dynamic_in_passes(prepared: Path, weights: list[str], common: dict) -> tuple[Path, int]:
    """onnxruntime's quantize_dynamic over the weight MatMuls, one group (`_passes`) per call; returns the
    quantized model (beside `prepared`, its tensors in the calls' data files) and the number of calls.

    Each call sees the float weights of its own group as initializers and every other weight as a graph
    input: later groups' float weights (a MatMul whose B is not a constant is left alone: MatMulConstBOnly)
    and earlier calls' int8 ones, so neither is loaded. The three copies a call holds are of one group."""
    from onnx import helper
    from onnxruntime.quantization import quantize_dynamic
    m = onnx.load(str(prepared), load_external_data=False)
    groups = _passes(m, weights, PASS_WEIGHT_BYTES)
    nodes = {n.name: n for n in m.graph.node}
    float_weights = {nodes[n].input[1] for g in groups for n in g}
    held = {i.name: i for i in m.graph.initializer if i.name in float_weights}  # external refs, not bytes
    as_input = lambda t: helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))  # noqa: E731
    for name in held:  # every weight starts as an input
        m.graph.initializer.remove(held[name])
        m.graph.input.append(as_input(held[name]))
    for k, group in enumerate(groups):
        mine = {nodes[n].input[1] for n in group}
        for i in [i for i in m.graph.input if i.name in mine]:
            m.graph.input.remove(i)
            m.graph.initializer.append(held.pop(i.name))
        before = {i.name for i in m.graph.initializer}
        step_in = prepared.with_name(f"{prepared.name}.pass{k}.onnx")  # beside the data files it reads
        onnx.save(m, str(step_in))
        out = prepared.with_name(f"{prepared.name}.pass{k}.out.onnx")
        quantize_dynamic(str(step_in), str(out), extra_options={"WeightSymmetric": True},
                         **{**common, "nodes_to_quantize": group, "use_external_data_format": True})
        m = onnx.load(str(out), load_external_data=False)
        for t in [t for t in m.graph.initializer if t.name not in before and t.data_location == onnx.TensorProto.EXTERNAL]:
            m.graph.initializer.remove(t)  # this call's int8 weights: inputs for the next calls
            m.graph.input.append(as_input(t))
            held[t.name] = t
    for i in [i for i in m.graph.input if i.name in held]:  # all back as initializers, bytes where they lie
        m.graph.input.remove(i)
        m.graph.initializer.append(held.pop(i.name))
    final = prepared.with_name(f"{prepared.name}.quantized.onnx")
    onnx.save(m, str(final))
    return final, len(groups)


def quantize(src: Path, dst: Path, scheme, feeds: Iterable[dict] | None = None, share_embedding: bool = False,
             group_size: int | None = None) -> dict:
    """Write the `scheme` (a quant.schemes.Scheme) version of float model `src` to `dst`; returns the
    manifest's quant facts. `share_embedding`: the token gather reads the head's quantized weights
    (`share_embedding_table`, or quant/onnx_nbits.py's; dynamic schemes only)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    blockwise = scheme.weight_granularity == "per-group" and scheme.activation_granularity == "per-block"
    if scheme.quantized and (scheme.weights, scheme.weight_granularity) != ("int8", "per-channel") and not blockwise:
        raise UserError(f"the ONNX passes quantize weights to int8 per channel, or in blocks for MatMulNBits; "
                        f"{scheme.name} asks for {scheme.weights} {scheme.weight_granularity}")
    src, dst = Path(src), Path(dst)
    if blockwise:
        return _blockwise(src, dst, scheme, group_size or scheme.group_size, share_embedding)
    data = src.with_name(src.name + ".data")  # the exporter's float tensors (export/backends/onnx.py)
    from mobilellm.export.backends.onnx import is_large, save_model
    large = is_large(data.stat().st_size if data.exists() else 0)  # over protobuf's 2 GB: intermediates keep theirs
    if share_embedding and scheme.activations != "dynamic":  # the backend's embedding_schemes refuses it first
        raise UserError(f"--quantize-embedding on onnx needs a dynamic scheme; {scheme.name} is {scheme.activations}")
    if not scheme.quantized:
        if large:
            raise UserError("an fp32 ONNX file of a model over 2 GB needs its weights in an external data file, "
                            "which this exporter does not publish; export it quantized (w8a8, w8a8-static)")
        save_model(onnx.load(str(src)), dst, inline=True)
        return {"format": "float", "activation_type": "float32", "weight_type": "float32"}
    # The graph only: the float tensors stay in the data file, which onnxruntime's quantizer reads once. Its
    # pre-processing (quant_pre_process: ORT basic optimizations and shape inference) is not run: it held
    # three float copies at once (2.4 GB at 125M, the export's peak) for two constant-folded mask nodes
    # that the session's own optimizer folds at load; the exporter already wrote the shapes.
    model = onnx.load(str(src), load_external_data=False)
    _name_nodes(model)
    transposed = materialize_transposed_weights(model, base_dir=src.parent)
    weights, excluded = split_matmuls(model)
    prepared = src.with_name(dst.name + ".prep.onnx")  # beside the float graph: it reads the same data file
    onnx.save(model, str(prepared))  # new tensors (a transposed table) inline, the rest still in float.onnx.data
    del model
    try:
        common = dict(op_types_to_quantize=["MatMul"], nodes_to_quantize=weights, per_channel=True,
                      reduce_range=False, weight_type=QuantType.QInt8, use_external_data_format=large)
        if scheme.calibrated:
            if feeds is None:
                raise UserError("w8a8 (static) needs calibration inputs")
            quantize_static(str(prepared), str(dst), _reader(feeds), quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QUInt8, calibrate_method=CalibrationMethod.MinMax,
                            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True,
                                           "OpTypesToExcludeOutputQuantization": ["MatMul"]}, **common)
            info = {"format": "QDQ static", "activation_type": "uint8 asymmetric, per-tensor, calibrated (MinMax)"}
            info["weight_storage"] = _store_unsigned(onnx.load(str(dst)), dst, "weight DequantizeLinears")
        elif scheme.activations == "dynamic" and scheme.activation_granularity in ("per-tensor", "per-token"):
            quantized, passes = _dynamic_in_passes(prepared, weights, common)
            info = {"format": "dynamic (MatMulInteger)", "activation_type": "uint8 asymmetric, per-tensor, per call",
                    "quantizer_passes": passes}
            q = onnx.load(str(quantized))
            if scheme.activation_granularity == "per-token":
                n = per_token_activations(q)
                info.update({"format": "dynamic per-token (MatMulInteger, zero-point correction)", "per_token_quantizers": n,
                             "activation_type": "uint8 asymmetric, per token (row min-max), per call"})
            if share_embedding:
                n = unsigned_weights(q)
                info.update(share_embedding_table(q))
                _save_single(q, dst)
                info["weight_storage"] = f"uint8 = int8 + 128, zero point 128, in {n} MatMulIntegers (U8U8: exact on x86 " \
                                         "without VNNI, whose U8S8 kernel saturates)"
            else:
                info["weight_storage"] = _store_unsigned(q, dst, "MatMulIntegers")
        else:
            raise UserError(f"no ONNX pass for {scheme.name} ({scheme.definition()})")
    finally:
        for f in prepared.parent.glob(prepared.name + "*"):
            f.unlink(missing_ok=True)
    info.update(preprocess="none (quant_pre_process skipped: onnxruntime folds the same nodes at session load)",
                weight_type="int8 symmetric, per output channel", quantized_matmuls=len(weights),
                excluded_nodes=excluded, excluded_reason="MatMuls without a weight operand (attention, RoPE); "
                "Gather/GatherND tables, the causal mask and norms stay float", materialized_transposes=transposed)
    return info


def _blockwise(src: Path, dst: Path, scheme, block_size: int, share_embedding: bool) -> dict:
    """MatMulNBits (quant/onnx_nbits.py) over every weight MatMul, read weight by weight from the data file."""
    from mobilellm.quant import onnx_nbits
    bits = {"int8": 8, "int4": 4}[scheme.weights]
    onnx_nbits.check_block_size(block_size)
    model = onnx.load(str(src), load_external_data=False)
    _name_nodes(model)
    transposed = materialize_transposed_weights(model, base_dir=src.parent)
    weights, excluded = split_matmuls(model)
    n = onnx_nbits.nbits_weights(model, src.parent, weights, bits, block_size)
    info = {"format": f"MatMulNBits (com.microsoft), bits {bits}, block {block_size}, accuracy level "
                      f"{onnx_nbits.ACCURACY_LEVEL} (int8 activations per token and block, quantized per call)",
            "quantizer": "onnxruntime.quantization.matmul_nbits_quantizer.DefaultWeightOnlyQuantizer (MLAS, symmetric)",
            "weight_type": f"int{bits} symmetric, blocks of {block_size} input channels (stored uint8 offset by "
                           f"{1 << (bits - 1)}, fp32 scale per block)",
            "activation_type": f"int8 symmetric per token and block of {block_size}, per call (accuracy level 4)",
            "quantized_weights": n, "quantized_matmuls": len(weights), "excluded_nodes": excluded,
            "materialized_transposes": transposed}
    if share_embedding:
        info.update(onnx_nbits.share_embedding(model, bits, block_size))
    from onnx.external_data_helper import load_external_data_for_model
    load_external_data_for_model(model, str(src.parent))  # what stays float (norms, a float table), into the file
    _save_single(model, dst)
    return info
