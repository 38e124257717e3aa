"""`mobilellm device ios --spec devicefarm|firebase OUT`: a device-farm run of the app's XCTest benchmark
(ios_demo/MobileLLMDemoTests/BenchmarkTests.swift, testBenchmarkEveryArtifact) from a
`xcodebuild build-for-testing` build, as ExecuTorch's apple benchmark runs on Device Farm."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from mobilellm.devices import farm, ios

PRODUCTS = Path("build/ios/Build/Products")  # xcodebuild build-for-testing -derivedDataPath build/ios
XCTEST_ZIP = PRODUCTS / "MobileLLMDemo-xctest.zip"
TEST = "MobileLLMDemoTests/BenchmarkTests/testBenchmarkEveryArtifact"
SETTINGS_FILE = "xctest-settings.json"  # read by BenchmarkTests from the app's Documents
FIREBASE_DEVICE = "model=iphone15pro,version=18.0"  # `gcloud firebase test ios models list`


def add_arguments(p):
    g = p.add_argument_group("device farms (nothing is run: the files a farm run needs are written)")
    g.add_argument("--spec", nargs=2, metavar=("KIND", "OUT"),
                   help=f"write a farm run into folder OUT instead of using devicectl; KIND: {', '.join(farm.KINDS)}")
    g.add_argument("--xctest-zip", type=Path, default=XCTEST_ZIP,
                   help=f"Products zip (Release-iphoneos + .xctestrun) for --spec firebase (default {XCTEST_ZIP})")
    g.add_argument("--farm-device", default=FIREBASE_DEVICE, metavar="DIMENSIONS",
                   help=f"Firebase --device dimensions (default {FIREBASE_DEVICE})")


def files(artifacts: list[ios.Artifact]) -> list[tuple[Path, str]]:
    from mobilellm.manifest import manifest_path
    out = []
    for a in artifacts:
        out.append((a.path, a.path.name))
        out.append((manifest_path(a.path), manifest_path(a.path).name))  # a .genai directory's: its .onnx's
        if a.data:
            out.append((a.data, a.data.name))
        if a.tokenizer:
            out.append((a.tokenizer, f"{a.path.name}.tokenizer{a.tokenizer.suffix}"))
    return out


def write(spec: tuple[str, Path], ns, settings: ios.BenchSettings) -> int:
    kind, out = spec
    arts = ios.find_artifacts(ns.artifacts)
    written = (devicefarm if kind == "devicefarm" else firebase)(out, ns, arts, settings)
    return farm.announce(written, kind, len(arts), "ios_demo/README.md")


def devicefarm(out: Path, ns, arts, settings) -> list[Path]:
    app = "/tmp/Payload/MobileLLMDemo.app"
    env = " ".join(f"TEST_RUNNER_MOBILELLM_{k.upper()}={v}" for k, v in asdict(settings).items())
    pre = farm.fetch_commands("mobilellm-artifacts") + [
        # the artifacts go into the app's bundled Artifacts folder (ArtifactLibrary scans it), and the
        # app into the test package the .xctestrun points at, as ExecuTorch's apple spec does
        'rm -rf /tmp/Payload && unzip -q "$DEVICEFARM_APP_PATH" -d /tmp',
        f"mkdir -p {app}/Artifacts && cp -R mobilellm-artifacts/. {app}/Artifacts/ && ls -la {app}/Artifacts",
        'mkdir -p "$DEVICEFARM_TEST_PACKAGE_PATH/Release-iphoneos"',
        f'rm -rf "$DEVICEFARM_TEST_PACKAGE_PATH/Release-iphoneos/MobileLLMDemo.app" && '
        f'cp -R {app} "$DEVICEFARM_TEST_PACKAGE_PATH/Release-iphoneos/"',
    ]
    test = [f'{env} xcodebuild test-without-building -destination id="$DEVICEFARM_DEVICE_UDID" '
            f'-xctestrun "$DEVICEFARM_TEST_PACKAGE_PATH"/*.xctestrun -only-testing:{TEST} '
            f'-resultBundlePath "$DEVICEFARM_LOG_DIR/mobilellm.xcresult"']
    post = ['xcrun xcresulttool export attachments --path "$DEVICEFARM_LOG_DIR/mobilellm.xcresult" '
            '--output-path "$DEVICEFARM_LOG_DIR/attachments" || true']
    doc = {"version": 0.1,
           "phases": {"install": {"commands": []}, "pre_test": {"commands": pre}, "test": {"commands": test},
                      "post_test": {"commands": post}},
           "artifacts": ["$DEVICEFARM_LOG_DIR"]}
    cmd = f"mobilellm device ios --spec devicefarm {out} --artifacts {ns.artifacts}"
    return [farm.write_yaml(out / "devicefarm-testspec.yml", doc, farm.header(cmd, "devicefarm")),
            farm.pack(files(arts), out)]


def firebase(out: Path, ns, arts, settings) -> list[Path]:
    """`gcloud beta firebase test ios run FILE:mobilellm` (other-files and directories-to-pull are in
    the beta command); files go into the app's Documents, where BenchmarkTests looks."""
    device = dict(kv.split("=", 1) for kv in ns.farm_device.split(",") if "=" in kv)
    settings_path = out / SETTINGS_FILE
    settings_path.write_text(json.dumps(asdict(settings), indent=1) + "\n")
    bid = ns.bundle_id
    other = {f"{bid}:/Documents/{SETTINGS_FILE}": str(settings_path.resolve())}
    for local, name in files(arts):
        for f in (sorted(p for p in local.rglob("*") if p.is_file()) if local.is_dir() else [local]):
            rel = name + ("/" + f.relative_to(local).as_posix() if local.is_dir() else "")
            other[f"{bid}:/Documents/{ios.RUN_ARTIFACTS}/{rel}"] = str(f.resolve())
    group = {"type": "xctest", "test": str(ns.xctest_zip.resolve()), "device": [device],
             "other-files": other, "directories-to-pull": [f"{bid}:/Documents/results"],
             "timeout": f"{int(min(ns.timeout, 3600))}s", "results-dir": f"mobilellm-ios-{farm.run_id()}"}
    cmd = f"mobilellm device ios --spec firebase {out} --artifacts {ns.artifacts}"
    path = farm.write_yaml(out / "firebase-args.yml", {"mobilellm": group},
                           farm.header(cmd, "firebase") + "\nRun: gcloud beta firebase test ios run "
                           f"{out / 'firebase-args.yml'}:mobilellm")
    if not ns.xctest_zip.is_file():
        ios.say(f"{ns.xctest_zip} does not exist yet: build it on a Mac before the run (ios_demo/README.md)")
    return [path, settings_path]
