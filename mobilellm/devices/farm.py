"""`mobilellm device android|ios --spec KIND OUT`: the files a device-farm run of the apps' headless
benchmark needs, written without a phone, an SDK or a network.

  devicefarm  AWS Device Farm, custom test environment: a test spec (YAML, version 0.1, phases
              install / pre_test / test / post_test, artifacts) and mobilellm-artifacts.zip (the
              artifact set; upload it where the test host can fetch it and pass the address as the
              run's MOBILELLM_ARTIFACTS_URL variable, as ExecuTorch's LLM benchmark specs fetch models)
  firebase    Firebase Test Lab: a gcloud argument file (`gcloud topic arg-files`), one group per
              artifact, so each artifact is measured in a fresh app process as on the host

The formats follow AWS's "Test spec syntax" / "Environment variables" pages and gcloud's
`firebase test android run` and `beta firebase test ios run` references; the Device Farm commands
follow ExecuTorch's extension/benchmark android and apple test specs."""
from __future__ import annotations

import json
import time
import zipfile
from pathlib import Path

from mobilellm.errors import UserError

KINDS = {"devicefarm": "AWS Device Farm test spec (custom environment) + the artifact zip",
         "firebase": "Firebase Test Lab gcloud argument file"}
ARTIFACTS_URL = "MOBILELLM_ARTIFACTS_URL"  # the run's custom environment variable on Device Farm
ZIP_NAME = "mobilellm-artifacts.zip"


def check(spec: list[str] | None, artifacts: Path) -> tuple[str, Path] | None:
    """(kind, out dir) from `--spec KIND OUT`, or None without --spec; bad input is one UserError."""
    if not spec:
        return None
    kind, out = spec
    if kind not in KINDS:
        raise UserError(f"--spec {kind}: unknown farm; one of: "
                        + ", ".join(f"{k} ({v})" for k, v in KINDS.items()))
    if not artifacts.is_dir():
        raise UserError(f"--artifacts {artifacts} is not a directory (--spec {kind} packs the artifact set)")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--spec {kind} {out}: exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    return kind, out


# --------------------------------------------------------------------------------------------------
# A YAML writer for what the specs hold: mappings, lists, strings (JSON-quoted, which YAML reads as
# double-quoted scalars), numbers, and multi-line shell commands as literal blocks.

def _scalar(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return json.dumps(v)
    return json.dumps(str(v))


def _key(k: str) -> str:
    return k if all(c.isalnum() or c in "_-" for c in k) else json.dumps(k)


def to_yaml(v, indent: int = 0) -> str:
    pad = " " * indent
    lines = []
    if isinstance(v, dict):
        for k, x in v.items():
            if isinstance(x, (dict, list)) and x:
                lines.append(f"{pad}{_key(k)}:")
                lines.append(to_yaml(x, indent + 2))
            elif isinstance(x, (dict, list)):
                lines.append(f"{pad}{_key(k)}:")  # empty: null, which Device Farm reads as no commands
            else:
                lines.append(f"{pad}{_key(k)}: {_scalar(x)}")
    else:
        for x in v:
            if isinstance(x, str) and "\n" in x:
                body = "\n".join(f"{pad}    {ln}" if ln else "" for ln in x.rstrip("\n").split("\n"))
                lines.append(f"{pad}  - |\n{body}")
            elif isinstance(x, dict):
                inner = to_yaml(x, indent + 4).split("\n")
                lines.append(f"{pad}  - {inner[0].lstrip()}")
                lines.extend(inner[1:])
            else:
                lines.append(f"{pad}  - {_scalar(x)}")
    return "\n".join(lines)


def write_yaml(path: Path, doc: dict, header: str) -> Path:
    text = "".join(f"# {ln}".rstrip() + "\n" for ln in header.strip().split("\n")) + to_yaml(doc) + "\n"
    path.write_text(text)
    return path


def pack(files: list[tuple[Path, str]], out: Path) -> Path:
    """The artifact set as one zip (stored: .pte/.onnx do not compress), names as on the phone."""
    path = out / ZIP_NAME
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for local, name in files:
            if local.is_dir():  # an .mlpackage
                for f in sorted(p for p in local.rglob("*") if p.is_file()):
                    z.write(f, f"{name}/{f.relative_to(local).as_posix()}")
            else:
                z.write(local, name)
    return path


def announce(written: list[Path], kind: str, n_artifacts: int, readme: str) -> int:
    """What `--spec` wrote, and that nothing ran; exit code 0."""
    for path in written:
        print(f"wrote {path}")
    print(f"nothing was run: {KINDS[kind]} for {n_artifacts} artifact(s); next steps in {readme} (Device farms)")
    return 0


def fetch_commands(dest: str) -> list[str]:
    """Device Farm pre_test: fetch and unpack the artifact zip named by the run's variable."""
    return [f'test -n "${ARTIFACTS_URL}" || {{ echo "set the run\'s {ARTIFACTS_URL} variable to where '
            f'{ZIP_NAME} can be downloaded"; false; }}',
            f'curl -s --fail "${ARTIFACTS_URL}" -o {ZIP_NAME}',
            f"rm -rf {dest} && mkdir -p {dest} && unzip -q {ZIP_NAME} -d {dest} && ls -la {dest}"]


def header(command: str, kind: str) -> str:
    return (f"Written by `{command}` on {time.strftime('%Y-%m-%d %H:%M:%S')}.\n"
            f"{KINDS[kind]}; see android_demo/README.md or ios_demo/README.md, 'Device farms'.")


def run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S")
