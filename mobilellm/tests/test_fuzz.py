"""The parsers of user files, fuzzed for a bounded time (hypothesis): every input either parses or
raises one clear UserError, never anything else (which the CLI would show as a bug).

Parsers: config.json (ModelArgs.from_hf_config and read_config), the safetensors header
(read_weights), the artifact manifest, results JSON, calibration text."""
from __future__ import annotations

import json
import os
import struct
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mobilellm.errors import UserError

# Deterministic in the suite (CI must not pass or fail by chance); MOBILELLM_FUZZ_RANDOM=1 explores new inputs.
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None,
                derandomize=not os.environ.get("MOBILELLM_FUZZ_RANDOM"))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12)
CONFIG_KEYS = ["hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
               "head_dim", "vocab_size", "rms_norm_eps", "rope_theta", "max_position_embeddings", "model_type",
               "layer_sharing", "layer_repeat", "share_embedding", "intermediate_size_mlp", "no_rope_layers",
               "use_qk_norm", "num_local_experts", "attention_chunk_size", "rope_scaling", "tie_word_embeddings"]
small = st.one_of(st.integers(-3, 70), st.sampled_from(["llama", "mobilellm", "llama4_text", "gpt2", ""]),
                  st.booleans(), st.none(), st.floats(allow_nan=True), st.lists(st.integers(-1, 2), max_size=4),
                  json_values)
configs = st.dictionaries(st.sampled_from(CONFIG_KEYS), small, max_size=len(CONFIG_KEYS))


def _only_user_errors(fn, *args):
    try:
        fn(*args)
    except UserError:
        pass


@FUZZ
@given(configs)
def test_config_dicts(cfg):
    from mobilellm.models.config import ModelArgs
    _only_user_errors(ModelArgs.from_hf_config, cfg)


@FUZZ
@given(st.binary(max_size=300) | configs.map(lambda d: json.dumps(d).encode()))
def test_config_files(raw):
    from mobilellm.models.checkpoint import read_config
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "config.json").write_bytes(raw)
        _only_user_errors(read_config, Path(d))


@st.composite
def safetensors_files(draw):
    """A safetensors file: 8-byte header length, JSON header, data; each part drawn or corrupted."""
    header = draw(st.dictionaries(st.text(max_size=20), st.fixed_dictionaries({
        "dtype": st.sampled_from(["F32", "F16", "BF16", "I32", "X9"]),
        "shape": st.lists(st.integers(-1, 5), max_size=3),
        "data_offsets": st.lists(st.integers(-1, 64), min_size=0, max_size=3)}), max_size=3))
    body = json.dumps(header).encode()
    n = draw(st.sampled_from([len(body), 0, 2**40, len(body) + 3]))
    data = draw(st.binary(max_size=64))
    return struct.pack("<Q", n) + body + data if draw(st.booleans()) else draw(st.binary(max_size=80))


@FUZZ
@given(safetensors_files())
def test_safetensors_headers(raw):
    from mobilellm.models.checkpoint import read_weights
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "model.safetensors").write_bytes(raw)
        _only_user_errors(read_weights, Path(d))


manifests = st.fixed_dictionaries({"schema": st.sampled_from(["mobilellm.manifest", "x"]),
                                   "version": st.sampled_from([1, 2, 3, "2", None])},
                                  optional={"backend": json_values | st.sampled_from(["onnx", "executorch", "coreml"]),
                                            "quant": json_values | st.fixed_dictionaries(
                                                {"scheme": st.sampled_from(["w8a8", "w8", "w8a8-dynamic", "int3"])}),
                                            "model": json_values, "max_seq_len": json_values})


@FUZZ
@given(st.binary(max_size=200) | manifests.map(lambda d: json.dumps(d).encode()) | json_values.map(
    lambda v: json.dumps(v).encode()))
def test_manifests(raw):
    from mobilellm.manifest import read_manifest
    with tempfile.TemporaryDirectory() as d:
        art = Path(d) / "m.onnx"
        (Path(d) / "m.onnx.manifest.json").write_bytes(raw)
        _only_user_errors(read_manifest, art)


records = st.fixed_dictionaries({"schema": st.sampled_from(["mobilellm.results", "x"]),
                                 "version": st.sampled_from([1, 2, None, "1"]),
                                 "records": st.lists(st.dictionaries(st.sampled_from(
                                     ["metric", "unit", "value", "statistic", "device", "backend", "scheme",
                                      "model", "variant", "samples"]), json_values, max_size=10), max_size=3)})


@FUZZ
@given(st.binary(max_size=200) | records.map(lambda d: json.dumps(d).encode()))
def test_results_files(raw):
    from mobilellm.benchmarks import schema
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "results.json"
        p.write_bytes(raw)
        _only_user_errors(schema.load, p)
        _only_user_errors(schema.load_missing, p)


@FUZZ
@given(st.binary(max_size=300) | st.text(max_size=200).map(str.encode) | st.lists(
    st.integers(-5, 3000), max_size=40).map(lambda xs: " ".join(map(str, xs)).encode()))
def test_calibration_files(raw):
    from mobilellm.quant.calibration import calibration_windows
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "calib.txt"
        p.write_bytes(raw)
        _only_user_errors(calibration_windows, p, 2048, None, 16, 2)


def test_a_zero_head_count_found_by_the_fuzzer_is_one_clear_error():
    from mobilellm.models.config import ModelArgs
    with pytest.raises(UserError):
        ModelArgs.from_hf_config({"hidden_size": 64, "intermediate_size": 2, "num_hidden_layers": 1,
                                  "num_attention_heads": 0})


def test_the_fuzzers_reach_the_error_paths():
    """A fuzz target that only ever parsed would prove nothing: each parser refuses a bad input."""
    from mobilellm.models.config import ModelArgs
    with pytest.raises(UserError):
        ModelArgs.from_hf_config({"hidden_size": -1, "intermediate_size": 2, "num_hidden_layers": 1,
                                  "num_attention_heads": 1})
