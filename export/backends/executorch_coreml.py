"""ExecuTorch `.pte` delegated whole to Core ML (CoreMLPartitioner, iOS 18): KV cache as Core ML state.

Same model preparation as `coreml` (the "state" KV kind, quant/coreml.py), lowered by ExecuTorch's
Core ML backend instead of saved as a package, so an app that already embeds the ExecuTorch
runtime with its Core ML delegate runs it through the usual `forward(tokens [1, T] int64,
input_pos [1] int64) -> logits [1, T, V]` contract. T is a range (1..64, Core ML RangeDim with
default 1: decode is the shape the Neural Engine can take; longer prompts run on GPU/CPU);
ExecuTorch's enumerated-shape compile spec would need int32 inputs, which breaks the contract.
The delegate runs only on Apple devices; elsewhere the Core ML program inside the `.pte` is
unpacked and checked like a `.mlpackage`."""
from __future__ import annotations

import sys
import tempfile
from collections import Counter
from pathlib import Path

import torch

from mobilellm.errors import UserError
from mobilellm.export.backends import coreml as C
from mobilellm.export.base import Backend, ExportConfig, ExportResult, Session, register
from mobilellm.models.generate import check_tokens


def _export(model, cfg: ExportConfig, out: Path, steps) -> dict:
    import coremltools as ct
    from executorch.backends.apple.coreml.compiler import CoreMLBackend
    from executorch.backends.apple.coreml.partition import CoreMLPartitioner
    from executorch.exir import EdgeCompileConfig, to_edge_transform_and_lower
    from mobilellm.quant import coreml as Q

    args, lengths = model.args, C.chunk_lengths(cfg.max_seq_len)
    em, example, dyn = C.state_model(model, cfg)
    prog, quant, ref = em, {}, None
    if cfg.scheme.calibrated:
        prog, quant, ref = C.calibrated(model, em, example, dyn, cfg, steps, max(lengths))
    with steps.step("torch.export"), torch.no_grad():
        ep = torch.export.export(prog, example, dynamic_shapes=dyn, strict=False)
    specs = CoreMLBackend.generate_compile_specs(
        compute_unit=ct.ComputeUnit[C.COMPUTE_UNITS], minimum_deployment_target=ct.target.iOS18,
        compute_precision=ct.precision.FLOAT32 if cfg.scheme.compute == "fp32" else ct.precision.FLOAT16,
        op_linear_quantizer_config=Q.op_config_dict(args.head_dim) if cfg.scheme.quantized else None)
    partitioner = CoreMLPartitioner(compile_specs=specs, take_over_mutable_buffer=True, lower_full_graph=True)
    with steps.step("lower to Core ML (ExecuTorch CoreMLPartitioner)"), C.merge_small_constants():
        edge = to_edge_transform_and_lower(ep, partitioner=[partitioner],
                                           compile_config=EdgeCompileConfig(_check_ir_validity=False))
    structural = inspect_lowered(edge, model, cfg, quant)
    with steps.step("serialize"):
        out.write_bytes(edge.to_executorch().buffer)
    return ExportResult(quant=quant, quantized_reference=ref, structural_verification=structural, facts={
        "delegation": structural["delegation"], "io": io_contract(args, cfg.max_seq_len, max(lengths)),
        "coreml": {"compute_units": C.COMPUTE_UNITS, "deployment_target": C.DEPLOYMENT,
                   "spec_version": structural["spec_version"], "partitioner": "CoreMLPartitioner(lower_full_graph)",
                   "compute_precision": cfg.scheme.compute},
        "runtime": {"name": "executorch", "method": "forward", "delegate": "CoreMLBackend"}})


def io_contract(args, msl: int, tmax: int) -> dict:
    return {"method": "forward",
            "inputs": {"tokens": f"int64 [1, T], 1 <= T <= {tmax} (Core ML RangeDim, default 1 = decode)",
                       "input_pos": "int64 [1], start position of tokens[0]"},
            "outputs": {"logits": f"float32 [1, T, {args.vocab_size}]"}, "max_chunk": tmax,
            "states": f"{2 * args.n_executed} Core ML states (k and v per executed block), "
                      f"[1, {args.n_kv_heads}, {msl}, {args.head_dim}] fp16 each"}


