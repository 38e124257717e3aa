"""ExecuTorch backend on tiny models: every scheme lowers, runs in the ExecuTorch runtime and
matches eager PyTorch; sharing costs no bytes; ExecuTorch's own LLM runner generates from it.
Each artifact is exported once per module (exports dominate the suite's time)."""
import dataclasses
import shutil
import sys

import numpy as np

import pytest

from mobilellm.errors import UserError, VerificationError
from mobilellm.export.base import ExportConfig, get_backend
from mobilellm.export.pipeline import export_artifact
from mobilellm.manifest import read_manifest
from mobilellm.models.config import from_name
from mobilellm.models.model import build
from mobilellm.quant import schemes as S

MSL = 64
ET = get_backend("executorch")


# Wide enough that weights, not the per-executed-block program text (~5 KB each), set the file
# size, as at full size (125M: LS +0.2%).
WIDE = dict(dim=512, n_heads=8, n_kv_heads=2, head_dim=64, ffn_hidden=1536)


def _export(out, scheme, repeat=1, emb=False, wide=False, external=False, kv_cache="fp32", layers=2,
            full_logits=False, **kw):
    """tiny-random (2 blocks; `layers=1` where depth is not the point: lowering costs ~7 s a block)."""
    model = build(from_name("tiny-random", repeat=repeat, n_layers=layers, **(WIDE if wide else {})), seed=0,
                  max_seq_len=MSL)
    cfg = ExportConfig(quant=scheme, max_seq_len=MSL, group_size=32, quantize_embedding=emb, external_weights=external,
                       kv_cache=kv_cache, full_logits=full_logits)
    return export_artifact(model, "random (seed 0)", ET, cfg, out, quiet=True, **kw)


@pytest.fixture(scope="module")
def w8a8_pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("w8a8")
    return (_export(d / "plain", "w8a8", repeat=1, emb=True, wide=True),
            _export(d / "shared", "w8a8", repeat=2, emb=True, wide=True))


@pytest.fixture(scope="module")
def ckpt_pte(tmp_path_factory, tiny_ckpt):
    """Exported through the console script, as a user does."""
    from conftest import run_cli
    d = tmp_path_factory.mktemp("ckpt")
    p = run_cli("export", "--checkpoint", tiny_ckpt, "--quant", "w8a8", "--quantize-embedding",
                "--max-seq-len", MSL, "--out", d)
    return d / "tiny_w8a8-emb8_executorch.pte", p


def _check_verified(m, scheme):
    v = m["verification"]
    assert v["passed"] and v["vs_fp32"]["positions"] == 24, v
    assert m["quant"]["scheme"] == scheme and m["delegation"]["xnnpack_partitions"] >= 1
    assert {"llama.custom_sdpa", "llama.custom_quantized_sdpa"} & set(m["delegation"]["ops_outside_xnnpack"])
    if scheme != "fp32":
        assert v["vs_quantized_eager"]["cosine_min"] > 0.999  # lowering adds no error of its own


def test_w8a8_verifies(w8a8_pair):
    # fp32 .pte: exported and verified by benchmarks/tests/test_accuracy.py (`artifacts`), which also holds its
    # perplexity to eager's within 1e-4
    for _, m in w8a8_pair:
        _check_verified(m, "w8a8")
        assert m["quant"]["activations"].startswith("int8 dynamic per-token")


