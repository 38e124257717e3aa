"""`mobilellm device android|ios --spec devicefarm|firebase OUT`: the files a device-farm run needs,
read back with a small YAML reader (the subset farm.to_yaml writes) and, where PyYAML is installed,
with PyYAML too. Nothing here runs on a farm."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from mobilellm.cli import main as cli_main
from mobilellm.tests.test_device_android import make_artifact


def read_yaml(text: str):
    """Mappings, lists, JSON-quoted or plain scalars and `|` blocks, by indentation; comments skipped."""
    lines = [ln for ln in text.split("\n") if ln.strip() and not ln.lstrip().startswith("#") or ln == ""]

    def scalar(s: str):
        s = s.strip()
        if s.startswith('"'):
            return json.loads(s)
        try:
            return json.loads(s)
        except json.JSONDecodeError:
            return s

    def block(i: int, indent: int):
        out = None
        while i < len(lines):
            ln = lines[i]
            if not ln.strip():
                i += 1
                continue
            ind = len(ln) - len(ln.lstrip())
            if ind < indent:
                break
            body = ln.strip()
            if body.startswith("- "):
                out = [] if out is None else out
                item = body[2:]
                if item == "|":
                    j, text = i + 1, []
                    while j < len(lines) and (not lines[j].strip() or len(lines[j]) - len(lines[j].lstrip()) > ind):
                        text.append(lines[j][ind + 2:])
                        j += 1
                    out.append("\n".join(text).rstrip("\n") + "\n")
                    i = j
                elif ":" in item and not item.startswith('"'):
                    lines[i] = " " * (ind + 2) + item
                    val, i = block(i, ind + 2)
                    out.append(val)
                else:
                    out.append(scalar(item))
                    i += 1
            else:
                out = {} if out is None else out
                key, _, rest = body.partition(": ") if ": " in body else (body[:-1], None, "")
                key = json.loads(key) if key.startswith('"') else key
                if rest:
                    out[key] = scalar(rest)
                    i += 1
                else:
                    out[key], i = block(i + 1, ind + 1)
        return out, i

    return block(0, 0)[0]


def android(*argv) -> int:
    return cli_main(["device", "android", *map(str, argv)])


def ios(*argv) -> int:
    return cli_main(["device", "ios", *map(str, argv)])


@pytest.fixture
def artifacts(tmp_path) -> Path:
    d = tmp_path / "artifacts"
    d.mkdir()
    tok = tmp_path / "tokenizer.model"
    tok.write_bytes(b"sentencepiece")
    make_artifact(d, "tiny_w8a8_executorch.pte", "executorch", tokenizer=tok)
    make_artifact(d, "LS-tiny_w8a8_onnx.onnx", "onnx", payload=b"onnx model", tokenizer=tok)
    return d


def test_android_devicefarm_spec(artifacts, tmp_path, capsys):
    out = tmp_path / "farm"
    assert android("--spec", "devicefarm", out, "--artifacts", artifacts, "--iters", 7, "--warmup", 2) == 0
    assert "nothing was run" in capsys.readouterr().out
    text = (out / "devicefarm-testspec.yml").read_text()
    spec = read_yaml(text)
    assert spec["version"] == 0.1 and spec["android_test_host"] == "amazon_linux_2"
    assert list(spec["phases"]) == ["install", "pre_test", "test", "post_test"]
    assert spec["artifacts"] == ["$DEVICEFARM_LOG_DIR"]
    pre = "\n".join(spec["phases"]["pre_test"]["commands"])
    assert '"$MOBILELLM_ARTIFACTS_URL"' in pre and "mobilellm-artifacts.zip" in pre
    assert 'adb -s "$DEVICEFARM_DEVICE_UDID" push' in pre and "/data/local/tmp/mobilellm" in pre
    runs = [c for c in spec["phases"]["test"]["commands"] if "am instrument" in c]
    assert len(runs) == 2, "one instrumentation (one fresh process) per artifact"
    first = runs[0].split("\n")[1]
    assert "am instrument -w -r -e class org.mobilellm.demo.BenchmarkInstrumentedTest" in first
    assert "-e iters 7 -e warmup 2" in first and "-e artifact LS-tiny_w8a8_onnx.onnx" in first
    assert first.split(" | ")[0].endswith('"$DEVICEFARM_TEST_PACKAGE_NAME/$DEVICEFARM_TEST_PACKAGE_RUNNER" 2>&1')
    assert "INSTRUMENTATION_CODE: -1" in runs[0] and "INSTRUMENTATION_STATUS_CODE: -(1|2)" in runs[0]
    post = "\n".join(spec["phases"]["post_test"]["commands"])
    assert "run-as org.mobilellm.demo cat files/results-farm-0-LS-tiny_w8a8_onnx.onnx.json" in post
    with zipfile.ZipFile(out / "mobilellm-artifacts.zip") as z:
        assert set(z.namelist()) == {
            "tiny_w8a8_executorch.pte", "tiny_w8a8_executorch.pte.manifest.json",
            "tiny_w8a8_executorch.pte.tokenizer.model", "LS-tiny_w8a8_onnx.onnx",
            "LS-tiny_w8a8_onnx.onnx.manifest.json", "LS-tiny_w8a8_onnx.onnx.tokenizer.model"}
    yaml = pytest.importorskip("yaml")
    assert yaml.safe_load(text) == spec


def test_android_firebase_args(artifacts, tmp_path):
    out = tmp_path / "fb"
    assert android("--spec", "firebase", out, "--artifacts", artifacts, "--iters", 3,
                   "--farm-device", "model=oriole,version=33") == 0
    text = (out / "firebase-args.yml").read_text()
    groups = read_yaml(text)
    assert list(groups) == ["mobilellm-0", "mobilellm-1"]
    g = groups["mobilellm-0"]
    assert g["type"] == "instrumentation"
    assert g["app"].endswith("apk/debug/app-debug.apk") and g["test"].endswith("app-debug-androidTest.apk")
    assert g["test-runner-class"] == "androidx.test.runner.AndroidJUnitRunner"
    assert g["test-targets"] == ["class org.mobilellm.demo.BenchmarkInstrumentedTest"]
    assert g["device"] == [{"model": "oriole", "version": "33"}]
    assert set(g["other-files"]) == {f"/data/local/tmp/mobilellm/{n}" for n in (
        "LS-tiny_w8a8_onnx.onnx", "LS-tiny_w8a8_onnx.onnx.manifest.json", "LS-tiny_w8a8_onnx.onnx.tokenizer.model")}
    assert all(Path(p).is_file() for p in g["other-files"].values())
    assert g["directories-to-pull"] == ["/sdcard/Android/data/org.mobilellm.demo/files/results"]
    env = g["environment-variables"]
    assert env["artifact"] == "LS-tiny_w8a8_onnx.onnx" and env["iters"] == "3" and env["dir"] == "/data/local/tmp/mobilellm"
    assert env["out"] == "results-farm-0-LS-tiny_w8a8_onnx.onnx.json"
    yaml = pytest.importorskip("yaml")
    assert yaml.safe_load(text) == groups


def test_android_farms_carry_the_genai_directory(tmp_path):
    """An ONNX artifact's `<name>.genai/` goes into the zip as a folder (Device Farm pushes it whole and opens
    it for the app) and into Firebase's other-files file by file."""
    from mobilellm.tests.test_device_android import make_genai_artifact
    d = tmp_path / "a"
    d.mkdir()
    art = make_genai_artifact(d)
    g = "LS-tiny_w8a8-block_onnx.genai"
    assert android("--spec", "devicefarm", tmp_path / "df", "--artifacts", d) == 0
    with zipfile.ZipFile(tmp_path / "df" / "mobilellm-artifacts.zip") as z:
        assert {f"{g}/model.onnx", f"{g}/genai_config.json", f"{g}/tokenizer.model", art.name} <= set(z.namelist())
        assert z.read(f"{g}/model.onnx") == art.read_bytes()
    pre = read_yaml((tmp_path / "df" / "devicefarm-testspec.yml").read_text())["phases"]["pre_test"]["commands"]
    chmod = [c for c in pre if f"/data/local/tmp/mobilellm/{g}" in c]
    assert chmod == [f'adb -s "$DEVICEFARM_DEVICE_UDID" shell \'chmod 755 /data/local/tmp/mobilellm/{g} && '
                     f'chmod 644 /data/local/tmp/mobilellm/{g}/*\'']
    assert pre.index(chmod[0]) > next(i for i, c in enumerate(pre) if "chmod 644 /data/local/tmp/mobilellm/*" in c)
    assert android("--spec", "firebase", tmp_path / "fb", "--artifacts", d) == 0
    other = read_yaml((tmp_path / "fb" / "firebase-args.yml").read_text())["mobilellm-0"]["other-files"]
    for name in ("model.onnx", "genai_config.json", "tokenizer.model"):
        assert Path(other[f"/data/local/tmp/mobilellm/{g}/{name}"]).is_file(), name


