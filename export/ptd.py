"""ExecuTorch program-data separation: weights in a `.ptd` file beside the `.pte`.

Why: the shared embedding/output matrix is read by two consumers that cannot share storage inside
one `.pte`. The token gather (`quantized_decomposed::embedding_byte`, outside any delegate) reads a
constant from the program's constant segment; the output GEMM reads XNNPACK's copy from the named
data segment. The runtime resolves a non-delegated constant from named data only when it comes from
an external data file, so with everything tagged into one `.ptd`, ExecuTorch's NamedDataStore keeps
identical bytes once: the int8 table (same per-row symmetric quantization for both) and its scales
are stored a single time. Runners take the file as their data path: `TextLLMRunner(pte, tokenizer,
data_path)`, Android `LlmModule(pte, tokenizer, temperature, dataPath)`, Module APIs' data files."""
from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path

import torch

TAG = "weights"  # the data file ExecuTorch writes is <TAG>.ptd; it is renamed to <artifact stem>.ptd


def data_path(pte: Path) -> Path:
    """Where a .pte's weights file lives: same directory and stem."""
    return Path(pte).with_suffix(".ptd")


def tag_weights(ep) -> None:
    """Mark every weight of an exported program (before lowering) as external data. XNNPACK serializes
    a quantized weight from its dequantize node, so those are tagged too."""
    from torch.export.graph_signature import InputKind
    kinds = {s.arg.name: s.kind for s in ep.graph_signature.input_specs}
    mutable = set(ep.graph_signature.buffers_to_mutate.values())
    weights = {n for n in ep.graph.nodes if n.op == "placeholder"
               and kinds.get(n.name) in (InputKind.PARAMETER, InputKind.CONSTANT_TENSOR, InputKind.BUFFER)
               and ep.graph_signature.inputs_to_buffers.get(n.name) not in mutable}

    def from_weight(a) -> bool:  # a weight, or a tensor unpacked from a quantized weight subclass
        return isinstance(a, torch.fx.Node) and (a in weights or (
            "access_subclass_inner_tensor" in str(a.target) and from_weight(a.args[0])))

    for n in ep.graph.nodes:
        if n in weights or (n.op == "call_function" and "dequantize" in str(n.target) and from_weight(n.args[0])):
            n.meta.setdefault("custom", {})["delegate_constant_tag"] = TAG


def external_constant_tag(node) -> str | None:
    """ExecutorchBackendConfig(external_constants=...): constants left outside delegates go to the same file."""
    return TAG


def write_data(prog, pte: Path) -> Path:
    """Write the program's data file beside `pte` (same stem). ExecuTorch names the file after its tag
    inside a directory it is given, so it writes into a scratch directory and the file is moved."""
    pte = Path(pte)
    stage = pte.with_name(pte.name + ".data-partial")
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir()
    try:
        prog.write_tensor_data_to_file(str(stage))
        written = sorted(stage.glob("*.ptd"))
        if [p.name for p in written] != [f"{TAG}.ptd"]:
            raise RuntimeError(f"expected one data file {TAG}.ptd, ExecuTorch wrote {[p.name for p in written]}")
        os.replace(written[0], data_path(pte))
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return data_path(pte)


def storage_report(ptd: Path, table_bytes: int) -> dict:
    """Read the data file back: how many named tensors, how many distinct buffers, and whether a
    buffer the size of the embedding table is shared by two names (gather table + output head)."""
    from executorch.exir._serialize._cord import Cord
    from executorch.extension.flat_tensor.serialize.serialize import FlatTensorSerializer
    payload = FlatTensorSerializer().deserialize(Cord(Path(ptd).read_bytes()))
    refs = Counter(e.buffer_index for e in payload.named_data.values())
    table_refs = [refs[i] for i, b in enumerate(payload.buffers) if len(b) == table_bytes]
    return {"named_tensors": len(payload.named_data), "distinct_buffers": len(payload.buffers),
            "embedding_table_sized_buffers": len(table_refs),
            "embedding_shared_with_head": any(r >= 2 for r in table_refs)}
