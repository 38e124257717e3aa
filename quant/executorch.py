"""Quantization passes for the ExecuTorch/XNNPACK backend, each through torchao's or ExecuTorch's
own quantizers. A pass takes a float eager model and returns it quantized; model code never
knows about quantization.

Which scheme uses which pass is the executorch backend's table (export/backends/executorch.py);
here each pass reads the scheme's fields (quant/schemes.py), never its name.

  w8a8         torchao Int8DynamicActivationIntxWeightConfig(int8, PerAxis(0)): int8 symmetric
               per-channel weights, int8 asymmetric per-token dynamic activations (the paper's
               per-token min-max W8A8); lowers to XNNPACK's dynamically quantized GEMM
  8da4w        same config with int4 weights in groups of `group_size`
  w8a8-static  PT2E: ExecuTorch's XNNPACKQuantizer, per-channel weights, per-tensor static
               activations observed on calibration windows (applied to the exported graph)
  embedding    torchao IntxWeightOnlyConfig(int8, PerAxis(0)) on the token embedding table
"""
from __future__ import annotations

import torch
from torch import nn

from mobilellm.memory import forget_quantized_modules

def quantize_eager(model: nn.Module, scheme, group_size: int = 32, embedding: bool = False) -> dict:
    """In place on an export copy (with `tie_output_module()` applied): the dynamic-activation
    schemes (`scheme.activations == "dynamic"`, per-token) and the optional int8 embedding.
    Returns what was done."""
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig, IntxWeightOnlyConfig, quantize_
    from torchao.quantization.granularity import PerAxis, PerGroup

    details: dict = {}
    if scheme.activations == "dynamic":
        grouped = scheme.weight_granularity == "per-group"
        if grouped and (group_size % 32 or model.args.dim % group_size or model.args.ffn_hidden % group_size):
            from mobilellm.errors import UserError
            raise UserError(f"--group-size {group_size} must be a multiple of 32 (XNNPACK) that divides the model "
                            f"width {model.args.dim} and FFN width {model.args.ffn_hidden}")
        cfg = Int8DynamicActivationIntxWeightConfig(
            weight_dtype={"int8": torch.int8, "int4": torch.int4}[scheme.weights],
            weight_granularity=PerGroup(group_size) if grouped else PerAxis(0))
        quantize_(model, cfg, filter_fn=lambda m, fqn: isinstance(m, nn.Linear))
        details = {"weights": f"{scheme.weights} " + (f"groups of {group_size}" if grouped else "per-channel symmetric"),
                   "activations": "int8 dynamic per-token (asymmetric)", "quantizer": "torchao " + type(cfg).__name__}
    if embedding:
        quantize_(model, IntxWeightOnlyConfig(weight_dtype=torch.int8, granularity=PerAxis(0)),
                  filter_fn=lambda m, fqn: isinstance(m, nn.Embedding))
        details["embedding"] = "int8 per-row (torchao IntxWeightOnlyConfig)"
    return details


def quantize_static_pt2e(exported, calibration: list[list[int]], token_by_token: bool = False):
    """PT2E static W8A8 on an exported program: per-channel int8 weights, per-tensor int8 static
    activations observed over `calibration` windows. Returns the converted graph module.
    `token_by_token`: a program that returns the last position's logits only sees each window one token at a time
    through its cache (as ExecuTorch's export_llama calibrates), so the output head's input observer sees every
    position, not one row per window."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer, get_symmetric_quantization_config)
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    q = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False))
    m = prepare_pt2e(exported.module(), q)
    with torch.no_grad():
        for window in calibration:  # each window from position 0: one prefill, or one call per token
            if token_by_token:  # all but the last token: a window as long as the cache would end at its last
                for i, t in enumerate(window[:-1]):  # slot, which the exported program's bounds keep for prefills
                    m(torch.tensor([[t]], dtype=torch.long), torch.tensor([i], dtype=torch.long))
            else:
                m(torch.tensor([window], dtype=torch.long), torch.tensor([0], dtype=torch.long))
    q = convert_pt2e(m)
    del m
    forget_quantized_modules()  # else torchao's device cache keeps the prepared model alive
    return q, {"weights": "int8 per-channel symmetric", "activations": "int8 per-tensor static",
               "quantizer": "ExecuTorch XNNPACKQuantizer (PT2E)", "calibration_windows": len(calibration),
               "calibration_fed": "one token per call" if token_by_token else "one prefill per window"}