@pytest.mark.parametrize("scheme,kv_cache", [("w8a8-static", "fp32"), ("8da4w", "int8")])
def test_other_schemes_verify(tmp_path, scheme, kv_cache):
    """Each scheme lowers and verifies; 8da4w also with ExecuTorch's int8 KV cache (llama::custom_quantized_sdpa
    over int8 keys/values with per-token scales), held to the same gates."""
    path, m = _export(tmp_path, scheme, kv_cache=kv_cache, layers=1)
    assert path.is_file() and read_manifest(path)["sha256"] == m["sha256"]
    _check_verified(m, scheme)
    assert m["quant"]["kv_cache"] == kv_cache
    if kv_cache == "int8":
        assert path.name == "tiny-random-1L_8da4w-kv8_executorch.pte"
        assert "llama.custom_quantized_sdpa" in m["delegation"]["ops_outside_xnnpack"] and "int8" in m["io"]["kv_cache"]
    # XNNPACK folds static activation zero points into packed weights: its weight cache would hand one
    # call site's packing to another (measured on the trained `tiny`: +30% perplexity), so it stays off.
    assert ET.open(path, read_manifest(path)).runtime_options["xnnpack_weight_cache"] is (scheme != "w8a8-static")


def _planned_bytes(pte) -> int:
    from executorch.exir._serialize._program import deserialize_pte_binary
    p = deserialize_pte_binary(pte.read_bytes())
    return sum(next(e for e in getattr(p, "program", p).execution_plan if e.name == "forward").non_const_buffer_sizes)


def test_the_program_returns_the_last_positions_logits(w8a8_pair, tmp_path, cli):
    """The default .pte gives [1, 1, V] (what an LLM runner reads; ExecuTorch's export_llama default): no output
    head for the prompt's other positions and no [T, V] buffer planned. --full-logits gives every row; the same
    weights give the same rows either way (every_position: earlier rows one token at a time)."""
    from mobilellm.models.generate import every_position
    pte, m = w8a8_pair[0]
    full, mf = _export(tmp_path, "w8a8", repeat=1, emb=True, wide=True, full_logits=True)
    assert full.name.endswith("-fl_executorch.pte") and "[1, T, 512]" in mf["io"]["outputs"]["logits"]
    assert "[1, 1, 512]" in m["io"]["outputs"]["logits"]
    # no [MSL - 1, V] output planned (at 125M, max length 1068: 114 MiB of the 182 MiB arena; here the vocabulary is
    # small and the planner fits the logits into memory the block activations used before)
    assert _planned_bytes(pte) <= _planned_bytes(full)
    ids = [1, 5, 9, 13, 200, 7]
    last, every = ET.open(pte, m), ET.open(full, mf)
    for s in (last, every):
        s.load()
        s.init()
    assert last.last_position_only and not every.last_position_only
    assert [tuple(s.method.metadata.output_tensor_meta(0).sizes()) for s in (last, every)] == [(1, 1, 512),
                                                                                            (1, MSL - 1, 512)]
    assert last.forward(ids, 0).shape == (1, 512)
    want = every.forward(ids, 0)
    assert want.shape == (len(ids), 512)
    got = every_position(last, ids, 0)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * np.abs(want).max())
    # the last row comes from the T-token call: the prefill path, as generation reads it
    np.testing.assert_array_equal(got[-1], last.forward(ids, 0)[-1])
    bad = cli("export", "--model", "tiny-random", "--backend", "coreml", "--full-logits", "--max-seq-len", "64",
              "--out", tmp_path, check_rc=2)
    assert "--full-logits changes nothing for coreml" in bad.stderr and "executorch, onnx" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_layer_sharing_pays_no_bytes(w8a8_pair):
    (plain, _), (shared, ms) = w8a8_pair
    a, b = plain.stat().st_size, shared.stat().st_size
    assert (ms["model"]["executed_blocks"], ms["model"]["stored_blocks"]) == (4, 2)
    assert abs(b - a) / a < 0.01, (a, b)


_PROBE = """
import json, sys
import numpy as np
from mobilellm.benchmarks.measure import rss_mb
from mobilellm.export.base import get_backend
from mobilellm.manifest import read_manifest
path = sys.argv[1]
s = get_backend("executorch").open(path, read_manifest(path))
s.load(); s.init()
rss = rss_mb()[0]
from mobilellm.models.generate import every_position
logits = every_position(s, [1, 5, 9, 13], 0)
print(json.dumps({"rss": rss, "opts": s.runtime_options, "sum": float(np.abs(logits).sum()), "top": logits.argmax(-1).tolist()}))
"""


