"""`run --executor ray` on a Ray cluster these tests start themselves (loopback only): the same
artifacts and settings hashes as the local executor, reuse across executors in both directions, a
worker killed mid-export retried to a verified artifact, and an export too big for any node refused
in the report while the rest of the grid runs."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytest.importorskip("ray")

TEST_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled"}
SWEEP = ("run", "--backends", "onnx", "--quant", "fp32", "--accuracy", "none", "--max-seq-len", "64",
         "--warmup", "1", "--iters", "3", "--cold-runs", "1", "--positions", "none")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster():
    """A one-node Ray head on 127.0.0.1 with 2 CPUs and 4 GiB of schedulable memory."""
    port = _free_port()
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths live under it
    # Ray on Linux swaps 127.0.0.1 for the machine's address: LOOPBACK keeps head, workers and drivers on
    # loopback; and a loopback-only test cluster needs no token authentication (Ray's default since 2.5x)
    saved = {k: os.environ.get(k) for k in TEST_ENV}
    os.environ.update(TEST_ENV)
    ray_cli = Path(sys.executable).with_name("ray")
    head = subprocess.Popen([str(ray_cli), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
                             f"--port={port}", "--num-cpus=2", f"--memory={4 * 2**30}",
                             f"--object-store-memory={200 * 2**20}", f"--temp-dir={temp}", "--include-dashboard=false",
                             "--disable-usage-stats"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    address = f"127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert head.poll() is None and time.time() < deadline, "the Ray head did not start"
            time.sleep(0.5)
    yield address
    os.killpg(head.pid, signal.SIGTERM)  # --block: ending it stops every process it started
    try:
        head.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k)
        else:
            os.environ[k] = v


def _jobs(out: Path) -> dict:
    return {j["model"]: j for j in json.loads((out / "jobs.json").read_text())}


def _workers(title: str) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and (d / "cmdline").read_bytes().startswith(title.encode()):
                pids.append(int(d.name))
        except OSError:
            continue
    return pids


def test_a_ray_sweep_survives_a_killed_worker_and_matches_the_local_executor(cluster, tmp_path, cli):
    out = tmp_path / "run"
    arts = out / "artifacts"
    # 1.5B: ONNX's export needs ~12 GiB (measured peak 12,014 MiB); this node offers 4: refused, the rest runs
    run = subprocess.Popen([sys.executable, "-m", "mobilellm.cli", *SWEEP, "--models", "tiny-random,1.5B",
                            "--variants", "base", "--executor", "ray", "--ray-address", cluster, "--out", str(out)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = None
    deadline = time.time() + 600
    while killed is None and run.poll() is None and time.time() < deadline:
        staged = list(arts.glob(".partial-*")) if arts.is_dir() else []
        workers = _workers("ray::export tiny-random onnx fp32")
        if staged and workers:  # the export is under way: its worker dies as if killed for memory
            os.kill(workers[0], signal.SIGKILL)
            killed = workers[0]
        time.sleep(0.2)
    stdout, stderr = run.communicate(timeout=900)
    assert run.returncode == 0, stderr[-3000:]
    assert killed is not None, "never saw the export in flight"
    jobs = _jobs(out)
    assert jobs["tiny-random"]["status"] == "exported", jobs
    assert jobs["1.5B"]["status"] == "refused" and "the largest Ray node has 4.0 GiB" in jobs["1.5B"]["note"], jobs
    art = Path(jobs["tiny-random"]["artifact"])
    manifest = json.loads(art.with_name(art.name + ".manifest.json").read_text())
    assert manifest["verification"]["passed"] is True
    assert not list(arts.glob(".partial-*")) and not list(arts.glob(".*.lock")), list(arts.iterdir())
    assert "1.5B" in (out / "report.md").read_text()  # the refusal is a row of the report, not a failed run

    # the artifact made on Ray is reused by a local run (same settings hash), which adds the LS twin ...
    cli(*SWEEP, "--models", "tiny-random", "--variants", "base,shared", "--out", out)
    jobs = _jobs(out)
    assert jobs["tiny-random"]["status"] == "reused" and jobs["LS-tiny-random"]["status"] == "exported", jobs
    # ... and back: Ray reuses both (and times them on a Ray node: --bench-on ray)
    cli(*SWEEP, "--models", "tiny-random", "--variants", "base,shared", "--executor", "ray", "--ray-address",
        cluster, "--bench-on", "ray", "--out", out)
    assert {j["status"] for j in _jobs(out).values()} == {"reused"}
    recs = json.loads((out / "results.json").read_text())["records"]
    assert {r["model"] for r in recs if r["metric"] == "decode_ms"} == {"tiny-random", "LS-tiny-random"}


def test_an_output_directory_the_workers_cannot_see_is_named(tmp_path):
    from mobilellm.benchmarks import ray_exec
    from mobilellm.errors import UserError

    class Remote:
        def options(self, **_):
            return self

        def remote(self, path, want):
            assert Path(path).read_text() == want  # the marker is there for a node that shares the directory
            return False, "far-node"  # ... and this one does not

    class FakeRay:
        nodes = staticmethod(lambda: [{"Alive": True, "NodeID": "ab" * 28, "Resources": {"CPU": 2.0}}])
        remote = staticmethod(lambda **_: lambda fn: Remote())
        get = staticmethod(lambda refs, timeout: refs)

    with pytest.raises(UserError, match=r"output directory .* is not visible from Ray node\(s\) far-node"):
        ray_exec.check_shared(FakeRay, tmp_path)
    assert not list(tmp_path.iterdir())  # the marker is gone


def test_bad_executor_input_is_one_line(tmp_path, cli_here):
    closed = _free_port()  # nothing listens there
    for args, want in (
            (("--executor", "slurm"), "unknown --executor 'slurm'; valid: local, ray"),
            (("--bench-on", "gpu"), "unknown --bench-on 'gpu'; valid: local, ray"),
            (("--ray-address", "127.0.0.1:1"), "--ray-address needs --executor ray"),
            (("--executor", "ray", "--ray-address", "nohost"), "is not HOST:PORT"),
            (("--executor", "ray", "--ray-address", f"127.0.0.1:{closed}"), f"cannot reach Ray at 127.0.0.1:{closed} within 10 s"),
            (("--quant", "w8a8,int3"), "--quant: unknown scheme(s) ['int3']; valid: fp32")):
        p = cli_here(*SWEEP, "--models", "tiny-random", "--out", tmp_path / "bad", *args, check_rc=2)
        assert want in p.stderr.strip().splitlines()[-1] and "Traceback" not in p.stderr, p.stderr
