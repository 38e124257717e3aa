"""`mobilellm bench`: each artifact measured in fresh processes, summarised as schema records."""
from __future__ import annotations

import json
import subprocess
import sys
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mobilellm.benchmarks import schema
from mobilellm.benchmarks.measure import last_level_cache_mib
from mobilellm.errors import UserError
from mobilellm.io import size_bytes
from mobilellm.manifest import read_manifest, tool_versions

TIMINGS = ("load_ms", "init_ms", "prefill_ms", "decode_ms")
RATES = ("prefill_tokens_per_s", "decode_tokens_per_s")
MEMORY = ("rss_after_init_mb", "rss_after_generate_mb")


@dataclass(frozen=True)
class BenchConfig:
    warmup: int = 3
    iters: int = 20
    threads: int = 2
    prompt_len: int = 128
    gen_tokens: int = 32
    cold_runs: int = 3
    positions: tuple[int, ...] = ()  # extra decode positions timed (e.g. 1000): long-context cost
    pairs: int = 8  # several artifacts: turns of each in every paired process (0: no paired processes)

    def __post_init__(self):
        object.__setattr__(self, "positions", tuple(self.positions))
        bad = [p for p in self.positions if not isinstance(p, int) or p < 1]
        if bad:
            raise UserError(f"--positions must be positive integers, got {bad}")
        for f in ("iters", "threads", "prompt_len", "gen_tokens", "cold_runs"):
            if getattr(self, f) < 1:
                raise UserError(f"--{f.replace('_', '-')} must be >= 1, got {getattr(self, f)}")
        for f in ("warmup", "pairs"):
            if getattr(self, f) < 0:
                raise UserError(f"--{f} must be >= 0, got {getattr(self, f)}")


def check_artifact(path: Path) -> tuple[dict, str | None]:
    """(manifest, reason it cannot run here or None). Refuses what cannot be benchmarked at all."""
    from mobilellm.export.base import get_backend
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} does not exist")
    manifest = read_manifest(path, required=False)
    if manifest is None:
        raise UserError(f"{path} has no manifest ({path.name}.manifest.json): without it the model, variant and "
                        f"scheme of the numbers are unknown; export it with `mobilellm export`")
    return manifest, get_backend(manifest["backend"]).runtime_missing()


