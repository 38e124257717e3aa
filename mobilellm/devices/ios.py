"""`mobilellm device ios`: copy artifacts into the ios_demo app on an iPhone, run its benchmark, pull the results.

Needs macOS with Xcode 15 or newer: it drives the phone with `xcrun devicectl`, and the app
(ios_demo/, bundle id org.mobilellm.demo) must have been installed once from Xcode. The steps:
  1. `devicectl list devices` picks the phone (--udid when several are connected);
  2. `devicectl device info apps` checks that the app is installed;
  3. `devicectl device copy to` puts each artifact, its manifest and its tokenizer into the app's
     Documents/inbox/<run>/, then a request.json with the benchmark settings;
  4. `devicectl device process launch ... --mobilellm-run <run>` starts the benchmark, which writes
     Documents/results/<run>/status.json as it goes and results.json (benchmarks/schema.py);
  5. `devicectl device copy from` polls the status and pulls the results into --out, where they are
     validated and merged into the report.
"""
from __future__ import annotations

import json
import platform
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from mobilellm.errors import UserError

BUNDLE_ID = "org.mobilellm.demo"
RUN_FLAG = "--mobilellm-run"  # RunLayout.runFlag in MobileLLMCore.swift
POLL_S = 5.0  # seconds between status polls
CONTAINER = ("--domain-type", "appDataContainer")
TOKENIZER_SUFFIXES = (".model", ".json")
RUN_ARTIFACTS = "artifacts"  # RunLayout.artifacts: Documents/artifacts/, scanned by ArtifactLibrary
APP_RUNS = (".pte", ".mlpackage", ".mlmodelc", ".genai")  # Runtimes.byExtension in ios_demo's LLMSession.swift
# (.genai: an ONNX export's onnxruntime-genai directory, in builds with the onnxruntime-genai pod)


def is_macos() -> bool:
    return sys.platform == "darwin"


@dataclass(frozen=True)
class BenchSettings:
    """What the app measures with; names and defaults as BenchSettings in ios_demo's MobileLLMCore.swift,
    the shared ones as `mobilellm bench` (benchmarks/bench.py BenchConfig)."""

    warmup: int = 3
    iters: int = 20
    load_warmup: int = 1
    load_iters: int = 3
    prompt_len: int = 128
    gen_tokens: int = 32
    gen_warmup: int = 1
    gen_iters: int = 3

    def __post_init__(self):
        for name, v in asdict(self).items():
            low = 0 if name.endswith("warmup") else 1
            if v < low:
                raise UserError(f"--{name.replace('_', '-')} must be >= {low}, got {v}")


@dataclass(frozen=True)
class Device:
    identifier: str
    udid: str
    name: str
    model: str
    os: str
    state: str

    @classmethod
    def from_json(cls, d: dict) -> "Device":
        """One entry of `devicectl list devices`: the *Properties layout, or the newer "properties"
        sections (hardware, software, state, connection), whichever is there."""
        hw, props, conn = (d.get(k) or {} for k in ("hardwareProperties", "deviceProperties", "connectionProperties"))
        new = d.get("properties") or {}
        hw = {**hw, **(new.get("hardware") or {})}
        version = ((new.get("software") or {}).get("osVersionNumber") or {})
        version = (version.get("stringValue") if isinstance(version, dict) else version) or props.get("osVersionNumber")
        return cls(identifier=d.get("identifier", ""), udid=hw.get("udid", ""),
                   name=(new.get("state") or {}).get("name") or props.get("name") or "?",
                   model=hw.get("marketingName") or hw.get("productType") or "?",
                   os=f"{hw.get('platform', 'iOS')} {version or '?'}",
                   state=(new.get("connection") or {}).get("state") or conn.get("tunnelState")
                   or conn.get("pairingState") or "?")

    def __str__(self):
        return f"{self.name} ({self.model}, {self.os}, udid {self.udid or self.identifier}, {self.state})"


@dataclass(frozen=True)
class Artifact:
    path: Path
    manifest: dict
    tokenizer: Path | None
    data: Path | None = None  # the .ptd of a .pte + .ptd pair (--external-weights)


def add_arguments(p):
    d = BenchSettings()
    p.add_argument("--artifacts", type=Path, required=True, metavar="DIR",
                   help="directory of artifacts (.pte, .mlpackage, an ONNX export's .genai directory) with their "
                        ".manifest.json")
    p.add_argument("--udid", help="the phone to use (UDID or identifier from `xcrun devicectl list devices`); "
                                  "needed when several are connected")
    p.add_argument("--bundle-id", default=BUNDLE_ID, help=f"the installed ios_demo app (default {BUNDLE_ID})")
    p.add_argument("--out", type=Path, default=Path("out/device-ios"), help="where the pulled results go")
    g = p.add_argument_group("benchmark (as `mobilellm bench`)")
    for name, v in asdict(d).items():
        g.add_argument(f"--{name.replace('_', '-')}", type=int, default=v, metavar="N", help=f"default {v}")
    p.add_argument("--timeout", type=float, default=3600, metavar="S", help="seconds to wait for the app's results")
    p.add_argument("--merge", type=Path, nargs="*", default=[], metavar="RESULTS",
                   help="other results files (e.g. the host's `mobilellm bench`) to merge into the report")
    from mobilellm.devices import ios_farm
    ios_farm.add_arguments(p)