def test_xnnpack_weight_cache_packs_a_shared_block_once(w8a8_pair):
    """With the weight cache (set through ExecuTorch's C API), the LS model's second run of each
    block reuses the first one's packed weights: less resident memory, the same logits."""
    import json
    import os
    import subprocess
    import sys
    (_, _), (shared, _) = w8a8_pair
    got = {}
    for flag in ("0", "1"):
        p = subprocess.run([sys.executable, "-c", _PROBE, str(shared)], capture_output=True, text=True, timeout=300,
                           env={**os.environ, "MOBILELLM_XNNPACK_WEIGHT_CACHE": flag})
        got[flag] = json.loads(p.stdout.strip().splitlines()[-1])
    assert got["1"]["opts"]["xnnpack_weight_cache"] is True and got["0"]["opts"]["xnnpack_weight_cache"] is False
    assert got["1"]["top"] == got["0"]["top"] and got["1"]["sum"] == got["0"]["sum"]
    # two of the four executed blocks are repeats: ~3 MB of packed int8 weights each at this width
    assert got["0"]["rss"] - got["1"]["rss"] > 3, got


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the dynamic linker's binding order (glibc)")
def test_llm_ops_call_executorchs_blas_not_torchs(w8a8_pair, tmp_path):
    """In a process that imported torch, `llama::custom_sdpa`'s `sgemm_` bound to torch's MKL (an OpenMP region
    per call: half a 125M decode step at position 128). A session binds ExecuTorch's own BLAS before the ops
    load (the dynamic linker's own log says which library each symbol went to); torch keeps its BLAS; the
    switch keeps torch's for comparison; the logits agree to float rounding."""
    import json
    import os
    import subprocess
    (plain, _), _ = w8a8_pair
    got = {}
    for choice in ("executorch", "torch"):
        log = tmp_path / f"ld-{choice}"
        p = subprocess.run([sys.executable, "-c", _PROBE, str(plain)], capture_output=True, text=True, timeout=300,
                           env={**os.environ, "MOBILELLM_EXECUTORCH_BLAS": choice, "LD_DEBUG": "bindings",
                                "LD_DEBUG_OUTPUT": str(log)})
        assert p.returncode == 0, p.stderr[-2000:]
        lines = [ln for f in tmp_path.glob(f"ld-{choice}.*") for ln in f.read_text(errors="replace").splitlines()
                 if "normal symbol `sgemm_'" in ln]
        ops = {ln.split(" to ")[1].split()[0].rsplit("/", 1)[-1] for ln in lines if "libcustom_ops_aot_lib.so" in ln.split(" to ")[0]}
        own = {ln.split(" to ")[1].split()[0].rsplit("/", 1)[-1] for ln in lines if "libtorch_cpu.so" in ln.split(" to ")[0]}
        got[choice] = (ops, own, json.loads(p.stdout.strip().splitlines()[-1]))
    assert got["executorch"][0] == {"libexecutorch_kernels_optimized.so"}, got["executorch"][0]
    assert got["torch"][0] == {"libtorch_cpu.so"}, got["torch"][0]
    assert got["executorch"][1] <= {"libtorch_cpu.so"}  # torch's own calls are untouched
    assert "Eigen" in got["executorch"][2]["opts"]["llm_ops_blas"]
    assert "MOBILELLM_EXECUTORCH_BLAS=torch" in got["torch"][2]["opts"]["llm_ops_blas"]
    a, b = got["executorch"][2], got["torch"][2]
    assert a["top"] == b["top"] and abs(a["sum"] - b["sum"]) <= 1e-4 * abs(b["sum"]), (a, b)


