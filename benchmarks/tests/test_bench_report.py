"""bench / report / run on tiny artifacts: definitions, schema, resumability and bad input."""
import json
import shutil
from pathlib import Path

import pytest

from mobilellm.benchmarks import schema
from mobilellm.benchmarks.bench import BenchConfig, bench
from mobilellm.benchmarks.report import build_report, paired_overheads, sharing_markdown, sharing_rows
from mobilellm.errors import UserError
from mobilellm.models.config import trained_checkpoint

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """`mobilellm run` as by default, shrunk: latency of tiny-random's three variants on the backends that
    run here, accuracy of the trained presets with W8A8 on each (Core ML's place in a run: below)."""
    from conftest import run_cli
    out = tmp_path_factory.mktemp("run")
    p = run_cli("run", "--models", "tiny-random", "--backends", "executorch,onnx", "--max-seq-len", "64",
                "--iters", "3", "--cold-runs", "1", "--warmup", "1", "--accuracy", "tiny,tiny-LS",
                "--accuracy-schemes", "w8a8", "--out", out, timeout=1800)
    return out, p


def test_run_writes_report_and_summary(run_dir):
    out, p = run_dir
    assert (out / "report.md").is_file() and (out / "results.csv").is_file()
    assert (out / "latency.png").stat().st_size > 1000 and (out / "size_vs_latency.png").stat().st_size > 1000
    recs = schema.load(out / "results.json")
    latency = [r for r in recs if "tiny-random" in r["model"]]
    assert {r["variant"] for r in latency} == {"2 layers", "2x2 shared", "4 layers"}
    assert {r["backend"] for r in latency} == {"executorch", "onnx"}
    md = (out / "report.md").read_text()
    assert "LS 2x2 shared" in md and "43.6 / 1388.2 / 16.0" in md and "seeded random weights" in md
    assert "exported" in p.stdout and "decode ms" in p.stdout
    # long-context cost in every comparison: decode also timed at the longest position that fits (64-1-3-2)
    at = [r for r in recs if r["metric"] == "decode_ms_at_position" and r["statistic"] == "median"]
    assert at and {r["settings"]["decode_position"] for r in at} == {58} and all(r["value"] > 0 for r in at)
    assert "decode ms at 58" in md
    # the sharing table's three variants were timed side by side, one series per backend
    turns = [r for r in latency if r["metric"] == "decode_ms_paired"]
    for b in ("executorch", "onnx"):
        series = {(r["variant"], r["settings"]["series"]) for r in turns if r["backend"] == b}
        assert {v for v, _ in series} == {"2 layers", "2x2 shared", "4 layers"} and len({s for _, s in series}) == 1
    assert "paired " in md and " turns)" in md


def test_run_is_resumable(run_dir, cli, tmp_path):
    out = tmp_path / "again"  # not run_dir itself: its report is read by the other tests
    shutil.copytree(run_dir[0] / "artifacts", out / "artifacts")
    cli("run", "--models", "tiny-random", "--backends", "executorch", "--variants", "base", "--max-seq-len", "64",
            "--iters", "2", "--cold-runs", "1", "--warmup", "0", "--accuracy", "none", "--out", out)
    jobs = json.loads((out / "jobs.json").read_text())
    assert [j["status"] for j in jobs] == ["reused"]


def test_run_reports_accuracy_of_the_trained_presets(run_dir):
    """The project's W8A8 bar on the shipped weights: held-out perplexity within 2% of eager fp32,
    through the ExecuTorch .pte and through onnxruntime, shared and unshared; one report with latency."""
    out, p = run_dir
    for m in ("tiny", "tiny-LS"):
        assert trained_checkpoint(m) is not None, f"models/trained/{m} is committed; it is missing"
    recs = schema.load(out / "results.json")
    ppl = {(r["model"], r["backend"], r["scheme"]): r["value"] for r in recs if r["metric"] == "perplexity"}
    assert set(ppl) == {(m, b, s) for m in ("tiny", "tiny-LS") for b, s in
                        (("eager", "fp32"), ("executorch", "w8a8+emb8"), ("onnx", "w8a8+emb8"))}, set(ppl)
    for m in ("tiny", "tiny-LS"):
        ref = ppl[(m, "eager", "fp32")]
        assert ref < 40, "the trained preset should predict held-out text far better than chance (2048)"
        for b, s in (("executorch", "w8a8+emb8"), ("onnx", "w8a8+emb8")):
            assert abs(ppl[(m, b, s)] / ref - 1) < 0.02, (m, b, ppl)
        text = json.loads((trained_checkpoint(m) / "training.json").read_text())
        assert text["heldout_documents"] and text["command"].startswith("mobilellm train")
    md = (out / "report.md").read_text()
    assert "## Accuracy on held-out text" in md and "trained presets tiny, tiny-LS" in md
    assert "perplexity" in p.stdout and "(accuracy)" in p.stdout