def main(ns):
    from mobilellm.devices import farm, ios_farm
    spec = farm.check(ns.spec, ns.artifacts)
    if spec:  # writing a farm run needs no Mac
        return ios_farm.write(spec, ns, BenchSettings(**{k: getattr(ns, k) for k in asdict(BenchSettings())}))
    if not is_macos():
        raise UserError(f"`mobilellm device ios` needs macOS with Xcode 15 or newer (it drives the iPhone with "
                        f"`xcrun devicectl`); this is {platform.system()}. Run it on a Mac, or use the app alone: "
                        f"see ios_demo/README.md")
    settings = BenchSettings(**{k: getattr(ns, k) for k in asdict(BenchSettings())})
    artifacts = find_artifacts(ns.artifacts)
    for m in ns.merge:
        if not m.is_file():
            raise UserError(f"--merge: results file {m} does not exist")
    with tempfile.TemporaryDirectory(prefix="mobilellm-ios-") as tmp:
        ctl = Devicectl(Path(tmp))
        device = pick_device(ctl.devices(), ns.udid)
        ctl.check_app(device, ns.bundle_id)
        run_id = time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)
        say(f"device   {device}")
        push(ctl, device, ns.bundle_id, run_id, artifacts, settings, Path(tmp))
        say(f"launch   {ns.bundle_id} {RUN_FLAG} {run_id}")
        ctl.launch(device, ns.bundle_id, [RUN_FLAG, run_id])
        status = wait(ctl, device, ns.bundle_id, run_id, ns.timeout)
        results = pull(ctl, device, ns.bundle_id, run_id, ns.out, Path(tmp))
    records = validate(results)
    summarize(records, status, artifacts)
    report([results, *ns.merge], ns.out / "report")
    return 0


def say(msg: str) -> None:
    print(f"  ios: {msg}", file=sys.stderr, flush=True)


def find_artifacts(directory: Path) -> list[Artifact]:
    from mobilellm.manifest import read_manifest
    if not directory.is_dir():
        raise UserError(f"--artifacts {directory} is not a directory")
    found, skipped = [], []
    for mpath in sorted(directory.glob("*.manifest.json")):
        art = mpath.with_name(mpath.name[: -len(".manifest.json")])
        if art.name.endswith(".failed"):
            continue
        if art.suffix == ".onnx":  # the app runs its onnxruntime-genai directory, which shares its manifest
            art = _genai_dir(art) or art
        if not art.exists():
            continue
        if art.suffix not in APP_RUNS:
            skipped.append(art.name)
            continue
        m = read_manifest(art)
        data = art.with_name(m["data_file"]) if m.get("data_file") else None
        if data and not data.is_file():
            say(f"skip     {art.name}: weights in {m['data_file']} (--external-weights), which is not beside it")
            continue
        if data:
            say(f"note     {art.name}: weights in {data.name}; the benchmark runs the pair (Module(filePath:dataFilePaths:)), "
                f"the chat screen cannot (ExecuTorch's TextRunner takes no data file)")
        found.append(Artifact(art, m, _tokenizer_for(art, m), data))
    if skipped:
        say(f"skip     {', '.join(skipped)}: the iOS app runs {', '.join(APP_RUNS)} only")
    if not found:
        raise UserError(f"no artifacts the iOS app runs ({', '.join(APP_RUNS)}) in {directory}: expected files such "
                        f"as model.pte with model.pte.manifest.json beside them (`mobilellm export --out {directory}`)")
    return found


def _genai_dir(onnx: Path) -> Path | None:
    """The onnxruntime-genai directory the export wrote beside an ONNX artifact (manifest genai_dir), if there."""
    from mobilellm.manifest import read_manifest
    d = ((read_manifest(onnx, required=False) or {}).get("genai_dir") or {}).get("path")
    return onnx.parent / d if d and (onnx.parent / d / "genai_config.json").is_file() else None


def _tokenizer_for(art: Path, manifest: dict) -> Path | None:
    cands = [Path(manifest["tokenizer"])] if manifest.get("tokenizer") else []
    cands += [art.parent / "tokenizer.model", art.parent / "tokenizer.json"]
    return next((c for c in cands if c.is_file() and c.suffix in TOKENIZER_SUFFIXES), None)