def test_metadata_methods_for_llm_runner(w8a8_pair):
    from executorch.runtime import Runtime
    prog = Runtime.get().load_program(w8a8_pair[1][0])
    got = {n: prog.load_method(n).execute([])[0] for n in ("get_max_seq_len", "get_vocab_size", "get_n_layers",
                                                            "use_kv_cache", "enable_dynamic_shape")}
    assert got == {"get_max_seq_len": MSL, "get_vocab_size": 512, "get_n_layers": 4, "use_kv_cache": True,
                   "enable_dynamic_shape": True}


def test_cli_export_summary_and_generate(ckpt_pte, cli):
    pte, p = ckpt_pte
    assert "verified     top-1" in p.stdout and "Traceback" not in p.stderr
    assert read_manifest(pte)["tokenizer"].endswith("tokenizer.model")
    g = cli("generate", "--artifact", pte, "--prompt", "import", "--max-new-tokens", "5")
    assert g.stdout.startswith("import") and "tokens/s" in g.stderr


def _register_llm_kernels():
    """In this process, as a runner app links them: the llama:: and int8-embedding kernels."""
    import executorch.kernels.quantized  # noqa: F401
    from executorch.extension.llm.custom_ops import custom_ops  # noqa: F401


def test_text_llm_runner_generates(ckpt_pte, tiny_ckpt):
    """ExecuTorch's C++ LLM runner (what LlmModule / TextRunner wrap) drives our .pte and picks the
    same greedy tokens as our own runtime session over the same file."""
    from executorch.extension.llm.runner import GenerationConfig, TextLLMRunner
    from mobilellm.models.generate import generate
    _register_llm_kernels()
    from mobilellm.models.tokenizer import Tokenizer
    pte, _ = ckpt_pte
    pieces = []
    runner = TextLLMRunner(str(pte), str(tiny_ckpt / "tokenizer.model"))
    runner.generate("def main", GenerationConfig(max_new_tokens=12, temperature=0.0, echo=False, num_bos=1),
                    token_callback=pieces.append)
    tok = Tokenizer(tiny_ckpt / "tokenizer.model")
    session = ET.open(pte, read_manifest(pte))
    session.load()
    session.init()
    want = generate(session, tok.encode("def main"), 12).new_ids
    assert len(pieces) >= 10
    assert "".join(pieces).strip() == tok.decode(want).strip()


def test_text_llm_runner_with_weights_file(ckpt_pte, tiny_ckpt, tmp_path, cli):
    """The .pte + .ptd pair through ExecuTorch's LLM runner with its data path (Android LlmModule's
    dataPath): the same greedy text as the single-file program."""
    from executorch.extension.llm.runner import GenerationConfig, TextLLMRunner
    _register_llm_kernels()
    cli("export", "--checkpoint", tiny_ckpt, "--quant", "w8a8", "--quantize-embedding", "--external-weights",
        "--max-seq-len", MSL, "--out", tmp_path)
    pte = tmp_path / "tiny_w8a8-emb8-ptd_executorch.pte"
    texts = []
    for args in ((str(ckpt_pte[0]), str(tiny_ckpt / "tokenizer.model")),
                 (str(pte), str(tiny_ckpt / "tokenizer.model"), str(pte.with_suffix(".ptd")))):
        pieces = []
        TextLLMRunner(*args).generate("def main", GenerationConfig(max_new_tokens=12, temperature=0.0, echo=False,
                                                                   num_bos=1), token_callback=pieces.append)
        texts.append("".join(pieces))
    assert len(texts[0]) > 10 and texts[1] == texts[0]


def test_refuses_existing_output(tmp_path, w8a8_pair):
    shutil.copy(w8a8_pair[1][0], tmp_path / w8a8_pair[1][0].name)
    with pytest.raises(UserError, match="already exists; pass --force"):
        _export(tmp_path, "w8a8", repeat=2, emb=True, wide=True)
    # a failed verification keeps the artifact as .failed: test_external_weights_failed_verification_leaves_no_pair


