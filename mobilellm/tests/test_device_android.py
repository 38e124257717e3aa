"""`mobilellm device android` against a stand-in `adb` on PATH that behaves like a phone with the
demo app: files pushed and pulled, shell commands, and the app's benchmark (which writes results
built from the golden example), including the failure modes a user meets."""
from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import pytest

from mobilellm.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "android_demo" / "golden" / "results.json"
PKG = "org.mobilellm.demo"

# The stand-in adb. Device state lives in $FAKE_ADB: config.json, fs/ (the device's files),
# calls.log (one JSON argv per call). The "app" runs synchronously inside `am start`.
FAKE_ADB = r'''
import hashlib, json, os, shlex, shutil, sys
from pathlib import Path

S = Path(os.environ["FAKE_ADB"])
cfg = json.loads((S / "config.json").read_text())
argv = sys.argv[1:]
with open(S / "calls.log", "a") as f:
    f.write(json.dumps(argv) + "\n")

def out(text="", rc=0, err=""):
    sys.stdout.write(text)
    sys.stderr.write(err)
    sys.exit(rc)

def dev(path):
    return S / "fs" / path.lstrip("/")

APP = S / "fs" / "data/user/0/org.mobilellm.demo"

def save_state():
    (S / "config.json").write_text(json.dumps(cfg))

if argv[:1] == ["devices"]:
    out("List of devices attached\n" + "".join(f"{s}\t{st}\n" for s, st in cfg["devices"]) + "\n")
ready = [s for s, st in cfg["devices"] if st == "device"]
if argv[:1] == ["-s"]:
    serial, argv = argv[1], argv[2:]
    if serial not in [s for s, _ in cfg["devices"]] or cfg.get("lost"):
        out(rc=1, err=f"adb: device '{serial}' not found\n")
elif len(cfg["devices"]) > 1:
    out(rc=1, err="adb: more than one device/emulator\n")
elif not cfg["devices"]:
    out(rc=1, err="adb: no devices/emulators found\n")

if argv[0] == "push":
    src, dst = argv[1], argv[2]
    dev(dst).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(src, dev(dst))
    out(f"{src}: 1 file pushed, 0 skipped.\n")
if argv[0] not in ("shell", "exec-out"):
    out(rc=1, err=f"fake adb: unsupported {argv}\n")

cmd = shlex.split(" ".join(argv[1:]))
name = cmd[0]
if name == "mkdir":
    for d in cmd[2:]:
        dev(d).mkdir(parents=True, exist_ok=True)
    out()
if name == "chmod":
    out()
if name == "df":
    out("Filesystem     1K-blocks    Used Available Use% Mounted on\n"
        f"/dev/block/dm-5 115234104 4538512 {cfg['free_kb']}   4% /data\n")
if name == "sha256sum":
    p = dev(cmd[1])
    if not p.is_file():
        out(f"sha256sum: {cmd[1]}: No such file or directory\n", rc=1)
    out(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {cmd[1]}\n")
if name == "pm" and cmd[1] == "list":
    out("instrumentation:org.mobilellm.demo.test/androidx.test.runner.AndroidJUnitRunner (target=org.mobilellm.demo)\n"
        if cfg.get("test_apk", True) else "")
if name == "pm":
    if cfg["installed"]:
        out(f"package:/data/app/~~x==/{cmd[2]}-y==/base.apk\n")
    out(rc=1)
if name == "pidof":
    out("4242\n" if cfg.get("alive") else "", rc=0 if cfg.get("alive") else 1)
if name == "run-as":
    if not cfg["installed"]:
        out(err=f"run-as: unknown package: {cmd[1]}\n", rc=1)
    if not cfg["debuggable"]:
        out(err=f"run-as: package not debuggable: {cmd[1]}\n", rc=1)
    rest = cmd[2:]
    if rest == ["pwd"]:
        out(f"/data/user/0/{cmd[1]}\n")
    if rest[0] == "cat":
        p = APP / rest[1]
        if not p.is_file():
            out(f"cat: {rest[1]}: No such file or directory\n", rc=1)
        sys.stdout.buffer.write(p.read_bytes())
        sys.exit(0)
    out(rc=1, err=f"fake adb: unsupported run-as {rest}\n")
if name == "am" and cmd[1] == "force-stop":
    cfg["alive"] = False
    save_state()
    out()

def run_app(extras):
    """The app's benchmark: writes the status file and the results, as BenchmarkActivity does."""
    files = APP / "files"
    files.mkdir(parents=True, exist_ok=True)
    status = files / (extras["out"] + ".status")
    art = extras["artifact"]
    mode = cfg["app"].get(art, cfg["app"].get("*", "ok"))
    cfg["alive"] = mode in ("ok", "error", "hang", "garbage")
    save_state()
    if mode == "crash":
        status.write_text(json.dumps({"state": "running", "artifact": art}))
    elif mode == "hang":
        status.write_text(json.dumps({"state": "running", "artifact": art}))
    elif mode == "error":
        status.write_text(json.dumps({"state": "error", "artifact": art,
                                      "message": f"{art}: Failed to load method: forward (error 0x20)"}))
    else:
        man = json.loads((dev(extras["dir"]) / (art + ".manifest.json")).read_text())
        assert (dev(extras["dir"]) / art).is_file(), "artifact not pushed"
        recs = json.loads(Path(cfg["golden"]).read_text())["records"]
        for r in recs:
            r.update(model=man["model"]["name"], variant=man["model"]["variant"],
                     stored_blocks=man["model"]["stored_blocks"], executed_blocks=man["model"]["executed_blocks"],
                     backend=man["backend"], scheme=man["quant"]["scheme"], artifact=art, sha256=man["sha256"],
                     threads=extras["threads"])
            r["settings"] = dict(r.get("settings", {}), iters=extras["iters"], warmup=extras["warmup"])
        text = "{not json" if mode == "garbage" else json.dumps(
            {"schema": "mobilellm.results", "version": 1, "records": recs})
        (files / extras["out"]).write_text(text)
        status.write_text(json.dumps({"state": "done", "artifact": art, "results": str(files / extras["out"])}))
    return mode

if name == "am" and cmd[1] == "start":
    comp = cmd[cmd.index("-n") + 1]
    if not cfg["installed"]:
        out("Starting: Intent { cmp=%s }\nError type 3\nError: Activity class {%s} does not exist.\n" % (comp, comp))
    extras = {}
    for i, a in enumerate(cmd):
        if a in ("--es", "--ei"):
            extras[cmd[i + 1]] = cmd[i + 2] if a == "--es" else int(cmd[i + 2])
    run_app(extras)
    out("Starting: Intent { cmp=%s }\nStatus: ok\nLaunchState: COLD\nActivity: %s\nTotalTime: 312\nComplete\n"
        % (comp, comp))
if name == "am" and cmd[1] == "instrument":
    comp = cmd[-1]
    if not cfg.get("test_apk", True) or comp != "org.mobilellm.demo.test/androidx.test.runner.AndroidJUnitRunner":
        out(f"INSTRUMENTATION_STATUS: Error=Unable to find instrumentation info for: ComponentInfo{{{comp}}}\n"
            "INSTRUMENTATION_STATUS_CODE: -1\nandroid.util.AndroidException: INSTRUMENTATION_FAILED: " + comp + "\n")
    assert "-w" in cmd and "-r" in cmd and cmd[cmd.index("class") + 1] == "org.mobilellm.demo.BenchmarkInstrumentedTest"
    extras = {}
    for i, a in enumerate(cmd):
        if a == "-e":
            v = cmd[i + 2]
            extras[cmd[i + 1]] = int(v) if v.isdigit() and cmd[i + 1] != "artifact" else v
    mode = run_app(extras)
    head = ("INSTRUMENTATION_STATUS: class=org.mobilellm.demo.BenchmarkInstrumentedTest\n"
            "INSTRUMENTATION_STATUS: test=benchmarkEveryArtifact\nINSTRUMENTATION_STATUS_CODE: 1\n")
    if mode == "crash":
        out(head + "INSTRUMENTATION_RESULT: shortMsg=Process crashed.\nINSTRUMENTATION_CODE: 0\n")
    if mode == "error":
        out(head + "INSTRUMENTATION_STATUS: stack=java.lang.AssertionError: benchmark failed: boom\n"
            "INSTRUMENTATION_STATUS_CODE: -2\nINSTRUMENTATION_RESULT: stream=\nFAILURES!!!\nINSTRUMENTATION_CODE: -1\n")
    out(head + "INSTRUMENTATION_STATUS: mobilellm_state=done\nINSTRUMENTATION_STATUS_CODE: 2\n"
        "INSTRUMENTATION_STATUS_CODE: 0\nINSTRUMENTATION_RESULT: stream=\nOK (1 test)\nINSTRUMENTATION_CODE: -1\n")
out(rc=127, err=f"/system/bin/sh: {name}: inaccessible or not found\n")
'''