class Devicectl:
    """`xcrun devicectl` with JSON output read from files, and one clear error per failure."""

    def __init__(self, tmp: Path):
        self.xcrun = shutil.which("xcrun")
        if not self.xcrun:
            raise UserError("xcrun not found: install Xcode 15 or newer and select it with "
                            "`sudo xcode-select -s /Applications/Xcode.app`")
        self.tmp = tmp
        self.n = 0

    def run(self, command: str, *args: str, what: str, timeout: float = 120, check: bool = True) -> dict | None:
        """`xcrun devicectl COMMAND --json-output FILE ARGS...`: options ahead of the positionals, since
        whatever follows `process launch`'s bundle id goes to the app."""
        self.n += 1
        out = self.tmp / f"devicectl-{self.n}.json"
        cmd = [self.xcrun, "devicectl", *command.split(), "--json-output", str(out), *args]
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise UserError(f"{what}: `xcrun devicectl {command}` did not finish in {timeout:.0f} s; "
                            f"is the phone connected and unlocked?") from None
        if p.returncode != 0:
            err = (p.stderr.strip() or p.stdout.strip()).splitlines()
            if any("unable to find utility" in line for line in err):
                raise UserError("this Xcode has no devicectl: `mobilellm device ios` needs Xcode 15 or newer")
            if not check:
                return None
            raise UserError(f"{what} failed (xcrun devicectl exit {p.returncode}): {' '.join(err[-3:]) or 'no message'}")
        try:
            return json.loads(out.read_text()) if out.is_file() else {}
        except json.JSONDecodeError:
            return {}

    def devices(self) -> list[Device]:
        doc = self.run("list devices", what="listing devices") or {}
        found = [Device.from_json(d) for d in (doc.get("result") or {}).get("devices", [])]
        return [d for d in found if d.os.startswith(("iOS", "iPadOS"))]

    def check_app(self, device: Device, bundle_id: str) -> None:
        doc = self.run("device info apps", "--device", device.identifier, "--bundle-id", bundle_id,
                       what=f"listing apps on {device.name}") or {}
        apps = (doc.get("result") or {}).get("apps", [])
        if not any(a.get("bundleIdentifier") == bundle_id for a in apps):
            raise UserError(f"the ios_demo app ({bundle_id}) is not installed on {device.name}: open "
                            f"ios_demo/MobileLLMDemo.xcodeproj in Xcode and run it on the phone once "
                            f"(ios_demo/README.md), or pass --bundle-id")

    def copy_to(self, device: Device, bundle_id: str, src: Path, dest: str) -> None:
        self.run("device copy to", "--device", device.identifier, *CONTAINER, "--domain-identifier", bundle_id,
                 "--source", str(src), "--destination", dest, what=f"copying {src.name} to the phone",
                 timeout=3600)

    def copy_from(self, device: Device, bundle_id: str, src: str, dest: Path, check: bool = True) -> bool:
        return self.run("device copy from", "--device", device.identifier, *CONTAINER, "--domain-identifier",
                        bundle_id, "--source", src, "--destination", str(dest), what=f"copying {src} from the phone",
                        timeout=600, check=check) is not None and dest.exists()

    def launch(self, device: Device, bundle_id: str, args: list[str]) -> None:
        self.run("device process launch", "--device", device.identifier, "--terminate-existing", bundle_id,
                 *args, what=f"launching {bundle_id} on {device.name} (is the phone unlocked?)")


def pick_device(devices: list[Device], udid: str | None) -> Device:
    if udid:
        for d in devices:
            if udid in (d.udid, d.identifier):
                return d
        listed = "; ".join(map(str, devices)) or "none"
        raise UserError(f"no device with UDID {udid}; connected: {listed}")
    if not devices:
        raise UserError("no iPhone found by `xcrun devicectl list devices`: connect it by USB, unlock it, trust "
                        "this Mac and enable Developer Mode")
    if len(devices) > 1:
        raise UserError(f"{len(devices)} devices connected; choose one with --udid: "
                        + "; ".join(map(str, devices)))
    return devices[0]


