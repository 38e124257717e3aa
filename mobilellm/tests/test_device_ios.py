"""`mobilellm device ios` against a stand-in `xcrun devicectl` (and a stand-in app behind it), the golden
results the app writes, the generated Xcode project, and, where a Swift toolchain exists, the app's
platform-free Swift (ios_demo/MobileLLMDemo/Core) against the Python side."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mobilellm.benchmarks import schema
from mobilellm.cli import main as cli_main
from mobilellm.devices import ios, results
from mobilellm.devices import results as results_mod

ROOT = Path(__file__).resolve().parents[2]
IOS_DEMO = ROOT / "ios_demo"
GOLDEN = IOS_DEMO / "golden"
GOLDEN_RESULTS = GOLDEN / "results.example.json"
GOLDEN_ARTIFACTS = ["LS-125M_w8a8_executorch.pte", "LS-125M_fp16_coreml.mlpackage"]
TIMINGS = ("load_ms", "init_ms", "prefill_ms", "prefill_tokens_per_s", "decode_ms", "decode_tokens_per_s")

# A stand-in for `xcrun`: devicectl's subcommands and JSON output, one fake phone's app container on
# disk, and behind `process launch` a stand-in app that answers a run the way ios_demo does.
FAKE_XCRUN = r'''#!PYTHON
import json, os, shutil, sys
from pathlib import Path

state = json.loads(Path(os.environ["FAKE_XCRUN_STATE"]).read_text())
argv = sys.argv[1:]
with open(state["log"], "a") as f:
    f.write(json.dumps(argv) + "\n")
if state.get("no_devicectl") or argv[:1] != ["devicectl"]:
    sys.exit('xcrun: error: unable to find utility "devicectl", not a developer tool or in PATH')
args = argv[1:]

def opt(name):
    return args[args.index(name) + 1] if name in args else None

def done(result):
    if opt("--json-output"):
        Path(opt("--json-output")).write_text(json.dumps({"info": {"outcome": "success"}, "result": result}))
    sys.exit(0)

def fail(msg):
    print("ERROR: " + msg, file=sys.stderr)
    sys.exit(1)

def device():
    for d in state["devices"]:
        if opt("--device") in (d["identifier"], d["hardwareProperties"]["udid"]):
            return d
    fail("The specified device was not found.")

def container(d, bundle):
    if bundle not in state["apps"].get(d["identifier"], []):
        fail("The requested application " + bundle + " is not installed. (CoreDevice.ActionError error 3)")
    return Path(state["container"]) / d["identifier"] / bundle

def run_app(root, app_args):
    run = app_args[app_args.index("--mobilellm-run") + 1]
    docs, mode = root / "Documents", state.get("app", "ok")
    inbox, results = docs / "inbox" / run, docs / "results" / run
    request = json.loads((inbox / "request.json").read_text())
    (docs / "artifacts").mkdir(parents=True, exist_ok=True)
    for p in inbox.iterdir():
        if p.name != "request.json":
            shutil.move(str(p), str(docs / "artifacts" / p.name))
    results.mkdir(parents=True)
    status = {"schema": "mobilellm.ios-status", "run_id": run, "state": "done", "message": "measured",
              "completed": [], "errors": {}, "results": "results.json"}
    if mode == "silent":
        return
    if mode == "fail":
        status.update(state="failed", message="no artifact was measured",
                      errors={n: "could not load the program" for n in request["artifacts"]})
        (results / "status.json").write_text(json.dumps(status))
        return
    golden = json.loads(Path(state["golden"]).read_text())["records"]
    template = [r for r in golden if r["artifact"] == golden[0]["artifact"]]
    records = []
    for i, name in enumerate(request["artifacts"]):
        if mode == "partial" and i == 1:
            status["errors"][name] = "Core ML could not compile the model"
            continue
        man = name[: -len(".genai")] + ".onnx" if name.endswith(".genai") else name  # manifest_path's mapping
        m = json.loads((docs / "artifacts" / (man + ".manifest.json")).read_text())
        for r in template:
            r = dict(r, artifact=name, model=m["model"]["name"], variant=m["model"]["variant"],
                     stored_blocks=m["model"]["stored_blocks"], executed_blocks=m["model"]["executed_blocks"],
                     backend=m["backend"], scheme=m["quant"]["scheme"], sha256=m["sha256"],
                     device="iPhone 13 (A15)" if request["device_name"] == "iPhone 13" else request["device_name"])
            if mode == "invalid":
                r["unit"] = "seconds"
            records.append(r)
        status["completed"].append(name)
    (results / "results.json").write_text(json.dumps({"schema": "mobilellm.results", "version": 1, "records": records}))
    (results / "log.txt").write_text("measured\n")
    (results / "status.json").write_text(json.dumps(status))

if args[:2] == ["list", "devices"]:
    done({"devices": state["devices"]})
if args[:3] == ["device", "info", "apps"]:
    d = device()
    done({"apps": [{"bundleIdentifier": b, "name": "MobileLLM", "version": "0.1.0"}
                   for b in state["apps"].get(d["identifier"], []) if opt("--bundle-id") in (None, b)]})
if args[:3] == ["device", "copy", "to"]:
    assert opt("--domain-type") == "appDataContainer"
    src, dest = Path(opt("--source")), container(device(), opt("--domain-identifier")) / opt("--destination")
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src, dest) if src.is_dir() else shutil.copyfile(src, dest)
    done({})
if args[:3] == ["device", "copy", "from"]:
    assert opt("--domain-type") == "appDataContainer"
    src, dest = container(device(), opt("--domain-identifier")) / opt("--source"), Path(opt("--destination"))
    if dest.exists():
        fail("The destination already exists.")
    if not src.is_file():
        fail("The file couldn't be opened because there is no such file.")
    shutil.copyfile(src, dest)
    done({})
if args[:3] == ["device", "process", "launch"]:
    d, rest, i = device(), args[3:], 0
    while rest[i].startswith("--"):
        i += 2 if rest[i] in ("--device", "--json-output", "--environment-variables") else 1
    bundle, app_args = rest[i], rest[i + 1:]
    root = container(d, bundle)
    if state.get("locked"):
        fail("The device is locked. Unlock it and try again.")
    run_app(root, app_args)
    done({"process": {"processIdentifier": 4242}})
fail("unknown devicectl command: " + " ".join(args))
'''


def phone(n: int, model: str = "iPhone 13", product: str = "iPhone14,5") -> dict:
    return {"identifier": f"0000000{n}-AAAA-BBBB-CCCC-DDDDEEEEFFF{n}",
            "hardwareProperties": {"udid": f"00008110-00000000000000{n}E", "marketingName": model,
                                   "productType": product, "platform": "iOS", "deviceType": "iPhone",
                                   "reality": "physical"},
            "deviceProperties": {"name": f"Test phone {n}", "osVersionNumber": "18.2.1"},
            "connectionProperties": {"tunnelState": "connected", "pairingState": "paired"},
            "visibilityClass": "default"}


class Phone:
    """The stand-in's state and what it saw."""

    def __init__(self, root: Path, monkeypatch):
        self.root = root
        self.bin = root / "bin"
        self.bin.mkdir()
        xcrun = self.bin / "xcrun"
        xcrun.write_text(FAKE_XCRUN.replace("PYTHON", sys.executable))
        xcrun.chmod(0o755)
        self.state_file = root / "state.json"
        self.log = root / "calls.jsonl"
        d = phone(1)
        self.state = {"devices": [d], "apps": {d["identifier"]: [ios.BUNDLE_ID]}, "container": str(root / "phone"),
                      "golden": str(GOLDEN_RESULTS), "log": str(self.log), "app": "ok"}
        self.save()
        monkeypatch.setenv("FAKE_XCRUN_STATE", str(self.state_file))
        monkeypatch.setenv("PATH", f"{self.bin}{os.pathsep}{os.environ['PATH']}")
        monkeypatch.setattr(ios, "is_macos", lambda: True)
        monkeypatch.setattr(ios, "POLL_S", 0.0)

    def save(self, **changes):
        self.state.update(changes)
        self.state_file.write_text(json.dumps(self.state))

    def calls(self) -> list[list[str]]:
        return [json.loads(line) for line in self.log.read_text().splitlines()] if self.log.exists() else []

    def documents(self, device: int = 1) -> Path:
        return self.root / "phone" / phone(device)["identifier"] / ios.BUNDLE_ID / "Documents"


