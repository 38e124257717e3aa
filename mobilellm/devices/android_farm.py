"""`mobilellm device android --spec devicefarm|firebase OUT`: a device-farm run of the instrumentation
benchmark (android_demo's BenchmarkInstrumentedTest, driven by `am instrument`), one artifact per
app process as `mobilellm device android` does over adb."""
from __future__ import annotations

import shlex
from pathlib import Path

from mobilellm.devices import android, farm

APK = Path("android_demo/app/build/outputs/apk/debug/app-debug.apk")
TEST_APK = Path("android_demo/app/build/outputs/apk/androidTest/debug/app-debug-androidTest.apk")
# Where BenchmarkInstrumentedTest copies each results file: shared storage a farm can pull without
# run-as (Firebase's directories-to-pull must be under /sdcard or /data/local/tmp).
EXTERNAL_RESULTS = f"/sdcard/Android/data/{android.PACKAGE}/files/results"
FIREBASE_DEVICE = "model=shiba,version=34"  # Pixel 8; `gcloud firebase test android models list`


def add_arguments(p):
    g = p.add_argument_group("device farms (nothing is run: the files a farm run needs are written)")
    g.add_argument("--spec", nargs=2, metavar=("KIND", "OUT"),
                   help=f"write a farm run into folder OUT instead of using adb; KIND: {', '.join(farm.KINDS)}")
    g.add_argument("--apk", type=Path, default=APK, help=f"the app APK for --spec firebase (default {APK})")
    g.add_argument("--test-apk", type=Path, default=TEST_APK,
                   help=f"the instrumentation APK for --spec firebase (default {TEST_APK})")
    g.add_argument("--farm-device", default=FIREBASE_DEVICE, metavar="DIMENSIONS",
                   help=f"Firebase --device dimensions (default {FIREBASE_DEVICE})")


def subdirs(files) -> list[str]:
    """The folders among the pushed names (an ONNX artifact's `<name>.genai/`)."""
    return sorted({n.split("/", 1)[0] for _, n in files if "/" in n})


def out_names(items) -> list[str]:
    return [f"results-farm-{i}-{art.name}.json" for i, (art, _) in enumerate(items)]


def write(spec: tuple[str, Path], ns, items) -> int:
    kind, out = spec
    files = android.plan_push(None, items, ns.remote_dir)
    written = (devicefarm if kind == "devicefarm" else firebase)(out, ns, items, files)
    return farm.announce(written, kind, len(items), "android_demo/README.md")


