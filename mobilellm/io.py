"""Atomic writes: an artifact appears under its final name only when complete."""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from pathlib import Path


@contextlib.contextmanager
def staging_path(final: Path):
    """Yield a temporary sibling path of `final` (same suffix, hidden name); it is removed on exit,
    whatever happened: the caller publishes it with `publish` before that."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".partial-{os.getpid()}-{final.name}")  # keeps the suffix runtimes look at
    remove_path(tmp)
    try:
        yield tmp
    finally:
        remove_path(tmp)


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
