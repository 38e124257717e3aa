"""`mobilellm run --executor ray`: every export and accuracy job is a Ray task in a process of its own
(`max_calls=1`), declaring the CPUs and memory the size table measured, so the scheduler does not
pack two big exports onto one node; a task whose worker dies is retried. Artifacts land in the run's
output directory, which every node must see (checked before anything is submitted). Timing stays
where `run` was started unless `--bench-on ray`.

Ray is an extra (`pip install 'mobilellm[ray]'`): the default local executor needs nothing of it."""
from __future__ import annotations

import os
import secrets
import socket
import sys
from pathlib import Path

from mobilellm.errors import UserError
from mobilellm.logs import native_stderr_silenced

CONNECT_TIMEOUT_S = 10.0  # an unreachable --ray-address is reported after this, not hung on
MAX_RETRIES = 2  # a task whose worker process died (killed for memory, node lost) runs again up to this often


def _ray():
    try:
        import ray
    except ImportError:
        raise UserError("--executor ray needs Ray: pip install 'mobilellm[ray]'") from None
    return ray


def _reachable(address: str) -> None:
    """A host:port address (or ray://host:port) must accept a TCP connection within the timeout."""
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--ray-address {address!r} is not HOST:PORT (or ray://HOST:PORT, or 'auto')")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as e:
        raise UserError(f"cannot reach Ray at {address} within {CONNECT_TIMEOUT_S:.0f} s "
                        f"({e.strerror or type(e).__name__}); start it with `ray start --head` or omit "
                        f"--ray-address to start a local one") from None


def connect(address: str | None):
    """Join the Ray cluster at `address`, or start/join a local instance (None)."""
    ray = _ray()
    if ray.is_initialized():
        return ray
    if address and address != "auto":
        _reachable(address)
    try:
        with native_stderr_silenced():  # Ray's C++ client logs its own copy of a failure to join
            ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    except ConnectionError as e:
        raise UserError(f"cannot join Ray at {address or 'the local instance'}: {str(e).splitlines()[0]} "
                        f"(is that a Ray head's GCS port? `ray status --address {address}`)") from None
    return ray


def _nodes(ray) -> list[dict]:
    return [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0]


def check_shared(ray, out: Path) -> None:
    """Every node with CPUs must see `out`: a marker written here is read back by a task pinned to each."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    token = secrets.token_hex(8)
    marker = out / f".ray-probe-{token}"
    marker.write_text(token)

    @ray.remote(num_cpus=0)
    def probe(path: str, want: str):
        try:
            return Path(path).read_text() == want, socket.gethostname()
        except OSError:
            return False, socket.gethostname()

    try:
        refs = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                .remote(str(marker.resolve()), token) for n in _nodes(ray)]
        blind = [host for seen, host in ray.get(refs, timeout=120) if not seen]
    finally:
        marker.unlink(missing_ok=True)
    if blind:
        raise UserError(f"the output directory {out.resolve()} is not visible from Ray node(s) {', '.join(blind)}: "
                        f"artifacts made there would not land here; use an --out every node mounts")


def _largest_node_memory(ray) -> int:
    return int(max((n["Resources"].get("memory", 0) for n in _nodes(ray)), default=0))


def _task_env(threads: int) -> dict:
    """What the local pool's initializer sets, before the task's process imports torch."""
    return {"env_vars": {"TQDM_DISABLE": "1", "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}}


def _export_task(job, cfg, art_dir):
    from mobilellm import failures
    from mobilellm.benchmarks.pipeline import export_job
    from mobilellm.logs import quiet
    failures.install_signal_handlers(worker=True)  # a SIGTERM removes this export's staged files
    quiet()
    return export_job(job, cfg, art_dir)


def _accuracy_task(job, threads):
    from mobilellm.benchmarks.accuracy_run import eval_all
    from mobilellm.logs import quiet
    quiet()
    return eval_all([job], threads)


def _bench_task(paths, bench_cfg):
    from mobilellm.benchmarks.bench import bench
    return bench(paths, bench_cfg)


def export_all(jobs: list, cfg, art_dir: Path) -> None:
    """The local pool's contract on Ray: each pending job ends exported, reused, refused, failed or crashed."""
    from tqdm import tqdm

    from mobilellm import failures
    from mobilellm.benchmarks.pipeline import export_threads, job_memory_bytes, too_big
    ray = connect(cfg.ray_address)
    check_shared(ray, art_dir)
    threads = export_threads(cfg)  # decided here, so the settings hash matches a local run's
    remote = ray.remote(max_calls=1, max_retries=MAX_RETRIES)(_export_task)
    largest = _largest_node_memory(ray)
    todo, refs = [j for j in jobs if j.status == "pending"], {}
    for job in todo:
        if too_big(job, largest, "the largest Ray node"):
            continue  # Ray would hold an infeasible task forever
        refs[remote.options(num_cpus=threads, memory=job_memory_bytes(job), runtime_env=_task_env(threads),
                            name=f"export {job.args.name} {job.backend} {job.scheme}").remote(job, cfg, art_dir)] = job
    failures.on_stop(lambda: [ray.cancel(r, force=True) for r in refs])
    bar = tqdm(total=len(refs), desc="export + verify (ray)", unit="artifact", file=sys.stderr)
    pending = list(refs)
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        job = refs[ready[0]]
        try:
            done = ray.get(ready[0])
            job.path, job.manifest, job.status, job.note = done.path, done.manifest, done.status, done.note
        except Exception as e:  # retries spent: the worker kept dying, or the task raised
            job.status, job.note = "crashed", f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
        tqdm.write(f"  {job.backend} {job.scheme} {job.args.name} ({job.args.variant}): {job.status} "
                   f"{job.note[:160]}", file=sys.stderr)
        bar.update(1)
    bar.close()


def eval_all(jobs: list, threads: int) -> tuple[list[dict], list[dict]]:
    from mobilellm.benchmarks.accuracy import merge_records
    ray = _ray()
    remote = ray.remote(max_calls=1, max_retries=MAX_RETRIES)(_accuracy_task)
    refs = [remote.options(num_cpus=threads, runtime_env=_task_env(threads)).remote(j, threads)
            for j in jobs if j.path is not None]
    records, missing, seen = [], [], set()
    for recs, miss in ray.get(refs):
        merge_records(records, seen, recs)
        missing += miss
    return records, missing


def bench(paths: list[Path], bench_cfg):
    """Artifacts timed on whichever Ray node has `threads` CPUs free; their records name that host."""
    ray = _ray()
    remote = ray.remote(max_calls=1)(_bench_task)
    return ray.get(remote.options(num_cpus=bench_cfg.threads, runtime_env=_task_env(bench_cfg.threads))
                   .remote(paths, bench_cfg))


def shutdown() -> None:
    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        sys.modules["ray"].shutdown()
