"""`mobilellm eval`: artifacts scored on text through their own runtime against eager fp32."""
import inspect
import shutil

import numpy as np
import pytest

from mobilellm.benchmarks import schema
from mobilellm.benchmarks.accuracy import Scores, windows
from mobilellm.benchmarks.report import build_report
from mobilellm.errors import UserError

MSL = 64


@pytest.fixture(scope="module")
def held_text(tmp_path_factory):
    """Text the test tokenizer never saw (it trains on json, textwrap, argparse, ...)."""
    p = tmp_path_factory.mktemp("text") / "held.txt"
    p.write_text(inspect.getsource(inspect)[:30_000])
    return p


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory, tiny_ckpt):
    from mobilellm.export.base import ExportConfig, get_backend
    from mobilellm.export.pipeline import export_artifact
    from mobilellm.models.checkpoint import checkpoint_label, load_model
    out = tmp_path_factory.mktemp("acc")
    made = {}
    for backend, scheme in (("executorch", "fp32"), ("executorch", "w8a8"), ("onnx", "w8a8-static")):
        model = load_model(tiny_ckpt, max_seq_len=MSL)
        cfg = ExportConfig(quant=scheme, max_seq_len=MSL, tokenizer=tiny_ckpt / "tokenizer.model")
        made[(backend, scheme)], _ = export_artifact(model, checkpoint_label(tiny_ckpt), get_backend(backend), cfg,
                                                     out, quiet=True)
    return made


def test_scores_are_zero_against_themselves_and_count_disagreement():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(10, 50))
    s = Scores()
    s.add(ref, ref, rng.integers(0, 50, 10))
    m = s.metrics()
    assert m["top1_agreement"] == 1.0 and abs(m["kl_divergence"]) < 1e-12 and m["perplexity"] > 1
    other = ref.copy()
    other[0, ref[0].argmax()] -= 100  # one position's winner demoted
    s2 = Scores()
    s2.add(other, ref, np.zeros(10, dtype=int))
    assert s2.metrics()["top1_agreement"] == 0.9 and s2.metrics()["kl_divergence"] > 0


def test_windows_open_with_bos_and_refuse_short_text():
    w = windows(list(range(10, 40)), bos=1, window=8, max_tokens=100)
    assert len(w) == 4 and all(x[0] == 1 and len(x) == 8 for x in w) and w[1][1] == 17
    with pytest.raises(UserError, match="one window needs 7"):
        windows([5, 6, 7], bos=1, window=8, max_tokens=100)


def test_eval_fp32_artifact_matches_eager_and_w8a8_shows_its_cost(artifacts, held_text, tmp_path, cli):
    arts = [artifacts[k] for k in (("executorch", "fp32"), ("executorch", "w8a8"), ("onnx", "w8a8-static"))]
    p = cli("eval", *arts, "--text", held_text, "--out", tmp_path / "acc.json")
    recs = schema.load(tmp_path / "acc.json")
    val = {(r["backend"], r["scheme"], r["metric"]): r["value"] for r in recs}
    ref = val[("eager", "fp32", "perplexity")]
    assert sum(1 for r in recs if r["backend"] == "eager") == 3  # one reference row per metric, not per artifact
    assert abs(val[("executorch", "fp32", "perplexity")] / ref - 1) < 1e-4
    assert val[("executorch", "fp32", "top1_agreement")] > 0.999
    assert val[("executorch", "fp32", "kl_divergence")] < 1e-6
    for be in ("executorch", "onnx"):
        scheme = ("w8a8+emb8" if ("executorch", "w8a8+emb8", "perplexity") in val else "w8a8") if be == "executorch" \
            else "w8a8-static"
        assert val[(be, scheme, "kl_divergence")] > 1e-6  # quantization is visible, and measured
        assert val[(be, scheme, "top1_agreement")] > 0.5
    r0 = next(r for r in recs if r["metric"] == "perplexity" and r["backend"] == "executorch")
    assert r0["settings"]["scored_tokens"] == r0["samples"] > 1000 and r0["settings"]["window"] == MSL
    assert "perplexity" in p.stdout and "eager fp32" in p.stdout
    md = build_report([tmp_path / "acc.json"], tmp_path / "rep").read_text()
    assert "## Accuracy on held-out text" in md and "| eager | fp32 |" in md and "reference" in md


def test_eval_bad_input(artifacts, held_text, tmp_path, cli_here, tiny_ckpt):
    pte = artifacts[("executorch", "fp32")]
    (tmp_path / "empty.txt").write_text("  \n")
    (tmp_path / "bin.txt").write_bytes(b"\x00\x01\x02" * 100)
    (tmp_path / "short.txt").write_text("a b")
    bare = tmp_path / "bare.pte"
    shutil.copy(pte, bare)
    big_tok = tmp_path / "tokenizer.json"
    from tokenizers import Tokenizer, models
    Tokenizer(models.WordLevel({f"w{i}": i for i in range(600)}, unk_token="w0")).save(str(big_tok))
    cases = [
        ((pte, "--text", tmp_path / "empty.txt"), "is empty"),
        ((pte, "--text", tmp_path / "bin.txt"), "looks binary"),
        ((pte, "--text", tmp_path / "short.txt"), "one window needs 63"),
        ((pte, "--text", tmp_path / "missing.txt"), "does not exist"),
        ((pte, "--text", held_text, "--tokenizer", big_tok), "has 600 tokens but the model's vocabulary is 512"),
        ((bare, "--text", held_text), "has no manifest"),
        ((pte, "--text", held_text, "--window", "1"), "--window must be >= 2"),
    ]
    for args, msg in cases:
        p = cli_here("eval", *args, "--out", tmp_path / "x.json", check_rc=2)
        assert msg in p.stderr and "Traceback" not in p.stderr, (args, p.stderr)


# The shipped presets holding the W8A8 bar through every runtime that runs here:
# benchmarks/tests/test_bench_report.py::test_run_reports_accuracy_of_the_trained_presets (one `run`).
