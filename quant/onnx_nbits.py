"""Block-wise weight quantization for onnxruntime's MatMulNBits (com.microsoft), as onnxruntime-genai's model
builder applies it: onnxruntime's own `DefaultWeightOnlyQuantizer` (MLAS round-to-nearest, symmetric) turns
every weight MatMul into MatMulNBits(bits, block_size, accuracy_level=4). At accuracy level 4 the CPU kernel
quantizes the activations on the fly to int8, per row and per block of `block_size` along K, and runs int8
dot products (MLAS QNBitGemm CompInt8): int8 (or int4) block-wise weights with int8 dynamic activations.

Weights are quantized one at a time from the float graph's data file, so the pass holds the quantized model
and one float weight, never the float model. A weight read by several MatMuls (a stored block run twice) is
quantized once and its MatMulNBits nodes read the same initializers.

The tied embedding (`share_embedding`) becomes the builder's int4 pattern at any width: the token lookup reads
the output head's quantized rows, `Reshape(B, [vocab, K']) -> GatherBlockQuantized(gather_axis=0,
quantize_axis=1) [-> Slice to dim]`, and the float table goes: the matrix is stored once."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from mobilellm.errors import UserError

ACCURACY_LEVEL = 4  # int8 activations (CompInt8): the only 8-bit compute MLAS has


def check_block_size(block_size: int) -> None:
    if block_size < 16 or block_size & (block_size - 1):
        raise UserError(f"--group-size {block_size}: MatMulNBits blocks are a power of two, at least 16 (32 is "
                        "onnxruntime-genai's default)")


def nbits_weights(model: onnx.ModelProto, base_dir: Path, nodes: list[str], bits: int, block_size: int) -> int:
    """In place: the named MatMuls (constant B [K, N]) become MatMulNBits. Returns how many weights were
    quantized (shared ones count once)."""
    from onnx.external_data_helper import load_external_data_for_tensor, uses_external_data
    from onnxruntime.quantization.matmul_nbits_quantizer import (DefaultWeightOnlyQuantConfig,
                                                                 DefaultWeightOnlyQuantizer)
    check_block_size(block_size)
    quantizer = DefaultWeightOnlyQuantizer(DefaultWeightOnlyQuantConfig(
        block_size=block_size, is_symmetric=True, accuracy_level=ACCURACY_LEVEL, bits=bits))
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    targets, done, out = set(nodes), {}, []
    for node in g.node:
        if node.name not in targets:
            out.append(node)
            continue
        w = node.input[1]
        if w in done:  # the same weight again: the same quantized initializers
            q = onnx.NodeProto()
            q.CopyFrom(done[w])
            q.name, q.input[0], q.output[0] = node.name + f"_Q{bits}", node.input[0], node.output[0]
            out.append(q)
            continue
        t = inits[w]
        if uses_external_data(t):  # this one weight's bytes, now
            load_external_data_for_tensor(t, str(base_dir))
            t.data_location = onnx.TensorProto.DEFAULT
            del t.external_data[:]
        made = quantizer.quantize(node, [g])
        if len(made) != 1 or made[0].op_type != "MatMulNBits":
            raise UserError(f"MatMulNBits quantization left {node.name} as {[n.op_type for n in made]}")
        done[w] = made[0]
        out.append(made[0])
        g.initializer.remove(t)  # its float bytes go as soon as it is quantized
    del g.node[:]
    g.node.extend(out)
    return len(done)


def share_embedding(model: onnx.ModelProto, bits: int, block_size: int) -> dict:
    """The token Gather over the float table becomes GatherBlockQuantized over the output head's MatMulNBits
    weights (run after `nbits_weights`); the float table goes. Returns the manifest facts."""
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    gathers = [n for n in g.node if n.op_type == "Gather" and n.input[0].endswith("embed_tokens.weight")]
    heads = [n for n in g.node if n.op_type == "MatMulNBits" and gathers
             and n.input[1].startswith(gathers[0].input[0] + "_t")]
    if len(gathers) != 1 or len(heads) != 1:
        raise UserError("--quantize-embedding on onnx reads the token embedding from the output head's quantized "
                        f"weights; this graph has {len(gathers)} table gather(s) and {len(heads)} quantized head(s)")
    gather, head = gathers[0], heads[0]
    table, wq, scales = gather.input[0], head.input[1], head.input[2]
    vocab, dim = inits[table].dims
    flat = int(np.prod(inits[wq].dims[1:]))  # K padded to whole blocks, in bytes (two values a byte at 4 bits)
    padded = flat * 8 // bits
    p = "emb_shared"
    g.initializer.append(numpy_helper.from_array(np.array([vocab, flat], np.int64), f"{p}_shape"))
    nodes = [helper.make_node("Reshape", [wq, f"{p}_shape"], [f"{p}_rows"], name=f"{p}_reshape"),
             helper.make_node("GatherBlockQuantized", [f"{p}_rows", gather.input[1], scales],
                              [f"{p}_padded" if padded != dim else gather.output[0]], name=f"{p}_gather",
                              domain="com.microsoft", bits=bits, block_size=block_size, gather_axis=0, quantize_axis=1)]
    if padded != dim:
        for k, v in (("starts", 0), ("ends", dim), ("axes", -1)):
            g.initializer.append(numpy_helper.from_array(np.array([v], np.int64), f"{p}_{k}"))
        nodes.append(helper.make_node("Slice", [f"{p}_padded", f"{p}_starts", f"{p}_ends", f"{p}_axes"],
                                      [gather.output[0]], name=f"{p}_slice"))
    at = list(g.node).index(gather)
    g.node.remove(gather)
    for i, n in enumerate(nodes):
        g.node.insert(at + i, n)
    if not any(table in n.input for n in g.node):
        g.initializer.remove(inits[table])
    return {"embedding": f"int{bits} blocks of {block_size}, stored once: the token lookup reads the output head's "
                         "MatMulNBits weights (Reshape + GatherBlockQuantized)",
            "embedding_float_bytes_dropped": int(vocab) * int(dim) * 4}