class Phone:
    """Handle on the stand-in device: its config, files and the calls adb received."""

    def __init__(self, root: Path):
        self.root = root

    @property
    def config(self) -> dict:
        return json.loads((self.root / "config.json").read_text())

    def set(self, **kw):
        cfg = self.config
        cfg.update(kw)
        (self.root / "config.json").write_text(json.dumps(cfg))

    def calls(self) -> list[list[str]]:
        p = self.root / "calls.log"
        return [json.loads(line) for line in p.read_text().splitlines()] if p.exists() else []

    def file(self, path: str) -> Path:
        return self.root / "fs" / path.lstrip("/")


@pytest.fixture
def phone(tmp_path, monkeypatch) -> Phone:
    bindir, state = tmp_path / "bin", tmp_path / "phone"
    bindir.mkdir()
    state.mkdir()
    adb = bindir / "adb"
    adb.write_text(f"#!{sys.executable} -S\n{FAKE_ADB}")
    adb.chmod(0o755)
    (state / "config.json").write_text(json.dumps({
        "devices": [["emulator-5554", "device"]], "free_kb": 50_000_000, "installed": True, "debuggable": True,
        "app": {"*": "ok"}, "golden": str(GOLDEN)}))
    monkeypatch.setenv("FAKE_ADB", str(state))
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.delenv("ANDROID_SERIAL", raising=False)
    return Phone(state)