def _spec(path: Path, cfg: BenchConfig) -> dict:
    msl = read_manifest(path)["max_seq_len"]
    prompt_len = min(cfg.prompt_len, msl // 2)
    gen = min(cfg.gen_tokens, msl - prompt_len - 1)
    fits = [q for q in cfg.positions if q + cfg.warmup + cfg.iters < msl]
    return {"artifact": str(path), "threads": cfg.threads, "prompt_len": prompt_len, "warmup": cfg.warmup,
            "iters": cfg.iters, "gen_tokens": gen, "positions": fits}


def _process(path: Path, spec: dict, timeout: float) -> dict:
    """One fresh process measuring one artifact: its raw samples."""
    p = subprocess.run([sys.executable, "-m", "mobilellm.benchmarks.measure", json.dumps(spec)],
                       capture_output=True, text=True, timeout=timeout)
    line = next((l for l in p.stdout.splitlines() if l.startswith("MEASURE ")), None)
    if line is None:
        raise UserError(f"benchmark process for {path} died (exit {p.returncode}): {p.stderr.strip()[-800:]}")
    res = json.loads(line[len("MEASURE "):])
    if "error" in res:
        raise UserError(res["error"])
    return res


def _add(pooled: dict, res: dict) -> None:
    for q, xs in (res.pop("decode_ms_at", None) or [{}])[0].items():
        pooled.setdefault("decode_ms_at", {}).setdefault(q, []).extend(xs)
    for k, v in res.items():
        pooled.setdefault(k, []).extend(v if isinstance(v, list) else [v])


def _finish(pooled: dict, spec: dict, cfg: BenchConfig, series: str) -> dict:
    options = (pooled.pop("runtime_options", None) or [{}])[0]  # e.g. XNNPACK's weight cache
    fits = spec["positions"]
    pooled["settings"] = {**asdict(cfg), "prompt_len": spec["prompt_len"], "gen_tokens": spec["gen_tokens"],
                          "decode_position": spec["prompt_len"],
                          "positions_timed": [spec["prompt_len"]] + [q for q in fits if q != spec["prompt_len"]],
                          "positions_skipped": [q for q in cfg.positions if q not in fits], "series": series,
                          "last_level_cache_mib": last_level_cache_mib(), **options}
    return pooled


def run_rounds(paths: list[Path], cfg: BenchConfig, timeout: float = 1800, on_process=None) -> dict[Path, dict]:
    """Raw samples of each artifact, pooled over `cold_runs` rounds. A round runs one fresh process per
    artifact, in turn (alternating processes), then, for two or more artifacts, one paired process that
    times all of them in turns (`measure.paired`): `decode_ms_paired[i]` of every artifact is one turn,
    and turn i of one artifact pairs with turn i of the others (`settings.series` names the call)."""
    series = uuid.uuid4().hex[:12]  # pairs turns of one call, never across calls
    specs = {Path(p): _spec(Path(p), cfg) for p in paths}
    pooled: dict[Path, dict] = {p: {} for p in specs}
    pair_spec = {"artifacts": [str(p) for p in specs], "threads": cfg.threads, "warmup": cfg.warmup,
                 "iters": cfg.iters, "pairs": cfg.pairs, "prompt_len": min(s["prompt_len"] for s in specs.values())}
    for _ in range(cfg.cold_runs):
        for path, spec in specs.items():
            _add(pooled[path], _process(path, spec, timeout))
            if on_process:
                on_process(path)
        if _paired(len(specs), cfg):
            turns = _process(Path(pair_spec["artifacts"][0]), pair_spec, timeout)["paired_decode_ms"]
            for path, xs in zip(specs, turns):
                pooled[path].setdefault("decode_ms_paired", []).extend(xs)
            if on_process:
                on_process(None)
    return {p: _finish(pooled[p], specs[p], cfg, series) for p in specs}


def _paired(n_artifacts: int, cfg: BenchConfig) -> bool:
    return n_artifacts > 1 and cfg.pairs > 0


def processes(n_artifacts: int, cfg: BenchConfig) -> int:
    """How many processes `run_rounds` starts for n artifacts."""
    return cfg.cold_runs * (n_artifacts + _paired(n_artifacts, cfg))


def records_for(path: Path, manifest: dict, raw: dict, threads: int) -> list[dict]:
    base = base_fields(path, manifest, threads)
    base["settings"] = raw.get("settings", {})
    out = []

    def add(metric, value, statistic, samples):
        out.append({**base, "metric": metric, "unit": schema.METRICS[metric], "value": round(float(value), 4),
                    "statistic": statistic, "samples": int(samples)})

    for m in TIMINGS + RATES:
        xs = np.asarray(raw.get(m, []), dtype=float)
        if not len(xs):
            continue
        add(m, np.median(xs), "median", len(xs))
        if len(xs) > 1:
            add(m, np.percentile(xs, 10), "p10", len(xs))
            add(m, np.percentile(xs, 90), "p90", len(xs))
            add(m, xs.min(), "min", len(xs))
    for q, xs in sorted((raw.get("decode_ms_at") or {}).items(), key=lambda kv: int(kv[0])):
        base_q = {**base, "settings": {**base["settings"], "decode_position": int(q)}}
        xs = np.asarray(xs, dtype=float)
        for stat, v in (("median", np.median(xs)), ("p10", np.percentile(xs, 10)), ("p90", np.percentile(xs, 90))):
            out.append({**base_q, "metric": "decode_ms_at_position", "unit": "ms", "value": round(float(v), 4),
                        "statistic": stat, "samples": len(xs)})
    settings = base["settings"]
    for i, v in enumerate(raw.get("decode_ms_paired") or []):  # turn i pairs with the other artifacts' turn i
        out.append({**base, "settings": {**settings, "turn": i}, "metric": "decode_ms_paired", "unit": "ms",
                    "value": round(v, 4), "statistic": "median", "samples": settings.get("iters", 1)})
    for m in MEMORY:
        if raw.get(m):
            add(m, np.median(raw[m]), "median", len(raw[m]))
    data = Path(path).with_name(manifest["data_file"]) if (manifest or {}).get("data_file") else None
    add("size_mb", (size_bytes(path) + (size_bytes(data) if data and data.exists() else 0)) / 1e6, "single", 1)
    add("kv_cache_mb", kv_cache_bytes(manifest) / 1e6, "single", 1)
    return out


def kv_cache_bytes(manifest: dict) -> int:
    """k and v of every executed block at every position: fp32, or int8 with a 5-byte scale and zero point per
    position and head (--kv-cache int8)."""
    a = manifest["model"]["args"]
    per_head = a["head_dim"] * 4 if manifest["quant"].get("kv_cache", "fp32") == "fp32" else a["head_dim"] + 5
    return 2 * manifest["model"]["executed_blocks"] * manifest["max_seq_len"] * a["n_kv_heads"] * per_head


def base_fields(path: Path, manifest: dict, threads: int) -> dict:
    mm = manifest["model"]
    return {"model": mm["name"], "variant": mm["variant"], "stored_blocks": mm["stored_blocks"],
            "executed_blocks": mm["executed_blocks"], "backend": manifest["backend"],
            "scheme": manifest["quant"]["scheme"] + ("+emb8" if manifest["quant"].get("quantize_embedding") else "")
            + ("+kv8" if manifest["quant"].get("kv_cache") == "int8" else ""),
            "runtime": {k: v for k, v in tool_versions().items() if k in ("executorch", "onnxruntime", "coremltools",
                                                                          "torch", "mobilellm")},
            "threads": threads, "artifact": Path(path).name, "sha256": manifest.get("sha256", ""),
            **schema.host_fields()}


def missing_record(path: Path, manifest: dict, reason: str, threads: int) -> dict:
    """A row that says why a number is absent (e.g. Core ML on Linux); kept out of the records."""
    f = base_fields(path, manifest, threads)
    return {"artifact": f["artifact"], "backend": f["backend"], "scheme": f["scheme"], "variant": f["variant"],
            "reason": reason}


def bench(paths: list[Path], cfg: BenchConfig, on_done=None, on_process=None) -> tuple[list[dict], list[dict]]:
    """(records, skipped rows). The artifacts that run here are measured together, in alternating
    processes (`run_rounds`); one that cannot run here is reported as skipped."""
    records, skipped, runnable = [], [], {}
    for path in map(Path, paths):
        manifest, why = check_artifact(path)
        if why:
            skipped.append(missing_record(path, manifest, why, cfg.threads))
        else:
            runnable[path] = manifest
    raws = run_rounds(list(runnable), cfg, on_process=on_process) if runnable else {}
    for path, manifest in runnable.items():
        recs = records_for(path, manifest, raws[path], cfg.threads)
        records += recs
        if on_done:
            on_done(path, recs)
    return records, skipped
