"""No traceback and nothing lost: bad input, bugs, full disks, signals, concurrent runs, resuming.

Each class of failure is pinned here (the README's reliability table names these tests)."""
from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import ROOT, call_cli, run_cli
from mobilellm.errors import UserError

FAST_EXPORT = ("export", "--model", "tiny-random", "--backend", "onnx", "--quant", "fp32", "--max-seq-len", "64")


def _one_clear_line(p: subprocess.CompletedProcess, rc: int = 2) -> str:
    assert p.returncode == rc, (p.returncode, p.stderr[-2000:])
    assert "Traceback" not in p.stderr + p.stdout, p.stderr[-2000:]
    lines = [ln for ln in p.stderr.splitlines() if "error" in ln]
    assert len(lines) == 1, p.stderr[-2000:]
    return lines[0]


def _bad_checkpoint(tmp_path: Path, name: str, mutate) -> Path:
    from mobilellm.models.checkpoint import save_checkpoint
    from mobilellm.models.config import from_name
    from mobilellm.models.model import build
    from safetensors.torch import load_file, save_file
    d = tmp_path / name
    save_checkpoint(build(from_name("tiny-random"), seed=1), d)
    sd = load_file(d / "model.safetensors")
    mutate(sd)
    save_file(sd, d / "model.safetensors")
    return d


def test_catalogue_of_bad_inputs_each_gets_one_line(tmp_path):
    nan = _bad_checkpoint(tmp_path, "nan", lambda sd: sd["model.layers.1.mlp.up_proj.weight"].view(-1)[7:9].fill_(float("nan")))
    ints = _bad_checkpoint(tmp_path, "ints", lambda sd: sd.update({"model.norm.weight": sd["model.norm.weight"].to(torch.int32)}))
    (tmp_path / "m.onnx").write_bytes(b"x")
    (tmp_path / "m.onnx.manifest.json").write_text('{"schema": "mobilellm.manifest", "version": 9}')
    (tmp_path / "r.json").write_text('{"schema": "mobilellm.results", "version": 99, "records": []}')
    cases = [
        (("generate", "--prompt-ids", "1,99999"), "token id(s) [99999] outside the vocabulary [0, 2048)"),
        (("generate", "--temperature", "-1"), "--temperature must be a finite number >= 0"),
        (("generate", "--top-k", "0"), "--top-k must be >= 1"),
        (("export", "--model", "tiny-random", "--backend", "onnx", "--max-seq-len", "-5"), "--max-seq-len must be"),
        (("export", "--checkpoint", nan, "--backend", "onnx", "--quant", "fp32", "--out", tmp_path),
         "model.layers.1.mlp.up_proj.weight holds 2 non-finite value(s)"),
        (("export", "--checkpoint", ints, "--backend", "onnx", "--quant", "fp32", "--out", tmp_path),
         "model.norm.weight has dtype int32; weights must be floating point"),
        (("export", "--model", "tiny-random", "--quant", "int3"), "unknown quantization scheme 'int3'; valid for executorch"),
        (("export", "--model", "tiny-random", "--backend", "coreml", "--quant", "w8a8"),
         "its closest to w8a8 is 'w8a8-static'"),
        (("export", "--model", "tiny-random", "--backend", "tflite"), "unknown backend 'tflite'; valid: "),
        (("bench", tmp_path / "m.onnx"), "has version 9; this mobilellm reads versions 1, 2"),
        (("report", tmp_path / "r.json"), "version"),
        (("run", "--workers", "0", "--out", tmp_path / "run"), "--workers must be >= 1"),
        (("info", "7B"), "unknown model '7B'; valid: "),
    ]
    for args, want in cases:  # in this process (the exit path through a real process: the tests below)
        line = _one_clear_line(call_cli(*args, check_rc=None))
        assert want in line, (args, line)


