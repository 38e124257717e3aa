"""ONNX backend: the prefill/decode step as one ONNX graph for onnxruntime and onnxruntime-genai, plus its
ORT-format twin.

The graph (export/onnx_graph.py) is the one onnxruntime-genai's model builder writes for a LLaMA: inputs
`input_ids` [1, T], `attention_mask` [1, total] and `past_key_values.N.{key,value}` [1, Hkv, S, D], outputs
`logits` [1, 1, V] (the last position's, as the builder's `prune_lm_head` writes it; [1, T, V] with --full-logits,
and in files written before 2026-12-06) and `present.N.{key,value}`, one pair per *executed* block, the cache a fixed buffer of S
positions bound as both past and present (nothing copied per step); attention is GroupQueryAttention with RoPE
fused. `<name>.genai/` beside it (export/genai.py) makes it an onnxruntime-genai model directory.
Files written before 2026-12-06 grow their cache instead (present = past + T positions; inputs `input_ids`,
`position_ids`, or before 2026-12-02 `tokens`, `input_pos`): `OnnxSession` runs all three.
The `.ort` beside the `.onnx` is what ORT-format builds of onnxruntime load on Android and iOS (the full
onnxruntime-android / onnxruntime-c packages: GroupQueryAttention and MatMulNBits are contrib ops)."""
from __future__ import annotations

import atexit
import contextlib
import io
import logging
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
from mobilellm.errors import UserError
from mobilellm.export.base import Backend, Companion, ExportResult, Session, register
from mobilellm.memory import return_memory
from mobilellm.export.onnx_graph import OPSET, export_float, io_names
from mobilellm.models.generate import check_tokens

# The schemes this backend implements, and with which quantizer (quant/onnx.py runs them).
SCHEMES = {
    "fp32": "none",
    "w8a8": "onnxruntime.quantization.quantize_dynamic (int8 per-channel symmetric weights), its per-tensor "
            "DynamicQuantizeLinear rewritten to per-token min-max quantization in standard ONNX ops, MatMulInteger "
            "with the activation zero point corrected after the GEMM (quant/onnx.py per_token_activations)",
    "w8a8-static": "onnxruntime.quantization.quantize_static, QDQ: int8 per-channel symmetric weights, uint8 "
                   "asymmetric per-tensor activations calibrated on prefill and decode steps (MinMax)",
    "w8a8-dynamic-per-tensor": "onnxruntime.quantization.quantize_dynamic: int8 per-channel symmetric weights, "
                               "uint8 asymmetric per-tensor activations per call (DynamicQuantizeLinear + MatMulInteger)",
    "w8a8-block": "onnxruntime.quantization.matmul_nbits_quantizer (DefaultWeightOnlyQuantizer): MatMulNBits bits 8, "
                  "blocks of --group-size, accuracy level 4 (int8 activations per token and block): onnxruntime-genai's "
                  "int8 (quant/onnx_nbits.py)",
    "w4a8-block": "the same with bits 4: onnxruntime-genai's int4 (quant/onnx_nbits.py)",
}
# The paper's w8a8 is implemented (per-token rewrite of quantize_dynamic); 8da4w's per-token activations are not.
CLOSEST: dict = {"8da4w": ("w4a8-block", "onnxruntime's int4 GEMM (MatMulNBits) quantizes activations per token "
                                          "and per block of the weights' group, not per token")}
CALIB_PREFILL, CALIB_DECODE, CALIB_WINDOWS = 32, 24, 2  # per calibration window: prefill, then decode steps
LEGACY_INPUTS = ["tokens", "input_pos"]  # the first two inputs of files written before 2026-12-02
META = "mobilellm."  # metadata_props prefix: the file describes itself (no manifest needed to run it)


# Protobuf refuses to serialize a message over 2 GB: a float graph of ~500M parameters and up is written
# with its tensors in one external data file beside it (ONNX's own format for large models).
EXTERNAL_OVER_BYTES = 1_800_000_000


def is_large(proto_or_bytes) -> bool:
    n = proto_or_bytes if isinstance(proto_or_bytes, int) else sum(
        len(t.raw_data) for t in proto_or_bytes.graph.initializer)
    return n > EXTERNAL_OVER_BYTES