def test_external_weights_store_the_shared_matrix_once(tmp_path, w8a8_pair):
    """--external-weights: program + <stem>.ptd; the int8 gather table and the output head's weight
    are the same bytes, kept once by ExecuTorch's named data store; the pair verifies and runs."""
    (plain, mp), _ = w8a8_pair
    pte, m = _export(tmp_path, "w8a8", emb=True, wide=True, external=True)
    ptd = tmp_path / "tiny-random_w8a8-emb8-ptd_executorch.ptd"
    assert pte.name == "tiny-random_w8a8-emb8-ptd_executorch.pte" and m["data_file"] == ptd.name and ptd.is_file()
    _check_verified(m, "w8a8")
    sz = m["sizes"]
    assert sz["file_bytes"] == pte.stat().st_size + ptd.stat().st_size and sz["data_file_bytes"] == ptd.stat().st_size
    assert sz["embedding_stored_twice"] is False and sz["data_file_storage"]["embedding_shared_with_head"]
    assert mp["sizes"]["embedding_stored_twice"] is True
    table = 512 * WIDE["dim"] + 4 * 512  # int8 rows + one fp32 scale per row
    saved = mp["sizes"]["file_bytes"] - sz["file_bytes"]
    assert 0.98 * table < saved < 1.05 * table, (saved, table)
    ref, got = ET.open(plain, mp), ET.open(pte, m)
    for s in (ref, got):
        s.load()
        s.init()
    from mobilellm.models.generate import every_position
    np.testing.assert_array_equal(every_position(got, [1, 5, 9, 13], 0), every_position(ref, [1, 5, 9, 13], 0))
    # the program alone is not the artifact: without its weights file it is one clear error
    ptd.rename(tmp_path / "elsewhere.ptd")
    with pytest.raises(UserError, match="keeps its weights in tiny-random_w8a8-emb8-ptd_executorch.ptd, which is missing"):
        ET.open(pte, m).load()


def test_external_weights_failed_verification_leaves_no_pair(tmp_path, monkeypatch, cli):
    monkeypatch.setitem(S.SCHEMES, "w8a8", dataclasses.replace(S.SCHEMES["w8a8"], vs_fp32=S.Thresholds(1.0, 1.000001)))
    with pytest.raises(VerificationError, match="kept as .*w8a8-emb8-ptd_executorch.pte.failed"):
        _export(tmp_path, "w8a8", emb=True, external=True, layers=1)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["tiny-random-1L_w8a8-emb8-ptd_executorch.ptd.failed",
                     "tiny-random-1L_w8a8-emb8-ptd_executorch.pte.failed",
                     "tiny-random-1L_w8a8-emb8-ptd_executorch.pte.failed.manifest.json"], names  # no .partial-*
    assert read_manifest(tmp_path / names[1])["verification"]["passed"] is False
    # a crash after the data file was written leaves nothing that looks like an artifact
    from mobilellm.export import ptd
    crash = tmp_path / "crash"
    monkeypatch.setattr(ptd, "storage_report", lambda *a: (_ for _ in ()).throw(RuntimeError("killed")))
    with pytest.raises(RuntimeError, match="killed"):
        _export(crash, "w8a8", emb=True, external=True, layers=1)
    assert list(crash.iterdir()) == []
    bad = cli("export", "--model", "tiny-random", "--backend", "onnx", "--external-weights", "--out", tmp_path,
              check_rc=2)
    assert "--external-weights" in bad.stderr and "not offered by onnx; backends that offer it: executorch" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_skipping_unused_xnnpack_passes_changes_no_byte(tmp_path, monkeypatch):
    """The pruned per-partition passes only rewrite ops a MobileLLM graph lacks, and the decomposition check
    that every kept node passes decides nothing: the same .pte bytes as ExecuTorch's full lowering."""
    import torch
    from mobilellm.export import xnnpack_passes as XPP
    pruned, m = _export(tmp_path / "pruned", "w8a8", emb=True, layers=1, verify=False)  # pruned, as every export is
    assert "FuseBatchNormPass" in m["delegation"]["xnnpack_passes_skipped"]
    assert "FuseActivationPass" in m["delegation"]["xnnpack_passes_skipped"]
    assert m["delegation"]["decomposition_check"].startswith("skipped")
    monkeypatch.setattr(XPP, "PINNED", "0.0.0")  # neither shortcut: ExecuTorch's own lowering
    full, m2 = _export(tmp_path / "full", "w8a8", emb=True, layers=1, verify=False)  # the bytes are the point
    assert m2["delegation"]["xnnpack_passes_skipped"] == [] and m2["delegation"]["decomposition_check"] == "per node"
    assert m2["sha256"] == m["sha256"]
    monkeypatch.undo()
    conv = torch.nn.Sequential(torch.nn.Conv1d(4, 4, 3), torch.nn.BatchNorm1d(4)).eval()
    keep = XPP.prunable(torch.export.export(conv, (torch.randn(1, 4, 8),)))
    assert "Conv1dUnsqueezePass" not in keep and "DecomposeBatchNorm" not in keep and "PReLUReshapePass" in keep


