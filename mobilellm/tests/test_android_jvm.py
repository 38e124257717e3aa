"""The Android app's platform-free core (android_demo/core: plain Java, no Android imports) on the
JVM: its own unit tests, the golden results file it writes (validated by benchmarks/schema.py), its
manifest reader on a manifest written by mobilellm, and its tokenizer against sentencepiece."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "android_demo" / "core" / "src"
GOLDEN = ROOT / "android_demo" / "golden"
GOLDEN_MANIFEST = GOLDEN / "LS-125M_w8a8_executorch.pte.manifest.json"
GOLDEN_RESULTS = GOLDEN / "results.json"

JDK = shutil.which("javac") and shutil.which("java")
needs_jdk = pytest.mark.skipif(
    not JDK, reason="no JDK (javac and java) on PATH, so the app's Java core cannot be compiled here; "
                    "install one (e.g. apt-get install openjdk-17-jdk-headless) to run these tests")


def test_committed_golden_results_validate():
    """The file the app writes for the golden example is a valid results document."""
    from mobilellm.devices.results import load
    recs = load(GOLDEN_RESULTS)
    metrics = {r["metric"] for r in recs}
    assert {"load_ms", "init_ms", "decode_ms", "prefill_ms", "decode_tokens_per_s",
            "pss_after_init_mb", "pss_after_generate_mb", "size_mb"} <= metrics
    assert not any(m.startswith("rss_") for m in metrics), "Android measures PSS, not RSS"
    for r in recs:
        if r["statistic"] != "single":
            s = r["settings"]
            assert len(s["raw_samples"]) == r["samples"] == s["iters"] and len(s["warmup_samples"]) == s["warmup"]
            assert s["thermal_start"] and s["thermal_end"]
            assert s["xnnpack_weight_cache"] is True
    for m in ("load_ms", "init_ms", "decode_ms", "prefill_ms", "decode_tokens_per_s"):
        assert sorted(r["statistic"] for r in recs if r["metric"] == m) == ["median", "min", "p10", "p90"]
    assert all(r["os"].startswith("Android ") and "(API " in r["os"] for r in recs)
    assert all(set(r["runtime"]) == {"executorch-android", "onnxruntime-android", "onnxruntime-genai-android", "app"}
               for r in recs)


@pytest.fixture(scope="module")
def classes(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("jvm")
    sources = sorted(str(p) for p in CORE.rglob("*.java") if p.name != "CoreJUnitTest.java")
    p = subprocess.run(["javac", "-encoding", "UTF-8", "-d", str(out), *sources], capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr
    return out


def java(classes: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["java", "-cp", str(classes), *args], capture_output=True, text=True, timeout=120)


@needs_jdk
def test_core_unit_tests(classes):
    p = java(classes, "org.mobilellm.core.CoreTests")
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.strip().splitlines()[-1].endswith(" passed, 0 failed"), p.stdout


@needs_jdk
def test_golden_results_are_what_the_core_writes(classes, tmp_path):
    from mobilellm.devices.results import load
    out = tmp_path / "results.json"
    p = java(classes, "org.mobilellm.core.Tool", "golden", str(GOLDEN_MANIFEST), str(out))
    assert p.returncode == 0, p.stderr
    load(out)
    assert json.loads(out.read_text()) == json.loads(GOLDEN_RESULTS.read_text()), \
        "android_demo/golden/results.json is stale: regenerate it with Tool golden (see android_demo/README.md)"


@needs_jdk
def test_writer_constants_match_schema(classes):
    from mobilellm.benchmarks import schema
    from mobilellm.devices.results import PLATFORM_METRICS, metrics
    p = java(classes, "org.mobilellm.core.Tool", "constants")
    assert p.returncode == 0, p.stderr
    c = json.loads(p.stdout)
    assert (c["schema"], c["version"]) == (schema.SCHEMA, schema.VERSION)
    android = {k for k, (_, platform, _) in PLATFORM_METRICS.items() if platform == "android"}
    other_platforms = {k for k, (_, platform, _) in PLATFORM_METRICS.items() if platform != "android"}
    assert c["metrics"] == {k: v for k, v in metrics().items() if k not in other_platforms}
    assert android <= set(c["metrics"])
    assert c["statistics"] == list(schema.STATISTICS)
    assert c["fields"] == list(schema.FIELDS)


@needs_jdk
@pytest.mark.parametrize("preset,suffix,backend", [("LS-125M", ".pte", "executorch"), ("tiny-random", ".onnx", "onnx")])
def test_manifest_reader_reads_a_mobilellm_manifest(classes, tmp_path, preset, suffix, backend):
    from mobilellm.manifest import manifest_path, model_section, write_manifest
    from mobilellm.models.config import from_name
    args = from_name(preset)
    art = tmp_path / f"{preset}_w8a8_{backend}{suffix}"
    art.write_bytes(b"x")
    # an ONNX export's manifest names its onnxruntime-genai directory as export/backends/onnx.py _genai_dir does
    genai = {"genai_dir": {"path": art.with_suffix(".genai").name, "config": "genai_config.json",
                           "loader": "onnxruntime_genai.Model(dir)", "files": ["genai_config.json", "model.onnx"]}
             } if suffix == ".onnx" else {}
    write_manifest(art, {"artifact": art.name, "backend": backend, "quant": {"scheme": "w8a8"},
                         "model": model_section(args, "random"), "max_seq_len": 256, "tokenizer": None,
                         "sizes": {"file_bytes": 1}, "sha256": "ab" * 32, **genai})
    p = java(classes, "org.mobilellm.core.Tool", "manifest", str(manifest_path(art)))
    assert p.returncode == 0, p.stderr
    got = json.loads(p.stdout)
    assert got == {
        "artifact": art.name, "backend": backend, "scheme": "w8a8", "model": args.name, "variant": args.variant,
        "stored_blocks": args.n_layers, "executed_blocks": args.n_executed, "repeat": args.repeat,
        "param_count": args.param_count(), "max_seq_len": 256, "vocab_size": args.vocab_size,
        "n_kv_heads": args.n_kv_heads, "head_dim": args.head_dim, "sha256": "ab" * 32, "file_bytes": 1,
        "tokenizer": None, "genai_dir": genai["genai_dir"]["path"] if genai else None,
        "runtime": "executorch" if suffix == ".pte" else "onnxruntime"}


@needs_jdk
def test_tokenizer_matches_sentencepiece(classes, sp_tokenizer):
    """The ONNX chat path tokenizes in Java; it must give sentencepiece's ids and text."""
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=str(sp_tokenizer))
    texts = ["def f(x):\n    return x + 1", "Hello, world!", "  two  spaces ", "ünïcödé 日本語 🙂", "",
             "12345 numbers", "a", (ROOT / "conftest.py").read_text()[:3000]]
    p = java(classes, "org.mobilellm.core.Tool", "sp", str(sp_tokenizer), *texts)
    assert p.returncode == 0, p.stderr
    for text, (ids, decoded) in zip(texts, json.loads(p.stdout)):
        assert ids == sp.encode(text), text
        assert decoded == sp.decode(ids), text
