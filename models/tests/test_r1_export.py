"""A tiny R1-shaped model (tiny-r1-random: Llama4 RoPE layout, QK-norm, tied embedding) exports and
verifies on every backend through the CLI, as a user runs it. Core ML converts on Linux and is
checked structurally (it cannot predict here)."""
import json
import sys

import pytest

from mobilellm.cli import main

MSL = "64"


def _export(out, suffix, *args) -> dict:
    rc = main(["export", *args, "--max-seq-len", MSL, "--out", str(out)])
    assert rc == 0
    (manifest,) = out.glob(f"*{suffix}.manifest.json")
    return json.loads(manifest.read_text())


@pytest.mark.parametrize("scheme", ["w8a8", "8da4w"])
def test_executorch(tmp_path, scheme):
    # one block: R1's switches are per block (lowering costs ~7 s a block)
    m = _export(tmp_path, ".pte", "--model", "tiny-r1-random", "--layers", "1", "--backend", "executorch",
                "--quant", scheme)
    assert m["quant"]["scheme"] == scheme
    assert m["model"]["args"]["rope_interleaved"] and m["model"]["args"]["qk_norm"]
    assert m["verification"]["passed"], m["verification"]


def test_onnx_from_a_transformers_llama4_checkpoint(tmp_path):
    """The checkpoint is written by transformers' Llama4ForCausalLM (NoPE block with temperature tuning)."""
    from models.tests.test_hf_reference import _r1_config, _randomize
    from transformers import Llama4ForCausalLM
    ckpt = tmp_path / "ckpt"
    _randomize(Llama4ForCausalLM(_r1_config(no_rope_layers=[1, 0], attn_temperature_tuning=True, floor_scale=3)),
               seed=1).save_pretrained(ckpt)
    m = _export(tmp_path / "out", ".onnx", "--checkpoint", str(ckpt), "--backend", "onnx")
    assert m["model"]["args"]["nope_layers"] == [1]
    assert m["verification"]["passed"], m["verification"]


@pytest.mark.skipif(sys.platform == "darwin", reason="on macOS the pipeline verifies numerically instead")
def test_coreml_converts_structurally(tmp_path):
    m = _export(tmp_path, ".mlpackage", "--model", "tiny-r1-random", "--backend", "coreml")
    # The structural report sits under verification.structural (older manifests: structural_verification).
    s = m.get("structural_verification") or m["verification"]["structural"]
    assert s["passed"] and all(s["checks"].values()), s["checks"]
    assert m["verification"]["passed"]