def make_artifact(folder: Path, name: str, backend: str, preset: str = "tiny-random", payload: bytes = b"program",
                  tokenizer: Path | None = None, **extra) -> Path:
    from mobilellm.manifest import model_section, write_manifest
    from mobilellm.models.config import from_name
    art = folder / name
    art.write_bytes(payload)
    write_manifest(art, {"artifact": name, "backend": backend, "quant": {"scheme": "w8a8"},
                         "model": model_section(from_name(preset), "random"), "max_seq_len": 256,
                         "tokenizer": str(tokenizer) if tokenizer else None,
                         "sizes": {"file_bytes": len(payload)}, "sha256": hashlib.sha256(payload).hexdigest(),
                         **extra})
    return art


@pytest.fixture
def artifacts(tmp_path) -> Path:
    d = tmp_path / "artifacts"
    d.mkdir()
    tok = tmp_path / "tokenizer.model"
    tok.write_bytes(b"sentencepiece")
    make_artifact(d, "tiny_w8a8_executorch.pte", "executorch", tokenizer=tok)
    make_artifact(d, "LS-tiny_w8a8_onnx.onnx", "onnx", payload=b"onnx model", tokenizer=tok)
    make_artifact(d, "tiny_fp16_coreml.mlpackage", "coreml")  # an Apple artifact: skipped
    # weights in a .ptd (--external-weights): ExecuTorch's Android Module API takes no data file
    make_artifact(d, "tiny_w8a8-ptd_executorch.pte", "executorch", data_file="tiny_w8a8-ptd_executorch.ptd")
    (d / "tiny_w8a8-ptd_executorch.ptd").write_bytes(b"weights")
    return d


def run(*argv) -> int:
    return cli_main(["device", "android", *map(str, argv)])


