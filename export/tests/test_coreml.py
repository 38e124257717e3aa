"""Core ML backends on tiny models. Core ML cannot predict on Linux, so these pin the structure:
the cache is Core ML state and every state is written (read from the MIL program itself, so a
converter that silently drops the writes fails here), quantization is what its label says, shared
weights are stored once, and refusals/corrupt packages are clear errors. Numerical verification
runs in the same pipeline on macOS. Each artifact is exported once per module."""
import shutil
import sys
from collections import Counter

import numpy as np
import pytest

from mobilellm.errors import UserError
from mobilellm.export.base import ExportConfig, get_backend
from mobilellm.export.pipeline import export_artifact
from mobilellm.models.config import from_name
from mobilellm.models.model import build

MSL = 64
CM, ETC = get_backend("coreml"), get_backend("executorch-coreml")
LINUX = sys.platform != "darwin"


def _export(backend, out, scheme, repeat=1):
    model = build(from_name("tiny-random", repeat=repeat), seed=0, max_seq_len=MSL)
    return export_artifact(model, "random (seed 0)", backend, ExportConfig(quant=scheme, max_seq_len=MSL), out, quiet=True)


@pytest.fixture(scope="module")
def system_tmp(tmp_path_factory):
    """The system temp dir as `tempfile` sees it while w8_pair exports."""
    return tmp_path_factory.mktemp("system-tmp")


@pytest.fixture(scope="module")
def w8_pair(tmp_path_factory, system_tmp):
    d = tmp_path_factory.mktemp("w8")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("tempfile.tempdir", str(system_tmp))
        return _export(CM, d / "plain", "8w"), _export(CM, d / "shared", "8w", repeat=2)


def test_coremltools_temporary_files_stay_in_the_staging(w8_pair, system_tmp):
    """The converter's weights and temporary .mlpackages (gigabytes at 1B) go to a staged directory
    beside the artifact, removed with it: none in the system temp dir (coremltools removes its own
    only at a normal interpreter exit: every signal, crash or os._exit left them there)."""
    import tempfile
    assert tempfile.gettempdir() != str(system_tmp)  # restored after the export
    assert sorted(system_tmp.iterdir()) == []
    for path, _ in w8_pair:
        assert not [q.name for q in path.parent.iterdir() if q.name.startswith(".partial-")]


@pytest.fixture(scope="module")
def a8_shared(tmp_path_factory):
    return _export(CM, tmp_path_factory.mktemp("a8"), "w8a8-static", repeat=2)


def _ops(pkg) -> Counter:
    """Op types of the package's MIL program, read straight from its protobuf."""
    from coremltools.proto import Model_pb2
    spec = Model_pb2.Model()
    spec.ParseFromString((pkg / "Data" / "com.apple.CoreML" / "model.mlmodel").read_bytes())
    fn = spec.mlProgram.functions["main"]
    return Counter(op.type for op in fn.block_specializations[fn.opset].operations), spec


def test_cache_is_state_and_every_state_is_written(w8_pair, a8_shared):
    for path, m in (*w8_pair, a8_shared):
        ops, spec = _ops(path)
        n = m["model"]["executed_blocks"]
        assert len(spec.description.state) == 2 * n  # one k/v pair per executed block, not per stored one
        assert ops["write_state"] == 2 * n and ops["slice_update"] == 2 * n, ops
        assert spec.specificationVersion >= 9  # iOS 18 / macOS 15
        s = m["structural_verification"]
        assert s["passed"] and all(s["checks"].values()), s["checks"]
        assert m["verification"]["passed"] and "not possible here" in m["verification"]["numerical"]


def test_a_dropped_state_write_fails_structural_verification(w8_pair, tmp_path):
    from mobilellm.export.backends.coreml import inspect_package
    path, m = w8_pair[0]
    broken = tmp_path / path.name
    shutil.copytree(path, broken)
    _, spec = _ops(broken)
    fn = spec.mlProgram.functions["main"]
    block = fn.block_specializations[fn.opset]
    keep = [op for op in block.operations if op.type != "write_state"]
    del block.operations[:]
    block.operations.extend(keep)
    (broken / "Data" / "com.apple.CoreML" / "model.mlmodel").write_bytes(spec.SerializeToString())
    model = build(from_name("tiny-random"), max_seq_len=MSL)
    s = inspect_package(broken, model, ExportConfig(quant="8w", max_seq_len=MSL))
    assert not s["passed"] and not s["checks"]["every_state_written_once"]


def test_w8_quantizes_weights_and_stores_them_once(w8_pair):
    (plain, mp), (shared, ms) = w8_pair
    for m in (mp, ms):
        s = m["structural_verification"]
        assert s["linear_ops_float_weights_over_threshold"] == 0 and s["linear_ops_int8_weights"] > 0
        assert s["activation_quantize_ops"] == 0  # weight-only: never labelled W8A8
        assert s["embedding_gather_shares_head_weight"] and s["duplicate_weight_blobs"] == 0
        assert m["quant"]["scheme"] == "8w" and "int8" in m["quant"]["definition"]
    # layer sharing: twice the executed blocks, the same weight bytes. Only the program text (the
    # op list, ~13 KB per executed block) grows: 0.4% of a 125M package, but most of a tiny one.
    assert ms["structural_verification"]["linear_ops"] > mp["structural_verification"]["linear_ops"]
    assert ms["sizes"]["weight_bytes"] == mp["sizes"]["weight_bytes"]
    program = [(p / "Data" / "com.apple.CoreML" / "model.mlmodel").stat().st_size for p in (plain, shared)]
    assert ms["sizes"]["file_bytes"] - mp["sizes"]["file_bytes"] == program[1] - program[0]
    extra_blocks = ms["model"]["executed_blocks"] - mp["model"]["executed_blocks"]
    assert (program[1] - program[0]) / extra_blocks < 20_000


