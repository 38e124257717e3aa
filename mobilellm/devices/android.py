"""`mobilellm device android`: push artifacts to a phone, run the app's benchmark, pull results.

Needs `adb` (Android platform-tools) on PATH, one device, and the android_demo app installed as
its debug build (the results are read from the app's private files with `run-as`). Each artifact
is measured in a fresh app process, so memory numbers do not mix artifacts: `am start -S` of
BenchmarkActivity (--runner activity), or `am instrument -w` of the instrumentation test that runs the
same activity (--runner instrument; needs the test APK, `./gradlew installDebugAndroidTest`).
`--spec devicefarm|firebase OUT` writes what a device-farm run needs instead (mobilellm/devices/farm.py)."""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from mobilellm.errors import UserError

PACKAGE = "org.mobilellm.demo"
ACTIVITY = f"{PACKAGE}/.BenchmarkActivity"
REMOTE_DIR = "/data/local/tmp/mobilellm"
SUFFIXES = (".pte", ".onnx", ".ort")  # what the app's runtimes open (ExecuTorch, ONNX Runtime; a .onnx's
# onnxruntime-genai directory goes with it and runs through onnxruntime-genai when there)
SPACE_MARGIN = 64 << 20  # bytes left free on the device after the push
TEST_PACKAGE = f"{PACKAGE}.test"  # the androidTest APK (applicationId + ".test")
RUNNER = "androidx.test.runner.AndroidJUnitRunner"
INSTRUMENTATION = f"{TEST_PACKAGE}/{RUNNER}"
TEST_CLASS = f"{PACKAGE}.BenchmarkInstrumentedTest"
TEST_HINT = ("build and install the test APK: `cd android_demo && ./gradlew installDebugAndroidTest` "
             "(or `adb install -r android_demo/app/build/outputs/apk/androidTest/debug/app-debug-androidTest.apk`)")
INSTALL_HINT = ("build and install it: `cd android_demo && ./gradlew installDebug` "
                "(or `adb install android_demo/app/build/outputs/apk/debug/app-debug.apk`)")


def add_arguments(p):
    p.add_argument("--artifacts", type=Path, required=True, metavar="DIR",
                   help="directory of artifacts with their manifests (.pte for ExecuTorch, .onnx/.ort for ONNX Runtime)")
    p.add_argument("--serial", default=os.environ.get("ANDROID_SERIAL"),
                   help="device serial when several are connected (default: $ANDROID_SERIAL)")
    p.add_argument("--iters", type=int, default=50, help="measured runs of each timing (default 50)")
    p.add_argument("--warmup", type=int, default=5, help="discarded runs before them (default 5)")
    p.add_argument("--threads", type=int, default=4, help="CPU threads of the runtimes (default 4)")
    p.add_argument("--prompt-len", type=int, default=128,
                   help="prefill length P; decode is timed at position P (default 128, at most max_seq_len/2)")
    p.add_argument("--gen-tokens", type=int, default=64, help="tokens generated for decode_tokens_per_s (default 64)")
    p.add_argument("--timeout", type=float, default=1800,
                   help="seconds to wait for the benchmark of one artifact (default 1800)")
    p.add_argument("--out", type=Path, default=Path("out/device-android"),
                   help="where the pulled results and the report go (default out/device-android)")
    p.add_argument("--remote-dir", default=REMOTE_DIR, help=f"folder on the device (default {REMOTE_DIR})")
    p.add_argument("--merge", type=Path, nargs="+", default=[], metavar="RESULTS",
                   help="other results files (e.g. from `mobilellm bench`) to put in the same report")
    p.add_argument("--no-report", action="store_true", help="only save the results; do not build the report")
    p.add_argument("--runner", choices=("activity", "instrument"), default="activity",
                   help="how the benchmark starts: `am start` of BenchmarkActivity (default) or `am instrument` of "
                        "the instrumentation test BenchmarkInstrumentedTest (the device-farm runner)")
    from mobilellm.devices import android_farm
    android_farm.add_arguments(p)


