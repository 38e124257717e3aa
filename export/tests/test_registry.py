
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