def inspect_lowered(edge, model, cfg: ExportConfig, quant: dict) -> dict:
    """The program must be one Core ML delegate call with int64 inputs; the Core ML program inside
    gets the `.mlpackage` checks (states, state writes, quantized ops, weights stored once)."""
    from executorch.backends.apple.coreml import executorchcoreml
    ep = edge.exported_program()
    gm = ep.graph_module
    outside = Counter()
    lowered = [getattr(gm, n.target) for n in gm.graph.nodes if n.op == "get_attr" and n.target.startswith("lowered_module")]
    for n in gm.graph.nodes:
        name = getattr(n.target, "__name__", str(n.target))
        if n.op == "call_function" and name not in ("executorch_call_delegate", "getitem"):
            outside[name] += 1
    dtypes = [str(n.meta["val"].dtype) for n in gm.graph.nodes if n.op == "placeholder" and "val" in n.meta
              and n.name in ep.graph_signature.user_inputs]
    if len(lowered) != 1:
        return {"passed": False, "delegation": {"coreml_delegates": len(lowered)}, "spec_version": None,
                "checks": {"one_coreml_delegate": False}}
    with tempfile.TemporaryDirectory() as d:
        if not executorchcoreml.unflatten_directory_contents(lowered[0].processed_bytes, d):
            raise UserError("could not unpack the Core ML program from the lowered ExecuTorch module")
        facts = C.inspect_package(Path(d) / "lowered_module" / "model.mlpackage", model, cfg, quant, outputs=None)
    facts.pop("state_names")
    delegation = {"coreml_delegates": 1, "backend_id": lowered[0].backend_id, "ops_outside_coreml": dict(outside),
                  "summary": f"whole graph in 1 Core ML delegate; outside: {dict(outside) or 'nothing'}"}
    checks = {**facts.pop("checks"), "one_coreml_delegate": lowered[0].backend_id == "CoreMLBackend",
              "nothing_outside_the_delegate": not outside, "int64_inputs_kept": dtypes == ["torch.int64"] * 2}
    return {**facts, "delegation": delegation, "method_input_dtypes": dtypes, "checks": checks,
            "passed": all(checks.values())}


def runtime_missing() -> str | None:
    if sys.platform != "darwin":
        return (f"the ExecuTorch Core ML delegate runs only on Apple devices (macOS 15+ / iOS 18+), not on "
                f"{sys.platform}")
    try:
        from executorch.runtime import Runtime
        names = Runtime.get().backend_registry.registered_backend_names
    except Exception as e:  # noqa: BLE001  a wheel without pybindings
        return f"the ExecuTorch Python runtime is unavailable here ({e})"
    return None if "CoreMLBackend" in names else (
        f"this ExecuTorch runtime has no CoreMLBackend (registered: {', '.join(names)}); use a macOS wheel")


class ExecuTorchCoreMLSession(Session):
    """load = Runtime.load_program, init = load_method('forward') (Core ML compiles the delegate),
    forward feeds prompts in chunks of at most `max_chunk`. Apple-only, untested on Linux. The cache
    needs no reset: each call writes start..start+T-1 and attends only below start+T."""

    def __init__(self, path: Path, manifest: dict | None):
        m = manifest or {}
        self.path, self.program, self.method = Path(path), None, None
        self.max_seq_len = m.get("max_seq_len")
        self.vocab_size = (m.get("model") or {}).get("args", {}).get("vocab_size")
        self.max_chunk = (m.get("io") or {}).get("max_chunk", 1)

    def load(self):
        from executorch.runtime import Runtime
        if not self.path.is_file():
            raise UserError(f"{self.path} does not exist")
        try:
            self.program = Runtime.get().load_program(self.path)
        except Exception as e:  # noqa: BLE001  the runtime raises bare RuntimeErrors
            raise UserError(f"{self.path} is not a loadable ExecuTorch program (corrupt or truncated?): {e}") from None

    def init(self):
        try:
            self.method = self.program.load_method("forward")
        except Exception as e:  # noqa: BLE001
            raise UserError(f"{self.path}: the Core ML delegate could not initialise 'forward': {e}") from None

    def reset(self):
        pass

    def forward(self, ids, start_pos):
        check_tokens(ids, start_pos, self.max_seq_len, self.vocab_size)
        rows = []
        for i in range(0, len(ids), self.max_chunk):
            chunk = torch.tensor([list(ids[i:i + self.max_chunk])], dtype=torch.long)
            rows.append(self.method.execute([chunk, torch.tensor([start_pos + i], dtype=torch.long)])[0][0])
        return torch.cat(rows, 0).float().numpy()


register(Backend(
    name="executorch-coreml", suffix=".pte", schemes=C.SCHEMES, closest=C.CLOSEST, refused=C.REFUSED,
    apple_only=True, default_for_suffix=False, rank=30,
    summary="ExecuTorch .pte delegated whole to Core ML (CoreMLPartitioner), iOS 18, KV cache as Core ML state",
    export=_export, open=lambda path, manifest: ExecuTorchCoreMLSession(Path(path), manifest),
    runtime_missing=runtime_missing, default_scheme="fp16"))
