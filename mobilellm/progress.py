"""Step-by-step progress on stderr: each long step prints its name, then its wall time."""
from __future__ import annotations

import contextlib
import sys
import time


class Steps:
    def __init__(self, title: str = "", quiet: bool = False):
        self.title, self.quiet, self.times = title, quiet, {}
        self.peak_rss_mb: dict[str, float] = {}  # the process's peak RSS when each step ended (where it grew)

    @contextlib.contextmanager
    def step(self, name: str):
        if not self.quiet:
            print(f"  {self.title + ': ' if self.title else ''}{name} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        yield
        self.times[name] = time.perf_counter() - t0
        self.peak_rss_mb[name] = peak_rss_mb()
        if not self.quiet:
            print(f"  {self.title + ': ' if self.title else ''}{name} done in {self.times[name]:.1f} s",
                  file=sys.stderr, flush=True)


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (ru_maxrss)."""
    import resource
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(kb / (1 << 20 if sys.platform == "darwin" else 1 << 10), 1)
