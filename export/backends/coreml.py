"""Core ML `.mlpackage` (ML Program, iOS 18 / macOS 15): KV cache as Core ML state, fp16 compute.

The "state" KV kind (models/kv.py) goes through torch.export and ct.convert with one ct.StateType
per cache buffer (k and v per executed block): tokens [1, T] int32, T enumerated (1, 2, 4, ... 64;
default 1 = decode), input_pos [1] int32 -> logits [1, T, V]. Quantization: quant/coreml.py.
Off macOS the package is checked structurally (`inspect_package`). Also serves executorch-coreml."""
from __future__ import annotations

import contextlib
import hashlib
import json
import platform
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from mobilellm.errors import UserError
from mobilellm.memory import return_memory, sharing_copy
from mobilellm.export.base import Backend, ExportConfig, ExportResult, Session, register
from mobilellm.models.generate import check_tokens

CHUNKS = (64, 32, 16, 8, 4, 2, 1)
COMPUTE_UNITS = "ALL"  # CPU, GPU and Neural Engine: Core ML places each op
DEPLOYMENT = "iOS18"  # stateful models need iOS 18 / macOS 15 (spec version 9)


# The schemes the Core ML backends implement, and with what (the one table; executorch-coreml shares it).
SCHEMES = {
    "fp32": "none: float32 weights and compute (the KV-cache states are fp16: Core ML states are fp16 only)",
    "fp16": "none: float16 weights and compute",
    "8w": "coremltools.optimize.coreml.linear_quantize_weights, int8 per-channel symmetric (embedding/output "
          "head included, stored once), fp16 activations",
    "w8a8-static": "int8 per-tensor static activations into every block linear: off macOS PT2E with ExecuTorch's "
                   "CoreMLQuantizer (coremltools.optimize.torch config) calibrated in eager PyTorch, on macOS "
                   "coremltools' linear_quantize_activations; weights by linear_quantize_weights; output head "
                   "int8 weights with fp16 activations",
}
_NO_DYNAMIC = ("Core ML has no dynamic (per-call) activation quantization; its int8 activations are static, "
               "per-tensor, calibrated ahead of time (coremltools and ExecuTorch's Core ML docs)")
CLOSEST = {"w8a8": ("w8a8-static", f"{_NO_DYNAMIC}; the paper's per-token dynamic W8A8 is not expressible")}
REFUSED = {"w8a8-dynamic-per-tensor": f"{_NO_DYNAMIC}; use --quant w8a8-static",
           "8da4w": f"{_NO_DYNAMIC}, and 8da4w needs dynamic int8 activations; use --quant 8w or w8a8-static"}


def chunk_lengths(max_seq_len: int) -> list[int]:
    return [t for t in CHUNKS if t < max_seq_len]  # T == S would make torch.export specialise


def state_model(model, cfg: ExportConfig):
    """An export copy with the Core ML cache, its example inputs and its dynamic length."""
    em = sharing_copy(model).set_kv("state").eval().requires_grad_(False)
    example = (torch.zeros(1, 2, dtype=torch.long), torch.tensor([0], dtype=torch.long))
    dyn = ({1: torch.export.Dim("T", min=1, max=max(chunk_lengths(cfg.max_seq_len)))}, None)
    return em, example, dyn


