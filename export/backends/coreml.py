"""Core ML `.mlpackage` (ML Program, iOS 18 / macOS 15): stateful KV cache, fp16 compute by default.

The model with the "state" KV kind (slice writes at input_pos, see models/kv.py) goes through
torch.export with a dynamic length and ct.convert with one ct.StateType per cache buffer (k and v
of every executed block). Interface: tokens [1, T] int32 with T enumerated (1, 2, 4, ... 64: decode
is the default shape, prompts go in power-of-two chunks), input_pos [1] int32 -> logits [1, T, V].
Quantization lives in quant/coreml.py. Core ML prediction runs only on macOS/iOS; elsewhere the
package is checked structurally (`inspect_package`): states, state writes, quantized ops, and
that no weight is stored twice. This module also serves `executorch-coreml`."""
from __future__ import annotations

import copy
import hashlib
import json
import platform
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mobilellm.errors import UserError
from mobilellm.export.base import Backend, ExportConfig, Session, register
from mobilellm.models.generate import EagerRunner, check_tokens

CHUNKS = (64, 32, 16, 8, 4, 2, 1)
COMPUTE_UNITS = "ALL"  # CPU, GPU and Neural Engine: Core ML places each op
DEPLOYMENT = "iOS18"  # stateful models need iOS 18 / macOS 15 (spec version 9)
QUANT_WEIGHT_OPS = ("constexpr_blockwise_shift_scale", "constexpr_affine_dequantize", "constexpr_lut_to_dense")


@dataclass
class CoreMLPlugin(Backend):
    """A Backend that also names schemes it refuses and why (Core ML has no dynamic activations)."""

    refused: dict = field(default_factory=dict)

    def check_scheme(self, scheme: str) -> None:
        if scheme in self.refused:
            raise UserError(f"backend {self.name!r} cannot do quantization scheme {scheme!r}: {self.refused[scheme]}; "
                            f"valid for {self.name}: {', '.join(self.schemes)}")
        super().check_scheme(scheme)


def chunk_lengths(max_seq_len: int) -> list[int]:
    return [t for t in CHUNKS if t < max_seq_len]  # T == S would make torch.export specialise


def state_model(model, cfg: ExportConfig):
    """An export copy with the Core ML cache, its example inputs and its dynamic length."""
    if cfg.quantize_embedding and cfg.quant in ("fp16", "fp32"):
        raise UserError("--quantize-embedding: the embedding table is also the output head's matrix, stored once; "
                        "Core ML quantizes it with the weights: use --quant w8 or w8a8-static")
    em = copy.deepcopy(model).set_kv("state").eval().requires_grad_(False)
    example = (torch.zeros(1, 2, dtype=torch.long), torch.tensor([0], dtype=torch.long))
    dyn = ({1: torch.export.Dim("T", min=1, max=max(chunk_lengths(cfg.max_seq_len)))}, None)
    return em, example, dyn


def calibrated(model, em, example, dyn, cfg: ExportConfig, steps) -> tuple:
    """(graph module, quant facts, reference runner) of PT2E W8A8-static, checked against fp32."""
    from mobilellm.export import verify as V
    from mobilellm.models.tokenizer import Tokenizer
    from mobilellm.quant import coreml as Q
    from mobilellm.quant.calibration import calibration_windows
    tok = Tokenizer(cfg.tokenizer) if cfg.tokenizer else None
    windows, source = calibration_windows(cfg.calibration, model.args.vocab_size, tok,
                                          window=max(chunk_lengths(cfg.max_seq_len)))
    with steps.step(f"calibrate and convert (PT2E, {len(windows)} windows)"):
        gm, facts = Q.quantize_static_pt2e(em, example, dyn, windows)
    ref = GraphRunner(gm, cfg.max_seq_len, model.args.vocab_size)
    prompt = V.fixed_prompt(model.args.vocab_size)
    model.reset_cache()
    want, fed = V.run_fixed(EagerRunner(model), None, prompt)
    got, _ = V.run_fixed(ref, fed, prompt)
    c, t = V.compare(got, want), V.THRESHOLDS[cfg.quant]
    facts.update(calibration=source, quantized_eager_vs_fp32=c, thresholds=t.__dict__,
                 quantized_eager_passed=c["top1"] >= t.min_top1 and c["cosine_min"] >= t.min_cosine)
    return gm, facts, ref


class GraphRunner(EagerRunner):
    """Runs a PT2E-converted graph module (its cache buffers inside) like the eager model."""

    def __init__(self, gm, max_seq_len, vocab_size):
        self.model, self.max_seq_len, self.vocab_size = gm, max_seq_len, vocab_size

    def reset(self):
        for name, b in self.model.named_buffers():
            if "cache" in name:
                b.zero_()