def save_model(proto, path: Path, inline: bool = False) -> None:
    """onnx.save, with the tensors in `<name>.data` beside the file when the model is too big for one protobuf;
    `inline`: one file always (what is published), or one clear error past protobuf's limit."""
    import onnx
    if inline:
        try:
            onnx.save(proto, str(path))
        except ValueError as e:  # "Message onnx.ModelProto exceeds maximum protobuf size of 2GB"
            raise UserError(f"the quantized ONNX model does not fit in one file ({e}); this exporter publishes "
                            f"single-file models, up to 2 GB") from None
    elif is_large(proto):
        onnx.save(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=Path(path).name + ".data", size_threshold=1024)
    else:
        onnx.save(proto, str(path))


@contextlib.contextmanager
def _quiet():
    """The exporter and converter print progress, warnings and INFO logs; show them only on failure."""
    buf = io.StringIO()
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(buf), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    except Exception:
        print(buf.getvalue(), file=sys.stderr)
        raise
    finally:
        logging.disable(logging.NOTSET)


def _new_session(source, threads: int = 2, ort_format: bool = False):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.log_severity_level = 3
    if ort_format:
        so.add_session_config_entry("session.load_model_format", "ORT")
    return ort.InferenceSession(source, so, providers=["CPUExecutionProvider"])


def _calibration_feeds(float_path: Path, model, cfg) -> tuple[list[dict], str]:
    """Inputs for static calibration: per text window, a prefill chunk, then decode steps that
    feed the real cache back, so activation ranges cover both shapes the app runs."""
    from mobilellm.quant.calibration import calibration_windows
    tok = None
    if cfg.tokenizer is not None:
        from mobilellm.models.tokenizer import Tokenizer
        tok = Tokenizer(cfg.tokenizer)
        tok.check_vocab(model.args.vocab_size)
    window = min(CALIB_PREFILL + CALIB_DECODE, cfg.max_seq_len)
    windows, source = calibration_windows(cfg.calibration, model.args.vocab_size, tok, window=window,
                                          max_windows=CALIB_WINDOWS)
    a = model.args
    sess = _new_session(str(float_path), threads=cfg.threads)
    ins, outs = io_names(a.n_executed)
    feeds = []
    for ids in windows:  # a cache buffer of the window's length (the graph's S is dynamic)
        past = [np.zeros((1, a.n_kv_heads, len(ids), a.head_dim), np.float32)] * (2 * a.n_executed)
        pos = 0
        for chunk in [ids[:CALIB_PREFILL]] + [[t] for t in ids[CALIB_PREFILL:]]:
            feed = dict(zip(ins, [np.array([chunk], np.int64), np.ones((1, pos + len(chunk)), np.int64), *past]))
            feeds.append(feed)
            past = sess.run(outs, feed)[1:]
            pos += len(chunk)
    return feeds, f"{source}; {len(feeds)} calls: per window a prefill of {CALIB_PREFILL} tokens, then decode steps"


def _threads() -> int:
    """Threads of a session opened to run an artifact (bench and eval pass theirs through the environment,
    as the app would set them); exports use ExportConfig.threads."""
    raw = os.environ.get("MOBILELLM_THREADS", "2")
    if not raw.isdigit() or int(raw) < 1:
        raise UserError(f"MOBILELLM_THREADS must be a positive integer, got {raw!r}")
    return int(raw)


def _set_metadata(path: Path, model, cfg) -> dict:
    import onnx
    m = onnx.load(str(path))
    facts = {"max_seq_len": cfg.max_seq_len, "vocab_size": model.args.vocab_size, "quant": cfg.quant,
             "executed_blocks": model.args.n_executed, "model": model.args.name}
    del m.metadata_props[:]
    used = {n.domain for n in m.graph.node} | {""}  # quant_pre_process imports every domain it knows
    keep = [o for o in m.opset_import if o.domain in used]
    del m.opset_import[:]
    m.opset_import.extend(keep)
    onnx.helper.set_model_props(m, {META + k: str(v) for k, v in facts.items()})
    save_model(m, path, inline=True)
    dims = lambda v: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]  # noqa: E731
    io_ = {"inputs": {v.name: dims(v) for v in m.graph.input}, "outputs": {v.name: dims(v) for v in m.graph.output}}
    return {"io": io_, "opset": {o.domain or "ai.onnx": o.version for o in m.opset_import},
            "sizes": initializer_bytes(m)}