def _export(model, cfg: ExportConfig, out: Path, steps) -> dict:
    from mobilellm.quant import coreml as Q
    args, lengths = model.args, chunk_lengths(cfg.max_seq_len)
    em, example, dyn = state_model(model, cfg)
    prog, quant, ref = em, {}, None
    mac_a8 = cfg.scheme.calibrated and cfg.host_os == "Darwin"  # calibrates through Core ML prediction
    if mac_a8 and runtime_missing():
        raise UserError(f"w8a8-static on macOS calibrates through Core ML prediction, which is unavailable: {runtime_missing()}")
    cache_shape = tuple(em.kv[0].k_cache.shape)
    if cfg.scheme.calibrated and not mac_a8:
        prog, quant, ref = calibrated(model, em, example, dyn, cfg, steps, max(lengths))
    with steps.step("torch.export"), torch.no_grad():
        ep = torch.export.export(prog, example, dynamic_shapes=dyn, strict=False).run_decompositions({})
    with steps.step("convert (coremltools)"):
        ml = convert(ep, cfg.scheme, lengths, cache_shape)
    if mac_a8:
        windows, source = Q.calibration(model, cfg, max(lengths))
        with steps.step("calibrate activations (Core ML prediction)"):
            ml = Q.quantize_activations_macos(ml, windows, lengths)
        quant = {"method": "coremltools linear_quantize_activations + linear_quantize_weights", "calibration": source}
    if cfg.scheme.quantized:
        with steps.step("quantize weights (coremltools)"):
            ml = Q.quantize_weights(ml, args.head_dim)
    ml.short_description = (f"MobileLLM {args.name} ({args.variant}), {cfg.quant}: forward(tokens, input_pos) -> "
                            f"logits; KV cache in {2 * args.n_executed} states")
    ml.user_defined_metadata.update({"mobilellm.vocab_size": str(args.vocab_size), "mobilellm.scheme": cfg.quant,
                                     "mobilellm.max_seq_len": str(cfg.max_seq_len),
                                     "mobilellm.chunk_lengths": json.dumps(lengths)})
    with steps.step("save .mlpackage"):
        ml.save(str(out))
        (out / "executorch_debug_handle_mapping.json").unlink(missing_ok=True)  # ExecuTorch's aid, not Core ML's
    structural = inspect_package(out, model, cfg, quant)
    quant["embedding"] = f"{'int8' if cfg.scheme.quantized else 'float'}, shared with the output head"
    return ExportResult(quant=quant, quantized_reference=ref, structural_verification=structural, facts={
        "io": io_contract(args, cfg, lengths, structural.pop("state_names")),
        "coreml": {"compute_units": COMPUTE_UNITS, "deployment_target": DEPLOYMENT, "spec_version":
                   structural["spec_version"], "compute_precision": cfg.scheme.compute},
        "sizes": {"weight_bytes": structural["weight_file_bytes"]},
        "runtime": {"name": "coreml", "state": "MLModel.make_state()"}})


def calibrated(model, em, example, dyn, cfg: ExportConfig, steps, window: int) -> tuple:
    """PT2E W8A8-static off macOS (Core ML and ExecuTorch's Core ML delegate): (converted graph, facts with the
    scheme check, its runner). The eager fp32 logits of the check are taken first; once the converted graph is the
    model, the fp32 weights (ours: see the pipeline) go, before it runs and is exported."""
    from mobilellm.quant import coreml as Q
    fp32 = fixed_reference(model)
    prog, quant, ref = Q.calibrated(model, em, example, dyn, cfg, steps, window)
    em.release_weights()
    model.release_weights()
    return_memory()
    quant.update(quantized_eager_check(fp32, ref, cfg))
    return prog, quant, ref


def fixed_reference(model) -> tuple:
    """Eager fp32 on the fixed check: (logits, the tokens it fed, the prompt)."""
    from mobilellm.export import verify as V
    from mobilellm.models.generate import EagerRunner
    prompt = V.fixed_prompt(model.args.vocab_size)
    model.reset_cache()
    want, fed = V.run_fixed(EagerRunner(model), None, prompt)
    return want, fed, prompt


def quantized_eager_check(fp32: tuple, ref, cfg: ExportConfig) -> dict:
    """The calibrated eager model against eager fp32 (`fixed_reference`) on the fixed check (the scheme's
    own error)."""
    from mobilellm.export import verify as V
    want, fed, prompt = fp32
    got, _ = V.run_fixed(ref, fed, prompt)
    c, t = V.compare(got, want), cfg.scheme.vs_fp32
    return {"quantized_eager_vs_fp32": c, "thresholds": t.__dict__,
            "quantized_eager_passed": c["top1"] >= t.min_top1 and c["cosine_min"] >= t.min_cosine}