def test_a_backend_that_cannot_run_here_says_why_accuracy_is_missing(tmp_path):
    """Core ML off macOS: its accuracy rows are a reason in the report, not a silent gap."""
    import platform
    from mobilellm.benchmarks.accuracy_run import plan_accuracy
    from mobilellm.benchmarks.pipeline import RunConfig
    from mobilellm.export.base import get_backend
    if get_backend("coreml").runtime_missing() is None:
        pytest.skip(f"Core ML runs here ({platform.system()})")
    jobs, missing = plan_accuracy(RunConfig(backends=("coreml", "onnx"), accuracy=("tiny",), out=tmp_path))
    assert {j.backend for j in jobs} == {"onnx"}
    assert [m["backend"] for m in missing] == ["coreml"] and "accuracy not evaluated" in missing[0]["reason"]


def test_bench_definitions_and_records(run_dir):
    out, _ = run_dir
    pte = next((out / "artifacts").glob("tiny-random_*.pte"))
    twin = next((out / "artifacts").glob("LS-tiny-random_*.pte"))
    order = []
    recs, missing = bench([pte, twin], BenchConfig(warmup=1, iters=4, cold_runs=2, prompt_len=16, gen_tokens=8,
                                                   pairs=3), on_process=order.append)
    assert not missing
    # alternating processes, then one paired process (both open, timed in turns) per round
    assert order == [pte, twin, None, pte, twin, None]
    turns = [r for r in recs if r["metric"] == "decode_ms_paired"]
    assert sorted((r["artifact"], r["settings"]["turn"]) for r in turns) == sorted(
        (a.name, i) for a in (pte, twin) for i in range(6))  # 3 turns x 2 rounds
    assert len({r["settings"]["series"] for r in turns}) == 1 and all(r["value"] > 0 for r in turns)
    recs = [r for r in recs if r["artifact"] == pte.name]
    by = {(r["metric"], r["statistic"]): r for r in recs}
    assert by[("load_ms", "median")]["samples"] == 2  # one per cold process
    assert by[("decode_ms", "median")]["samples"] == 8  # iters x cold runs
    assert by[("decode_ms", "p10")]["value"] <= by[("decode_ms", "median")]["value"] <= by[("decode_ms", "p90")]["value"]
    s = by[("decode_ms", "median")]["settings"]
    assert (s["prompt_len"], s["decode_position"], s["threads"], s["warmup"]) == (16, 16, 2, 1)
    assert by[("size_mb", "single")]["value"] == pytest.approx(pte.stat().st_size / 1e6, rel=1e-3)
    for r in recs:
        schema.validate_record(r)


def test_bench_bad_input(tmp_path, run_dir, cli):
    out, _ = run_dir
    with pytest.raises(UserError, match="--iters must be >= 1"):
        BenchConfig(iters=0)
    with pytest.raises(UserError, match="--pairs must be >= 0"):
        BenchConfig(pairs=-1)
    lone = tmp_path / "x.pte"
    lone.write_bytes(b"\0" * 64)
    p = cli("bench", lone, check_rc=2)
    assert "has no manifest" in p.stderr and "Traceback" not in p.stderr
    pte = next((out / "artifacts").glob("tiny-random_*.pte"))
    bad = tmp_path / pte.name
    bad.write_bytes(pte.read_bytes()[:1000])
    shutil.copy(Path(str(pte) + ".manifest.json"), tmp_path)
    p = cli("bench", bad, "--iters", "1", "--cold-runs", "1", "--out", tmp_path / "r.json", check_rc=2)
    assert "not a loadable ExecuTorch program" in p.stderr and "Traceback" not in p.stderr


def test_report_merges_host_and_phone_results(run_dir, tmp_path):
    out, _ = run_dir
    phone = ROOT / "android_demo" / "golden" / "results.json"
    path = build_report([out / "results.json", phone], tmp_path)
    md = path.read_text()
    assert "x86_64" in md or "cores" in md
    assert len(schema.load(tmp_path / "results.json")) == len(schema.load(out / "results.json")) + len(schema.load(phone))


def test_sharing_rows_overheads():
    def rec(sb, eb, metric, v):
        return {"device": "d", "backend": "b", "scheme": "s", "stored_blocks": sb, "executed_blocks": eb,
                "metric": metric, "statistic": "median", "value": v}
    recs = [rec(30, 30, "decode_ms", 10.0), rec(30, 60, "decode_ms", 20.0), rec(60, 60, "decode_ms", 19.0),
            rec(30, 30, "init_ms", 100.0)]
    (row,) = sharing_rows(recs)
    assert row["n"] == 30 and row["shared"][2] == 20.0 and row["deep"][2] == 19.0 and row["base"][1] == 100.0
    assert "paired" not in sharing_markdown([row])  # not timed side by side: no paired figure claimed

    def turn(sb, eb, v, i, series="a"):
        return {**rec(sb, eb, "decode_ms_paired", v), "settings": {"series": series, "turn": i}}
    # turns pair within one series only: the other series' turn 0 has no base and is left out
    recs += [turn(30, 30, 10.0, 0), turn(30, 60, 19.0, 0), turn(30, 30, 10.0, 1), turn(30, 60, 21.0, 1),
             turn(30, 30, 10.0, 2), turn(30, 60, 20.0, 2), turn(30, 60, 50.0, 0, series="b")]
    (row,) = sharing_rows(recs)
    assert sorted(paired_overheads(row["shared_turns"], row["base_turns"])) == pytest.approx([90.0, 100.0, 110.0])
    assert "20.00 (+100.0%)<br>paired +100.0% (p10 +92.0%, p90 +108.0%; 3 turns)" in sharing_markdown([row])


