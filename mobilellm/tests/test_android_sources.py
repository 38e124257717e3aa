"""Static checks over the Android app's Gradle, manifest and Kotlin sources: what this machine can
see without an Android SDK. Each test pins a defect that kept the app from building or measuring
what the host measures."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "android_demo"
KOTLIN = APP / "app" / "src" / "main" / "java" / "org" / "mobilellm" / "demo"


def properties() -> dict[str, str]:
    out = {}
    for line in (APP / "gradle.properties").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            k, _, v = line.partition("=")
            out[k.strip()] = v.strip()
    return out


def test_androidx_is_on():
    """executorch-android depends on androidx.core; AGP refuses the build (checkDebugAarMetadata)
    unless the project says it uses AndroidX."""
    assert properties()["android.useAndroidX"] == "true"


def test_executorch_chat_starts_with_one_bos():
    """LlmModule's native runner reads the BOS count only from the constructor (generate's numBos is
    ignored), and LlmModule(path, tokenizer, temperature) sets 0: the chat must use the constructor
    that takes numBos, with 1, as the ONNX chat adds one BOS."""
    src = (KOTLIN / "ChatEngines.kt").read_text()
    call = re.search(r"LlmModule\((.*?)\)\.also", src, re.S)
    assert call, "ExecuTorchChat does not construct an LlmModule"
    args = [a.split("//")[0].strip() for a in call.group(1).split("\n") if a.split("//")[0].strip()]
    args = [a.rstrip(",") for a in args]
    # LlmModule(modelType, modulePath, tokenizerPath, temperature, dataPath: String?, numBos, numEos)
    assert len(args) == 7 and args[0] == "LlmModule.MODEL_TYPE_TEXT", args
    assert args[5] == "BOS_COUNT" and re.search(r"const val BOS_COUNT = 1\b", src)
    assert "dataFile" in args[4], "the pair's .ptd goes in as dataPath"
    assert "sp.bosId" in src, "the ONNX chat adds BOS itself"


def test_benchmark_keeps_the_screen_on():
    src = (KOTLIN / "BenchmarkActivity.kt").read_text()
    on = src.index("addFlags(WindowManager.LayoutParams.FLAG_KEEP_SCREEN_ON)")
    assert on < src.index("thread(name = \"mobilellm-benchmark\")"), "the flag is set before the run starts"


def test_timed_forward_copies_no_logits():
    """Benchmark times Session.run; the [1, T, vocab] logits are copied in lastLogits, after the clock
    (JVM test: CoreTests.testPrefillTimesTheRunNotTheLogitsCopy)."""
    src = (KOTLIN / "Runtimes.kt").read_text()
    for body in re.findall(r"override fun run\(.*?\n    }\n", src, re.S):
        assert "dataAsFloatArray" not in body and "floatBuffer" not in body, body
    assert src.count("override fun run(") == 2 and src.count("override fun lastLogits()") == 2


def test_instrumentation_benchmark_is_wired_and_reuses_the_activity():
    """`am instrument` needs the runner declared and the androidx.test artifacts pinned; the test drives
    BenchmarkActivity (the same code) instead of measuring on its own, and leaves results farms can pull."""
    gradle = (APP / "app" / "build.gradle.kts").read_text()
    assert 'testInstrumentationRunner = "androidx.test.runner.AndroidJUnitRunner"' in gradle
    toml = (APP / "gradle" / "libs.versions.toml").read_text()
    for lib in ("androidx-test-runner", "androidx-test-core", "androidx-test-ext-junit"):
        assert re.search(rf'^{lib} = "\d+\.\d+\.\d+"$', toml, re.M), lib
        assert f"androidTestImplementation(libs.{lib.replace('-', '.')})" in gradle, lib
    test = (APP / "app/src/androidTest/java/org/mobilellm/demo/BenchmarkInstrumentedTest.kt").read_text()
    assert "@RunWith(AndroidJUnit4::class)" in test
    assert "ActivityScenario.launch<BenchmarkActivity>" in test and "BenchmarkRequest.intent" in test
    assert "Benchmark.run(" not in test, "the test reuses BenchmarkActivity's run, it does not measure itself"
    assert 'getExternalFilesDir(null), "results"' in test
    from mobilellm.devices import android, android_farm
    assert android_farm.EXTERNAL_RESULTS.endswith(f"/{android.PACKAGE}/files/results")
    request = (KOTLIN / "BenchmarkRequest.kt").read_text()
    host = [k for k, _ in android.bench_args(type("NS", (), dict(remote_dir="/d", iters=1, warmup=0, threads=1,
                                                                    prompt_len=1, gen_tokens=1))(), "a", "o")]
    for k in host:
        assert f'"{k}"' in request, f"the host's argument {k} is not one BenchmarkRequest reads"