def test_w8a8_static_quantizes_activations_of_every_executed_linear(a8_shared):
    _, m = a8_shared
    s, q = m["structural_verification"], m["quant"]
    per_block = 7  # q, k, v, o, gate, up, down
    assert s["linear_ops_int8_inputs"] == per_block * m["model"]["executed_blocks"]
    assert s["activation_quantize_ops"] > 0 and s["duplicate_weight_blobs"] == 0
    assert q["scheme"] == "w8a8-static" and "static" in q["definition"]
    if LINUX:  # PT2E with CoreMLQuantizer: its eager model meets the scheme's thresholds
        assert "CoreMLQuantizer" in q["method"] and q["quantized_eager_passed"]
        assert q["quantized_eager_vs_fp32"]["cosine_min"] >= q["thresholds"]["min_cosine"]


def test_manifest_records_deployment_and_io(w8_pair):
    _, m = w8_pair[0]
    assert m["coreml"]["compute_units"] == "ALL" and m["coreml"]["deployment_target"] == "iOS18"
    io = m["io"]
    assert [i["name"] for i in io["inputs"]] == ["tokens", "input_pos"]  # as the iOS app reads it
    assert io["chunk_lengths"] == io["inputs"][0]["enumerated_T"] == [1, 2, 4, 8, 16, 32]
    assert len(io["states"]) == 2 * m["model"]["executed_blocks"] and io["outputs"][0]["name"] == "logits"
    assert set(m["structural_verification"]["inputs"]) == {"tokens", "input_pos"}


@pytest.mark.parametrize("backend", [CM, ETC], ids=lambda b: b.name)
def test_dynamic_activation_schemes_refused_with_reason(backend):
    for scheme in ("w8a8", "w8a8-dynamic-per-tensor", "8da4w"):
        with pytest.raises(UserError, match="no dynamic .*activation quantization.*valid for"):
            backend.check_scheme(scheme)
    with pytest.raises(UserError, match="valid for"):
        backend.check_scheme("int3")


def test_quantize_embedding_alone_refused(tmp_path):
    model = build(from_name("tiny-random"), max_seq_len=MSL)
    with pytest.raises(UserError, match="--quantize-embedding is not offered by coreml"):
        export_artifact(model, "r", CM, ExportConfig(quant="fp16", max_seq_len=MSL, quantize_embedding=True), tmp_path)
    assert not list(tmp_path.iterdir())  # nothing half-written


@pytest.mark.skipif(not LINUX, reason="on macOS Core ML can run")
def test_runtime_missing_names_the_reason(a8_shared):
    assert "macOS" in CM.runtime_missing() and "Apple" in ETC.runtime_missing()
    # where the package cannot run, no eager reference is computed for a numerical check that cannot happen
    path, m = a8_shared
    assert "not possible here" in m["verification"]["numerical"] and m["verification"]["passed"] is True
    assert not {"fp32 reference", "quantized eager reference", "its rounding sensitivity"} & set(m["export_step_seconds"])


def test_corrupt_package_is_a_clear_error(w8_pair, tmp_path, cli):
    path, m = w8_pair[0]
    bad = tmp_path / path.name
    shutil.copytree(path, bad)
    (bad / "Data" / "com.apple.CoreML" / "model.mlmodel").write_bytes(b"\x0a\xff\xff garbage")
    with pytest.raises(UserError, match="corrupt .mlpackage"):
        CM.open(bad, m).load()
    (tmp_path / "x.mlmodel").write_text("x")
    with pytest.raises(UserError, match="not an .mlpackage"):
        CM.open(tmp_path / "x.mlmodel", m).load()
    p = cli("generate", "--artifact", bad, "--prompt-ids", "1,2,3", check_rc=2)
    assert "Traceback" not in p.stderr and ("corrupt" in p.stderr or "macOS" in p.stderr)


def test_session_feeds_prompts_in_enumerated_chunks():
    from mobilellm.export.backends.coreml import CoreMLSession
    calls = []

    class Fake:  # stands in for MLModel: logits row t = absolute position of token t
        def predict(self, feed, state=None):
            t, p = feed["tokens"], int(feed["input_pos"][0])
            calls.append(t.shape[1])
            return {"logits": np.arange(p, p + t.shape[1], dtype=np.float16)[None, :, None].repeat(5, 2)}

    s = CoreMLSession("x.mlpackage", {})
    s.model, s.lengths, s.max_seq_len, s.vocab_size = Fake(), [32, 16, 8, 4, 2, 1], MSL, 64
    out = s.forward(list(range(1, 38)), 3)  # 37 tokens = 32 + 4 + 1
    assert calls == [32, 4, 1] and out.shape == (37, 5) and out.dtype == np.float32
    assert np.array_equal(out[:, 0], np.arange(3, 40))


def test_executorch_coreml_pte_is_one_stateful_delegate(tmp_path):
    path, m = _export(ETC, tmp_path, "fp16", repeat=2)
    s = m["structural_verification"]
    assert path.suffix == ".pte" and s["passed"], s["checks"]
    assert s["delegation"]["coreml_delegates"] == 1 and not s["delegation"]["ops_outside_coreml"]
    assert s["method_input_dtypes"] == ["torch.int64", "torch.int64"]  # the forward contract is kept
    assert s["states"] == 2 * m["model"]["executed_blocks"] == s["write_state_ops"]
    assert s["duplicate_weight_blobs"] == 0 and m["coreml"]["deployment_target"] == "iOS18"
