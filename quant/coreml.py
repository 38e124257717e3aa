"""Quantization for the Core ML backends (`coreml`, `executorch-coreml`), with coremltools' own tools.

Core ML quantizes activations only statically: int8 scales calibrated ahead of time, one per
tensor. It has no dynamic (per-token) activation quantization, so the project's `w8a8` (the
paper's per-token dynamic scheme) is not offered; the backends declare `w8a8-static` as their
closest (export/backends/coreml.py, `CLOSEST`). The passes here, by scheme:

  8w           int8 per-channel symmetric weights (`linear_quantize_weights`) for every linear and
               for the embedding table, which is the output head's matrix too and is stored once.
  w8a8-static  8w, plus int8 per-tensor static activations into every block linear. Off macOS:
               PT2E with ExecuTorch's CoreMLQuantizer (its linear annotator), calibrated in eager
               PyTorch, then converted; the quantized eager model is kept as the reference the
               artifact is checked against. On macOS (the `coreml` backend): coremltools'
               `linear_quantize_activations`, which calibrates through Core ML prediction.

The output head (a plain matmul with the shared embedding) keeps float activations in w8a8-static:
its weight is the gather table, and a PT2E copy of it would store the table twice.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from mobilellm.memory import forget_quantized_modules, sharing_copy
from mobilellm.models.generate import GraphRunner

LINEAR_TYPE = "torch.nn.modules.linear.Linear"  # nn_module_stack records types by qualified name


def weight_threshold(head_dim: int) -> int:
    """Smallest tensor quantized: above the RoPE rotation matrix (head_dim^2 of 0/+-1) and norms."""
    return head_dim * head_dim + 1


def op_config_dict(head_dim: int) -> dict:
    """OpLinearQuantizerConfig fields, as ExecuTorch's `op_linear_quantizer_config` compile spec takes them."""
    return {"mode": "linear_symmetric", "dtype": "int8", "granularity": "per_channel",
            "weight_threshold": weight_threshold(head_dim)}


def tied_gathers(mlmodel) -> list[str]:
    """Gather ops whose table (`x`) also feeds a non-gather op: the shared embedding / output head."""
    prog = getattr(mlmodel, "_mil_program", None)
    return [op.name for fn in (prog.functions.values() if prog is not None else []) for op in fn.operations
            if op.op_type == "gather" and op.x.op is not None and op.x.op.op_type == "const"
            and any(c.op_type != "gather" for c in op.x.child_ops)]


QUANT_WEIGHT_OPS = ("constexpr_blockwise_shift_scale", "constexpr_affine_dequantize", "constexpr_lut_to_dense")


def quantization_facts(ops, threshold: int) -> dict:
    """Which ops of an ML Program (protobuf op list) are quantized, read from what feeds them."""
    producer = {o.name: op for op in ops for o in op.outputs}

    def src(op, arg):
        return producer.get(op.inputs[arg].arguments[0].name) if arg in op.inputs else None

    def numel(op):
        return int(np.prod([d.constant.size for d in op.outputs[0].type.tensorType.dimensions]))

    linears = [op for op in ops if op.type == "linear"]
    weights = [src(op, "weight") for op in linears]
    heads = {id(w) for w in weights if w is not None}
    return {
        "linear_ops": len(linears),
        "linear_ops_int8_weights": sum(1 for w in weights if w is not None and w.type in QUANT_WEIGHT_OPS),
        "linear_ops_int8_inputs": sum(1 for op in linears if (x := src(op, "x")) is not None and x.type == "dequantize"),
        "linear_ops_float_weights_over_threshold": sum(1 for w in weights if w is not None and w.type == "const"
                                                       and numel(w) >= threshold),
        "quantized_weight_ops": sum(1 for op in ops if op.type in QUANT_WEIGHT_OPS),
        "quantized_weight_ops_not_linear_weights": sum(1 for op in ops if op.type in QUANT_WEIGHT_OPS
                                                       and id(op) not in heads),
        "activation_quantize_ops": sum(1 for op in ops if op.type == "quantize"),
        "embedding_gather_shares_head_weight": any(op.type == "gather" and id(src(op, "x")) in heads for op in ops),
    }