@contextlib.contextmanager
def merge_small_constants():
    """coremltools merges equal constants of 100+ elements; merge those of 2+ while converting. The
    converter gives every linear call its own zero-bias constant, which under layer sharing would
    otherwise grow with executed, not stored, blocks. Scalars stay apart: ExecuTorch tells a tied
    embedding gather by a constant shared with another op. A class attribute: restored after."""
    from coremltools.converters.mil.mil.passes.defs.cleanup.const_deduplication import const_deduplication
    default = const_deduplication._const_threshold
    const_deduplication._const_threshold = 2
    try:
        yield
    finally:
        const_deduplication._const_threshold = default


def convert(ep, scheme, lengths: list[int], cache: tuple):
    """ct.convert with the enumerated token lengths and one fp16 state per cache buffer."""
    import coremltools as ct
    with merge_small_constants():
        return ct.convert(
            ep, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS18, skip_model_load=True,
            compute_precision=ct.precision.FLOAT32 if scheme.compute == "fp32" else ct.precision.FLOAT16,
            compute_units=ct.ComputeUnit[COMPUTE_UNITS],
            inputs=[ct.TensorType("tokens", ct.EnumeratedShapes([[1, t] for t in lengths], default=[1, 1]), np.int32),
                    ct.TensorType("input_pos", (1,), np.int32)],
            outputs=[ct.TensorType("logits")],
            states=[ct.StateType(ct.TensorType(shape=cache, dtype=np.float16), name=n)
                    for n in ep.graph_signature.buffers_to_mutate.values()])


def io_contract(args, cfg: ExportConfig, lengths: list[int], states: list[str]) -> dict:
    """The Core ML model's interface, as the iOS app reads it: names, dtypes, shapes, chunking."""
    kv = [1, args.n_kv_heads, cfg.max_seq_len, args.head_dim]
    return {"inputs": [{"name": "tokens", "dtype": "int32", "shape": [1, "T"], "enumerated_T": sorted(lengths),
                        "default_T": 1},
                       {"name": "input_pos", "dtype": "int32", "shape": [1], "role": "position"}],
            "outputs": [{"name": "logits", "dtype": "float32" if cfg.scheme.compute == "fp32" else "float16",
                         "shape": [1, "T", args.vocab_size]}],
            "states": [{"name": n, "dtype": "float16", "shape": kv} for n in states],
            "chunk_lengths": sorted(lengths),
            "prompt_feeding": "T must be one of chunk_lengths: feed a prompt in greedy power-of-two chunks "
                              "(37 tokens = 32 + 4 + 1), each at its own input_pos; decode is T = 1"}


