"""`mobilellm run`: the paper's comparison end to end. For each model, the three variants
(N layers, LS 2xN shared, 2N layers unshared) are exported to every backend with the chosen
scheme, verified, benchmarked where they can run, and reported in one directory.

A run is resumable: an artifact whose manifest carries the same settings hash (model, weights,
backend, scheme, options, tool versions) and passed verification is reused, not rebuilt."""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

from mobilellm.errors import UserError, VerificationError


def default_backends() -> tuple[str, ...]:
    """Every registered backend on macOS; elsewhere without the Apple-only ones (the Core ML-delegated
    .pte can neither run nor be checked numerically off Apple, and its lowering was a fifth of a
    default run's compute on 2 cores). `--backends all` adds them."""
    from mobilellm.export.base import default_backends as registry_defaults
    return registry_defaults()


def left_out_note(backends) -> str | None:
    from mobilellm.export.base import all_backends
    left = [b.name for b in all_backends() if b.apple_only and b.name not in backends]
    if not left or tuple(backends) != default_backends():
        return None
    return (f"{', '.join(left)} not in the default run off macOS: Apple-only artifacts run and verify only on "
            f"Apple devices; build them here with --backends all (or name them)")


VARIANTS = ("base", "shared", "deep")  # N layers, LS 2xN shared, 2N layers unshared
EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class RunConfig:
    models: tuple[str, ...] = ("125M",)
    backends: tuple[str, ...] = field(default_factory=default_backends)
    quant: tuple[str, ...] = ("w8a8",)  # the grid: every model x backend x variant x scheme
    max_seq_len: int = 512
    out: Path = Path("runs/default")
    seed: int = 0
    checkpoint: Path | None = None
    variants: tuple[str, ...] = ("base", "shared", "deep")
    workers: int = 2
    # Trained presets scored on their held-out text (latency uses `models`, accuracy needs real weights).
    accuracy: tuple[str, ...] = ("tiny", "tiny-LS")
    accuracy_schemes: tuple[str, ...] = ("w8a8",)  # `quant` maps to each backend's own W8A8
    external_weights: bool = False  # executorch: weights in a .ptd beside the .pte (shared matrix stored once)
    kv_cache: str = "fp32"  # int8: backends that build an int8 cache do (ExecuTorch); the others keep fp32
    executor: str = "local"  # local: a process pool here; ray: one Ray task per export / accuracy job
    ray_address: str | None = None  # None: start or join a local Ray instance
    bench_on: str = "local"  # where timing runs: here (local) or on any Ray node (ray)

    def __post_init__(self):
        from mobilellm.export import verify as V
        if isinstance(self.quant, str):
            object.__setattr__(self, "quant", (self.quant,))
        if not self.quant:
            raise UserError("--quant needs at least one scheme")
        for name, value in (("--executor", self.executor), ("--bench-on", self.bench_on)):
            if value not in EXECUTORS:
                raise UserError(f"unknown {name} {value!r}; valid: {', '.join(EXECUTORS)}")
        if self.ray_address and self.executor != "ray" and self.bench_on != "ray":
            raise UserError("--ray-address needs --executor ray (or --bench-on ray)")
        if self.workers < 1:
            raise UserError(f"--workers must be >= 1, got {self.workers}")
        if self.max_seq_len < V.PROMPT_LEN + V.DECODE_STEPS:
            raise UserError(f"--max-seq-len must be at least {V.PROMPT_LEN + V.DECODE_STEPS}, got {self.max_seq_len}")
        if self.seed < 0:
            raise UserError(f"--seed must be >= 0, got {self.seed}")
        bad = [v for v in self.variants if v not in VARIANTS]
        if bad or not self.variants:
            raise UserError(f"unknown variant(s) {bad}; valid: {', '.join(VARIANTS)}")


@dataclass
class Job:
    variant: str
    backend: str
    scheme: str  # what the backend runs (the requested scheme, or its declared closest)
    args: object
    requested: str = ""  # the scheme asked for; `scheme_note` says why another one runs
    scheme_note: str = ""
    path: Path | None = None
    checkpoint: Path | None = None  # accuracy jobs: the trained preset's weights
    max_seq_len: int | None = None
    status: str = "pending"
    note: str = ""
    manifest: dict = field(default_factory=dict)


