"""Results the phone apps write: benchmarks/schema.py's document, with memory named for what each
platform measures.

The host's memory metric is RSS (`rss_after_init_mb`); Android's is PSS (`Debug.getPss`) and iOS's
is phys_footprint (what iOS's memory limit counts): different quantities, so different metric names,
never three numbers under `rss_*`. Until benchmarks/schema.py lists these metrics itself, this module
validates them here and everything else through the schema."""
from __future__ import annotations

import json
from pathlib import Path

from mobilellm.errors import UserError

# metric -> (unit, platform, what it is)
PLATFORM_METRICS = {
    "pss_after_init_mb": ("MB", "android", "proportional set size after init (Debug.getPss, KiB / 1024)"),
    "pss_after_generate_mb": ("MB", "android", "proportional set size after the generations"),
    "phys_footprint_after_init_mb": ("MB", "ios", "task_vm_info phys_footprint after init (2^20 bytes)"),
    "phys_footprint_after_generate_mb": ("MB", "ios", "phys_footprint after the generations"),
}


def metrics() -> dict[str, str]:
    """Every metric a phone may write, with its unit: the schema's and the platform memory metrics."""
    from mobilellm.benchmarks import schema
    return {**schema.METRICS, **{k: unit for k, (unit, _, _) in PLATFORM_METRICS.items()}}


def validate_record(r: dict, where: str = "record") -> None:
    from mobilellm.benchmarks import schema
    if isinstance(r, dict) and r.get("metric") in PLATFORM_METRICS and r["metric"] not in schema.METRICS:
        unit = PLATFORM_METRICS[r["metric"]][0]
        if r.get("unit") != unit:
            raise UserError(f"{where}: metric {r['metric']} has unit {r.get('unit')!r}, expected {unit!r}")
        # every other field through the schema: the same record with a memory metric it knows
        schema.validate_record(dict(r, metric="rss_after_init_mb"), where)
        return
    schema.validate_record(r, where)


def validate(doc: dict, where: str = "results") -> list[dict]:
    from mobilellm.benchmarks import schema
    if not isinstance(doc, dict) or doc.get("schema") != schema.SCHEMA:
        raise UserError(f"{where}: not a mobilellm results file (schema {schema.SCHEMA!r} expected)")
    if doc.get("version") != schema.VERSION:
        raise UserError(f"{where}: results schema version {doc.get('version')!r}; this mobilellm reads version "
                        f"{schema.VERSION}")
    recs = doc.get("records")
    if not isinstance(recs, list):
        raise UserError(f"{where}: 'records' must be a list")
    for i, r in enumerate(recs):
        validate_record(r, f"{where}: record {i}")
    return recs


def load(path: Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"results file {path} does not exist")
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"results file {path} is not valid JSON: {e}") from None
    return validate(doc, str(path))


def save(path: Path, records: list[dict]) -> Path:
    from mobilellm.benchmarks import schema
    from mobilellm.io import atomic_path
    for i, r in enumerate(records):
        validate_record(r, f"record {i}")
    with atomic_path(Path(path)) as tmp:
        tmp.write_text(json.dumps({"schema": schema.SCHEMA, "version": schema.VERSION, "records": records}, indent=1))
    return Path(path)
