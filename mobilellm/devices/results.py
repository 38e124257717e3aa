"""Results the phone apps write: benchmarks/schema.py's document, with memory named for what each
platform measures.

The host's memory metric is RSS (`rss_after_init_mb`); Android's is PSS (`Debug.getPss`) and iOS's
is phys_footprint (what iOS's memory limit counts): different quantities, so different metric names,
never three numbers under `rss_*`. benchmarks/schema.py lists them; this module names what each is
and reads and writes phone results through the schema."""
from __future__ import annotations

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
    """Every metric a phone may write, with its unit (the schema lists the platform memory metrics)."""
    from mobilellm.benchmarks import schema
    return dict(schema.METRICS)


def validate_record(r: dict, where: str = "record") -> None:
    from mobilellm.benchmarks import schema
    schema.validate_record(r, where)


def validate(doc: dict, where: str = "results") -> list[dict]:
    from mobilellm.benchmarks import schema
    return schema.validate(doc, where)


def load(path: Path) -> list[dict]:
    from mobilellm.benchmarks import schema
    return schema.load(path)


def save(path: Path, records: list[dict]) -> Path:
    from mobilellm.benchmarks import schema
    return schema.save(path, records)
