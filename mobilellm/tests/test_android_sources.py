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
    """Benchmark times Session.run; the logits (a default .pte's or ONNX graph's [1, 1, vocab], or [1, T, vocab]) are copied in lastLogits, after the clock
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


def test_onnxruntime_genai_is_pinned_beside_onnxruntime():
    """The genai AAR carries no ONNX Runtime of its own: both are dependencies, at the Python side's versions
    (pyproject: onnxruntime==1.32.0, the genai extra's onnxruntime-genai==0.18.0), and every record says both."""
    toml = (APP / "gradle" / "libs.versions.toml").read_text()
    pyproject = (ROOT / "pyproject.toml").read_text()
    ort = re.search(r'^onnxruntime = "([\d.]+)"$', toml, re.M).group(1)
    genai = re.search(r'^onnxruntimeGenai = "([\d.]+)"$', toml, re.M).group(1)
    assert f'"onnxruntime=={ort}"' in pyproject and re.search(rf'^genai = \["onnxruntime-genai=={genai}"\]', pyproject, re.M)
    assert genai == "0.18.0"
    assert ('onnxruntime-genai-android = { module = "com.microsoft.onnxruntime:onnxruntime-genai-android", '
            'version.ref = "onnxruntimeGenai" }') in toml
    gradle = (APP / "app" / "build.gradle.kts").read_text()
    assert "implementation(libs.onnxruntime.android)" in gradle and "implementation(libs.onnxruntime.genai.android)" in gradle
    assert "libs.versions.onnxruntimeGenai.get()" in gradle
    assert '"onnxruntime-genai-android" to BuildConfig.ONNXRUNTIME_GENAI_VERSION' in (KOTLIN / "Platform.kt").read_text()


# onnxruntime-genai's Java API (src/java/src/main/java/ai/onnxruntime/genai/*.java, read at the newest
# stored snapshot of microsoft/onnxruntime-genai): the calls Genai.kt may make, as (class, member).
GENAI_JAVA_API = {
    ("Config", "Config(String)"), ("Config", "overlay(String)"), ("Config", "close()"),
    ("Model", "Model(Config)"), ("Model", "close()"),
    ("GeneratorParams", "GeneratorParams(Model)"), ("GeneratorParams", "setSearchOption(String, double)"),
    ("GeneratorParams", "close()"),
    ("Generator", "Generator(Model, GeneratorParams)"), ("Generator", "appendTokens(int[])"),
    ("Generator", "tokenCount()"), ("Generator", "rewindTo(long)"), ("Generator", "generateNextToken()"),
    ("Generator", "getLastTokenInSequence(long)"), ("Generator", "close()"),
}


def test_genai_engine_is_registered_and_uses_the_generator_as_the_host_does():
    """A pushed `<name>.genai/` (the manifest's genai_dir, with its genai_config.json) runs through
    onnxruntime-genai in the benchmark and the chat; load = Model, init = GeneratorParams + Generator (the
    host's GenaiSession); the timed run only appends (the greedy choice is nextToken's)."""
    runtimes = (KOTLIN / "Runtimes.kt").read_text()
    assert '"onnxruntime" -> onnx(file, m, threads)' in runtimes
    assert "m.genaiDirIn(file.parentFile!!)?.let { GenaiLlmSession(it, m, threads) } ?: OrtLlmSession(file, m, threads)" \
        in runtimes
    chat = (KOTLIN / "ChatEngines.kt").read_text()
    assert "Runtimes.onnx(file, m, threads)" in chat and "session.nextToken()" in chat
    src = (KOTLIN / "Genai.kt").read_text()
    imports = set(re.findall(r"^import ai\.onnxruntime\.genai\.(\w+)$", src, re.M))
    assert imports == {"Config", "Model", "GeneratorParams", "Generator"}
    body = lambda name: re.search(rf"override fun {name}\(.*?\n    }}\n", src, re.S).group(0)  # noqa: E731
    assert "Model(c)" in body("load") and "Generator(" not in body("load")
    assert body("init").index("GeneratorParams(mdl)") < body("init").index("Generator(mdl, p)")
    run = body("run")
    assert "g.rewindTo(startPos.toLong())" in run and "g.appendTokens(" in run and "generateNextToken" not in run
    nxt = body("nextToken")
    assert nxt.index("g.generateNextToken()") < nxt.index("g.getLastTokenInSequence(0)")
    assert "override fun lastLogits(): FloatArray? = null" in src
    called = set(re.findall(r"\b(?:c|g|p|mdl)\.(\w+)\(", src)) | set(re.findall(r"\b(Config|Model|GeneratorParams|Generator)\(", src))
    known = {member.split("(")[0] for _, member in GENAI_JAVA_API}
    assert called <= known, f"not in onnxruntime-genai's Java API: {called - known}"


def test_plain_onnx_session_runs_the_shared_cache_contract():
    """A new `.onnx`/`.ort` binds one buffer per cache tensor as past input and (pinned) present output,
    with attention_mask; the contract is chosen from the input names by the core (OnnxContract, JVM-tested)."""
    src = (KOTLIN / "Runtimes.kt").read_text()
    assert "OnnxContract.of(s.inputNames.toList(), m.executedBlocks, file.name)" in src
    assert "s.run(inputs, setOf(LOGITS), contract.present.zip(past).toMap())" in src
    assert "contract.secondValues(startPos, ids.size)" in src and "contract.initialCachePositions(m.maxSeqLen)" in src
    assert "allocateDirect(4 * n).order(ByteOrder.nativeOrder()).asFloatBuffer()" in src, "direct: wrapped, not copied"
    assert '"position_ids"' not in src and '"input_pos"' not in src, "input names live in OnnxContract only"
