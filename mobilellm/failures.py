"""The one error path of every command, for what is not a `UserError`: signals, full or read-only
disks, and bugs. A user sees one line (and, for a bug, the path of a log holding the traceback)."""
from __future__ import annotations

import errno
import os
import signal
import sys
import time
import traceback
from pathlib import Path


_ON_STOP: list = []  # callbacks run before the process ends on a signal (stop export workers, ...)
_COMMAND = ["mobilellm"]
_DEFERRED: list = []  # [depth, pending signal or None] while a publish is in progress


def on_stop(callback) -> None:
    _ON_STOP.append(callback)


class publishing:
    """A publish in progress (renames, then the manifest, then what is built from the published file):
    a SIGINT / SIGTERM arriving inside waits until it ends, so a stop never leaves a finished artifact
    without its manifest; a second signal stops at once. Only for short, bounded work: the stop is delayed by it."""

    def __enter__(self):
        if not _DEFERRED:
            _DEFERRED[:] = [0, None]
        _DEFERRED[0] += 1
        return self

    def __exit__(self, *exc):
        _DEFERRED[0] -= 1
        if _DEFERRED[0] == 0:
            pending = _DEFERRED[1]
            _DEFERRED.clear()
            if pending is not None:
                _stop(pending, None)
        return False


def _stop(signum, frame):
    """SIGINT / SIGTERM: remove what this process has staged, stop its workers, say so in one line,
    exit 128+signum. No exception is raised into the interrupted code: torch and the exporters run
    C++ that does not survive an exception thrown from a signal handler (seen: a segfault)."""
    from mobilellm.io import remove_staged
    if _DEFERRED and _DEFERRED[1] is None:  # inside `publishing`: stop when it ends; a second signal stops now
        _DEFERRED[1] = signum
        return
    _DEFERRED.clear()
    signal.signal(signum, signal.SIG_IGN)  # a second signal does not interrupt the cleanup
    # the process ends below: a helper thread that trips over what the stop tears down (seen: the process pool's
    # manager thread after its shutdown, `len(None)`) must not print a traceback on the way out
    import threading
    threading.excepthook = lambda args: None
    for cb in reversed(_ON_STOP):
        try:
            cb()
        except Exception:  # noqa: BLE001  best effort: the staged files still go
            pass
    remove_staged()
    if _COMMAND[0]:
        print(f"{_COMMAND[0]}: stopped by {signal.Signals(signum).name}; the artifact in progress was abandoned, "
              f"finished artifacts are kept, a rerun resumes", file=sys.stderr, flush=True)
    from mobilellm.logs import drain
    drain()
    os._exit(128 + signum)


def install_signal_handlers(command: str | None = "mobilellm", worker: bool = False) -> None:
    """SIGINT and SIGTERM end the process through `_stop`. A worker (`worker=True`) stays silent:
    its parent reports the stop once."""
    _COMMAND[0] = None if worker else command
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _stop)


def os_error_line(e: OSError) -> str | None:
    """One line for a disk or permission failure, naming the path; None for other OS errors."""
    where = e.filename or "the output"
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left on the device writing {where}" + _free(where)
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"permission denied writing {where} ({e.strerror}); choose a writable --out"
    return None


def _free(where) -> str:
    import shutil
    p = Path(where)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return f" ({shutil.disk_usage(p).free / 1e6:.0f} MB free there)"
    except OSError:
        return ""


def log_dir() -> Path:
    return Path(os.environ.get("MOBILELLM_LOG_DIR") or Path.home() / ".cache" / "mobilellm" / "logs")


def unexpected(command: str, argv) -> int:
    """A bug: the traceback goes to a log file, the terminal gets one line naming it. Exit 1."""
    etype, value, tb = sys.exc_info()
    text = "".join(traceback.format_exception(etype, value, tb))
    path = None
    try:
        d = log_dir()
        d.mkdir(parents=True, exist_ok=True)
        path = d / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{command}.log"
        path.write_text(f"mobilellm {command} {' '.join(map(str, argv or sys.argv[1:]))}\n\n{text}")
    except OSError:
        path = None
    first = str(value).strip().splitlines()[0][:300] if str(value).strip() else ""
    where = f"; the traceback is in {path}" if path else ""
    print(f"mobilellm {command}: unexpected error (a bug in mobilellm or a library it uses): "
          f"{etype.__name__}{': ' + first if first else ''}{where}", file=sys.stderr)
    return 1