def log(msg: str) -> None:
    print(f"  {msg}", file=sys.stderr, flush=True)


class Adb:
    """One device through the adb client; every failure becomes a UserError that names it."""

    def __init__(self, exe: str, serial: str | None = None):
        self.exe, self.serial = exe, serial

    def run(self, *args: str, timeout: float = 120, binary: bool = False) -> subprocess.CompletedProcess:
        cmd = [self.exe, *(["-s", self.serial] if self.serial else []), *args]
        try:
            p = subprocess.run(cmd, capture_output=True, timeout=timeout, text=not binary)
        except subprocess.TimeoutExpired:
            raise UserError(f"`{' '.join(cmd)}` did not answer within {timeout:.0f} s (device disconnected or "
                            f"locked up? check `adb devices`)") from None
        err = p.stderr.decode(errors="replace") if binary else p.stderr
        if self.serial and re.search(rf"device '?{re.escape(self.serial)}'? not found|no devices/emulators", err):
            raise UserError(f"lost device {self.serial} during `{' '.join(args[:2])}`: {err.strip()}")
        return p

    def shell(self, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """Runs one command on the device; arguments are quoted for the device's shell."""
        return self.run("shell", " ".join(shlex.quote(a) for a in argv), timeout=timeout)


def find_adb() -> str:
    exe = shutil.which("adb")
    if not exe:
        raise UserError("adb not found on PATH: install Android SDK platform-tools (`sdkmanager platform-tools`, or "
                        "https://developer.android.com/tools/releases/platform-tools) and put its folder on PATH")
    return exe


def pick_device(exe: str, serial: str | None) -> str:
    p = Adb(exe).run("devices", timeout=60)
    if p.returncode != 0:
        raise UserError(f"`adb devices` failed: {(p.stderr or p.stdout).strip()}")
    states = {}
    for line in p.stdout.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 2:
            states[parts[0]] = parts[1]
    if serial is None:
        if not states:
            raise UserError("no Android device found (`adb devices` lists none): connect a phone with USB debugging "
                            "enabled (Settings > Developer options), or start an emulator")
        if len(states) > 1:
            raise UserError(f"several devices connected ({', '.join(sorted(states))}); choose one with --serial")
        serial = next(iter(states))
    elif serial not in states:
        raise UserError(f"device {serial} is not connected; connected: {', '.join(sorted(states)) or 'none'}")
    state = states[serial]
    if state == "unauthorized":
        raise UserError(f"device {serial} is unauthorized: unlock it and accept the 'Allow USB debugging' prompt")
    if state != "device":
        raise UserError(f"device {serial} is {state}: reconnect it (then `adb devices` should say 'device')")
    return serial


def check_app(adb: Adb, runner: str = "activity") -> None:
    p = adb.shell("pm", "path", PACKAGE)
    if "package:" not in p.stdout:
        raise UserError(f"the android_demo app ({PACKAGE}) is not installed on {adb.serial}: {INSTALL_HINT}")
    p = adb.shell("run-as", PACKAGE, "pwd")
    if p.returncode != 0 or "run-as:" in p.stdout + p.stderr:
        raise UserError(f"cannot read the app's files with run-as ({(p.stdout + p.stderr).strip()}): the installed "
                        f"{PACKAGE} is not the debug build; {INSTALL_HINT}")
    if runner == "instrument" and INSTRUMENTATION not in adb.shell("pm", "list", "instrumentation").stdout:
        raise UserError(f"the instrumentation {INSTRUMENTATION} is not installed on {adb.serial}: {TEST_HINT}")


PAIRS: list[tuple[Path, dict]] = []  # .pte + .ptd pairs collect() found: pushed for the chat, not benchmarked


def collect(folder: Path) -> list[tuple[Path, dict]]:
    """(artifact, manifest) for every artifact in `folder` that the app's benchmark can run; pairs
    (--external-weights) go to PAIRS."""
    from mobilellm.manifest import read_manifest
    PAIRS.clear()
    if not folder.is_dir():
        raise UserError(f"--artifacts {folder} is not a directory")
    found, skipped = [], []
    for m in sorted(folder.glob("*.manifest.json")):
        art = m.with_name(m.name[: -len(".manifest.json")])
        if art.name.endswith(".failed"):
            continue
        man = read_manifest(art)
        if not art.is_file():
            skipped.append(f"{art.name} (manifest without the artifact)")
        elif man.get("data_file"):
            ptd = art.with_name(man["data_file"])
            if ptd.is_file():
                PAIRS.append((art, man))
            skipped.append(f"{art.name} (weights in {man['data_file']}: the benchmark times ExecuTorch's Android "
                           f"Module.load, which takes no data file; "
                           + ("the pair is pushed for the chat screen, whose LlmModule takes it)" if ptd.is_file()
                              else "and the .ptd is not beside it)"))
        elif not art.name.endswith(SUFFIXES) or _apple_only(man.get("backend")):
            skipped.append(f"{art.name} (backend {man.get('backend')}: no Android runtime)")
        else:
            found.append((art, man))
    for s in skipped:
        log(f"skipping {s}")
    if not found:
        raise UserError(f"no artifact in {folder} that the app runs: it needs .pte (ExecuTorch/XNNPACK) or "
                        f".onnx/.ort (ONNX Runtime) files with their .manifest.json; export some with "
                        f"`mobilellm export`")
    return found


def free_bytes(adb: Adb, path: str) -> int | None:
    """Available bytes on the filesystem holding `path` (`df -k`), or None if unreadable."""
    out = adb.shell("df", "-k", path).stdout.splitlines()
    if len(out) < 2:
        return None
    head = out[0].split()
    if "Available" not in head:
        return None
    vals = out[-1].split()
    try:
        # "Mounted on" is two header words; a long filesystem name can wrap onto its own line
        return int(vals[head.index("Available") + len(vals) - (len(head) - 1)]) * 1024
    except (ValueError, IndexError):
        return None


def remote_sha256(adb: Adb, path: str) -> str | None:
    p = adb.shell("sha256sum", path)
    return p.stdout.split()[0] if p.returncode == 0 and p.stdout.split() else None


def genai_dir(art: Path, man: dict) -> Path | None:
    """The onnxruntime-genai directory the export wrote beside an ONNX artifact (manifest "genai_dir"),
    when it is there; the app then runs it through onnxruntime-genai's generator."""
    d = (man.get("genai_dir") or {}).get("path")
    if not d:
        return None
    if not (art.parent / d / "genai_config.json").is_file():
        log(f"{art.name}: its onnxruntime-genai directory {d} is not beside it; the app runs the file in a plain "
            f"ONNX Runtime session")
        return None
    return art.parent / d


def genai_files(d: Path) -> list[tuple[Path, str]]:
    """Each file of an onnxruntime-genai directory as (local file, remote name under the directory's name):
    pushed one by one, so model.onnx (a hard link to the .onnx on the host) arrives as a file of its own."""
    return [(f, f"{d.name}/{f.relative_to(d).as_posix()}") for f in sorted(d.rglob("*")) if f.is_file()]


def plan_push(adb: Adb | None, items: list[tuple[Path, dict]], remote: str) -> list[tuple[Path, str]]:
    """(local file, remote name) still to push: artifacts whose sha256 differs on the device, their
    manifests, each artifact's tokenizer as `<artifact>.tokenizer<suffix>` for the chat screen, and an
    ONNX artifact's onnxruntime-genai directory file by file (its model.onnx, the artifact's bytes, only
    when the device's differs). Without a device (adb None: a farm's artifact set) every file."""
    def on_device(art: Path, man: dict, name: str | None = None) -> bool:
        return adb is not None and remote_sha256(adb, f"{remote}/{name or art.name}") == man.get("sha256")

    files = []
    for art, man in PAIRS:  # both files, for the chat screen (LlmModule(..., dataPath, ...))
        if not on_device(art, man):
            files.append((art, art.name))
        files.append((art.with_name(man["data_file"]), man["data_file"]))
        files.append((art.with_name(art.name + ".manifest.json"), art.name + ".manifest.json"))
    for art, man in items:
        if not on_device(art, man):
            files.append((art, art.name))
        else:
            log(f"{art.name}: already on the device (same sha256)")
        files.append((art.with_name(art.name + ".manifest.json"), art.name + ".manifest.json"))
        tok = man.get("tokenizer")
        if tok and Path(tok).is_file():
            files.append((Path(tok), f"{art.name}.tokenizer{Path(tok).suffix}"))
        elif art.suffix in (".onnx", ".ort"):
            log(f"{art.name}: no tokenizer file on this machine ({tok}); the chat screen will ask for one")
        d = genai_dir(art, man) if art.suffix == ".onnx" else None
        for local, name in genai_files(d) if d else []:
            if local.name == "model.onnx" and on_device(art, man, name):
                log(f"{name}: already on the device (same sha256)")
            else:
                files.append((local, name))
    return files


def push(adb: Adb, files: list[tuple[Path, str]], remote: str) -> None:
    need = sum(f.stat().st_size for f, _ in files)
    free = free_bytes(adb, remote.rsplit("/", 1)[0] or "/")
    if free is None:
        log(f"cannot read the free space of {remote} on {adb.serial} (`df -k`); pushing anyway")
    elif free < need + SPACE_MARGIN:
        raise UserError(f"not enough space on {adb.serial}: the push needs {need / 1e6:.0f} MB (+{SPACE_MARGIN >> 20} "
                        f"MB margin) in {remote}, {free / 1e6:.0f} MB free; free space on the phone or pass fewer "
                        f"artifacts")
    subdirs = sorted({f"{remote}/{n.rsplit('/', 1)[0]}" for _, n in files if "/" in n})  # <name>.genai/
    p = adb.shell("mkdir", "-p", remote, *subdirs)
    if p.returncode != 0:
        raise UserError(f"cannot create {remote} on {adb.serial}: {(p.stdout + p.stderr).strip()}")
    for local, name in files:
        log(f"push {name} ({local.stat().st_size / 1e6:.1f} MB)")
        p = adb.run("push", str(local), f"{remote}/{name}", timeout=3600)
        if p.returncode != 0:
            raise UserError(f"adb push {local} failed: {(p.stderr or p.stdout).strip()}")
    # the app runs as its own user: it must be able to list the folders and read the files
    adb.shell("chmod", "755", remote, *subdirs)
    if files:
        adb.shell("chmod", "644", *[f"{remote}/{n}" for _, n in files])


def read_app_file(adb: Adb, name: str) -> bytes | None:
    p = adb.run("exec-out", f"run-as {PACKAGE} cat files/{name}", binary=True, timeout=600)
    if p.returncode != 0 or p.stdout.startswith(b"cat:") or p.stdout.startswith(b"run-as:"):
        return None
    return p.stdout


def wait_for(adb: Adb, out_name: str, artifact: str, timeout: float) -> dict:
    """Polls the status file the app keeps beside its results until it says done or error."""
    start, delay, last, gone = time.monotonic(), 0.1, None, 0
    can_see_process = True
    while True:
        raw = read_app_file(adb, out_name + ".status")
        if raw:
            try:
                last = json.loads(raw)
            except json.JSONDecodeError:
                last = {"state": "unreadable", "text": raw[:200].decode(errors="replace")}
            if last.get("state") in ("done", "error"):
                return last
        if can_see_process:
            p = adb.shell("pidof", PACKAGE)
            if "not found" in p.stdout + p.stderr:  # no pidof on this device: rely on the timeout
                can_see_process = False
            gone = 0 if p.stdout.strip() or not can_see_process else gone + 1
        if gone >= 3:
            raise UserError(f"the app stopped before finishing {artifact} (crashed or killed; last status: "
                            f"{last or 'none'}); see `adb logcat -b crash` and `adb logcat -s MobileLLM`")
        if time.monotonic() - start > timeout:
            adb.shell("am", "force-stop", PACKAGE)
            raise UserError(f"the benchmark of {artifact} did not finish within {timeout:g} s (last status: "
                            f"{last or 'none'}); raise --timeout or lower --iters")
        time.sleep(delay)
        delay = min(delay * 2, 2.0)


def bench_args(ns, art: str, out_name: str) -> list[tuple[str, str | int]]:
    """The benchmark's settings, one spelling for `am start` extras, `am instrument -e` arguments and
    the farms' (BenchmarkRequest in the app reads them)."""
    return [("dir", ns.remote_dir), ("artifact", art), ("out", out_name), ("iters", ns.iters),
            ("warmup", ns.warmup), ("threads", ns.threads), ("prompt_len", ns.prompt_len),
            ("gen_tokens", ns.gen_tokens)]


def instrument_argv(ns, art: str, out_name: str, component: str = INSTRUMENTATION) -> list[str]:
    """`am instrument -w -r` of the benchmark test for one artifact (-r: raw status lines, as farms parse)."""
    argv = ["am", "instrument", "-w", "-r", "-e", "class", TEST_CLASS]
    for k, v in bench_args(ns, art, out_name) + [("timeout_s", int(ns.timeout))]:
        argv += ["-e", k, str(v)]
    return argv + [component]


def start_activity(adb: Adb, ns, art: Path, out_name: str) -> dict:
    args = ["am", "start", "-S", "-W", "-n", ACTIVITY]
    for k, v in bench_args(ns, art.name, out_name):
        args += ["--ei" if isinstance(v, int) else "--es", k, str(v)]
    p = adb.shell(*args)
    text = p.stdout + p.stderr
    if p.returncode != 0 or re.search(r"^Error", text, re.M):
        raise UserError(f"cannot start {ACTIVITY}: {text.strip()}; is the installed app current? {INSTALL_HINT}")
    return wait_for(adb, out_name, art.name, ns.timeout)


def instrument(adb: Adb, ns, art: Path, out_name: str) -> dict:
    """Runs BenchmarkInstrumentedTest for one artifact (a fresh process: the instrumentation restarts
    the app) and returns the status file the activity it drives wrote."""
    p = adb.shell(*instrument_argv(ns, art.name, out_name), timeout=ns.timeout + 120)
    text = p.stdout + p.stderr
    if "Unable to find instrumentation" in text or "INSTRUMENTATION_FAILED" in text:
        raise UserError(f"cannot run {INSTRUMENTATION}: {text.strip().splitlines()[-1]}; {TEST_HINT}")
    if "Process crashed" in text:
        raise UserError(f"the app crashed while measuring {art.name}; see `adb logcat -b crash` and "
                        f"`adb logcat -s MobileLLM`")
    stack = re.search(r"^INSTRUMENTATION_STATUS: stack=(.*)$", text, re.M)
    status = json_or_none(read_app_file(adb, out_name + ".status"))
    if status and status.get("state") == "error":
        raise UserError(status.get("message") or "the app reported an error without a message")
    if stack or "INSTRUMENTATION_CODE: -1" not in text:
        why = stack.group(1).strip() if stack else (text.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"the instrumentation test failed for {art.name}: {why}")
    if not status or status.get("state") != "done":
        raise UserError(f"the instrumentation test passed but left no finished status for {art.name} "
                        f"(files/{out_name}.status: {status})")
    return status


def json_or_none(raw: bytes | None) -> dict | None:
    try:
        return json.loads(raw) if raw else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


def bench_one(adb: Adb, ns, art: Path, out_name: str) -> list[dict]:
    from mobilellm.devices.results import validate
    run = instrument if getattr(ns, "runner", "activity") == "instrument" else start_activity
    status = run(adb, ns, art, out_name)
    if status["state"] == "error":
        raise UserError(status.get("message") or "the app reported an error without a message")
    raw = read_app_file(adb, out_name)
    if raw is None:
        raise UserError(f"the app said done but files/{out_name} cannot be read with run-as")
    ns.out.mkdir(parents=True, exist_ok=True)
    try:
        return validate(json.loads(raw), f"{art.name} results from the device")
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        bad = ns.out / (out_name + ".invalid")
        bad.write_bytes(raw)
        raise UserError(f"the results of {art.name} are not valid JSON ({e}); kept as {bad}") from None


def check_args(ns) -> None:
    for name in ("iters", "threads", "prompt_len", "gen_tokens"):
        if getattr(ns, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(ns, name)}")
    if ns.warmup < 0:
        raise UserError(f"--warmup must be >= 0, got {ns.warmup}")
    if ns.timeout <= 0:
        raise UserError(f"--timeout must be > 0, got {ns.timeout}")
    if not ns.remote_dir.startswith("/"):
        raise UserError(f"--remote-dir must be an absolute path on the device, got {ns.remote_dir!r}")
    for m in ns.merge:
        if not m.is_file():
            raise UserError(f"--merge {m}: no such results file")


def report(results: Path, ns) -> None:
    paths = [results, *ns.merge]
    cmd = f"mobilellm report {' '.join(shlex.quote(str(p)) for p in paths)} --out {shlex.quote(str(ns.out / 'report'))}"
    if ns.no_report:
        print(f"report: not built (--no-report); build it with `{cmd}`")
        return
    try:
        from mobilellm.benchmarks.report import build_report
    except ImportError:
        print(f"report: this mobilellm has no report builder yet; run `{cmd}` when it does")
        return
    try:
        print(f"report: {build_report(paths, ns.out / 'report')}")
    except UserError as e:  # e.g. a report that does not know the phone's memory metrics yet
        print(f"report: not built ({e}); the results are saved: build it with `{cmd}`")


def main(ns):
    from mobilellm.devices import android_farm, farm
    from mobilellm.devices.results import save
    spec = farm.check(ns.spec, ns.artifacts)
    check_args(ns)
    items = collect(ns.artifacts)
    if spec:
        return android_farm.write(spec, ns, items)
    exe = find_adb()
    serial = pick_device(exe, ns.serial)
    adb = Adb(exe, serial)
    check_app(adb, ns.runner)
    push(adb, plan_push(adb, items, ns.remote_dir), ns.remote_dir)
    run_id = time.strftime("%Y%m%d-%H%M%S")
    records, failed = [], []
    for i, (art, _) in enumerate(items):
        t0 = time.monotonic()
        log(f"benchmark {art.name} ({i + 1}/{len(items)}) on {serial} ...")
        try:
            recs = bench_one(adb, ns, art, f"results-{run_id}-{i}.json")
        except UserError as e:
            if len(items) == 1:
                raise
            failed.append(f"{art.name}: {e}")
            log(f"{art.name} failed: {e}")
            continue
        records += recs
        log(f"{art.name}: {len(recs)} records in {time.monotonic() - t0:.0f} s")
    if not records:
        raise UserError("no artifact was measured:\n  " + "\n  ".join(failed))
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", serial)
    out = save(ns.out / f"android-{safe}-{run_id}.json", records)
    print(f"results: {out} ({len(records)} records, device {records[0]['device']})")
    report(out, ns)
    if failed:
        raise UserError(f"{len(failed)} of {len(items)} artifacts failed (the others are saved in {out}):\n  "
                        + "\n  ".join(failed))
    return 0


def _apple_only(backend) -> bool:
    """The registry's word on a manifest's backend (Core ML ones run only on Apple devices)."""
    from mobilellm.export.base import all_backends
    return any(b.name == backend and b.apple_only for b in all_backends())
