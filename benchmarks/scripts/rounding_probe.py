"""Why a faithful W8A8 lowering misses a fixed cosine bound on big random-weight models (README, "The lowering
gate at depth"): (1) one W8A8 GEMM through XNNPACK against torchao's eager one; (2) the quantized eager model
against itself with its weights scaled by (1 + eps * N(0, 1)), i.e. how far rounding alone moves it.

    python benchmarks/scripts/rounding_probe.py --model 125M --eps 1e-6,1e-5
    python benchmarks/scripts/rounding_probe.py --model 1.5B --eps 1e-6 --no-gemm"""
from __future__ import annotations

import argparse
import copy
import json
import sys


def gemm(k: int = 1600, n: int = 4320) -> dict:
    import torch
    from torch import nn
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig, quantize_
    from torchao.quantization.granularity import PerAxis
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower
    from executorch.runtime import Runtime
    torch.manual_seed(0)
    lin = nn.Sequential(nn.Linear(k, n, bias=False))
    nn.init.normal_(lin[0].weight, std=0.02)
    x = torch.randn(1, 8, k)
    x[..., 3] *= 20  # an outlier channel, as RMSNorm outputs have
    yf = lin(x)
    q = copy.deepcopy(lin)
    quantize_(q, Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int8, weight_granularity=PerAxis(0)))
    ye = q(x)
    prog = to_edge_transform_and_lower(torch.export.export(q, (x,)), partitioner=[XnnpackPartitioner()]).to_executorch()
    yx = Runtime.get().load_program(prog.buffer).load_method("forward").execute([x])[0]
    rel = lambda a, b: float((a - b).norm() / b.norm())  # noqa: E731
    return {"gemm": f"{k}x{n}", "eager_vs_fp32": rel(ye, yf), "xnnpack_vs_eager": rel(yx, ye)}


def self_sensitivity(name: str, eps_list: list[float]) -> list[dict]:
    import torch
    from mobilellm.export import verify as V
    from mobilellm.models.config import from_name
    from mobilellm.models.generate import EagerRunner
    from mobilellm.models.model import build
    from mobilellm.quant import executorch as Q
    from mobilellm.quant.schemes import get
    m = build(from_name(name), max_seq_len=64)
    ref = V.reference(EagerRunner(m))

    def quantized(eps: float):
        q = copy.deepcopy(m).tie_output_module()
        if eps:
            g = torch.Generator().manual_seed(7)
            with torch.no_grad():
                for p in q.parameters():
                    if p.dim() == 2:
                        p.mul_(1 + eps * torch.randn(p.shape, generator=g))
        Q.quantize_eager(q, get("w8a8"))
        return V.replay(EagerRunner(q), ref)
    base = quantized(0)
    rows = [{"model": name, "quantized_eager_vs_fp32_cosine_min": V.compare(base, ref.logits)["cosine_min"]}]
    for eps in eps_list:
        rows.append({"model": name, "eps": eps,
                     "perturbed_vs_quantized_eager_cosine_min": V.compare(quantized(eps), base)["cosine_min"]})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="125M")
    def eps_list(text):
        try:
            return [float(e) for e in text.split(",")]
        except ValueError:
            raise argparse.ArgumentTypeError(f"comma-separated numbers, e.g. 1e-6,1e-5; got {text!r}") from None
    ap.add_argument("--eps", type=eps_list, default="1e-6,1e-5")
    ap.add_argument("--no-gemm", action="store_true")
    a = ap.parse_args(argv)
    if not a.no_gemm:
        print(json.dumps(gemm()))
    from mobilellm.errors import UserError
    from mobilellm.models.config import from_name
    try:
        from_name(a.model)
    except UserError as e:
        ap.error(str(e))
    for row in self_sensitivity(a.model, a.eps):
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