@pytest.fixture
def fake_phone(tmp_path, monkeypatch):
    return Phone(tmp_path, monkeypatch)


@pytest.fixture
def artifacts(tmp_path, sp_tokenizer) -> Path:
    """Two artifacts as `mobilellm export` leaves them: a .pte file and an .mlpackage directory, each
    with its manifest, and the tokenizer the manifests name."""
    from mobilellm.io import sha256, size_bytes
    from mobilellm.manifest import model_section, write_manifest
    from mobilellm.models.config import from_name
    d = tmp_path / "artifacts"
    d.mkdir()
    args = from_name("tiny-random")
    pte = d / "tiny-random_w8a8_executorch.pte"
    pte.write_bytes(b"ET12" + bytes(1000))
    pkg = d / "tiny-random_fp16_coreml.mlpackage"
    (pkg / "Data" / "com.apple.CoreML" / "weights").mkdir(parents=True)
    (pkg / "Manifest.json").write_text("{}")
    (pkg / "Data" / "com.apple.CoreML" / "weights" / "weight.bin").write_bytes(bytes(2000))
    for art, backend, scheme in ((pte, "executorch", "w8a8"), (pkg, "coreml", "fp16")):
        write_manifest(art, {"artifact": art.name, "backend": backend, "quant": {"scheme": scheme},
                             "model": model_section(args, "random (seed 0)"), "max_seq_len": 64,
                             "tokenizer": str(sp_tokenizer), "sizes": {"file_bytes": size_bytes(art)},
                             "sha256": sha256(art)})
    ptd = d / "tiny-random_w8a8-ptd_executorch.pte"  # weights in a .ptd: the app's TextRunner takes no data file
    ptd.write_bytes(b"ET12")
    write_manifest(ptd, {"artifact": ptd.name, "backend": "executorch", "quant": {"scheme": "w8a8"},
                         "model": model_section(args, "random (seed 0)"), "max_seq_len": 64,
                         "data_file": "tiny-random_w8a8-ptd_executorch.ptd"})
    (d / "leftover.pte.failed").write_bytes(b"x")  # a failed export is never copied
    onnx = d / "tiny-random_w8a8_onnx.onnx"  # nor what the app cannot run
    onnx.write_bytes(b"onnx")
    write_manifest(onnx, {"artifact": onnx.name, "backend": "onnx", "quant": {"scheme": "w8a8"},
                          "model": model_section(args, "random (seed 0)"), "max_seq_len": 64})
    return d