def inspect_package(pkg: Path, model, cfg: ExportConfig, quant: dict | None = None,
                    outputs: tuple | None = ("logits",)) -> dict:
    """Structural verification of an ML Program package: the facts, the checks, and `passed`."""
    from mobilellm.quant import coreml as Q
    spec = read_spec(pkg)
    fn = spec.mlProgram.functions["main"]
    ops = list(fn.block_specializations[fn.opset].operations)
    count = Counter(op.type for op in ops)
    qf = Q.quantization_facts(ops, Q.weight_threshold(model.args.head_dim))
    blobs, dup = _blob_hashes(pkg, ops)
    wbin = pkg / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"
    wbytes = wbin.stat().st_size if wbin.exists() else 0
    n_states, a = len(spec.description.state), model.args
    written = {op.inputs["input"].arguments[0].name for op in ops if op.type == "write_state"}
    per_block = sum(1 for m in model.model.layers[0].modules() if isinstance(m, torch.nn.Linear))
    facts = {
        "spec_version": spec.specificationVersion,
        "inputs": {i.name: _shape(i) for i in spec.description.input},
        "outputs": [o.name for o in spec.description.output],
        "state_names": [st.name for st in spec.description.state],
        "states": n_states, "expected_states": 2 * a.n_executed, "write_state_ops": count["write_state"],
        "states_written": len(written), "read_state_ops": count["read_state"], **qf,
        "weight_blobs": len(blobs), "duplicate_weight_blobs": dup, "weight_file_bytes": wbytes,
        "bytes_per_stored_param": round(wbytes / a.param_count(), 4), "op_counts": dict(count.most_common()),
    }
    quantized = cfg.scheme.quantized
    checks = {
        "ios18_ml_program": spec.specificationVersion >= 9 and spec.WhichOneof("Type") == "mlProgram",
        "io_names": set(facts["inputs"]) == {"tokens", "input_pos"} and (
            outputs is None or tuple(facts["outputs"]) == tuple(outputs)),
        "one_state_pair_per_executed_block": n_states == 2 * a.n_executed,
        "every_state_written_once": count["write_state"] == n_states == len(written),
        "weights_stored_once": dup == 0 and qf["embedding_gather_shares_head_weight"],
        "weights_quantized_as_scheme": (qf["linear_ops_float_weights_over_threshold"] == 0
                                        and qf["linear_ops_int8_weights"] > 0
                                        and qf["quantized_weight_ops_not_linear_weights"] == 0) if quantized
        else qf["quantized_weight_ops"] == 0,
        "activations_quantized_as_scheme": qf["linear_ops_int8_inputs"] >= per_block * a.n_executed
        if cfg.scheme.calibrated else qf["activation_quantize_ops"] == 0,
    }
    if quant and "quantized_eager_passed" in quant:
        checks["quantized_eager_meets_thresholds"] = quant["quantized_eager_passed"]
    return {**facts, "checks": checks, "passed": all(checks.values())}


def _shape(feature) -> dict:
    t = feature.type.multiArrayType
    enum = [list(s.shape) for s in t.enumeratedShapes.shapes]
    return {"shape": list(t.shape), **({"enumerated": enum} if enum else {})}


def _blob_hashes(pkg: Path, ops) -> tuple[dict, int]:
    """Content hash of every weight blob of two or more dimensions (plain consts and the inline data
    of constexpr ops); two blobs with the same bytes are one weight stored twice."""
    from coremltools.libmilstoragepython import _BlobStorageReader
    from coremltools.proto import MIL_pb2
    wbin = pkg / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"
    if not wbin.exists():
        return {}, 0
    reader = _BlobStorageReader(str(wbin))
    kinds = {"FLOAT16": "read_fp16_data", "FLOAT32": "read_float_data", "INT8": "read_int8_data",
             "UINT8": "read_uint8_data", "INT32": "read_int32_data"}
    values = [op.attributes["val"] for op in ops if op.type == "const" and "val" in op.attributes]
    values += [a.value for op in ops if op.type != "const" for v in op.inputs.values() for a in v.arguments
               if a.HasField("value")]
    seen: dict[int, str] = {}
    for val in values:
        if not val.HasField("blobFileValue"):
            continue
        t = val.type.tensorType
        kind = kinds.get(MIL_pb2.DataType.Name(t.dataType))
        if kind and sum(1 for d in t.dimensions if d.constant.size > 1) >= 2:
            off = val.blobFileValue.offset
            seen.setdefault(off, hashlib.sha256(np.asarray(getattr(reader, kind)(off)).tobytes()).hexdigest())
    return seen, len(seen) - len(set(seen.values()))