def test_the_decomposition_check_stays_where_it_refuses_a_node(monkeypatch):
    """Only a check that keeps every node is dropped; one that refuses a node still decides, as in ExecuTorch."""
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from mobilellm.export import xnnpack_passes as XPP
    ep = torch.export.export(torch.nn.Linear(8, 4), (torch.randn(2, 8),)).run_decompositions({})
    p = XPP.partitioner()
    assert p.ops_to_not_decompose(ep)[1] is None and p.checked is False
    base = XnnpackPartitioner.ops_to_not_decompose
    monkeypatch.setattr(XnnpackPartitioner, "ops_to_not_decompose",
                        lambda self, ep: (base(self, ep)[0], lambda n: "linear" not in str(n.target)))
    p = XPP.partitioner()
    assert p.ops_to_not_decompose(ep)[1] is not None and p.checked is True


def test_corrupt_or_truncated_pte(tmp_path, w8a8_pair):
    path = tmp_path / "cut.pte"
    data = w8a8_pair[1][0].read_bytes()
    path.write_bytes(data[: len(data) // 3])
    s = ET.open(path, w8a8_pair[1][1])
    with pytest.raises(UserError, match="not a loadable ExecuTorch program|cannot initialise"):
        s.load()
        s.init()


def test_bad_scheme_and_seq_len(tmp_path, cli):
    with pytest.raises(UserError, match="cannot do quantization scheme '8w'; valid for executorch: fp32, w8a8"):
        _export(tmp_path, "w8")
    model = build(from_name("tiny-random"), max_seq_len=MSL)
    with pytest.raises(UserError, match="exceeds the model's context of 256"):
        export_artifact(model, "r", ET, ExportConfig(max_seq_len=1024), tmp_path, quiet=True)
    bad = cli("export", "--model", "tiny-random", "--quant", "w4", "--max-seq-len", "64", "--out", tmp_path, check_rc=2)
    assert "valid for executorch" in bad.stderr and "Traceback" not in bad.stderr
    mps = cli("export", "--backend", "mps", "--out", tmp_path, check_rc=2)
    assert "not in the executorch 1.5.1 wheel" in mps.stderr


def test_llm_metadata_names_the_models_special_tokens():
    """ExecuTorch's runners stop on get_eos_ids: R1's three end-of-turn ids, not LLaMA-2's 2."""
    from mobilellm.export.backends.executorch import llm_metadata
    r1 = llm_metadata(from_name("R1-140M"), 512)
    assert r1["get_bos_id"] == 128000 and r1["get_eos_ids"] == [128001, 128008, 128009]
    m = llm_metadata(from_name("125M"), 512)
    assert m["get_bos_id"] == 1 and m["get_eos_ids"] == [2]