def test_ios_specs(tmp_path):
    from mobilellm.tests.test_device_ios import GOLDEN, GOLDEN_ARTIFACTS
    d = tmp_path / "a"
    d.mkdir()
    art = d / GOLDEN_ARTIFACTS[0]
    art.write_bytes(b"program")
    (d / (art.name + ".manifest.json")).write_text((GOLDEN / (art.name + ".manifest.json")).read_text())
    assert ios("--spec", "devicefarm", tmp_path / "df", "--artifacts", d, "--iters", 9) == 0
    spec = read_yaml((tmp_path / "df" / "devicefarm-testspec.yml").read_text())
    assert list(spec["phases"]) == ["install", "pre_test", "test", "post_test"] and spec["version"] == 0.1
    (test,) = spec["phases"]["test"]["commands"]
    assert test.startswith("TEST_RUNNER_MOBILELLM_WARMUP=3 TEST_RUNNER_MOBILELLM_ITERS=9 ")
    assert "xcodebuild test-without-building" in test and "-xctestrun" in test
    assert "-only-testing:MobileLLMDemoTests/BenchmarkTests/testBenchmarkEveryArtifact" in test
    assert "MobileLLMDemo.app/Artifacts" in "\n".join(spec["phases"]["pre_test"]["commands"])
    with zipfile.ZipFile(tmp_path / "df" / "mobilellm-artifacts.zip") as z:
        assert {art.name, art.name + ".manifest.json"} <= set(z.namelist())

    assert ios("--spec", "firebase", tmp_path / "fb", "--artifacts", d, "--iters", 9) == 0
    g = read_yaml((tmp_path / "fb" / "firebase-args.yml").read_text())["mobilellm"]
    assert g["type"] == "xctest" and g["test"].endswith(".zip")
    assert f"org.mobilellm.demo:/Documents/artifacts/{art.name}" in g["other-files"]
    settings = g["other-files"]["org.mobilellm.demo:/Documents/xctest-settings.json"]
    assert json.loads(Path(settings).read_text())["iters"] == 9
    assert g["directories-to-pull"] == ["org.mobilellm.demo:/Documents/results"]


@pytest.mark.parametrize("platform", ["android", "ios"])
@pytest.mark.parametrize("argv,message", [
    (["--spec", "browserstack", "OUT"], "--spec browserstack: unknown farm; one of: devicefarm (AWS Device Farm"),
    (["--spec", "devicefarm", "OUT", "--artifacts", "/nonexistent"], "--artifacts /nonexistent is not a directory"),
])
def test_bad_spec_input_is_one_line(platform, argv, message, artifacts, tmp_path, capsys):
    argv = [a.replace("OUT", str(tmp_path / "o")) for a in argv]
    if "--artifacts" not in argv:
        argv += ["--artifacts", str(artifacts)]
    assert cli_main(["device", platform, *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