def variant_args(base, kind: str):
    base = base.replace(repeat=1)
    return {"base": base, "shared": base.replace(repeat=2, name=f"LS-{base.name}"),
            "deep": base.replace(n_layers=2 * base.n_layers, name=f"{base.name}-{2 * base.n_layers}L")}[kind]


def plan(cfg: RunConfig) -> list[Job]:
    from mobilellm.export.base import get_backend
    from mobilellm.models.checkpoint import read_config
    from mobilellm.models.config import from_name
    jobs = []
    bases = [read_config(cfg.checkpoint)] if cfg.checkpoint else [from_name(m) for m in cfg.models]
    for base in bases:
        for b in cfg.backends:
            backend = get_backend(b)
            for requested in cfg.quant:
                scheme, why = backend.resolve_scheme(requested)
                for kind in cfg.variants:
                    a = variant_args(base, kind)
                    job = Job(kind, b, scheme or requested, a, requested=requested, scheme_note=why if scheme else "")
                    if scheme is None:
                        job.status, job.note = "skipped", why
                    elif any(j.backend == b and j.scheme == scheme and j.args == a for j in jobs):
                        continue  # two requested schemes this backend runs as one: built once
                    jobs.append(job)
    return jobs


def job_checkpoint(job: Job, cfg: RunConfig) -> Path | None:
    """Whose weights a job exports: its own (accuracy), the run's (not for the 2N-layer control), or none."""
    return job.checkpoint or (cfg.checkpoint if job.variant != "deep" else None)


def missing_row(job: Job) -> dict:
    return {"artifact": f"{job.args.name} {job.backend}", "backend": job.backend, "scheme": job.scheme,
            "variant": job.args.variant, "reason": f"{job.status}: {job.note}"}


def scheme_notes(jobs: list[Job]) -> list[str]:
    """One line per backend that runs another scheme than the one requested, and why."""
    seen = {}
    for j in jobs:
        if j.scheme_note:
            seen.setdefault(j.backend, j.scheme_note)
    return [f"{b} runs {note}" for b, note in seen.items()]


def build_model(job: Job, cfg: RunConfig):
    from mobilellm.models.checkpoint import checkpoint_label, load_model
    from mobilellm.models.model import build, random_weights_label
    ckpt = job_checkpoint(job, cfg)
    if ckpt is not None:
        return load_model(ckpt, max_seq_len=job.max_seq_len or cfg.max_seq_len, repeat=job.args.repeat), \
            checkpoint_label(ckpt)
    note = " (no checkpoint for the 2N-layer control)" if cfg.checkpoint else ""
    return build(job.args, seed=cfg.seed, max_seq_len=cfg.max_seq_len), random_weights_label(cfg.seed) + note


def export_job(job: Job, cfg: RunConfig, art_dir: Path) -> Job:
    from mobilellm.export.base import ExportConfig, get_backend
    from mobilellm.export.pipeline import artifact_name, export_settings
    from mobilellm.manifest import read_manifest, settings_hash
    backend = get_backend(job.backend)
    from mobilellm.models.tokenizer import tokenizer_file
    ckpt = job_checkpoint(job, cfg)
    from mobilellm.quant.schemes import get as get_scheme
    ecfg = ExportConfig(quant=job.scheme, max_seq_len=job.max_seq_len or cfg.max_seq_len,
                        quantize_embedding=get_scheme(job.scheme).quantized and not backend.embedding_refused(job.scheme),
                        tokenizer=tokenizer_file(ckpt) if ckpt else None,
                        external_weights=cfg.external_weights and backend.external_weights, threads=export_threads(cfg),
                        kv_cache=cfg.kv_cache if cfg.kv_cache in backend.kv_caches else "fp32")
    model, weights = build_model(job, cfg)
    path = art_dir / artifact_name(model, backend, ecfg)
    want = settings_hash(export_settings(model, weights, backend, ecfg))
    why_not = reusable(path, want)
    if why_not is None:
        job.path, job.manifest, job.status, job.note = path, read_manifest(path), "reused", "same settings hash and sha256"
        return job
    from mobilellm.export.pipeline import export_artifact
    t0 = time.perf_counter()
    try:
        job.path, job.manifest = export_artifact(model, weights, backend, ecfg, art_dir, force=True, quiet=True,
                                                      consume=True)
        job.status, job.note = "exported", f"{time.perf_counter() - t0:.0f} s"
    except VerificationError as e:
        job.status, job.note = "failed verification", str(e)
    except UserError as e:
        job.status, job.note = "refused", str(e)
    return job


