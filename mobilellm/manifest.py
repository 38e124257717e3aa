"""The JSON manifest beside every artifact: what it is, how it was made, and how to check it.

Benchmarks, verification and the phone apps read this; nothing parses file names."""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import platform
import time
from importlib import metadata
from pathlib import Path

from mobilellm.errors import UserError
from mobilellm.io import atomic_path

SCHEMA = "mobilellm.manifest"
VERSION = 2  # 2: schemes are values (quant/schemes.py); version-1 manifests are read with their scheme mapped
READABLE = (1, 2)
TOOLS = ("mobilellm", "torch", "executorch", "torchao", "coremltools", "onnx", "onnxruntime", "onnxscript")


def manifest_path(artifact: Path) -> Path:
    """<artifact>.manifest.json; an onnxruntime-genai directory `<name>.genai/` shares its graph's manifest
    (`<name>.onnx.manifest.json`: the directory's model.onnx is that file)."""
    artifact = Path(artifact)
    if artifact.suffix == ".genai" and artifact.is_dir():
        return artifact.with_name(artifact.with_suffix(".onnx").name + ".manifest.json")
    return artifact.with_name(artifact.name + ".manifest.json")


def tool_versions() -> dict[str, str]:
    out = {}
    for t in TOOLS:
        try:
            out[t] = metadata.version(t)
        except metadata.PackageNotFoundError:
            pass
    out["python"] = platform.python_version()
    return out


def model_section(args, weights: str) -> dict:
    return {
        "name": args.name, "variant": args.variant, "weights": weights,
        "stored_blocks": args.n_layers, "executed_blocks": args.n_executed, "repeat": args.repeat,
        "layer_sharing": args.layer_sharing, "param_count": args.param_count(),
        "args": dataclasses.asdict(args),
    }


@functools.lru_cache(maxsize=1)
def code_hash() -> str:
    """Of the code that makes artifacts (models/, quant/, export/ as installed): part of every settings
    hash, so an artifact made before a lowering or quantization fix is not reused after it."""
    from mobilellm import export, models, quant
    h = hashlib.sha256()
    for pkg in (models, quant, export):
        root = Path(pkg.__file__).parent
        for f in sorted(root.rglob("*.py")):
            if "tests" not in f.relative_to(root).parts:
                h.update(str(f.relative_to(root.parent)).encode())
                h.update(f.read_bytes())
    return h.hexdigest()[:16]


def settings_hash(settings: dict) -> str:
    """Identifies an artifact's inputs (model, weights, backend, scheme, options, tool versions),
    so a pipeline run can reuse an artifact built with the same settings."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def write_manifest(artifact: Path, manifest: dict) -> Path:
    doc = {"schema": SCHEMA, "version": VERSION, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           **manifest}
    path = manifest_path(artifact)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(doc, indent=2, default=str))
    return path


def read_manifest(artifact: Path, required: bool = True) -> dict | None:
    path = manifest_path(artifact)
    if not path.is_file():
        if required:
            raise UserError(f"{artifact} has no manifest ({path.name} beside it); export it with `mobilellm export`")
        return None
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"manifest {path} is not valid JSON: {e}") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise UserError(f"{path} is not a mobilellm manifest (schema {SCHEMA!r} expected)")
    if doc.get("version") not in READABLE:
        raise UserError(f"manifest {path} has version {doc.get('version')!r}; this mobilellm reads versions "
                        f"{', '.join(map(str, READABLE))}")
    return _current(doc, path)


def _current(doc: dict, path: Path) -> dict:
    """A manifest in this version's terms: the scheme by its current name (older names mapped, with a
    note in `quant.legacy_note`), its definition filled in; an unknown scheme is a clear error."""
    from mobilellm.quant import schemes
    q = doc.get("quant")
    if not isinstance(q, dict) or not isinstance(q.get("scheme"), str) or not isinstance(doc.get("backend"), str):
        raise UserError(f"manifest {path} lacks its backend or quant.scheme")
    try:
        scheme, note = schemes.from_manifest(doc["backend"], q["scheme"], int(doc["version"]))
    except UserError as e:
        raise UserError(f"manifest {path}: {e}") from None
    doc["quant"] = {**q, "scheme": scheme.name, "definition": q.get("definition") or scheme.definition(),
                    **({"legacy_note": note, "recorded_scheme": q["scheme"]} if note else {})}
    return doc