def quantize_weights(mlmodel, head_dim: int):
    """int8 per-channel weights for every linear and the tied embedding gather (one shared
    constant, so both consumers must agree); RoPE tables and norms stay float."""
    import coremltools.optimize as cto
    op = cto.coreml.OpLinearQuantizerConfig._from_dict(op_config_dict(head_dim))
    cfg = cto.coreml.OptimizationConfig(global_config=None, op_type_configs={"linear": op},
                                        op_name_configs={name: op for name in tied_gathers(mlmodel)})
    return cto.coreml.linear_quantize_weights(mlmodel, config=cfg)


def quantize_activations_macos(mlmodel, windows: list[list[int]], lengths: list[int]):
    """macOS only (calibration runs Core ML prediction): static int8 activations. Each window is
    cut to an enumerated input length and fed as a prefill from position 0. Untested on Linux."""
    import coremltools.optimize as cto
    cfg = cto.coreml.OptimizationConfig(global_config=cto.coreml.experimental.OpActivationLinearQuantizerConfig(
        mode="linear_symmetric"))
    samples = []
    for w in windows:
        n = max(t for t in lengths if t <= len(w))
        samples.append({"tokens": np.array([w[:n]], np.int32), "input_pos": np.array([0], np.int32)})
    return cto.coreml.experimental.linear_quantize_activations(mlmodel, cfg, samples)


def _with_zero_biases(model: nn.Module) -> nn.Module:
    """CoreMLQuantizer's linear pattern is linear(x, w, b): a bias-free linear (all of MobileLLM's)
    matches nothing and would silently stay float. Exact zero biases make it match."""
    m = sharing_copy(model)
    for mod in m.modules():
        if isinstance(mod, nn.Linear) and mod.bias is None:
            mod.bias = nn.Parameter(torch.zeros(mod.out_features), requires_grad=False)
    return m


def _split_shared_weights(gm) -> None:
    """One weight node per linear call. A block executed twice (layer sharing) reads each weight
    twice; the annotator skips a call whose weight is already annotated, which would leave the
    second run float. Both copies quantize to identical bytes, which the converter stores once."""
    for n in list(gm.graph.nodes):
        if n.op != "get_attr":
            continue
        for u in [u for u in n.users if u.target == torch.ops.aten.linear.default][1:]:
            with gm.graph.inserting_after(n):
                c = gm.graph.get_attr(n.target)
            c.meta = dict(n.meta)
            u.replace_input_with(n, c)
    gm.recompile()


def _in_linear_module(n) -> bool:
    """Nodes of an nn.Linear call, and the weight/bias nodes (which carry no module stack: this is
    why CoreMLQuantizer's own module_type_configs annotate nothing on torch 2.13)."""
    if n.op in ("get_attr", "placeholder"):
        return True
    stack = list((n.meta.get("nn_module_stack") or {}).values())
    return bool(stack) and stack[-1][1] == LINEAR_TYPE


def _linear_quantizer(op_config):
    """CoreMLQuantizer that annotates only the linear pattern inside nn.Linear modules: its global
    config would also quantize every add/mul (int64 position arithmetic included, which fails)."""
    from executorch.backends.apple.coreml.quantizer._annotation_config import AnnotationConfig
    from executorch.backends.apple.coreml.quantizer._coreml_quantizer import (
        CoreMLQuantizer, _AnnotationPatternRegistry)

    class LinearOnly(CoreMLQuantizer):
        def annotate(self, model):
            annotate = _AnnotationPatternRegistry.get_annotators()["linear"]
            annotate(model, AnnotationConfig.from_quantization_config(op_config), _in_linear_module)
            return model

    return LinearOnly(None)


