"""ExecuTorch backend on tiny models: every scheme lowers, runs in the ExecuTorch runtime and
matches eager PyTorch; sharing costs no bytes; ExecuTorch's own LLM runner generates from it."""
import json

import numpy as np
import pytest

from mobilellm.errors import UserError, VerificationError
from mobilellm.export.base import ExportConfig, get_backend
from mobilellm.export.pipeline import export_artifact
from mobilellm.manifest import read_manifest
from mobilellm.models.config import from_name
from mobilellm.models.model import build

MSL = 64
ET = get_backend("executorch")


def _export(tmp_path, scheme, repeat=1, emb=False, **kw):
    model = build(from_name("tiny-random", repeat=repeat), seed=0, max_seq_len=MSL)
    cfg = ExportConfig(quant=scheme, max_seq_len=MSL, group_size=32, quantize_embedding=emb)
    return export_artifact(model, "random (seed 0)", ET, cfg, tmp_path, quiet=True, **kw)


@pytest.mark.parametrize("scheme,emb", [("fp32", False), ("w8a8", True), ("w8a8-static", False), ("8da4w", False)])
def test_scheme_lowers_runs_and_verifies(tmp_path, scheme, emb):
    path, m = _export(tmp_path, scheme, emb=emb)
    assert path.is_file() and read_manifest(path)["sha256"] == m["sha256"]
    v = m["verification"]
    assert v["passed"] and v["vs_fp32"]["positions"] == 24
    assert m["quant"]["scheme"] == scheme and m["delegation"]["xnnpack_partitions"] >= 1
    if scheme != "fp32":
        assert v["vs_quantized_eager"]["cosine_min"] > 0.999  # lowering adds no error of its own
    assert "llama::custom_sdpa" in json.dumps(m["delegation"]) or "custom_sdpa" in json.dumps(m["delegation"])


def test_layer_sharing_pays_no_bytes(tmp_path):
    plain, _ = _export(tmp_path / "a", "w8a8", repeat=1, emb=True, verify=False)
    shared, ms = _export(tmp_path / "b", "w8a8", repeat=2, emb=True, verify=False)
    a, b = plain.stat().st_size, shared.stat().st_size
    assert ms["model"]["executed_blocks"] == 4 and ms["model"]["stored_blocks"] == 2
    assert abs(b - a) / a < 0.01, (a, b)


def test_metadata_methods_for_llm_runner(tmp_path):
    from executorch.runtime import Runtime
    path, _ = _export(tmp_path, "fp32", repeat=2, verify=False)
    prog = Runtime.get().load_program(path)
    got = {n: prog.load_method(n).execute([])[0] for n in ("get_max_seq_len", "get_vocab_size", "get_n_layers",
                                                            "use_kv_cache", "enable_dynamic_shape")}
    assert got == {"get_max_seq_len": MSL, "get_vocab_size": 512, "get_n_layers": 4, "use_kv_cache": True,
                   "enable_dynamic_shape": True}


def test_text_llm_runner_generates(tmp_path, tiny_ckpt):
    """ExecuTorch's C++ LLM runner (what LlmModule / TextRunner wrap) drives our .pte."""
    from executorch.extension.llm.runner import GenerationConfig, TextLLMRunner
    from mobilellm.models.checkpoint import load_model
    from mobilellm.models.generate import EagerRunner, generate
    from mobilellm.models.tokenizer import Tokenizer
    model = load_model(tiny_ckpt, max_seq_len=MSL)
    cfg = ExportConfig(quant="fp32", max_seq_len=MSL, tokenizer=tiny_ckpt / "tokenizer.model")
    path, _ = export_artifact(model, "ckpt", ET, cfg, tmp_path, quiet=True, verify=False)
    pieces = []
    runner = TextLLMRunner(str(path), str(tiny_ckpt / "tokenizer.model"))
    runner.generate("def main", GenerationConfig(max_new_tokens=12, temperature=0.0, echo=False, num_bos=1),
                    token_callback=pieces.append)
    text = "".join(pieces)
    tok = Tokenizer(tiny_ckpt / "tokenizer.model")
    want = generate(EagerRunner(model), tok.encode("def main"), 12).new_ids
    assert len(pieces) >= 10
    assert text.strip() == tok.decode(want).strip()


def test_refuses_existing_output_and_keeps_failed(tmp_path, monkeypatch):
    from mobilellm.export import verify as V
    path, _ = _export(tmp_path, "fp32", verify=False)
    with pytest.raises(UserError, match="already exists; pass --force"):
        _export(tmp_path, "fp32")
    monkeypatch.setitem(V.THRESHOLDS, "w8a8", V.Thresholds(min_top1=1.0, min_cosine=1.000001))  # unreachable
    with pytest.raises(VerificationError, match="kept as .*w8a8_executorch.pte.failed"):
        _export(tmp_path, "w8a8")
    assert not (tmp_path / "tiny-random_w8a8_executorch.pte").exists()
    failed = tmp_path / "tiny-random_w8a8_executorch.pte.failed"
    assert failed.is_file() and read_manifest(failed)["verification"]["passed"] is False
    assert not list(tmp_path.glob(".partial-*"))


def test_corrupt_or_truncated_pte(tmp_path):
    path, m = _export(tmp_path, "fp32", verify=False)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    s = ET.open(path, m)
    with pytest.raises(UserError, match="not a loadable ExecuTorch program|cannot initialise"):
        s.load()
        s.init()


def test_bad_scheme_and_seq_len(tmp_path):
    with pytest.raises(UserError, match="cannot do quantization scheme 'w8'; valid for executorch: fp32, w8a8"):
        _export(tmp_path, "w8")
    model = build(from_name("tiny-random"), max_seq_len=MSL)
    with pytest.raises(UserError, match="exceeds the model's context of 256"):
        export_artifact(model, "r", ET, ExportConfig(max_seq_len=1024), tmp_path, quiet=True)


def test_cli_export_and_generate_over_pte(cli, tmp_path, tiny_ckpt):
    p = cli("export", "--checkpoint", tiny_ckpt, "--quant", "w8a8", "--quantize-embedding", "--max-seq-len", "64",
            "--out", tmp_path)
    assert "verified     top-1" in p.stdout and "Traceback" not in p.stderr
    pte = tmp_path / "tiny_w8a8-emb8_executorch.pte"
    g = cli("generate", "--artifact", pte, "--prompt", "import", "--max-new-tokens", "5")
    assert g.stdout.startswith("import") and "tokens/s" in g.stderr
    bad = cli("export", "--model", "tiny-random", "--quant", "w4", "--max-seq-len", "64", "--out", tmp_path, check_rc=2)
    assert "valid for executorch" in bad.stderr and "Traceback" not in bad.stderr