def _export(model, cfg: ExportConfig, out: Path, steps) -> dict:
    import coremltools as ct
    from mobilellm.quant import coreml as Q
    args, lengths = model.args, chunk_lengths(cfg.max_seq_len)
    em, example, dyn = state_model(model, cfg)
    prog, quant, ref = em, {}, None
    mac_a8 = cfg.quant == "w8a8-static" and runtime_missing() is None
    if cfg.quant == "w8a8-static" and not mac_a8:
        prog, quant, ref = calibrated(model, em, example, dyn, cfg, steps)
    with steps.step("torch.export"), torch.no_grad():
        ep = torch.export.export(prog, example, dynamic_shapes=dyn, strict=False).run_decompositions({})
    cache = tuple(em.kv[0].k_cache.shape)
    with steps.step("convert (coremltools)"):
        ml = ct.convert(
            ep, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS18, skip_model_load=True,
            compute_precision=ct.precision.FLOAT32 if cfg.quant == "fp32" else ct.precision.FLOAT16,
            compute_units=ct.ComputeUnit[COMPUTE_UNITS],
            inputs=[ct.TensorType("tokens", ct.EnumeratedShapes([[1, t] for t in lengths], default=[1, 1]), np.int32),
                    ct.TensorType("input_pos", (1,), np.int32)],
            outputs=[ct.TensorType("logits")],
            states=[ct.StateType(ct.TensorType(shape=cache, dtype=np.float16), name=n)
                    for n in ep.graph_signature.buffers_to_mutate.values()])
    if mac_a8:
        from mobilellm.quant.calibration import calibration_windows
        windows, source = calibration_windows(cfg.calibration, args.vocab_size, None, window=max(lengths))
        with steps.step("calibrate activations (Core ML prediction)"):
            ml = Q.quantize_activations_macos(ml, windows, lengths)
        quant = {"method": "coremltools linear_quantize_activations + linear_quantize_weights", "calibration": source}
    if cfg.quant in ("w8", "w8a8-static"):
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
    return {"quant": {**quant, "description": Q.DESCRIPTIONS[cfg.quant],
                      "embedding": "int8, shared with the output head" if cfg.quant in ("w8", "w8a8-static") else
                      "float, shared with the output head"},
            "io": io_contract(args, cfg.max_seq_len, lengths), "structural_verification": structural,
            "coreml": {"compute_units": COMPUTE_UNITS, "deployment_target": DEPLOYMENT, "spec_version":
                       structural["spec_version"], "compute_precision": "fp32" if cfg.quant == "fp32" else "fp16"},
            "sizes": {"weight_bytes": structural["weight_file_bytes"]},
            "runtime": {"name": "coreml", "state": "MLModel.make_state()"}, "quantized_reference": ref}


def io_contract(args, msl: int, lengths: list[int]) -> dict:
    return {"inputs": {"tokens": f"int32 [1, T], T in {sorted(lengths)} (enumerated; default 1 = decode)",
                       "input_pos": "int32 [1], start position of tokens[0]"},
            "outputs": {"logits": f"float [1, T, {args.vocab_size}] (fp16 under fp16 compute)"},
            "chunk_lengths": sorted(lengths), "prompt_feeding": "greedy power-of-two chunks, no padding",
            "states": f"{2 * args.n_executed} (k and v per executed block), [1, {args.n_kv_heads}, {msl}, "
                      f"{args.head_dim}] fp16 each"}


def inspect_package(pkg: Path, model, cfg: ExportConfig, quant: dict | None = None) -> dict:
    """Structural verification of an ML Program package: the facts, the checks, and `passed`."""
    from mobilellm.quant import coreml as Q
    spec = read_spec(pkg)
    fn = spec.mlProgram.functions["main"]
    ops = list(fn.block_specializations[fn.opset].operations)
    producer = {o.name: op for op in ops for o in op.outputs}
    count = Counter(op.type for op in ops)
    src = lambda op, arg: producer.get(op.inputs[arg].arguments[0].name) if arg in op.inputs else None  # noqa: E731
    linears = [op for op in ops if op.type == "linear"]
    big = Q.weight_threshold(model.args.head_dim)
    float_big = [op for op in linears if (w := src(op, "weight")) is not None and w.type == "const"
                 and _numel(w) >= big]
    q_w = [op for op in linears if (w := src(op, "weight")) is not None and w.type in QUANT_WEIGHT_OPS]
    q_x = [op for op in linears if (x := src(op, "x")) is not None and x.type == "dequantize"]
    heads = {id(src(op, "weight")) for op in linears}
    tied = [op for op in ops if op.type == "gather" and id(src(op, "x")) in heads]
    blobs, dup = _blob_hashes(pkg, ops)
    wbin = pkg / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"
    n_states, a = len(spec.description.state), model.args
    written = {op.inputs["input"].arguments[0].name for op in ops if op.type == "write_state"}
    per_block = sum(1 for m in model.model.layers[0].modules() if isinstance(m, torch.nn.Linear))
    facts = {
        "spec_version": spec.specificationVersion,
        "inputs": {i.name: _shape(i) for i in spec.description.input},
        "outputs": [o.name for o in spec.description.output],
        "states": n_states, "expected_states": 2 * a.n_executed, "write_state_ops": count["write_state"],
        "states_written": len(written), "read_state_ops": count["read_state"],
        "linear_ops": len(linears), "linear_ops_int8_weights": len(q_w), "linear_ops_int8_inputs": len(q_x),
        "linear_ops_float_weights_over_threshold": len(float_big), "quantized_weight_ops": sum(count[t] for t in QUANT_WEIGHT_OPS),
        "activation_quantize_ops": count["quantize"], "embedding_gather_shares_head_weight": bool(tied),
        "weight_blobs": len(blobs), "duplicate_weight_blobs": dup,
        "weight_file_bytes": wbin.stat().st_size if wbin.exists() else 0,
        "bytes_per_stored_param": round((wbin.stat().st_size if wbin.exists() else 0) / a.param_count(), 4),
        "op_counts": dict(count.most_common()),
    }
    quantized = cfg.quant in ("w8", "w8a8-static")
    checks = {
        "ios18_ml_program": spec.specificationVersion >= 9 and spec.WhichOneof("Type") == "mlProgram",
        "io_names": set(facts["inputs"]) == {"tokens", "input_pos"} and facts["outputs"] == ["logits"],
        "one_state_pair_per_executed_block": n_states == 2 * a.n_executed,
        "every_state_written_once": count["write_state"] == n_states == len(written),
        "weights_stored_once": dup == 0 and bool(tied),
        "weights_quantized_as_scheme": (not float_big and len(q_w) > 0) if quantized else facts["quantized_weight_ops"] == 0,
        "activations_quantized_as_scheme": len(q_x) >= per_block * a.n_executed if cfg.quant == "w8a8-static"
        else count["quantize"] == 0,
    }
    if quant and "quantized_eager_passed" in quant:
        checks["quantized_eager_meets_thresholds"] = quant["quantized_eager_passed"]
    return {**facts, "checks": checks, "passed": all(checks.values())}