def _write_ort(onnx_path: Path) -> Path:
    """ORT format for onnxruntime-mobile, optimized (Fixed style) for ARM: QDQ kept as int8."""
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort
    with _quiet():
        convert_onnx_models_to_ort(onnx_path, output_dir=onnx_path.parent,
                                   optimization_styles=[OptimizationStyle.Fixed], target_platform="arm")
    return onnx_path.with_suffix(".ort")


def initializer_bytes(model) -> dict:
    """Stored bytes split into embedding (table and output projection), blocks, and the rest."""
    import onnx
    out = {"embedding_bytes": 0, "blocks_bytes": 0, "other_bytes": 0}
    for t in model.graph.initializer:
        n = int(np.prod(t.dims)) * np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
        key = ("embedding_bytes" if "embed_tokens" in t.name else "blocks_bytes" if "layers." in t.name
               else "other_bytes")
        out[key] += n
    return out


def _export(model, cfg, tmp: Path, steps):
    from mobilellm.io import register_staged
    stage = Path(tempfile.mkdtemp(prefix=f".partial-{os.getpid()}-onnx-", dir=Path(tmp).parent))
    atexit.register(shutil.rmtree, stage, ignore_errors=True)  # the .ort waits here until published
    register_staged(stage)  # and goes if the process is stopped by a signal
    try:
        return _export_in(model, cfg, tmp, steps, stage)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


def _export_in(model, cfg, tmp: Path, steps, stage: Path) -> dict:
    from mobilellm.quant.onnx import quantize
    float_path, final = stage / "float.onnx", stage / "model.onnx"
    with steps.step(f"torch.onnx export (dynamo, opset {OPSET})"):
        export_float(model, float_path, cfg.max_seq_len, release=True, full_logits=cfg.full_logits)
    model.release_weights()  # ours (see the pipeline); from here on the graph is the model
    return_memory()
    calib = None
    with steps.step(f"quantize {cfg.quant}"):
        feeds = None
        if cfg.scheme.calibrated:
            feeds, calib = _calibration_feeds(float_path, model, cfg)
        with _quiet():  # onnxruntime's quantizer logs a pre-processing hint (skipped on purpose: quant/onnx.py)
            info = quantize(float_path, final, cfg.scheme, feeds, share_embedding=cfg.quantize_embedding,
                            group_size=cfg.group_size)
    for f in stage.glob("float.onnx*"):  # the float graph and its data file are done with
        f.unlink()
    # No quantized eager reference: the graph is quantized by onnxruntime's tools, not lowered from a
    # quantized PyTorch model (torchao's per-token W8A8 is the same scheme but another implementation,
    # a few logit LSBs apart: not a lowering gate). The scheme gate against fp32 applies.
    quant_ref = None
    return_memory()
    facts = _set_metadata(final, model, cfg)
    return_memory()
    with steps.step("ORT format (.ort)"):
        ort_path = _write_ort(final)
    os.replace(final, tmp)
    quant = {**info, "calibration": calib, "opset": OPSET}
    runtime = {"provider": "CPUExecutionProvider", "intra_op_threads": "MOBILELLM_THREADS, default 2"}
    return ExportResult(quant=quant, quantized_reference=quant_ref, facts={
        **facts, "runtime": runtime, "sizes": {**facts["sizes"], "ort_file_bytes": ort_path.stat().st_size}},
        companions=[Companion(ort_path, ".ort", {"format": "ORT (onnxruntime-mobile)"}, verify=True)])