def run(*argv: str) -> int:
    return cli_main(["device", "ios", *map(str, argv)])


def error_of(capsys, *argv: str) -> str:
    rc = run(*argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err
    return err


# ---------------------------------------------------------------------------------------------------
# The golden results and manifests


def test_golden_results_follow_the_schema():
    records = results.load(GOLDEN_RESULTS)
    assert {r["artifact"] for r in records} == set(GOLDEN_ARTIFACTS)
    for name in GOLDEN_ARTIFACTS:
        mine = [r for r in records if r["artifact"] == name]
        for metric in TIMINGS:
            stats = sorted(r["statistic"] for r in mine if r["metric"] == metric)
            assert stats == ["median", "min", "p10", "p90"], (name, metric)
        for metric in ("phys_footprint_after_init_mb", "phys_footprint_after_generate_mb", "size_mb", "kv_cache_mb"):
            assert [r["statistic"] for r in mine if r["metric"] == metric] == ["single"]
        assert not any(r["metric"].startswith("rss_") for r in mine), "iOS measures phys_footprint, not RSS"
        for r in mine:
            if r["statistic"] != "single" and r["metric"] in TIMINGS:
                assert len(r["settings"]["raw_samples"]) == r["samples"] and "warmup_samples" in r["settings"]
            assert r["settings"]["thermal_start"] == r["settings"]["thermal_end"] == "nominal"
        for r in mine:
            assert set(schema.FIELDS) - {"note"} <= set(r) | {"settings"}
            assert set(r["runtime"]) == {"executorch", "coreml", "app"} and r["runtime"]["executorch"] == "1.5.1"
            assert r["device"] == "iPhone 13 (A15)" and r["os"].startswith("iOS ")
            assert r["settings"]["prompt_len"] == r["settings"]["decode_position"] == 128
    # the numbers the host computes the same way
    from mobilellm.benchmarks.bench import kv_cache_bytes
    from mobilellm.manifest import read_manifest
    for name in GOLDEN_ARTIFACTS:
        m = read_manifest(GOLDEN / name)
        [kv] = [r for r in records if r["artifact"] == name and r["metric"] == "kv_cache_mb"]
        assert kv["value"] == round(kv_cache_bytes(m) / 1e6, 4)
        [size] = [r for r in records if r["artifact"] == name and r["metric"] == "size_mb"]
        assert size["value"] == round(m["sizes"]["file_bytes"] / 1e6, 4)


def test_golden_core_ml_prefill_is_one_the_model_takes():
    """The Core ML export takes 1, 2, 4, ... 64 tokens per call; a 128-token prefill is 64 + 64, as the
    host's CoreMLSession.forward feeds it (never one call of 128)."""
    from mobilellm.export.backends.coreml import CHUNKS
    from mobilellm.manifest import read_manifest
    m = read_manifest(GOLDEN / GOLDEN_ARTIFACTS[1])
    lengths = m["io"]["chunk_lengths"]
    assert lengths == sorted(CHUNKS) == m["io"]["inputs"][0]["enumerated_T"]
    for r in results.load(GOLDEN_RESULTS):
        chunks = r.get("settings", {}).get("prefill_chunks")
        if r["backend"] == "coreml" and r["metric"] in TIMINGS:
            assert chunks == host_chunks(r["settings"]["prompt_len"], lengths) == [64, 64]
            assert all(c in lengths for c in chunks)
        elif r["metric"] in TIMINGS:
            assert chunks == [r["settings"]["prompt_len"]] and r["settings"]["xnnpack_weight_cache"] is True


def host_chunks(n: int, lengths: list[int]) -> list[int]:
    """export/backends/coreml.py CoreMLSession.forward's feeding, as a list of call lengths."""
    out, i = [], 0
    while i < n:
        t = next(t for t in sorted(lengths, reverse=True) if t <= n - i)
        out.append(t)
        i += t
    return out


def test_swift_sources_feed_core_ml_in_chunks_and_set_the_runner():
    """What the Swift apps must do, read from their sources (no Xcode here)."""
    eng = IOS_DEMO / "MobileLLMDemo" / "Engines"
    coreml = (eng / "CoreMLSession.swift").read_text()
    assert "for n in try prefillChunks(count: tokens.count)" in coreml and "promptChunks(count:" in coreml
    # load as the host's (the description read), init = compile + load + state
    body = coreml[coreml.index("func open() async throws"):]
    load, init = body.split("let loadMs = ms(since: t0)")[:2]
    assert "compileModel" not in load and "MLModel.load" not in load
    assert init.index("compileModel") < init.index("MLModel.load") < init.index("makeState") < init.index("let initMs")
    chat = (IOS_DEMO / "MobileLLMDemo" / "Views" / "ChatView.swift").read_text()
    assert "$0.isEchoEnabled = false" in chat and "$0.bosCount = 1" in chat
    et = (eng / "ExecuTorchSession.swift").read_text()
    assert 'BackendOption("weight_cache_enabled", weightCache)' in et and 'try m.load("forward", options: options)' in et
    assert "Module(filePath: url.path, dataFilePaths: [d.path], loadMode: loadMode)" in et
    core = (IOS_DEMO / "MobileLLMDemo" / "Core" / "MobileLLMCore.swift").read_text()
    assert 'weightCacheSafe: Set<String> = ["fp32", "w8a8", "8da4w"]' in core


# onnxruntime-genai's Objective-C API (src/objectivec/include/ort_genai_objc.h at the newest stored snapshot of
# microsoft/onnxruntime-genai) as Swift imports it: the selectors GenaiSession.swift calls, by their Swift names.
GENAI_OBJC_API = {
    "OGAConfig(path:": "initWithPath:error:", "config.overlay(": "overlay:error:",
    "OGAModel(config:": "initWithConfig:error:", "OGAGeneratorParams(model:": "initWithModel:error:",
    'setSearchOption("max_length", doubleValue:': "setSearchOption:doubleValue:error:",
    "OGAGenerator(model: m, params:": "initWithModel:params:error:", ".rewind(to:": "rewindTo:error:",
    "g.appendTokens(": "appendTokens:error:", 'g.getOutput("logits")': "getOutput:error:",
    "logits.dataPointer()": "getDataPointerWithError:",
}


def test_genai_engine_is_wired_and_pinned():
    """`<name>.genai/` directories run through onnxruntime-genai's Objective-C API when the app is built with its
    pod (ios_demo/Podfile, at the Python side's genai extra version); without it the app still builds."""
    podfile = (IOS_DEMO / "Podfile").read_text()
    pyproject = (ROOT / "pyproject.toml").read_text()
    (pin,) = re.findall(r"^\s*pod 'onnxruntime-genai-objc', '([\d.]+)'$", podfile, re.M)
    assert f'genai = ["onnxruntime-genai=={pin}"]' in pyproject and pin == "0.18.0"
    assert "platform :ios, '18.0'" in podfile and "target 'MobileLLMDemo' do" in podfile
    eng = IOS_DEMO / "MobileLLMDemo" / "Engines"
    src = (eng / "GenaiSession.swift").read_text()
    assert "#if canImport(onnxruntime_genai_objc)" in src and src.rstrip().endswith("#endif")
    assert f'static let version = "{pin}"' in src
    for swift, selector in GENAI_OBJC_API.items():
        assert swift in src, f"GenaiSession.swift does not call {selector} as {swift}"
    opened = src[src.index("func open()"):src.index("func forward(")]
    assert opened.index("OGAModel(config:") < opened.index("let load = ms(since: t0)") < opened.index("OGAGenerator(")
    registry = (eng / "LLMSession.swift").read_text()
    assert 'engines["genai"] = { GenaiSession(url: $0.url, manifest: $0.manifest) }' in registry
    assert registry.index("#if canImport(onnxruntime_genai_objc)") < registry.index('engines["genai"]')
    chat = (IOS_DEMO / "MobileLLMDemo" / "Views" / "ChatView.swift").read_text()
    assert "session = try Runtimes.session(for: a)" in chat
    gen = (IOS_DEMO / "tools" / "make_xcodeproj.py").read_text()
    assert '"GenaiSession.swift"' in gen
    assert {"Pods/", "MobileLLMDemo.xcworkspace/"} <= set((IOS_DEMO / ".gitignore").read_text().split())


def test_golden_manifests_are_what_export_writes():
    from mobilellm.manifest import model_section, read_manifest
    from mobilellm.models.config import from_name
    for name in GOLDEN_ARTIFACTS:
        m = read_manifest(GOLDEN / name)
        assert m["artifact"] == name
        expect = json.loads(json.dumps(model_section(from_name("LS-125M"), m["model"]["weights"])))
        assert m["model"] == expect
    coreml = read_manifest(GOLDEN / GOLDEN_ARTIFACTS[1])
    assert [i["name"] for i in coreml["io"]["inputs"]] == ["tokens", "input_pos"]


# ---------------------------------------------------------------------------------------------------
# The Xcode project


def test_xcode_project_is_the_generated_one():
    sys.path.insert(0, str(IOS_DEMO / "tools"))
    try:
        import make_xcodeproj as gen
    finally:
        sys.path.pop(0)
    for path, text in gen.outputs().items():
        assert path.read_text() == text, f"{path} is stale: run python ios_demo/tools/make_xcodeproj.py"
    pbx = (IOS_DEMO / "MobileLLMDemo.xcodeproj" / "project.pbxproj").read_text()
    defined = set(re.findall(r"^\t\t([0-9A-F]{24}) ", pbx, re.M))
    referenced = set(re.findall(r"\b([0-9A-F]{24})\b", pbx))
    assert referenced <= defined, f"dangling object ids: {sorted(referenced - defined)}"
    assert pbx.count("{") == pbx.count("}") and pbx.count("(") == pbx.count(")")
    on_disk = {p.name for p in (IOS_DEMO / "MobileLLMDemo").rglob("*.swift")}
    in_project = set(re.findall(r"/\* (\w+\.swift) in Sources \*/", pbx))
    assert on_disk | {"BenchmarkTests.swift"} == in_project
    for product in gen.EXECUTORCH_PRODUCTS:
        assert f"productName = {product};" in pbx
    assert 'branch = "swiftpm-1.5.1";' in pbx and "https://github.com/pytorch/executorch" in pbx
    scheme = (IOS_DEMO / "MobileLLMDemo.xcodeproj/xcshareddata/xcschemes/MobileLLMDemo.xcscheme").read_text()
    assert 'BuildableName = "MobileLLMDemoTests.xctest"' in scheme


# ---------------------------------------------------------------------------------------------------
# The host command


def test_needs_macos_elsewhere(cli, tmp_path):
    if sys.platform == "darwin":
        pytest.skip("this is macOS")
    p = cli("device", "ios", "--artifacts", tmp_path, check_rc=2)
    assert "needs macOS with Xcode" in p.stderr and "Traceback" not in p.stderr


def test_copies_runs_and_pulls(fake_phone, artifacts, tmp_path, capsys, monkeypatch):
    import types
    calls = []
    fake_report = types.ModuleType("mobilellm.benchmarks.report")
    fake_report.build_report = lambda paths, out_dir: calls.append((paths, out_dir)) or out_dir / "report.md"
    monkeypatch.setitem(sys.modules, "mobilellm.benchmarks.report", fake_report)
    out = tmp_path / "out"
    assert run("--artifacts", artifacts, "--out", out, "--iters", 5, "--prompt-len", 32) == 0
    captured = capsys.readouterr()
    stdout = captured.out
    assert ("skip     tiny-random_w8a8_onnx.onnx: the iOS app runs .pte, .mlpackage, .mlmodelc, .genai only"
            in captured.err)
    assert "skip     tiny-random_w8a8-ptd_executorch.pte: weights in tiny-random_w8a8-ptd_executorch.ptd" in captured.err

    # the results came back, valid, one set per artifact, and went to the report
    [results] = out.glob("results-iphone-13-*.json")
    records = results_mod.load(results)
    names = {"tiny-random_w8a8_executorch.pte", "tiny-random_fp16_coreml.mlpackage"}
    assert {r["artifact"] for r in records} == names
    assert {r["backend"] for r in records} == {"executorch", "coreml"}
    assert results.with_suffix(".log").is_file()
    assert calls == [([results], out / "report")]
    assert "decode_ms" in stdout and "tiny-random_fp16_coreml.mlpackage" in stdout

    # what the phone got: artifacts (a directory too), manifests, tokenizers; never a failed export
    docs = fake_phone.documents()
    got = sorted(p.name for p in (docs / "artifacts").iterdir())
    assert got == sorted([*names, *(n + ".manifest.json" for n in names), *(n + ".tokenizer.model" for n in names)])
    assert (docs / "artifacts" / "tiny-random_fp16_coreml.mlpackage" / "Manifest.json").is_file()

    # devicectl was called with its real syntax, --json-output ahead of the positionals
    calls_ = fake_phone.calls()
    dev = phone(1)["identifier"]

    def opts(c):
        return {c[i]: c[i + 1] for i in range(len(c) - 1) if c[i].startswith("--") and not c[i + 1].startswith("--")}
    assert calls_[0][:4] == ["devicectl", "list", "devices", "--json-output"]
    assert calls_[1][:5] == ["devicectl", "device", "info", "apps", "--json-output"]
    assert opts(calls_[1])["--device"] == dev and opts(calls_[1])["--bundle-id"] == ios.BUNDLE_ID
    copies = [c for c in calls_ if c[1:4] == ["device", "copy", "to"]]
    assert len(copies) == 7  # 2 x (artifact, manifest, tokenizer) + request
    for c in copies:
        o = opts(c)
        assert (o["--device"], o["--domain-type"], o["--domain-identifier"]) == (dev, "appDataContainer", ios.BUNDLE_ID)
        assert o["--destination"].startswith("Documents/inbox/")
    assert all(Path(opts(c)["--source"]).exists() for c in copies[:-1])  # the request was a temporary file
    assert opts(copies[-1])["--destination"].endswith("/request.json")
    [launch] = [c for c in calls_ if c[1:4] == ["device", "process", "launch"]]
    b = launch.index(ios.BUNDLE_ID)
    run_id = launch[b + 2]
    assert launch[b - 3:b] == ["--device", dev, "--terminate-existing"] and launch[b + 1:] == ["--mobilellm-run", run_id]
    assert launch.index("--json-output") < b
    assert results.name.endswith(f"{run_id}.json")
    pulls = [c for c in calls_ if c[1:4] == ["device", "copy", "from"]]
    assert opts(pulls[0])["--source"] == f"Documents/results/{run_id}/status.json"
    assert opts(pulls[-2])["--source"] == f"Documents/results/{run_id}/results.json"


def test_an_onnx_export_goes_as_its_genai_directory(fake_phone, tmp_path, capsys):
    """The app runs an ONNX export's `<name>.genai/` (GenaiSession, with the onnxruntime-genai pod): the host
    copies the directory and the .onnx's manifest under its own name (the app pairs them by the manifest's
    genai_dir), names the directory in the request, and reads its records back under the directory's name."""
    from mobilellm.tests.test_device_android import make_genai_artifact
    d = tmp_path / "a"
    d.mkdir()
    art = make_genai_artifact(d)
    out = tmp_path / "out"
    assert run("--artifacts", d, "--out", out, "--iters", 3) == 0
    [results] = out.glob("results-iphone-13-*.json")
    assert {r["artifact"] for r in results_mod.load(results)} == {"LS-tiny_w8a8-block_onnx.genai"}
    arts = fake_phone.documents() / "artifacts"
    assert (arts / "LS-tiny_w8a8-block_onnx.genai" / "model.onnx").read_bytes() == art.read_bytes()
    assert (arts / "LS-tiny_w8a8-block_onnx.genai" / "genai_config.json").is_file()
    assert (arts / f"{art.name}.manifest.json").is_file() and not (arts / art.name).exists()
    assert not (arts / "LS-tiny_w8a8-block_onnx.genai.manifest.json").exists()
    src = (IOS_DEMO / "MobileLLMDemo" / "App" / "ArtifactLibrary.swift").read_text()
    assert 'm.genaiDir.map({ dir.appendingPathComponent($0) })' in src and '"genai_config.json"' in src


def test_prints_the_report_command_without_the_report_module(fake_phone, artifacts, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "mobilellm.benchmarks.report", None)  # import fails
    out = tmp_path / "out"
    assert run("--artifacts", artifacts, "--out", out) == 0
    [results] = out.glob("results-*.json")
    assert f"mobilellm report {results} --out {out / 'report'}" in capsys.readouterr().out


def test_picks_the_phone_by_udid(fake_phone, artifacts, tmp_path, capsys):
    fake_phone.save(devices=[phone(1), phone(2, "iPhone 15 Pro", "iPhone16,1")],
                    apps={phone(1)["identifier"]: [ios.BUNDLE_ID], phone(2)["identifier"]: [ios.BUNDLE_ID]})
    err = error_of(capsys, "--artifacts", artifacts)
    assert "2 devices connected; choose one with --udid" in err
    assert "Test phone 1 (iPhone 13" in err and "Test phone 2 (iPhone 15 Pro" in err
    assert "no device with UDID nope" in error_of(capsys, "--artifacts", artifacts, "--udid", "nope")
    udid = phone(2)["hardwareProperties"]["udid"]
    assert run("--artifacts", artifacts, "--udid", udid, "--out", tmp_path / "out") == 0
    [results] = (tmp_path / "out").glob("results-iphone-15-pro-*.json")
    assert results_mod.load(results)[0]["device"] == "iPhone 15 Pro"
    assert (fake_phone.documents(2) / "artifacts").is_dir() and not fake_phone.documents(1).exists()


def test_reads_both_devicectl_layouts():
    old = ios.Device.from_json(phone(1))
    new = ios.Device.from_json({"identifier": old.identifier, "properties": {
        "hardware": {"udid": old.udid, "marketingName": "iPhone 13", "platform": "iOS", "deviceType": "iPhone"},
        "software": {"osVersionNumber": {"components": [18, 2, 1], "stringValue": "18.2.1"}},
        "state": {"name": "Test phone 1"}, "connection": {"state": "connected", "pairingState": "paired"}}})
    assert new == old
    assert str(old) == f"Test phone 1 (iPhone 13, iOS 18.2.1, udid {old.udid}, connected)"


@pytest.mark.parametrize("setup,message", [
    (dict(devices=[]), "no iPhone found by `xcrun devicectl list devices`"),
    (dict(apps={}), f"the ios_demo app ({ios.BUNDLE_ID}) is not installed on Test phone 1"),
    (dict(no_devicectl=True), "this Xcode has no devicectl: `mobilellm device ios` needs Xcode 15"),
    (dict(locked=True), "is the phone unlocked?) failed (xcrun devicectl exit 1): ERROR: The device is locked"),
    (dict(app="fail"), "the app's benchmark failed: no artifact was measured (tiny-random_fp16_coreml.mlpackage: "
                       "could not load the program"),
])
def test_phone_side_failures(fake_phone, artifacts, capsys, setup, message):
    fake_phone.save(**setup)
    assert message in error_of(capsys, "--artifacts", artifacts)


def test_no_xcode(fake_phone, artifacts, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(fake_phone.root / "empty"))
    assert "xcrun not found: install Xcode 15 or newer" in error_of(capsys, "--artifacts", artifacts)


def test_app_that_never_answers(fake_phone, artifacts, capsys):
    fake_phone.save(app="silent")
    err = error_of(capsys, "--artifacts", artifacts, "--timeout", 0)
    assert "no results from the app after 0 s" in err and "keep the phone unlocked" in err


def test_results_outside_the_schema_are_kept_aside(fake_phone, artifacts, tmp_path, capsys):
    fake_phone.save(app="invalid")
    err = error_of(capsys, "--artifacts", artifacts, "--out", tmp_path / "out")
    assert "do not follow the results schema" in err and "has unit 'seconds'" in err
    assert list((tmp_path / "out").glob("results-*.json.invalid")) and not list((tmp_path / "out").glob("*.json"))


def test_an_artifact_the_app_could_not_measure_is_a_warning(fake_phone, artifacts, tmp_path, capsys):
    fake_phone.save(app="partial")
    assert run("--artifacts", artifacts, "--out", tmp_path / "out") == 0
    err = capsys.readouterr().err
    assert "warning: tiny-random_w8a8_executorch.pte was not measured: Core ML could not compile" in err


def test_bad_local_input(fake_phone, artifacts, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert "no artifacts the iOS app runs (.pte, .mlpackage, .mlmodelc, .genai) in" in error_of(
        capsys, "--artifacts", tmp_path / "empty")
    assert "is not a directory" in error_of(capsys, "--artifacts", tmp_path / "nope")
    assert "--iters must be >= 1, got 0" in error_of(capsys, "--artifacts", artifacts, "--iters", "0")
    assert "--merge: results file" in error_of(capsys, "--artifacts", artifacts, "--merge", tmp_path / "x.json")
    assert fake_phone.calls() == []  # nothing reached the phone


# ---------------------------------------------------------------------------------------------------
# The app's platform-free Swift, where a toolchain exists


@pytest.fixture(scope="module")
def linuxcheck(tmp_path_factory) -> Path:
    swiftc = shutil.which("swiftc")
    if not swiftc:
        pytest.skip("no Swift toolchain (swiftc) on PATH: the app's platform-free Swift is not compiled here; "
                    "the rest of the app needs Xcode")
    exe = tmp_path_factory.mktemp("swift") / "linuxcheck"
    core = sorted((IOS_DEMO / "MobileLLMDemo" / "Core").glob("*.swift"))
    p = subprocess.run([swiftc, *map(str, core), str(IOS_DEMO / "LinuxCheck" / "main.swift"), "-o", str(exe)],
                       capture_output=True, text=True, timeout=600, cwd=tmp_path_factory.getbasetemp())
    assert p.returncode == 0, p.stderr[-4000:]
    return exe


def swift(exe: Path, *args) -> object:
    p = subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_swift_writes_the_golden_results(linuxcheck):
    doc = swift(linuxcheck, "golden", *(GOLDEN / n for n in GOLDEN_ARTIFACTS))
    assert doc == json.loads(GOLDEN_RESULTS.read_text())
    results.validate(doc)


def test_swift_feeds_prompts_as_the_host(linuxcheck):
    lengths = [1, 2, 4, 8, 16, 32, 64]
    for n in (1, 37, 64, 100, 128, 255):
        assert swift(linuxcheck, "chunks", n, *lengths) == host_chunks(n, lengths), n
    assert swift(linuxcheck, "chunks", 5) == [5]


def test_swift_statistics_are_numpys(linuxcheck):
    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 10, 11, 50):
        xs = rng.uniform(1, 100, n).round(3).tolist()
        got = swift(linuxcheck, "stats", *xs)
        want = {"median": np.median(xs), "p10": np.percentile(xs, 10), "p90": np.percentile(xs, 90), "min": min(xs)}
        assert got == pytest.approx(want, rel=1e-12), n


def test_swift_reads_the_manifests_python_writes(linuxcheck, artifacts, tmp_path):
    from mobilellm.manifest import read_manifest, write_manifest
    pte = artifacts / "tiny-random_w8a8_executorch.pte"
    m = read_manifest(pte)
    got = swift(linuxcheck, "manifest", pte)
    mm = m["model"]
    assert got == {"artifact": pte.name, "backend": "executorch", "scheme": "w8a8", "model": mm["name"],
                   "variant": mm["variant"], "stored_blocks": mm["stored_blocks"],
                   "executed_blocks": mm["executed_blocks"], "repeat": mm["repeat"], "param_count": mm["param_count"],
                   "vocab_size": 512, "max_seq_len": 64, "tokenizer": m["tokenizer"], "sha256": m["sha256"],
                   "file_bytes": m["sizes"]["file_bytes"],
                   "io": {"tokens": "tokens", "position": "input_pos", "logits": "logits", "states": [],
                          "last_logits_only": False}}
    # the io section's names, however it lists them
    for io, want in [
        ({"inputs": ["input_ids", "cache_position"], "outputs": ["output_logits"]}, ("input_ids", "cache_position", "output_logits")),
        ({"inputs": [{"name": "b", "role": "position"}, {"name": "a", "role": "tokens"}],
          "outputs": [{"name": "y", "role": "logits"}], "states": ["k", "v"]}, ("a", "b", "y")),
        ({"inputs": {"x": {"dtype": "int32"}, "input_pos": {}}, "outputs": {"out": {}}}, ("x", "input_pos", "out")),
    ]:
        art = tmp_path / "io.mlpackage"
        write_manifest(art, {**{k: v for k, v in m.items() if k not in ("schema", "version", "created")}, "io": io})
        got = swift(linuxcheck, "manifest", art)["io"]
        assert (got["tokens"], got["position"], got["logits"]) == want and not got["last_logits_only"]
    # an ONNX manifest's io: names -> dims; logits [1, 1, vocab] is the last position's row only
    for dims, last in (([1, 1, 512], True), ([1, "sequence_length", 512], False)):
        art = tmp_path / "io.onnx"
        io = {"inputs": {"input_ids": [1, "sequence_length"], "attention_mask": [1, "total_sequence_length"]},
              "outputs": {"logits": dims, "present.0.key": [1, 2, "past_sequence_length", 16]}}
        write_manifest(art, {**{k: v for k, v in m.items() if k not in ("schema", "version", "created")}, "io": io})
        got = swift(linuxcheck, "manifest", art)["io"]
        assert (got["tokens"], got["logits"], got["last_logits_only"]) == ("input_ids", "logits", last)
    # what it refuses
    (tmp_path / "bad.pte.manifest.json").write_text(json.dumps({"schema": "mobilellm.manifest", "version": 9}))
    p = subprocess.run([str(linuxcheck), "manifest", tmp_path / "bad.pte"], capture_output=True, text=True)
    assert p.returncode == 1 and "has version 9; this app reads version 1" in p.stderr


def test_swift_reads_the_request_the_host_writes(linuxcheck, tmp_path):
    settings = ios.BenchSettings(iters=7, prompt_len=16, gen_iters=2)
    req = tmp_path / "request.json"
    req.write_text(json.dumps(ios.request_doc("20260504-1-ab", ["a.pte", "b.mlpackage"], settings, "iPhone 13")))
    got = swift(linuxcheck, "request", req)
    assert got == {"run_id": "20260504-1-ab", "artifacts": ["a.pte", "b.mlpackage"], "device_name": "iPhone 13",
                   "settings": {k: v for k, v in ios.request_doc("x", [], settings, "")["settings"].items()}}
    assert swift(linuxcheck, "runid", "app", "--mobilellm-run", "20260504-1-ab") == "20260504-1-ab"
    status = swift(linuxcheck, "status", "r1", "done", "1 artifact(s) measured")
    assert status["state"] == "done" and status["errors"] == {"b.mlpackage": "could not compile"}


def test_swift_plan_device_and_size(linuxcheck, artifacts):
    # P and N, and the prompt, exactly as `mobilellm bench` (benchmarks/bench.py, measure.py)
    assert swift(linuxcheck, "plan", 512) == {"prompt_len": 128, "gen_tokens": 32}
    assert swift(linuxcheck, "plan", 64) == {"prompt_len": 32, "gen_tokens": 31}
    vocab = 512
    assert swift(linuxcheck, "prompt", 128, vocab) == [1] + [(7 * i + 3) % (vocab - 3) + 3 for i in range(127)]
    assert swift(linuxcheck, "device", "iPhone14,5") == "iPhone 13 (A15)"
    assert swift(linuxcheck, "device", "iPhone99,1", "iPhone 99") == "iPhone 99 (iPhone99,1)"
    from mobilellm.io import size_bytes
    pkg = artifacts / "tiny-random_fp16_coreml.mlpackage"
    assert swift(linuxcheck, "size", pkg) == size_bytes(pkg)


def test_swift_tokenizer_is_sentencepieces(linuxcheck, sp_tokenizer):
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=str(sp_tokenizer))
    texts = ["def f(x):\n    return x + 1", "Hello, world!", "  two  spaces  ", "über café 東京 🚀", "", "12345 9.75",
             '\tclass JSONDecoder(object):\n    """Simple JSON <decoder>"""\n']
    assert swift(linuxcheck, "encode", sp_tokenizer, *texts) == [sp.encode(t) for t in texts]
    ids = [sp.encode(t) for t in texts] + [[1, 5, 300, 2, 100], [0, 7, 8, 9]]
    assert swift(linuxcheck, "decode", sp_tokenizer, json.dumps(ids)) == [sp.decode(i) for i in ids]