def test_sharing_table_says_which_variants_fit_the_hosts_cache():
    """This host's 300 MiB L3 can hold the 125M files (145 MB; measured: it does) and not, beside its other tenants,
    the 60-layer one (233 MB): the table puts the sizes beside the cache, since its overheads then compare cache
    residency as well as depth; with a phone-sized cache, or none recorded, nothing is said."""
    def rec(sb, eb, metric, v, llc):
        return {"device": "d", "backend": "b", "scheme": "s", "stored_blocks": sb, "executed_blocks": eb,
                "metric": metric, "statistic": "median", "value": v,
                "settings": {"last_level_cache_mib": llc} if llc else {}}

    def table(llc):
        recs = [rec(sb, eb, m, v, llc) for sb, eb, size in ((30, 30, 144.8), (30, 60, 145.1), (60, 60, 233.4))
                for m, v in (("decode_ms", eb / 10), ("size_mb", size))]
        return sharing_markdown(sharing_rows(recs))
    md = table(300.0)
    assert "File sizes: 30 layers 145 MB, LS 145 MB, 60 layers 233 MB; this host's last-level cache: 300 MiB" in md
    assert "cache residency" in md
    assert "cache residency" not in table(4.0) and "cache residency" not in table(None)


def test_report_says_when_prefills_compute_different_rows():
    """A last-position artifact's prefill skips the output head for the prompt's other rows; beside one that
    computes every row (Core ML, a --full-logits export) the report says the columns are not like with like."""
    from mobilellm.benchmarks.report import logits_note

    def rec(art, rows):
        return {"device": "d", "artifact": art, "model": "m", "metric": "prefill_ms", "statistic": "median",
                "value": 1.0, "settings": {"logits_rows": rows} if rows else {}}
    note = logits_note([rec("a.pte", "last"), rec("b.onnx", "last"), rec("c.mlpackage", "every")])
    assert note.startswith("Prefill computes the output head over the last prompt position only in a.pte, b.onnx, "
                           "and over every position in c.mlpackage")
    assert logits_note([rec("a.pte", "last"), rec("b.onnx", "last"), rec("phone", None)]) is None


@pytest.mark.parametrize("doc,msg", [
    ({"schema": "other", "version": 1, "records": []}, "not a mobilellm results file"),
    ({"schema": "mobilellm.results", "version": 2, "records": []}, "schema version 2; this mobilellm reads version 1"),
    ({"schema": "mobilellm.results", "version": 1, "records": [{"model": "x"}]}, "missing field 'variant'"),
])
def test_results_of_another_schema(tmp_path, doc, msg):
    f = tmp_path / "r.json"
    f.write_text(json.dumps(doc))
    with pytest.raises(UserError, match=msg):
        schema.load(f)


@pytest.mark.parametrize("golden", ["android_demo/golden/results.json", "ios_demo/golden/results.example.json"])
def test_phone_golden_results_validate(golden):
    assert schema.load(ROOT / golden)


@pytest.mark.parametrize("flags,msg", [
    (["--variants", "base,wide"], "unknown variant(s) ['wide']; valid: base, shared, deep"),
    (["--backends", "tflite"], "unknown backend 'tflite'; valid: "),
    (["--accuracy", "125M"], "--accuracy: ['125M'] are not trained presets; valid: tiny, tiny-LS, or none"),
    (["--accuracy-schemes", "int3"], "--accuracy-schemes: unknown scheme(s) ['int3']; valid: fp32"),
])
def test_run_bad_input(cli_here, tmp_path, flags, msg):
    p = cli_here("run", "--out", tmp_path, *flags, check_rc=2)
    assert msg in p.stderr and "Traceback" not in p.stderr


def test_default_backends_leave_out_the_apple_only_pte_off_macos(monkeypatch):
    """Off macOS the default run skips executorch-coreml (it cannot run or be verified there) and the
    report says so; on macOS, and with --backends all, every backend is built."""
    import platform
    from mobilellm.benchmarks import pipeline as P
    from mobilellm.export.base import all_backends
    monkeypatch.setattr(platform, "system", lambda: "Linux")
    assert set(P.default_backends()) == {"executorch", "onnx", "coreml"} and P.default_backends() == P.RunConfig().backends
    assert "--backends all" in P.left_out_note(P.default_backends())
    every = tuple(b.name for b in all_backends())
    assert P.left_out_note(every) is None and P.left_out_note(("onnx",)) is None
    monkeypatch.setattr(platform, "system", lambda: "Darwin")
    assert P.default_backends() == every and P.left_out_note(every) is None