def test_an_unexpected_error_is_one_line_and_a_log_with_the_traceback(tmp_path, monkeypatch, capsys):
    from mobilellm import cli
    from mobilellm.commands import info
    monkeypatch.setenv("MOBILELLM_LOG_DIR", str(tmp_path / "logs"))

    def boom(ns):
        raise ZeroDivisionError("a bug")
    monkeypatch.setattr(info, "main", boom)
    assert cli.main(["info", "125M"]) == 1
    err = capsys.readouterr().err
    assert "unexpected error" in err and "ZeroDivisionError: a bug" in err and "Traceback" not in err
    log = next((tmp_path / "logs").glob("*-info.log"))
    assert "Traceback" in log.read_text() and "boom" in log.read_text()
    assert str(log) in err


def test_a_full_disk_names_the_path_and_the_bytes_needed(tmp_path, monkeypatch, capsys):
    """A real 64 KiB tmpfs where this machine allows mounting one (root); else the same ENOSPC raised
    by the writer. Either way: one line with the bytes needed, nothing half-written."""
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(small)],
                             capture_output=True).returncode == 0
    try:
        if mounted:
            p = run_cli(*FAST_EXPORT, "--out", small, check_rc=None)
            line = _one_clear_line(p)
        else:
            import onnx
            from mobilellm import cli

            def full(*a, **k):
                raise OSError(errno.ENOSPC, "No space left on device", str(small / "x.onnx"))
            monkeypatch.setattr(onnx, "save", full)
            assert cli.main([*FAST_EXPORT, "--out", str(small)]) == 2
            line = capsys.readouterr().err.strip().splitlines()[-1]
        assert "no space left on the device" in line and "it needs about" in line and "MB" in line, line
        assert [p.name for p in small.iterdir()] == []
    finally:
        if mounted:
            subprocess.run(["umount", str(small)], check=False)


def test_a_read_only_output_is_one_line(tmp_path, monkeypatch, capsys):
    """A read-only tmpfs where mounting is allowed (root ignores mode bits); else mode bits."""
    ro = tmp_path / "ro"
    ro.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(ro)],
                             capture_output=True).returncode == 0
    if not mounted:
        ro.chmod(0o500)
    try:
        assert not os.access(ro, os.W_OK), "neither a read-only mount nor mode bits make this directory read-only"
        line = _one_clear_line(run_cli(*FAST_EXPORT, "--out", ro / "sub", check_rc=None))
        assert str(ro) in line and ("not writable" in line or "cannot create output directory" in line), line
    finally:
        if mounted:
            subprocess.run(["umount", str(ro)], check=False)
        ro.chmod(0o700)


def _wait_for(pred, timeout: float, what: str):
    t0 = time.time()
    while not pred():
        assert time.time() - t0 < timeout, f"timed out waiting for {what}"
        time.sleep(0.05)