def comparisons(jobs: list[Job]) -> list[list[Job]]:
    """Jobs grouped as the sharing table compares them: one model's variants on one backend and scheme."""
    groups: dict[tuple, list[Job]] = {}
    for j in jobs:  # the variants differ only in depth, repeat and name
        shape = tuple((f.name, repr(getattr(j.args, f.name))) for f in fields(j.args)
                      if f.name not in ("n_layers", "repeat", "name"))
        groups.setdefault((j.backend, j.scheme, shape), []).append(j)
    return list(groups.values())


def job_memory_bytes(job: Job) -> int:
    """Peak RSS one export process reaches, from its backend's fit to the size table (README)."""
    from mobilellm.export.base import get_backend
    fixed_mib, per_param = get_backend(job.backend).export_memory
    return int(fixed_mib * 2**20 + per_param * job.args.param_count())


def too_big(job: Job, available: int, where: str) -> bool:
    """Refuse (in the report, not by failing the run) an export that cannot fit `where`."""
    need = job_memory_bytes(job)
    if need <= available:
        return False
    job.status, job.note = "refused", (f"needs ~{need / 2**30:.1f} GiB to export ({job.backend}'s size-table fit), "
                                       f"{where} has {available / 2**30:.1f} GiB")
    return True


def physical_memory() -> int:
    import os
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def export_threads(cfg: RunConfig) -> int:
    """Compute threads of each export worker: the cores shared out among the workers."""
    import os
    return max(1, (os.cpu_count() or 1) // max(1, cfg.workers))


def reusable(path: Path, want_hash: str) -> str | None:
    """None if the artifact at `path` verifiably is what its manifest says and was made with these
    settings; else why not. Checked: manifest present and readable, same settings hash (which covers
    the code), verification not failed, the file's (and its data file's) sha256 as recorded."""
    from mobilellm.errors import UserError
    from mobilellm.io import sha256
    from mobilellm.manifest import read_manifest
    if not path.exists():
        return "not built yet"
    try:
        old = read_manifest(path, required=False)
    except UserError as e:
        return f"unreadable manifest ({e})"
    if old is None:
        return "no manifest (an export stopped between publishing the file and its manifest)"
    if old.get("settings_hash") != want_hash:
        return "settings or code changed"
    if (old.get("verification") or {}).get("passed") is False:
        return "failed verification"
    if sha256(path) != old.get("sha256"):
        return "file does not match its manifest's sha256"
    if old.get("data_file"):
        data = path.with_name(old["data_file"])
        if not data.is_file() or sha256(data) != old.get("data_file_sha256"):
            return f"data file {data.name} missing or not matching its manifest"
    return None


def _init_worker(threads: int) -> None:
    """Before the worker imports torch: lowering is single-threaded Python, so N workers on N
    cores each get one compute thread (two threads each made every worker wait on the other);
    and workers report through the parent's bar, not coremltools' per-pass bars."""
    import os
    os.environ["TQDM_DISABLE"] = "1"  # read by tqdm at import
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    from mobilellm import failures
    failures.install_signal_handlers(worker=True)  # a stop abandons the current export through its cleanup


def _export_worker(job: Job, cfg: RunConfig, art_dir: Path) -> Job:
    from mobilellm.logs import quiet
    quiet()
    return export_job(job, cfg, art_dir)


def _stop_workers(pool) -> None:
    """Abandon running exports (each worker's SIGTERM handler removes its staged files), keep finished ones."""
    procs = list((getattr(pool, "_processes", None) or {}).values())
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        p.join(timeout=30)
        if p.is_alive():
            p.kill()
    pool.shutdown(wait=False, cancel_futures=True)


def export_all(jobs: list[Job], cfg: RunConfig, art_dir: Path, workers: int) -> None:
    """Lowering is single-threaded Python: on N cores, N exports at once (longest first)."""
    import concurrent.futures as cf
    import multiprocessing as mp
    from tqdm import tqdm
    mem = physical_memory()
    todo = sorted((j for j in jobs if j.status == "pending" and not too_big(j, mem, "this machine")),
                  key=lambda j: -j.args.param_count() * j.args.repeat)
    bar = tqdm(total=len(todo), desc="export + verify", unit="artifact", file=sys.stderr)
    # one process per export: its memory is returned when it ends, and its manifest's peak RSS is its own
    pool = cf.ProcessPoolExecutor(max_workers=max(1, workers), mp_context=mp.get_context("spawn"),
                                  initializer=_init_worker, initargs=(export_threads(cfg),), max_tasks_per_child=1)
    from mobilellm import failures
    failures.on_stop(lambda: _stop_workers(pool))  # a signal: each worker removes its staging and ends
    try:
        futures = {pool.submit(_export_worker, j, cfg, art_dir): j for j in todo}
        for fut in cf.as_completed(futures):
            job = futures[fut]
            try:
                done = fut.result()
            except Exception as e:  # a worker that crashed (e.g. killed for memory) fails only its job
                done = job
                done.status, done.note = "crashed", f"{type(e).__name__}: {e}"
            job.path, job.manifest, job.status, job.note = done.path, done.manifest, done.status, done.note
            tqdm.write(f"  {job.backend} {job.scheme} {job.args.name} ({job.args.variant}): {job.status} "
                       f"{job.note[:160]}", file=sys.stderr)
            bar.update(1)
    except BaseException:
        _stop_workers(pool)
        raise
    pool.shutdown(wait=True)
    bar.close()


def run(cfg: RunConfig, bench_cfg, log=print) -> Path:
    from mobilellm.io import dir_lock
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    with dir_lock(out):
        return _run_locked(cfg, bench_cfg, log, out)


def _run_locked(cfg: RunConfig, bench_cfg, log, out: Path) -> Path:
    from mobilellm.io import sweep_stale_partials
    art_dir = out / "artifacts"
    art_dir.mkdir(parents=True, exist_ok=True)
    sweep_stale_partials(art_dir)
    from mobilellm.benchmarks.accuracy_run import plan_accuracy
    jobs = plan(cfg)
    acc_jobs, acc_missing = plan_accuracy(cfg)
    weights = f"checkpoint {cfg.checkpoint}" if cfg.checkpoint else f"seeded random weights (seed {cfg.seed})"
    log(f"mobilellm run: latency of {', '.join(cfg.models) if not cfg.checkpoint else cfg.checkpoint} with {weights}; "
        f"{len(jobs)} artifacts ({len(cfg.variants)} variants x {len(cfg.backends)} backends x "
        f"{', '.join(cfg.quant)}) into {out}" + (", exports on Ray" if cfg.executor == "ray" else ""))
    left_out = left_out_note(cfg.backends)
    if left_out:
        log(f"mobilellm run: {left_out}")
    if cfg.accuracy:
        log(f"mobilellm run: accuracy of the trained presets {', '.join(cfg.accuracy)} on their held-out text; "
            f"{len(acc_jobs)} artifacts")
    on_ray = cfg.executor == "ray" or cfg.bench_on == "ray"
    if on_ray:
        from mobilellm.benchmarks import ray_exec
        ray_exec.connect(cfg.ray_address)
    try:
        return _export_bench_report(cfg, bench_cfg, log, out, art_dir, jobs, acc_jobs, acc_missing, weights, left_out)
    finally:
        sweep_stale_partials(art_dir)  # a worker killed mid-export (and retried) left its staging behind
        if on_ray:
            ray_exec.shutdown()


def _export_bench_report(cfg, bench_cfg, log, out, art_dir, jobs, acc_jobs, acc_missing, weights, left_out):
    from tqdm import tqdm

    from mobilellm.benchmarks import accuracy_run, schema
    from mobilellm.benchmarks import bench as local_bench
    from mobilellm.benchmarks.report import build_report
    if cfg.executor == "ray" or cfg.bench_on == "ray":
        from mobilellm.benchmarks import ray_exec
    if cfg.executor == "ray":
        ray_exec.export_all(jobs + acc_jobs, cfg, art_dir)
    else:
        export_all(jobs + acc_jobs, cfg, art_dir, cfg.workers)
    eval_all = ray_exec.eval_all if cfg.executor == "ray" else accuracy_run.eval_all  # accuracy is not timing
    bench = ray_exec.bench if cfg.bench_on == "ray" else local_bench.bench  # records name the host either way
    ok = [j for j in jobs if j.path is not None and j.status in ("exported", "reused")]
    records, missing = [], []
    results = out / "results.json"
    missing += [missing_row(j) for j in jobs if j.path is None]
    try:
        groups = comparisons(ok)  # a sharing table's variants: alternating processes, then paired ones
        bar = tqdm(total=sum(local_bench.processes(len(g), bench_cfg) for g in groups), desc="benchmark",
                   unit="process", file=sys.stderr)
        for group in groups:
            recs, miss = bench([j.path for j in group], bench_cfg)
            bar.update(local_bench.processes(len(group), bench_cfg))
            records += recs
            missing += miss
            schema.save(results, records, missing)  # every finished record survives a later failure
        bar.close()
        acc_records, acc_miss = eval_all(acc_jobs, bench_cfg.threads)
        records += acc_records
        missing += acc_missing + acc_miss + [missing_row(j) for j in acc_jobs if j.path is None]
    finally:
        schema.save(results, records, missing)
    notes = [f"latency: {weights}" + (" — latency does not depend on weight values" if not cfg.checkpoint else ""),
             "accuracy: " + (f"trained presets {', '.join(cfg.accuracy)} (models/trained/, real weights) on held-out "
                             "text they never trained on" if cfg.accuracy else "not run (--accuracy none)"),
             f"scheme requested: {', '.join(cfg.quant)}; max sequence length {cfg.max_seq_len}",
             *scheme_notes(jobs + acc_jobs),
             *filter(None, [left_out]),
             f"bench: warm-up {bench_cfg.warmup}, {bench_cfg.iters} iterations x {bench_cfg.cold_runs} cold processes, "
             f"{bench_cfg.threads} threads, prompt {min(bench_cfg.prompt_len, cfg.max_seq_len // 2)} tokens, decode timed at that position"
             + (f" and at {', '.join(map(str, bench_cfg.positions))} (steps advancing as in a generation)"
                if bench_cfg.positions else "")]
    report = build_report([results], out, notes=notes)
    (out / "jobs.json").write_text(json.dumps([{"variant": j.variant, "backend": j.backend, "scheme": j.scheme,
                                               "model": j.args.name, "status": j.status, "note": j.note,
                                               "artifact": str(j.path) if j.path else None} for j in jobs], indent=1))
    log("")
    log(f"{'variant':<22} {'backend':<18} {'scheme':<11} {'status':<20} {'size MB':>8} {'decode ms':>10} {'init ms':>9}")
    for j in jobs:
        m = {r["metric"]: r["value"] for r in records if j.path and r.get("artifact") == j.path.name
             and r["statistic"] in ("median", "single")}
        size = m.get("size_mb", (j.manifest.get("sizes") or {}).get("file_bytes", float("nan")) / 1e6)
        log(f"{j.args.variant:<22} {j.backend:<18} {j.scheme:<11} {j.status:<20} "
            f"{size:>8.1f} {m.get('decode_ms', float('nan')):>10.2f} "
            f"{m.get('init_ms', float('nan')):>9.1f}")
    ppl = {(r["artifact"], r["metric"]): r["value"] for r in records if r.get("artifact") and r["metric"] in
           ("perplexity", "top1_agreement")}
    refs = {r["model"]: r["value"] for r in records if r["backend"] == "eager" and r["metric"] == "perplexity"}
    for j in acc_jobs:
        p = ppl.get((j.path.name, "perplexity")) if j.path else None
        ref = refs.get(j.args.name)
        log(f"{j.args.name + ' (accuracy)':<22} {j.backend:<18} {j.scheme:<11} {j.status:<20} " + (
            f"perplexity {p:.3f} (eager fp32 {ref:.3f}, {(p / ref - 1) * 100:+.2f}%), top-1 "
            f"{ppl.get((j.path.name, 'top1_agreement'), float('nan')):.4f}" if p and ref else j.note[:60]))
    log(f"\nreport: {report}")
    return report