class OnnxSession(Session):
    """An `.onnx` or `.ort` file in an onnxruntime InferenceSession; the cache lives here between calls.

    A graph with `attention_mask` keeps one buffer of max_seq_len positions per cache tensor, bound (IO binding)
    as both its past input and its present output, as onnxruntime-genai runs it: a step writes its positions in
    place, a rewind is only a shorter mask. Older graphs grow their cache: present is fed back as past."""

    def __init__(self, path: Path, manifest: dict | None = None, threads: int | None = None):
        self.path, self.manifest = Path(path), manifest or {}
        self.max_seq_len = self.manifest.get("max_seq_len")
        self.vocab_size = ((self.manifest.get("model") or {}).get("args") or {}).get("vocab_size")
        self.threads = threads or _threads()
        self._bytes = self._sess = None
        self.last_position_only = False  # known after init, from the graph's logits shape

    def load(self) -> None:
        try:
            self._bytes = self.path.read_bytes()
        except OSError as e:
            raise UserError(f"cannot read {self.path}: {e.strerror}") from None
        if not self._bytes:
            raise UserError(f"{self.path} is empty; re-export it with `mobilellm export --backend onnx`")

    def init(self) -> None:
        if self._bytes is None:
            self.load()
        is_ort = self.path.suffix == ".ort" or self._bytes[4:8] == b"ORTM"
        try:
            self._sess = _new_session(self._bytes, self.threads, ort_format=is_ort)
        except Exception as e:  # InvalidProtobuf, Fail, InvalidGraph ... all mean the same to a user
            why = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
            raise UserError(f"{self.path} is not a loadable {'ORT-format' if is_ort else 'ONNX'} model: {why}; "
                            f"re-export it with `mobilellm export --backend onnx`") from None
        meta = self._sess.get_modelmeta().custom_metadata_map
        names = [i.name for i in self._sess.get_inputs()]
        if META + "max_seq_len" not in meta or names[:2] not in (["input_ids", "attention_mask"],
                                                                  ["input_ids", "position_ids"], LEGACY_INPUTS):
            raise UserError(f"{self.path} is an ONNX model but not a mobilellm export (expected inputs input_ids, "
                            f"attention_mask, past_key_values.N.key/value and {META}* metadata; found {names[:4]})")
        self._contract = {"attention_mask": "shared", "position_ids": "growing", "input_pos": "legacy"}[names[1]]
        self.max_seq_len, self.vocab_size = int(meta[META + "max_seq_len"]), int(meta[META + "vocab_size"])
        self._in, self._out = names, [o.name for o in self._sess.get_outputs()]
        capacity = self.max_seq_len if self._contract == "shared" else 0
        self._empty = [[1 if i == 0 else capacity if i == 2 else d for i, d in enumerate(x.shape)]
                       for x in self._sess.get_inputs()[2:]]
        self._bytes = None  # the session holds its own copy
        self._binding = None
        self._ones = np.ones((1, self.max_seq_len), np.int64)
        import onnxruntime as ort
        self._wrap = ort.OrtValue.ortvalue_from_numpy  # looked up once, not per decode step
        self._logits_dtype = {"tensor(float)": np.float32, "tensor(float16)": np.float16}.get(
            self._sess.get_outputs()[0].type)
        self.last_position_only = logits_last_only(self._sess.get_outputs()[0].shape)
        self.reset()

    def reset(self) -> None:
        import onnxruntime as ort
        self._len = 0
        if self._contract == "shared" and self._binding is not None:
            return  # positions at or past the mask's length are never read: nothing to clear
        self._past = [ort.OrtValue.ortvalue_from_numpy(np.zeros(shape, np.float32)) for shape in self._empty]
        if self._contract == "shared":
            self._binding = self._sess.io_binding()
            self._binding.bind_output(self._out[0])  # logits first: get_outputs()[0]
            for name_in, name_out, buf in zip(self._in[2:], self._out[1:], self._past):
                self._binding.bind_ortvalue_input(name_in, buf)
                self._binding.bind_ortvalue_output(name_out, buf)  # the same buffer: written in place

    def forward(self, ids, start_pos: int) -> np.ndarray:
        check_tokens(ids, start_pos, self.max_seq_len, self.vocab_size)
        if start_pos > self._len:
            raise UserError(f"start position {start_pos} skips past the cache, which holds {self._len} positions")
        out = self._step_shared(ids, start_pos) if self._contract == "shared" else self._step_growing(ids, start_pos)
        self._len = start_pos + len(ids)
        return out[0].astype(np.float32, copy=False)

    def _step_shared(self, ids, start_pos: int) -> np.ndarray:
        b = self._binding
        b.bind_cpu_input(self._in[0], np.array([list(ids)], np.int64))
        b.bind_cpu_input(self._in[1], self._ones[:, :start_pos + len(ids)])  # a view: the mask is all ones
        if self._logits_dtype is None:
            b.bind_output(self._out[0])
            self._sess.run_with_iobinding(b)
            return b.get_outputs()[0].numpy()
        # the logits land in an array made for this step (the caller keeps it): no output objects to
        # wrap and copy after the run, which cost as much as the run itself on a small model
        logits = np.empty((1, 1 if self.last_position_only else len(ids), self.vocab_size), self._logits_dtype)
        b.bind_ortvalue_output(self._out[0], self._wrap(logits))
        self._sess.run_with_iobinding(b)
        return logits

    def _step_growing(self, ids, start_pos: int) -> np.ndarray:
        import onnxruntime as ort
        if start_pos < self._len:  # rewind: keep the first start_pos positions
            self._past = [ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(p.numpy()[:, :, :start_pos]))
                          for p in self._past]
        pos = (np.array([start_pos], np.int64) if self._contract == "legacy"
               else np.arange(start_pos, start_pos + len(ids), dtype=np.int64)[None])
        feed = {self._in[0]: ort.OrtValue.ortvalue_from_numpy(np.array([list(ids)], np.int64)),
                self._in[1]: ort.OrtValue.ortvalue_from_numpy(pos), **dict(zip(self._in[2:], self._past))}
        out = self._sess.run_with_ort_values(self._out, feed)
        self._past = list(out[1:])
        return out[0].numpy()