def quantize_static_pt2e(model: nn.Module, example, dynamic_shapes, windows: list[list[int]]):
    """PT2E W8A8-static with coremltools' linear annotator on every nn.Linear. Returns the converted
    graph module (runnable eagerly: the quantized reference) and facts for the manifest."""
    from coremltools.optimize.torch.quantization.quantization_config import ModuleLinearQuantizerConfig
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    m = _with_zero_biases(model)
    gm = torch.export.export(m, example, dynamic_shapes=dynamic_shapes, strict=False).module()
    _split_shared_weights(gm)
    op = ModuleLinearQuantizerConfig(quantization_scheme="symmetric", activation_dtype=torch.quint8,
                                     weight_dtype=torch.qint8, weight_per_channel=True)
    prepared = prepare_pt2e(gm, _linear_quantizer(op))
    with torch.no_grad():
        for i, w in enumerate(windows):
            prepared(torch.tensor([w], dtype=torch.long), torch.tensor([0], dtype=torch.long))
            if i == 0:
                _freeze_weight_fake_quant(prepared, True)
    _freeze_weight_fake_quant(prepared, False)
    q = convert_pt2e(prepared)
    del prepared
    forget_quantized_modules()  # else torchao's device cache keeps the prepared model and its fp32 weights
    _drop_unread_tensors(q)
    linears = [n for n in q.graph.nodes if n.target == torch.ops.aten.linear.default]
    fed = sum(1 for n in linears if "dequantize" in str(getattr(n.args[0], "target", "")))
    n_lin = sum(1 for mod in m.modules() if isinstance(mod, nn.Linear))
    facts = {"method": "PT2E with ExecuTorch's CoreMLQuantizer linear annotator, calibrated in eager PyTorch",
             "linear_calls": len(linears), "linear_calls_with_int8_inputs": fed,
             "zero_biases_added": n_lin, "calibration_windows": len(windows)}
    if fed == 0:
        raise RuntimeError("CoreMLQuantizer annotated no linear: the W8A8 artifact would be weight-only")
    return q, facts


def _drop_unread_tensors(gm) -> None:
    """convert_pt2e leaves the fp32 weights it folded into int8 constants (and the copies made before the
    shared ones were split) as attributes no graph node reads: a second full-size model in the converted
    graph. Dropped here, so that they are freed with the eager model."""
    read = {n.target for n in gm.graph.nodes if n.op == "get_attr"}
    for prefix, mod in list(gm.named_modules()):
        names = [*mod._parameters, *mod._buffers,
                 *(k for k, v in vars(mod).items() if isinstance(v, torch.Tensor) and not k.startswith("_"))]
        for name in names:
            if isinstance(getattr(mod, name, None), torch.Tensor) and (f"{prefix}.{name}" if prefix else name) not in read:
                delattr(mod, name)


def _freeze_weight_fake_quant(prepared, frozen: bool) -> None:
    """Weights do not change between calibration windows: after the first, their per-channel
    observers and fake quantization are switched off (re-fake-quantizing every weight on every
    window made calibration the slowest step of a 60-block Core ML export). Activations keep
    being observed on every window."""
    from torchao.quantization.pt2e.fake_quantize import FakeQuantizeBase
    for mod in prepared.modules():
        if isinstance(mod, FakeQuantizeBase) and mod.qscheme in (torch.per_channel_symmetric, torch.per_channel_affine):
            if frozen:
                mod.disable_observer()
                mod.disable_fake_quant()
            else:
                mod.enable_fake_quant()


def calibrated(model, em, example, dyn, cfg, steps, window: int) -> tuple:
    """(graph module, facts, reference runner) of PT2E W8A8-static: the quantized eager model, which
    the export checks against fp32 (off macOS that is the numerical check there is)."""
    windows, source = calibration(model, cfg, window)
    with steps.step(f"calibrate and convert (PT2E, {len(windows)} windows)"):
        gm, facts = quantize_static_pt2e(em, example, dyn, windows)
    facts["calibration"] = source
    return gm, facts, GraphRunner(gm, cfg.max_seq_len, model.args.vocab_size)


def calibration(model, cfg, window: int) -> tuple[list[list[int]], str]:
    from mobilellm.quant.calibration import calibration_for
    return calibration_for(cfg, model.args.vocab_size, window=window)
