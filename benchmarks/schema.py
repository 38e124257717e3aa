"""The results schema: one record per measured number, shared by the host, Android and iOS.

A results file is {"schema": "mobilellm.results", "version": 1, "records": [record, ...]}.
android_demo/ and ios_demo/ write the same document; tests validate their golden examples here."""
from __future__ import annotations

import json
import math
import platform
import time
from pathlib import Path

from mobilellm.errors import UserError
from mobilellm.io import atomic_path

SCHEMA = "mobilellm.results"
VERSION = 1

# field -> (type(s), required)
FIELDS = {
    "model": (str, True),            # e.g. "125M", "tiny"
    "variant": (str, True),          # e.g. "30 layers", "2x30 shared", "60 layers"
    "stored_blocks": (int, True),
    "executed_blocks": (int, True),
    "backend": (str, True),          # registry name: executorch, executorch-coreml, onnx, coreml
    "scheme": (str, True),           # quantization scheme: w8a8, fp32, ...
    "metric": (str, True),           # one of METRICS
    "unit": (str, True),
    "value": ((int, float), True),
    "statistic": (str, True),        # median, mean, min, p10, p90, single
    "samples": (int, True),          # how many measurements the statistic summarises
    "device": (str, True),           # e.g. "x86_64 host (2 cores)", "Pixel 8 (Tensor G3)"
    "os": (str, True),
    "runtime": (dict, True),         # {"executorch": "1.5.1", ...}
    "threads": (int, True),
    "timestamp": (str, True),        # ISO 8601 UTC
    "artifact": (str, False),        # file name
    "sha256": (str, False),
    "settings": (dict, False),       # warmup, iters, position, prompt length, cold/warm
    "note": (str, False),
}
METRICS = {
    "load_ms": "ms", "init_ms": "ms", "decode_ms": "ms", "prefill_ms": "ms",
    "decode_tokens_per_s": "tokens/s", "prefill_tokens_per_s": "tokens/s",
    "rss_after_init_mb": "MB", "rss_after_generate_mb": "MB", "kv_cache_mb": "MB", "size_mb": "MB",
    # memory is named for what each platform measures: host RSS, Android PSS, iOS phys_footprint
    "decode_ms_at_position": "ms",  # decode at settings.decode_position (bench --positions)
    "decode_ms_paired": "ms",  # one turn of a paired process (bench: settings.series, settings.turn pair artifacts)
    "pss_after_init_mb": "MB", "pss_after_generate_mb": "MB",
    "phys_footprint_after_init_mb": "MB", "phys_footprint_after_generate_mb": "MB",
    "perplexity": "", "top1_agreement": "", "kl_divergence": "nats",
}
STATISTICS = ("median", "mean", "min", "max", "p10", "p90", "single")


def validate_record(r: dict, where: str = "record") -> None:
    if not isinstance(r, dict):
        raise UserError(f"{where}: not an object")
    for name, (types, required) in FIELDS.items():
        if name not in r:
            if required:
                raise UserError(f"{where}: missing field {name!r}")
            continue
        v = r[name]
        if isinstance(v, bool) or not isinstance(v, types):
            raise UserError(f"{where}: field {name!r} has type {type(v).__name__}")
    unknown = set(r) - set(FIELDS)
    if unknown:
        raise UserError(f"{where}: unknown field(s) {sorted(unknown)}; valid: {', '.join(FIELDS)}")
    if r["metric"] not in METRICS:
        raise UserError(f"{where}: unknown metric {r['metric']!r}; valid: {', '.join(METRICS)}")
    if r["unit"] != METRICS[r["metric"]]:
        raise UserError(f"{where}: metric {r['metric']} has unit {r['unit']!r}, expected {METRICS[r['metric']]!r}")
    if r["statistic"] not in STATISTICS:
        raise UserError(f"{where}: unknown statistic {r['statistic']!r}; valid: {', '.join(STATISTICS)}")
    if not math.isfinite(r["value"]):
        raise UserError(f"{where}: value is not finite")
    if r["samples"] < 1:
        raise UserError(f"{where}: samples must be >= 1")


def validate(doc: dict, where: str = "results") -> list[dict]:
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise UserError(f"{where}: not a mobilellm results file (schema {SCHEMA!r} expected)")
    if doc.get("version") != VERSION:
        raise UserError(f"{where}: results schema version {doc.get('version')!r}; this mobilellm reads version {VERSION}")
    recs = doc.get("records")
    if not isinstance(recs, list):
        raise UserError(f"{where}: 'records' must be a list")
    for i, r in enumerate(recs):
        validate_record(r, f"{where}: record {i}")
    return recs


def load_missing(path: Path) -> list[dict]:
    """Rows that say why a measurement is absent (e.g. Core ML on Linux); optional in a file."""
    doc = _read(Path(path))
    validate(doc, str(path))
    rows = doc.get("missing", [])
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise UserError(f"{path}: 'missing' must be a list of objects")
    return rows


def _read(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"results file {path} does not exist")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"results file {path} is not valid JSON: {e}") from None


def load(path: Path) -> list[dict]:
    path = Path(path)
    return validate(_read(path), str(path))


def save(path: Path, records: list[dict], missing: list[dict] | None = None) -> Path:
    for i, r in enumerate(records):
        validate_record(r, f"record {i}")
    doc = {"schema": SCHEMA, "version": VERSION, "records": records}
    if missing:
        doc["missing"] = missing
    with atomic_path(Path(path)) as tmp:
        tmp.write_text(json.dumps(doc, indent=1))
    return Path(path)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def host_fields() -> dict:
    import os
    return {
        "device": f"{cpu_name()} ({os.cpu_count()} cores)",
        "os": f"{platform.system()} {platform.release()}",
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
