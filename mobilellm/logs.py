"""Keep the terminal readable: drop the native runtimes' chatter and library warnings.

ExecuTorch's C++ runtime logs to stderr at info level (cpuinfo probing, "No temp allocator
provided" per custom-op call); torch/torchao emit deprecation warnings on import. Set
MOBILELLM_VERBOSE=1 to see everything."""
from __future__ import annotations

import atexit
import contextlib
import logging
import os
import re
import sys
import threading
import warnings

# A native log line may land glued to a progress bar's line, so noise is cut from where it starts.
NOISE = re.compile(rb"\[(cpuinfo_utils\.cpp|kernel_runtime_context\.h|XNNPACKBackend\.cpp|method\.cpp|"
                   rb"program\.cpp|operator_registry\.cpp|threadpool\.cpp)[:\]].*|Failed to load .*torchao/_C.*|"
                   rb"W\d{4} .*(_pytree|KernelPreference).*")


def _clean(line: bytes) -> bytes | None:
    kept = NOISE.sub(b"", line)
    return None if kept != line and not kept.strip(b" \r") else kept


def quiet() -> None:
    if os.environ.get("MOBILELLM_VERBOSE"):
        return
    warnings.filterwarnings("ignore")
    logging.getLogger("torch").setLevel(logging.ERROR)
    logging.getLogger("torchao").setLevel(logging.ERROR)
    logging.getLogger("coremltools").setLevel(logging.ERROR)
    _filter_fd2()


def _filter_fd2() -> None:
    """Route file descriptor 2 through a thread that drops known noise lines."""
    try:
        real = os.dup(2)
        r, w = os.pipe()
        os.dup2(w, 2)
        os.close(w)
    except OSError:
        return

    def pump():
        with os.fdopen(r, "rb", buffering=0) as src:
            buf = b""
            while True:
                chunk = src.read(65536)
                if not chunk:
                    break
                buf += chunk
                # Pass on every finished piece at once, progress-bar redraws (ending in \r) included.
                *pieces, buf = re.split(rb"(?<=[\r\n])", buf)
                out = b"".join(c + p[-1:] for p in pieces if (c := _clean(p[:-1])) is not None)
                if out:
                    os.write(real, out)
            if buf and _clean(buf) is not None:
                os.write(real, _clean(buf))

    t = threading.Thread(target=pump, daemon=True)
    t.start()

    def finish():
        sys.stderr.flush()
        os.dup2(real, 2)  # closes the pipe's last writer: the pump drains and stops
        t.join(timeout=2)

    atexit.register(finish)
    _DRAIN.append(finish)


_DRAIN: list = []


@contextlib.contextmanager
def native_stderr_silenced():
    """File descriptor 2 to /dev/null for the block: native code that logs per call (ExecuTorch's int8 attention
    outside a program; Ray's C++ client on a failed join) says nothing, and no filter thread runs meanwhile."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def drain() -> None:
    """Pass on what the filter holds (for an exit that skips atexit: os._exit after a signal)."""
    while _DRAIN:
        _DRAIN.pop()()