def _start(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mobilellm.cli", *map(str, args)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_export_abandons_it_cleanly_and_a_rerun_finishes(tmp_path, sig):
    proc = _start(*FAST_EXPORT, "--out", tmp_path)
    _wait_for(lambda: any(p.name.startswith(".partial-") for p in tmp_path.iterdir()), 120, "the export to stage")
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err[-2000:]
    assert "Traceback" not in err and "a rerun resumes" in err
    assert [p.name for p in tmp_path.iterdir()] == []  # nothing that looks valid, no lock left
    run_cli(*FAST_EXPORT, "--out", tmp_path)
    assert (tmp_path / "tiny-random_fp32_onnx.onnx").is_file()


def _run_args(out: Path, variants: str = "base,shared") -> tuple:
    return ("run", "--models", "tiny-random", "--backends", "onnx", "--quant", "fp32", "--variants", variants,
            "--max-seq-len", "64", "--iters", "1", "--warmup", "0", "--cold-runs", "1", "--accuracy", "none",
            "--workers", "1", "--out", out)


def test_sigterm_during_run_keeps_finished_artifacts_and_the_rerun_resumes(tmp_path):
    art = tmp_path / "artifacts"
    proc = _start(*_run_args(tmp_path))
    # the first finished artifact (LS 2x2 exports first: longest first), then a second one staging
    _wait_for(lambda: art.is_dir() and any(p.suffix == ".onnx" and not p.name.startswith(".") for p in art.iterdir())
              and any(p.name.startswith(".partial-") for p in art.iterdir()), 300, "one export done, one staging")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "Traceback" not in err, err[-3000:]
    left = sorted(p.name for p in art.iterdir())
    assert not [n for n in left if n.startswith(".partial-")], left
    finished = [n for n in left if n.endswith(".onnx")]
    assert finished and all(f"{n}.manifest.json" in left for n in finished), left
    p = run_cli(*_run_args(tmp_path))
    assert "reused" in p.stderr and "exported" in p.stderr, p.stderr[-3000:]


def test_a_signal_while_publishing_waits_for_the_manifest(tmp_path):
    """The finished file, then `.genai/`, then the manifest: a SIGTERM between them (seen in CI: a run
    stopped while ONNX's genai directory was staged) finishes the publish, then stops."""
    script = (
        "import os, signal, sys\n"
        "from mobilellm.export.base import get_backend\n"
        "b = get_backend('onnx')\n"
        "orig = b.after_publish\n"
        "def stopped(*a):\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    return orig(*a)\n"
        "b.after_publish = stopped\n"
        "from mobilellm.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n")
    p = subprocess.run([sys.executable, "-c", script, *FAST_EXPORT, "--out", str(tmp_path)], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 143 and "Traceback" not in p.stderr, p.stderr[-3000:]
    assert "stopped by SIGTERM" in p.stderr, p.stderr[-3000:]
    left = sorted(q.name for q in tmp_path.iterdir())
    assert not [n for n in left if n.startswith(".partial-")], left
    art = tmp_path / "tiny-random_fp32_onnx.onnx"
    assert art.is_file() and (tmp_path / f"{art.name}.manifest.json").is_file(), left
    assert (tmp_path / "tiny-random_fp32_onnx.genai" / "genai_config.json").is_file(), left
    import json
    from mobilellm.io import sha256
    m = json.loads((tmp_path / f"{art.name}.manifest.json").read_text())
    assert m["sha256"] == sha256(art) and m["verification"]["passed"], m["verification"]


def test_a_second_signal_while_publishing_stops_at_once():
    """The first signal waits for the publish; a second (a user pressing Ctrl-C again on a stalled disk) does not."""
    script = ("import os, signal, time\n"
              "from mobilellm import failures\n"
              "failures.install_signal_handlers()\n"
              "with failures.publishing():\n"
              "    os.kill(os.getpid(), signal.SIGTERM)\n"
              "    print('deferred', flush=True)\n"
              "    os.kill(os.getpid(), signal.SIGTERM)\n"
              "    print('not reached', flush=True)\n"
              "    time.sleep(30)\n")
    p = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 143 and p.stdout.split() == ["deferred"], (p.returncode, p.stdout, p.stderr[-2000:])
    assert "Traceback" not in p.stderr and "stopped by SIGTERM" in p.stderr, p.stderr[-2000:]


def test_two_runs_on_one_directory_do_not_interleave(tmp_path):
    first = _start(*_run_args(tmp_path, "base"))
    _wait_for(lambda: (tmp_path / ".mobilellm-run.lock").is_file() and
              (tmp_path / ".mobilellm-run.lock").read_text().strip() == str(first.pid), 120, "the first run's lock")
    second = run_cli(*_run_args(tmp_path, "base"), check_rc=None)
    line = _one_clear_line(second)
    assert f"is in use by another mobilellm process (pid {first.pid})" in line
    _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err[-3000:]


def test_two_forced_exports_of_one_artifact_do_not_interleave(tmp_path):
    first = _start(*FAST_EXPORT, "--out", tmp_path, "--force")
    lock = tmp_path / ".tiny-random_fp32_onnx.onnx.lock"
    _wait_for(lambda: lock.is_file() and lock.read_text().strip() == str(first.pid), 120, "the first export's lock")
    line = _one_clear_line(run_cli(*FAST_EXPORT, "--out", tmp_path, "--force", check_rc=None))
    assert "is in use by another mobilellm process" in line
    first.communicate(timeout=300)
    assert first.returncode == 0


# --- resuming never reuses the wrong artifact --------------------------------------------------


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    from mobilellm.benchmarks.pipeline import Job, RunConfig, export_job, variant_args
    from mobilellm.models.config import from_name
    out = tmp_path_factory.mktemp("reuse")
    cfg = RunConfig(models=("tiny-random",), backends=("onnx",), quant="fp32", max_seq_len=64, out=out)
    job = export_job(Job("base", "onnx", "fp32", variant_args(from_name("tiny-random"), "base")), cfg, out)
    assert job.status == "exported", job.note
    return cfg, out, job


def _again(cfg, out):
    from mobilellm.benchmarks.pipeline import Job, export_job, variant_args
    from mobilellm.models.config import from_name
    return export_job(Job("base", "onnx", "fp32", variant_args(from_name("tiny-random"), "base")), cfg, out)


def test_reuse_needs_the_same_settings_and_the_recorded_bytes(made):
    import dataclasses
    from mobilellm.manifest import manifest_path
    cfg, out, job = made
    assert _again(cfg, out).status == "reused"
    assert _again(dataclasses.replace(cfg, seed=1), out).status == "exported"  # other weights
    assert _again(cfg, out).status == "exported"  # and back: the file was replaced
    data = bytearray(job.path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    job.path.write_bytes(bytes(data))  # corrupt, same size
    assert _again(cfg, out).status == "exported"
    other = out / "other.onnx"
    other.write_bytes(b"not the model")
    os.replace(other, job.path)  # swapped
    assert _again(cfg, out).status == "exported"
    manifest_path(job.path).unlink()  # a stop between the artifact's rename and its manifest's
    assert _again(cfg, out).status == "exported"
    assert _again(cfg, out).status == "reused"


def test_reuse_is_refused_when_the_code_changed(made, monkeypatch):
    from mobilellm import manifest
    cfg, out, _ = made
    monkeypatch.setattr(manifest, "code_hash", lambda: "a-lowering-fix")
    from mobilellm.export import pipeline
    monkeypatch.setattr(pipeline, "code_hash", lambda: "a-lowering-fix")
    assert _again(cfg, out).status == "exported"


def test_each_job_status_on_rerun(made, monkeypatch):
    """failed verification -> exported again; refused -> refused again; crashed -> exported again."""
    from mobilellm.benchmarks import pipeline as P
    from mobilellm.manifest import manifest_path, read_manifest, write_manifest
    cfg, out, job = made
    m = read_manifest(job.path)
    m["verification"] = {"passed": False}
    write_manifest(job.path, m)
    assert _again(cfg, out).status == "exported"
    jobs = P.plan(P.RunConfig(models=("tiny-random",), backends=("coreml",), quant="8da4w", out=out))
    assert {j.status for j in jobs} == {"skipped"} and "8da4w" in jobs[0].note
    manifest_path(job.path).unlink()
    job.path.unlink()  # a crashed job leaves nothing under the final name
    assert _again(cfg, out).status == "exported"


def test_run_refuses_nothing_but_sweeps_stale_staging_of_dead_processes(tmp_path):
    from mobilellm.io import sweep_stale_partials
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / f".partial-{dead.pid}-x.onnx").write_bytes(b"half")
    (tmp_path / f".partial-{os.getpid()}-y.onnx").write_bytes(b"mine")
    assert [p.name for p in sweep_stale_partials(tmp_path)] == [f".partial-{dead.pid}-x.onnx"]


def test_a_disk_error_other_than_full_or_denied_is_still_one_line(tmp_path, monkeypatch, capsys):
    from mobilellm import cli
    from mobilellm.commands import info
    monkeypatch.setenv("MOBILELLM_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setattr(info, "main", lambda ns: (_ for _ in ()).throw(OSError(errno.EIO, "I/O error", "/dev/x")))
    assert cli.main(["info", "125M"]) == 1
    assert "unexpected error" in capsys.readouterr().err


def test_user_error_is_the_one_error_type(tmp_path):
    with pytest.raises(UserError):
        from mobilellm.export.base import ExportConfig
        ExportConfig(max_seq_len=-5)