def _numel(op) -> int:
    return int(np.prod([d.constant.size for d in op.outputs[0].type.tensorType.dimensions]))


def _shape(feature) -> dict:
    t = feature.type.multiArrayType
    enum = [list(s.shape) for s in t.enumeratedShapes.shapes]
    return {"shape": list(t.shape), **({"enumerated": enum} if enum else {})}


def _blob_hashes(pkg: Path, ops) -> tuple[dict, int]:
    """Content hash of every weight blob of two or more dimensions; duplicates are weights stored twice."""
    from coremltools.libmilstoragepython import _BlobStorageReader
    from coremltools.proto import MIL_pb2
    wbin = pkg / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"
    reader = _BlobStorageReader(str(wbin)) if wbin.exists() else None
    kinds = {"FLOAT16": "read_fp16_data", "FLOAT32": "read_float_data", "INT8": "read_int8_data",
             "UINT8": "read_uint8_data", "INT32": "read_int32_data"}
    seen: dict[int, str] = {}
    for op in ops:
        val = op.attributes.get("val") if op.type == "const" else None
        if val is None or not val.HasField("blobFileValue") or reader is None:
            continue
        t = op.outputs[0].type.tensorType
        dims = [d.constant.size for d in t.dimensions]
        kind = kinds.get(MIL_pb2.DataType.Name(t.dataType))
        if kind and len([d for d in dims if d > 1]) >= 2:
            off = val.blobFileValue.offset
            seen.setdefault(off, hashlib.sha256(np.asarray(getattr(reader, kind)(off)).tobytes()).hexdigest())
    return seen, len(seen) - len(set(seen.values()))


def read_spec(pkg: Path):
    """The package's Model spec, or a UserError saying what is wrong with it."""
    from coremltools.proto import Model_pb2
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
    except (OSError, ValueError, AttributeError) as e:
        raise UserError(f"{pkg} is a corrupt .mlpackage ({type(e).__name__}: {e}); re-export it with "
                        f"`mobilellm export --backend coreml`") from None
    if not entries or spec.WhichOneof("Type") != "mlProgram" or "main" not in spec.mlProgram.functions:
        raise UserError(f"{pkg} is a corrupt .mlpackage: no ML Program 'main' function; re-export it")
    if not spec.description.state:
        raise UserError(f"{pkg} has no KV-cache states: it is not a mobilellm Core ML export")
    return spec


def runtime_missing() -> str | None:
    if sys.platform != "darwin":
        return (f"Core ML runs only on macOS/iOS (this is {platform.system()}); the package was checked "
                f"structurally; run it on macOS 15+ or iOS 18+ (e.g. `mobilellm device ios`)")
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


def _open(path, manifest):
    return CoreMLSession(Path(path), manifest)


def _refused():
    from mobilellm.quant.coreml import REFUSED
    return REFUSED


register(CoreMLPlugin(
    name="coreml", suffix=".mlpackage", schemes=("fp16", "fp32", "w8", "w8a8-static"),
    summary="Core ML ML Program (.mlpackage), iOS 18 / macOS 15, KV cache as Core ML state, fp16 compute",
    export=_export, open=_open, runtime_missing=runtime_missing, default_scheme="fp16", refused=_refused()))