def logits_last_only(shape) -> bool:
    """Whether a graph's logits output [1, 1, V] holds the last position only (a static 1 where a
    full-logits graph has its sequence dimension), as onnxruntime-genai decides it (Model::IsPruned)."""
    return len(shape) == 3 and shape[1] == 1


def _open(path, manifest):
    """A .onnx/.ort file in a plain session; a <name>.genai/ directory through onnxruntime-genai's generator."""
    if Path(path).is_dir():
        from mobilellm.export.genai import GenaiSession
        return GenaiSession(Path(path), manifest)
    return OnnxSession(Path(path), manifest)


def _runtime_missing():
    try:
        import onnxruntime  # noqa: F401
    except ImportError as e:
        return f"onnxruntime is not installed ({e})"
    return None


def _genai_dir(out: Path, args, cfg) -> dict:
    from mobilellm.export import genai
    d = genai.write(out, args, cfg.max_seq_len, cfg.tokenizer, threads=cfg.threads)
    return {"genai_dir": {"path": d.name, "config": "genai_config.json", "loader": "onnxruntime_genai.Model(dir)",
                          "files": sorted(f.name for f in d.iterdir())}}


register(Backend(
    name="onnx", suffix=".onnx", schemes=SCHEMES, closest=CLOSEST, default_scheme="w8a8-block", rank=10,
    quantized_reference=False, quantizes_embedding=True, opens_dir=(".genai", "genai_config.json"),
    last_logits=True,  # logits [1, 1, V] (what a generator reads; the builder's prune_lm_head); --full-logits: [1, T, V]
    embedding_schemes=("w8a8", "w8a8-dynamic-per-tensor", "w8a8-block", "w4a8-block"),
    export_memory=(800.0, 8.0),  # W8A8 peak: 350M 3,334 MiB, 1.5B 12,014 (fit: 761 + 7.8 B/p)
    summary="torch.onnx (dynamo) graph as onnxruntime-genai's builder writes one (GroupQueryAttention, shared "
            "past/present cache buffers), onnxruntime CPU; <name>.genai/ for onnxruntime-genai, .ort for ORT-format builds",
    export=_export, open=_open, runtime_missing=_runtime_missing, after_publish=_genai_dir,
))