def test_pushes_benchmarks_pulls_and_saves(phone, artifacts, tmp_path, capsys):
    from mobilellm.devices.results import load
    out = tmp_path / "out"
    assert run("--artifacts", artifacts, "--out", out, "--iters", 3, "--warmup", 1, "--threads", 2) == 0
    printed = capsys.readouterr()
    saved = sorted(out.glob("android-emulator-5554-*.json"))
    assert len(saved) == 1 and f"results: {saved[0]}" in printed.out
    recs = load(saved[0])
    assert {r["artifact"] for r in recs} == {"tiny_w8a8_executorch.pte", "LS-tiny_w8a8_onnx.onnx"}
    assert {r["backend"] for r in recs} == {"executorch", "onnx"}
    assert all(r["threads"] == 2 and r["settings"]["iters"] == 3 for r in recs if "settings" in r)
    assert "report:" in printed.out
    assert "skipping tiny_fp16_coreml.mlpackage" in printed.err
    assert "skipping tiny_w8a8-ptd_executorch.pte (weights in tiny_w8a8-ptd_executorch.ptd" in printed.err
    remote = "/data/local/tmp/mobilellm"
    for name in ("tiny_w8a8_executorch.pte", "tiny_w8a8_executorch.pte.manifest.json",
                 "tiny_w8a8_executorch.pte.tokenizer.model", "LS-tiny_w8a8_onnx.onnx.tokenizer.model"):
        assert phone.file(f"{remote}/{name}").is_file(), name
    assert not phone.file(f"{remote}/tiny_fp16_coreml.mlpackage").exists()
    # the pair goes over whole, for the chat (LlmModule takes the data path); the benchmark skips it
    for name in ("tiny_w8a8-ptd_executorch.pte", "tiny_w8a8-ptd_executorch.ptd", "tiny_w8a8-ptd_executorch.pte.manifest.json"):
        assert phone.file(f"{remote}/{name}").is_file(), name
    assert "Module.load, which takes no data file; the pair is pushed for the chat screen" in printed.err
    calls = phone.calls()
    shells = [" ".join(c[3:]) for c in calls if c[:3] == ["-s", "emulator-5554", "shell"]]
    assert any(s.startswith(f"chmod 755 {remote}") for s in shells)
    starts = [s for s in shells if s.startswith("am start")]
    assert len(starts) == 2 and all("-S" in s.split() and f"{PKG}/.BenchmarkActivity" in s for s in starts)
    assert all("--ei iters 3" in s and "--ei warmup 1" in s and "--ei threads 2" in s and "--ei prompt_len 128" in s
               for s in starts)

    # a second run pushes only manifests and tokenizers: the artifacts are there with the same sha256
    before = len(phone.calls())
    assert run("--artifacts", artifacts, "--out", out, "--no-report") == 0
    pushed = [c[3] for c in phone.calls()[before:] if c[2:3] == ["push"]]
    assert pushed and not any(p.endswith((".pte", ".onnx")) for p in pushed), pushed
    assert "not built (--no-report)" in capsys.readouterr().out


def make_genai_artifact(folder: Path, name: str = "LS-tiny_w8a8-block_onnx.onnx", **kw) -> Path:
    """An ONNX artifact with its onnxruntime-genai directory, laid out as export/genai.py writes it: model.onnx a
    hard link to the artifact, genai_config.json, tokenizer files; the manifest names it as export/backends/onnx.py
    does."""
    from mobilellm.export.genai import genai_dir
    art_path = folder / name
    d = genai_dir(art_path)
    d.mkdir()
    art = make_artifact(folder, name, "onnx", payload=b"shared-cache onnx", **kw,
                        genai_dir={"path": d.name, "config": "genai_config.json",
                                   "loader": "onnxruntime_genai.Model(dir)",
                                   "files": ["genai_config.json", "model.onnx", "tokenizer.model"]})
    os.link(art, d / "model.onnx")
    (d / "genai_config.json").write_text(json.dumps({"model": {"decoder": {"filename": "model.onnx"}}}))
    (d / "tokenizer.model").write_bytes(b"sentencepiece")
    return art


