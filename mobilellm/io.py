"""Atomic writes: an artifact appears under its final name only when complete."""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from pathlib import Path


_STAGED: dict[Path, None] = {}  # temporary paths of this process, removed if it is stopped by a signal


def register_staged(p: Path) -> None:
    _STAGED[Path(p)] = None


def unregister_staged(p: Path) -> None:
    _STAGED.pop(Path(p), None)


def remove_staged() -> None:
    for p in list(_STAGED):
        remove_path(p)
        remove_path(p.with_name(p.stem + ".ptd"))  # a program's staged data file (same stem)
    _STAGED.clear()


@contextlib.contextmanager
def staging_path(final: Path):
    """Yield a temporary sibling path of `final` (same suffix, hidden name); it is removed on exit,
    whatever happened (a signal included): the caller publishes it with `publish` before that."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".partial-{os.getpid()}-{final.name}")  # keeps the suffix runtimes look at
    remove_path(tmp)
    register_staged(tmp)
    try:
        yield tmp
    finally:
        remove_path(tmp)
        unregister_staged(tmp)


@contextlib.contextmanager
def library_temp_beside(final: Path):
    """Point `tempfile` (what coremltools' converter writes its weights and temporary .mlpackages into,
    gigabytes at 1B) at a staged directory beside `final` while an export runs: the space is taken on
    the filesystem the artifact goes to, and an error or a signal removes it with the rest of the
    staging, where the system temp dir kept whatever an exit without coremltools' atexit left."""
    import tempfile
    final = Path(final)
    d = final.with_name(f".partial-{os.getpid()}-tmp-{final.name}")
    remove_path(d)
    register_staged(d)
    d.mkdir(parents=True)
    before = tempfile.tempdir
    tempfile.tempdir = str(d)
    try:
        yield d
    finally:
        tempfile.tempdir = before
        remove_path(d)
        unregister_staged(d)


def publish(tmp: Path, final: Path) -> None:
    """Rename a finished temporary file or directory (a .mlpackage) onto its final name."""
    if final.is_dir() and not final.is_symlink():
        shutil.rmtree(final)
    os.replace(tmp, final)


@contextlib.contextmanager
def atomic_path(final: Path):
    """Yield a temporary sibling path; rename it onto `final` on success, remove it on error.
    Works for files and for directories (a .mlpackage)."""
    with staging_path(final) as tmp:
        yield tmp
        publish(tmp, Path(final))


def remove_path(p: Path) -> None:
    """Remove a file or a directory tree, if there."""
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    elif p.exists() or p.is_symlink():
        p.unlink()


def sha256(path: Path) -> str:
    """Of a file, or of a directory's files in sorted order (relative names included)."""
    h = hashlib.sha256()
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        if path.is_dir():
            h.update(str(f.relative_to(path)).encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def size_bytes(path: Path) -> int:
    path = Path(path)
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


@contextlib.contextmanager
def path_lock(lock_file: Path, what: str):
    """An exclusive, non-blocking lock (flock) held for the block; a second holder gets one clear
    error naming the first's pid. The lock file exists only while held: it is unlinked before the
    lock is released, and a taker checks that the file it locked is still the one at the path."""
    import fcntl
    from mobilellm.errors import UserError
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise UserError(f"{what} is in use by another mobilellm process (pid {other}); wait for it to finish "
                            f"or choose another --out") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock_file).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder unlinked it between our open and our flock: take the new one
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        _STAGED[lock_file] = None  # a signal's cleanup removes it too
        yield
    finally:
        _STAGED.pop(lock_file, None)
        try:
            os.unlink(lock_file)
        except FileNotFoundError:
            pass
        os.close(fd)


def artifact_lock(final: Path):
    """Held while one artifact is exported (two `export --force` of one name must not interleave)."""
    final = Path(final)
    return path_lock(final.with_name(f".{final.name}.lock"), str(final))


def dir_lock(directory: Path):
    """Held by `mobilellm run` for its whole output directory."""
    return path_lock(Path(directory) / ".mobilellm-run.lock", f"output directory {directory}")


def sweep_stale_partials(directory: Path) -> list[Path]:
    """Remove `.partial-<pid>-*` staging files of processes that no longer exist (a SIGKILL)."""
    import re
    removed = []
    for p in Path(directory).glob(".partial-*"):
        m = re.match(r"\.partial-(\d+)-", p.name)
        if m and not _alive(int(m[1])):
            remove_path(p)
            removed.append(p)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