def push(ctl: Devicectl, device: Device, bundle_id: str, run_id: str, artifacts: list[Artifact],
         settings: BenchSettings, tmp: Path) -> None:
    from mobilellm.manifest import manifest_path
    inbox = f"Documents/inbox/{run_id}"
    for a in artifacts:
        say(f"copy     {a.path.name} ({_size_mb(a.path):.1f} MB)")
        ctl.copy_to(device, bundle_id, a.path, f"{inbox}/{a.path.name}")
        if a.data:
            ctl.copy_to(device, bundle_id, a.data, f"{inbox}/{a.data.name}")
        man = manifest_path(a.path)  # a .genai directory's is its .onnx's, under that name
        ctl.copy_to(device, bundle_id, man, f"{inbox}/{man.name}")
        if a.tokenizer:
            ctl.copy_to(device, bundle_id, a.tokenizer, f"{inbox}/{a.path.name}.tokenizer{a.tokenizer.suffix}")
        else:
            say(f"note     {a.path.name} has no tokenizer (manifest or tokenizer.model beside it): the benchmark "
                f"runs, the chat screen needs one")
    request = tmp / "request.json"
    request.write_text(json.dumps(request_doc(run_id, [a.path.name for a in artifacts], settings, device.model)))
    ctl.copy_to(device, bundle_id, request, f"{inbox}/request.json")  # last: the app finds everything in place


def request_doc(run_id: str, names: list[str], settings: BenchSettings, device_name: str) -> dict:
    """What the app reads (RunRequest in MobileLLMCore.swift)."""
    return {"schema": "mobilellm.ios-request", "run_id": run_id, "artifacts": names, "settings": asdict(settings),
            "device_name": device_name}


def wait(ctl: Devicectl, device: Device, bundle_id: str, run_id: str, timeout: float) -> dict:
    """Polls Documents/results/<run>/status.json until the app says done or failed."""
    t0, n, last = time.monotonic(), 0, ""
    while True:
        n += 1
        dest = ctl.tmp / f"status-{n}.json"  # devicectl does not overwrite: a fresh name each time
        if ctl.copy_from(device, bundle_id, f"Documents/results/{run_id}/status.json", dest, check=False):
            try:
                status = json.loads(dest.read_text())
            except json.JSONDecodeError:
                status = {}
            if status.get("message") and status["message"] != last:
                last = status["message"]
                say(f"app      {last}")
            if status.get("state") == "done":
                return status
            if status.get("state") == "failed":
                errors = "; ".join(f"{k}: {v}" for k, v in (status.get("errors") or {}).items())
                raise UserError(f"the app's benchmark failed: {status.get('message', '?')}"
                                + (f" ({errors})" if errors else ""))
        if time.monotonic() - t0 > timeout:
            raise UserError(f"no results from the app after {timeout:.0f} s (last status: {last or 'none'}); keep "
                            f"the phone unlocked with the app in front, or raise --timeout")
        time.sleep(POLL_S)


def pull(ctl: Devicectl, device: Device, bundle_id: str, run_id: str, out: Path, tmp: Path) -> Path:
    got = tmp / "results.json"
    ctl.copy_from(device, bundle_id, f"Documents/results/{run_id}/results.json", got)
    log = tmp / "log.txt"
    ctl.copy_from(device, bundle_id, f"Documents/results/{run_id}/log.txt", log, check=False)
    dest = out / f"results-{_slug(device.model)}-{run_id}.json"
    try:
        out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(got, dest)
        if log.exists():
            shutil.copyfile(log, dest.with_suffix(".log"))
    except OSError as e:
        raise UserError(f"cannot write the results to {out}: {e.strerror}") from None
    say(f"results  {dest}")
    return dest


def validate(path: Path) -> list[dict]:
    from mobilellm.devices import results
    try:
        return results.load(path)
    except UserError as e:
        bad = path.with_name(path.name + ".invalid")
        path.replace(bad)
        raise UserError(f"the app wrote results that do not follow the results schema ({e}); kept as {bad}") from None


def summarize(records: list[dict], status: dict, artifacts: list[Artifact]) -> None:
    medians = [r for r in records if r["statistic"] in ("median", "single")]
    for name in [a.path.name for a in artifacts]:
        rows = [r for r in medians if r.get("artifact") == name]
        if rows:
            print(f"{name}  ({rows[0]['device']}, {rows[0]['os']})")
            for r in rows:
                print(f"  {r['metric']:<24}{r['value']:>12.2f} {r['unit']}")
    for name, err in (status.get("errors") or {}).items():
        print(f"mobilellm device ios: warning: {name} was not measured: {err}", file=sys.stderr)


def report(paths: list[Path], out_dir: Path) -> None:
    try:
        from mobilellm.benchmarks.report import build_report
    except ImportError:
        print("merge into the report with: mobilellm report " + " ".join(map(str, paths)) + f" --out {out_dir}")
        return
    try:
        print(f"report       {build_report(paths, out_dir)}")
    except UserError as e:  # e.g. a report that does not know the phone's memory metrics yet
        print(f"report: not built ({e}); build it with: mobilellm report " + " ".join(map(str, paths))
              + f" --out {out_dir}")


def _size_mb(p: Path) -> float:
    from mobilellm.io import size_bytes
    return size_bytes(p) / 2**20


def _slug(s: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in s).strip("-").lower() or "iphone"