def test_an_onnx_artifact_takes_its_genai_directory(phone, tmp_path, capsys):
    """The app runs `<name>.genai/` through onnxruntime-genai when it is beside the .onnx: the host pushes it
    file by file (model.onnx, a hard link here, as a file), creates and opens the folder for the app, and
    leaves model.onnx alone when the device has the same bytes."""
    d = tmp_path / "arts"
    d.mkdir()
    art = make_genai_artifact(d)
    make_artifact(d, "LS-tiny_w8a8_onnx.onnx", "onnx", payload=b"growing-cache onnx",  # no genai_dir: plain session
                  genai_dir={"path": "LS-tiny_w8a8_onnx.genai"})  # named but not there
    assert run("--artifacts", d, "--out", tmp_path / "o", "--no-report") == 0
    err = capsys.readouterr().err
    assert "LS-tiny_w8a8_onnx.onnx: its onnxruntime-genai directory LS-tiny_w8a8_onnx.genai is not beside it" in err
    remote = "/data/local/tmp/mobilellm"
    g = f"{remote}/LS-tiny_w8a8-block_onnx.genai"
    for name in ("genai_config.json", "model.onnx", "tokenizer.model"):
        assert phone.file(f"{g}/{name}").is_file(), name
    assert phone.file(f"{g}/model.onnx").read_bytes() == art.read_bytes()
    assert phone.file(f"{remote}/{art.name}").is_file(), "the .onnx itself goes too (the plain session's file)"
    shells = [c[3] for c in phone.calls() if c[2:3] == ["shell"]]
    assert f"mkdir -p {remote} {g}" in shells and f"chmod 755 {remote} {g}" in shells
    chmod = next(c for c in shells if c.startswith("chmod 644"))
    assert f"{g}/model.onnx" in chmod.split() and f"{g}/genai_config.json" in chmod.split()
    pushes = [c[4] for c in phone.calls() if c[2:3] == ["push"]]
    assert f"{g}/model.onnx" in pushes
    # again: model.onnx is on the device with the manifest's sha256, the small files go again
    before = len(phone.calls())
    assert run("--artifacts", d, "--out", tmp_path / "o", "--no-report") == 0
    pushes = [c[4] for c in phone.calls()[before:] if c[2:3] == ["push"]]
    assert f"{g}/genai_config.json" in pushes and f"{g}/model.onnx" not in pushes, pushes


def test_the_console_script_end_to_end(phone, artifacts, tmp_path, cli):
    p = cli("device", "android", "--artifacts", artifacts, "--out", tmp_path / "o", "--iters", 2, "--no-report")
    assert "results:" in p.stdout and "Traceback" not in p.stderr


@pytest.mark.parametrize("setup,argv,message", [
    (dict(devices=[]), [], "no Android device found"),
    (dict(devices=[["R5CT1", "unauthorized"]]), [], "unauthorized: unlock it and accept"),
    (dict(devices=[["R5CT1", "offline"]]), [], "is offline"),
    (dict(devices=[["R5CT1", "device"], ["emulator-5554", "device"]]), [],
     "several devices connected (R5CT1, emulator-5554); choose one with --serial"),
    (dict(), ["--serial", "R5CT9"], "device R5CT9 is not connected; connected: emulator-5554"),
    (dict(installed=False), [], "is not installed on emulator-5554: build and install it: "
                                "`cd android_demo && ./gradlew installDebug`"),
    (dict(debuggable=False), [], "is not the debug build"),
    (dict(free_kb=1000), [], "not enough space on emulator-5554"),
    (dict(app={"*": "crash"}), [], "the app stopped before finishing"),
    (dict(app={"*": "hang"}), ["--timeout", "0.5"], "did not finish within 0.5 s"),
    (dict(app={"*": "garbage"}), [], "are not valid JSON"),
    (dict(app={"*": "error"}), [], "Failed to load method: forward"),
])
def test_failures_give_one_clear_error(phone, artifacts, tmp_path, capsys, setup, argv, message):
    phone.set(**setup)
    d = tmp_path / "one"
    d.mkdir()
    make_artifact(d, "tiny_w8a8_executorch.pte", "executorch")
    assert run("--artifacts", d, "--out", tmp_path / "out", "--no-report", *argv) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert "Traceback" not in err


def test_several_devices_with_serial(phone, artifacts, tmp_path):
    phone.set(devices=[["R5CT1", "device"], ["emulator-5554", "device"]])
    assert run("--artifacts", artifacts, "--serial", "R5CT1", "--out", tmp_path / "o", "--no-report") == 0
    assert all(c[:2] == ["-s", "R5CT1"] for c in phone.calls() if c[0] != "devices")


def test_one_failing_artifact_keeps_the_others(phone, artifacts, tmp_path, capsys):
    from mobilellm.devices.results import load
    phone.set(app={"LS-tiny_w8a8_onnx.onnx": "error", "*": "ok"})
    out = tmp_path / "o"
    assert run("--artifacts", artifacts, "--out", out, "--no-report") == 2
    err = capsys.readouterr().err
    assert "1 of 2 artifacts failed" in err and "LS-tiny_w8a8_onnx.onnx: " in err
    (saved,) = out.glob("android-*.json")
    assert {r["artifact"] for r in load(saved)} == {"tiny_w8a8_executorch.pte"}