def devicefarm(out: Path, ns, items, files) -> list[Path]:
    adb = 'adb -s "$DEVICEFARM_DEVICE_UDID"'
    remote, names = ns.remote_dir, out_names(items)
    pre = farm.fetch_commands("mobilellm-artifacts") + [
        f"{adb} shell mkdir -p {remote}",
        f'for f in mobilellm-artifacts/*; do {adb} push "$f" {remote}/ > /dev/null || exit 1; done; echo pushed',
        f"{adb} shell chmod 755 {remote}",
        f"{adb} shell 'chmod 644 {remote}/*'",
        # an onnxruntime-genai directory went over whole: the app must list it and read its files
        *[f"{adb} shell 'chmod 755 {remote}/{d} && chmod 644 {remote}/{d}/*'" for d in subdirs(files)],
        f"{adb} shell run-as {android.PACKAGE} rm -rf files/results-farm-*",
        f"{adb} shell rm -rf {EXTERNAL_RESULTS}",
    ]
    test = [f'{adb} shell dumpsys thermalservice > "$DEVICEFARM_LOG_DIR/thermal_before.txt" || true']
    for i, ((art, _), name) in enumerate(zip(items, names)):
        argv = android.instrument_argv(ns, art.name, name, "$DEVICEFARM_TEST_PACKAGE_NAME/$DEVICEFARM_TEST_PACKAGE_RUNNER")
        cmd = " ".join(shlex.quote(a) if not a.startswith("$DEVICEFARM") else f'"{a}"' for a in argv)
        log = f'"$DEVICEFARM_LOG_DIR/instrument-{i}.log"'
        # the test fails (and Device Farm marks the run failed) unless the runner finished with
        # INSTRUMENTATION_CODE: -1 and no test reported a failure (-2) or an error (-1)
        test.append(f"echo 'benchmark {art.name} ({i + 1}/{len(items)})'\n"
                    f"{adb} shell {cmd} 2>&1 | tee {log}\n"
                    f"grep -q 'INSTRUMENTATION_CODE: -1' {log} && "
                    f"! grep -Eq 'INSTRUMENTATION_STATUS_CODE: -(1|2)|Process crashed' {log}")
    test.append(f'{adb} shell dumpsys thermalservice > "$DEVICEFARM_LOG_DIR/thermal_after.txt" || true')
    post = [f'{adb} exec-out run-as {android.PACKAGE} cat files/{n} > "$DEVICEFARM_LOG_DIR/{n}" || true'
            for n in names]
    post += [f'{adb} exec-out run-as {android.PACKAGE} cat files/{n}.status > "$DEVICEFARM_LOG_DIR/{n}.status" || true'
             for n in names]
    post.append(f'{adb} logcat -d -s MobileLLM > "$DEVICEFARM_LOG_DIR/logcat-mobilellm.txt" || true')
    doc = {"version": 0.1, "android_test_host": "amazon_linux_2",
           "phases": {"install": {"commands": []}, "pre_test": {"commands": pre}, "test": {"commands": test},
                      "post_test": {"commands": post}},
           "artifacts": ["$DEVICEFARM_LOG_DIR"]}
    cmd = f"mobilellm device android --spec devicefarm {out} --artifacts {ns.artifacts}"
    return [farm.write_yaml(out / "devicefarm-testspec.yml", doc, farm.header(cmd, "devicefarm")),
            farm.pack(files, out)]


def firebase(out: Path, ns, items, files) -> list[Path]:
    """One argument group per artifact: `gcloud firebase test android run FILE:mobilellm-<i>`."""
    device = dict(kv.split("=", 1) for kv in ns.farm_device.split(",") if "=" in kv)
    rid = farm.run_id()
    groups = {}
    for i, ((art, man), name) in enumerate(zip(items, out_names(items))):
        genai = (man.get("genai_dir") or {}).get("path")
        mine = {art.name, art.name + ".manifest.json"} | {n for _, n in files if n.startswith(art.name + ".tokenizer")
                                                          or (genai and n.startswith(genai + "/"))}
        env = {k: str(v) for k, v in android.bench_args(ns, art.name, name)}
        env["timeout_s"] = str(int(ns.timeout))
        groups[f"mobilellm-{i}"] = {
            "type": "instrumentation",
            "app": str(ns.apk.resolve()), "test": str(ns.test_apk.resolve()),
            "test-runner-class": android.RUNNER, "test-targets": [f"class {android.TEST_CLASS}"],
            "device": [device],
            "other-files": {f"{ns.remote_dir}/{n}": str(local.resolve()) for local, n in files if n in mine},
            "environment-variables": env,
            "directories-to-pull": [EXTERNAL_RESULTS],
            "timeout": f"{int(min(ns.timeout, 3600))}s",
            "results-dir": f"mobilellm-{rid}-{i}",
        }
    cmd = f"mobilellm device android --spec firebase {out} --artifacts {ns.artifacts}"
    path = farm.write_yaml(out / "firebase-args.yml", groups,
                           farm.header(cmd, "firebase") + "\nRun each group: gcloud firebase test android run "
                           f"{out / 'firebase-args.yml'}:mobilellm-<i>")
    for p in (ns.apk, ns.test_apk):
        if not p.is_file():
            android.log(f"{p} does not exist yet: build it before the run (./gradlew assembleDebug "
                        f"assembleDebugAndroidTest in android_demo)")
    return [path]
