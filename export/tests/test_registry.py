
import pytest

from mobilellm.errors import UserError
from mobilellm.export import base


def test_names_without_import_match_registry():
    names = base.backend_names()
    base._discover()
    assert names == sorted(base._REGISTRY)
    assert "executorch" in names


def test_unknown_and_unavailable_backends():
    with pytest.raises(UserError, match="unknown backend 'tflite'; valid: .*executorch"):
        base.get_backend("tflite")
    with pytest.raises(UserError, match="'mps' is not available: the ExecuTorch MPS backend is not in the executorch 1.5.1"):
        base.get_backend("mps")


def test_artifact_without_manifest_or_known_suffix(tmp_path):
    f = tmp_path / "model.bin"
    f.write_bytes(b"x")
    with pytest.raises(UserError, match="cannot tell which runtime opens"):
        base.backend_for_artifact(f)


def test_a_new_backend_and_scheme_reach_export_manifest_run_and_report(tmp_path, monkeypatch):
    """What adding a backend and a scheme touches: one plugin module (export/tests/plugin_example/)
    registering both. Nothing else changes, and they reach every stage, in worker processes too."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path
    plugin_dir = Path(__file__).parent / "plugin_example"
    env = {**os.environ, "MOBILELLM_PLUGINS": "toy_backend",
           "PYTHONPATH": os.pathsep.join([str(plugin_dir), os.environ.get("PYTHONPATH", "")])}

    def cli(*args, rc=0):
        p = subprocess.run([sys.executable, "-m", "mobilellm.cli", *map(str, args)], env=env, capture_output=True,
                           text=True, timeout=600)
        assert p.returncode == rc, p.stderr[-3000:]
        return p

    assert "toy" in cli("export", "--help").stdout and "toy16" in cli("export", "--help").stdout
    cli("export", "--model", "tiny-random", "--backend", "toy", "--quant", "toy-half", "--max-seq-len", "64",
        "--out", tmp_path / "one")
    m = json.loads((tmp_path / "one" / "tiny-random_toy16_toy.toy.manifest.json").read_text())
    assert m["backend"] == "toy" and m["quant"]["scheme"] == "toy16" and m["verification"]["passed"]
    assert "fp16" in m["quant"]["definition"] and m["quant"]["quantizer"].startswith("safetensors fp16")
    cli("run", "--models", "tiny-random", "--backends", "toy", "--variants", "base,shared", "--quant", "w8a8",
        "--max-seq-len", "64",
        "--iters", "1", "--warmup", "0", "--cold-runs", "1", "--accuracy", "none", "--out", tmp_path / "run")
    report = (tmp_path / "run" / "report.md").read_text()
    assert "toy runs toy16 instead of w8a8: the toy backend has no integer kernels" in report
    assert "### toy / toy16 on" in report and "`toy16`: fp16 weights and compute" in report
    bad = cli("export", "--model", "tiny-random", "--backend", "toy", "--quant", "8da4w", rc=2)
    assert "valid for toy: toy16" in bad.stderr and "Traceback" not in bad.stderr