def test_no_adb_and_nothing_to_run(phone, tmp_path, monkeypatch, capsys):
    assert run("--artifacts", tmp_path / "nope") == 2
    assert "is not a directory" in capsys.readouterr().err
    d = tmp_path / "apple"
    d.mkdir()
    make_artifact(d, "tiny_fp16_coreml.mlpackage", "coreml")
    assert run("--artifacts", d) == 2
    assert "no artifact in" in capsys.readouterr().err
    make_artifact(d, "tiny_w8a8_executorch.pte", "executorch")
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert run("--artifacts", d) == 2
    assert "adb not found on PATH: install Android SDK platform-tools" in capsys.readouterr().err


@pytest.mark.parametrize("argv,message", [
    (["--iters", "0"], "--iters must be >= 1"),
    (["--warmup", "-1"], "--warmup must be >= 0"),
    (["--remote-dir", "tmp/x"], "--remote-dir must be an absolute path"),
    (["--merge", "/nonexistent.json"], "--merge /nonexistent.json: no such results file"),
])
def test_bad_arguments(phone, artifacts, capsys, argv, message):
    assert run("--artifacts", artifacts, *argv) == 2
    assert message in capsys.readouterr().err


def test_df_parsing():
    from mobilellm.devices.android import free_bytes

    class Fake:
        def __init__(self, text):
            self.text = text

        def shell(self, *a):
            return type("P", (), {"stdout": self.text})()

    head = "Filesystem     1K-blocks    Used Available Use% Mounted on\n"
    assert free_bytes(Fake(head + "/dev/block/dm-5 115234104 4538512 110564056 4% /data\n"), "/data") \
        == 110564056 * 1024
    wrapped = head + "/dev/block/bootdevice/by-name/userdata\n 115234104 4538512 2000 4% /data\n"
    assert free_bytes(Fake(wrapped), "/data") == 2000 * 1024
    assert free_bytes(Fake("df: /x: No such file\n"), "/x") is None


# ---------------------------------------------------------------------------------------------------
# --runner instrument: BenchmarkInstrumentedTest under `am instrument`


def test_instrumentation_runner(phone, artifacts, tmp_path, capsys):
    from mobilellm.devices.results import load
    out = tmp_path / "out"
    assert run("--artifacts", artifacts, "--out", out, "--runner", "instrument", "--iters", 3, "--warmup", 1,
               "--no-report") == 0
    (saved,) = out.glob("android-*.json")
    recs = load(saved)
    assert {r["artifact"] for r in recs} == {"tiny_w8a8_executorch.pte", "LS-tiny_w8a8_onnx.onnx"}
    assert all(r["settings"]["iters"] == 3 for r in recs if "settings" in r)
    inst = [c for c in phone.calls() if c[2:3] == ["shell"] and c[3].startswith("am instrument")]
    assert len(inst) == 2, "one instrumentation (one fresh process) per artifact"
    assert not any(c[3].startswith("am start") for c in phone.calls() if c[2:3] == ["shell"])
    argv = inst[0][3].split()
    assert argv[:4] == ["am", "instrument", "-w", "-r"]
    assert argv[-1] == "org.mobilellm.demo.test/androidx.test.runner.AndroidJUnitRunner"
    pairs = dict(zip(argv[5:-1:3], argv[6:-1:3]))
    assert set(argv[4:-1:3]) == {"-e"}
    assert pairs["class"] == "org.mobilellm.demo.BenchmarkInstrumentedTest"
    assert pairs["iters"] == "3" and pairs["warmup"] == "1" and pairs["dir"] == "/data/local/tmp/mobilellm"
    assert any(c[2:] == ["shell", "pm list instrumentation"] for c in phone.calls())


@pytest.mark.parametrize("setup,message", [
    (dict(test_apk=False), "the instrumentation org.mobilellm.demo.test/androidx.test.runner.AndroidJUnitRunner "
                           "is not installed on emulator-5554: build and install the test APK"),
    (dict(app={"*": "crash"}), "the app crashed while measuring tiny_w8a8_executorch.pte"),
    (dict(app={"*": "error"}), "Failed to load method: forward"),
])
def test_instrumentation_failures(phone, tmp_path, capsys, setup, message):
    phone.set(**setup)
    d = tmp_path / "one"
    d.mkdir()
    make_artifact(d, "tiny_w8a8_executorch.pte", "executorch")
    assert run("--artifacts", d, "--out", tmp_path / "out", "--no-report", "--runner", "instrument") == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