def read_spec(pkg: Path):
    """The package's Model spec, or a UserError saying what is wrong with it."""
    from coremltools.proto import Model_pb2
    from google.protobuf.message import DecodeError
    pkg = Path(pkg)
    if not pkg.exists():
        raise UserError(f"{pkg} does not exist")
    if not pkg.is_dir() or pkg.suffix != ".mlpackage":
        raise UserError(f"{pkg} is not an .mlpackage directory (a Core ML package is a folder ending in .mlpackage)")
    model = pkg / "Data" / "com.apple.CoreML" / "model.mlmodel"
    try:
        entries = json.loads((pkg / "Manifest.json").read_text()).get("itemInfoEntries")
        spec = Model_pb2.Model()
        spec.ParseFromString(model.read_bytes())
    except (OSError, ValueError, AttributeError, DecodeError) as e:
        raise UserError(f"{pkg} is a corrupt .mlpackage ({type(e).__name__}: {e}); re-export it with "
                        f"`mobilellm export --backend coreml`") from None
    if not entries or spec.WhichOneof("Type") != "mlProgram" or "main" not in spec.mlProgram.functions:
        raise UserError(f"{pkg} is a corrupt .mlpackage: no ML Program 'main' function; re-export it")
    if not spec.description.state:
        raise UserError(f"{pkg} has no KV-cache states: it is not a mobilellm Core ML export")
    return spec


def runtime_missing() -> str | None:
    if sys.platform != "darwin":
        return (f"Core ML runs only on macOS/iOS (this is {platform.system()}); run the package on macOS 15+ "
                f"or iOS 18+ (e.g. `mobilellm device ios`)")
    major = int((platform.mac_ver()[0] or "0").split(".")[0])
    if major < 15:
        return f"stateful Core ML models need macOS 15+ (this is macOS {platform.mac_ver()[0]})"
    try:
        import coremltools.libcoremlpython  # noqa: F401
    except ImportError:
        return "this coremltools has no Core ML runtime bindings (libcoremlpython); reinstall coremltools on macOS"
    return None


class CoreMLSession(Session):
    """load = check and parse the package; init = MLModel (compiles for this device) + make_state;
    forward feeds a prompt in the enumerated chunk lengths. Runs only on macOS; untested on Linux."""

    def __init__(self, path: Path, manifest: dict | None):
        self.path, self.manifest = Path(path), manifest or {}
        self.model = self.state = None

    def load(self):
        spec = read_spec(self.path)
        meta = dict(spec.description.metadata.userDefined)
        self.vocab_size = int(meta.get("mobilellm.vocab_size", 0)) or None
        self.max_seq_len = int(spec.description.state[0].type.stateType.arrayType.shape[2])
        self.lengths = sorted(json.loads(meta.get("mobilellm.chunk_lengths", "[1]")), reverse=True)

    def init(self):
        import coremltools as ct
        units = self.manifest.get("coreml", {}).get("compute_units", COMPUTE_UNITS)
        self.model = ct.models.MLModel(str(self.path), compute_units=ct.ComputeUnit[units])
        self.reset()

    def reset(self):
        self.state = self.model.make_state()

    def forward(self, ids, start_pos):
        check_tokens(ids, start_pos, self.max_seq_len, self.vocab_size)
        rows, i = [], 0
        while i < len(ids):
            n = next(t for t in self.lengths if t <= len(ids) - i)
            feed = {"tokens": np.array([ids[i:i + n]], np.int32), "input_pos": np.array([start_pos + i], np.int32)}
            rows.append(np.asarray(self.model.predict(feed, state=self.state)["logits"])[0].astype(np.float32))
            i += n
        return np.concatenate(rows, 0)


register(Backend(
    name="coreml", suffix=".mlpackage", schemes=SCHEMES, closest=CLOSEST, refused=REFUSED, apple_only=False, rank=20,
    summary="Core ML ML Program (.mlpackage), iOS 18 / macOS 15, KV cache as Core ML state, fp16 compute",
    export=_export, open=lambda path, manifest: CoreMLSession(Path(path), manifest),
    runtime_missing=runtime_missing, default_scheme="fp16",
    export_memory=(1000.0, 9.0)))  # W8A8-static peak: 350M 3,235 MiB, 1B 8,361 (PT2E caches cleared, fp32 released)
