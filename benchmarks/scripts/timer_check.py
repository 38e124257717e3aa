"""Is `mobilellm bench`'s execute figure the runtime's own? Compares, for one ExecuTorch `.pte`,
the decode-step time as `bench` takes it (perf_counter around ExecuTorchSession.forward: tensor
creation, Method.execute, logits to numpy) with the time ExecuTorch itself records for the same
step in its ETDump profile ("Method::execute" events, the runtime's own clock), the two calls
interleaved on two loaded instances of the program.

    python benchmarks/scripts/timer_check.py runs/default/artifacts/125M_w8a8-emb8_executorch.pte

Both timings come from one process and the same calls, so machine load affects them alike."""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def measure(path: Path, prompt_len: int, iters: int, warmup: int, threads: int) -> dict:
    """Two checks on one decode step at position `prompt_len`:
    1. bench's wrapper: ExecuTorchSession.forward (what `bench` times) interleaved with a bare
       Method.execute on prepared tensors: the wrapper's own cost (tensor creation, checks, numpy);
    2. the runtime's clock: the same step on an ETDump-profiled instance, timed from Python and
       read back as its Method::execute events (the same calls)."""
    import torch

    from executorch.devtools import Inspector
    from executorch.extension.pybindings import portable_lib
    from mobilellm.benchmarks.measure import set_threads
    from mobilellm.export.base import open_artifact

    set_threads(threads)
    session = open_artifact(path)  # sets XNNPACK's weight cache, as bench
    prompt = [1] + [(7 * i + 3) % (session.vocab_size - 3) + 3 for i in range(prompt_len - 1)]
    step = (torch.tensor([[5]]), torch.tensor([prompt_len]))
    session.forward(prompt, 0)
    wrapped, bare = [], []
    for i in range(warmup + iters):
        a = time.perf_counter()
        session.forward([5], prompt_len)  # exactly what `mobilellm bench` times for decode_ms
        b = time.perf_counter()
        session.method.execute(step)
        c = time.perf_counter()
        if i >= warmup:
            wrapped.append((b - a) * 1e3)
            bare.append((c - b) * 1e3)
    module = portable_lib._load_for_executorch(str(path), enable_etdump=True)
    module.forward((torch.tensor([prompt]), torch.tensor([0])))
    timed = []
    for i in range(warmup + iters):
        a = time.perf_counter()
        module.forward(step)
        if i >= warmup:
            timed.append((time.perf_counter() - a) * 1e3)
    with tempfile.TemporaryDirectory() as d:
        etdump = Path(d) / "run.etdp"
        module.write_etdump_result_to_file(str(etdump))
        insp = Inspector(etdump_path=str(etdump))
        runtime = [t for block in insp.event_blocks for ev in block.events if ev.name == "Method::execute"
                   for t in ev.perf_data.raw][-iters:]  # ETDump holds every call: prefill and warm-up first
    med = {k: float(np.median(v)) for k, v in (("wrapped", wrapped), ("bare", bare), ("timed", timed),
                                                  ("runtime", runtime))}
    return {"artifact": path.name, "iters": iters, "threads": threads, "decode_position": prompt_len,
            "bench_decode_ms": round(med["wrapped"], 4), "bare_method_execute_ms": round(med["bare"], 4),
            "wrapper_over_bare": round(med["wrapped"] / med["bare"] - 1, 4),
            "python_timed_profiled_ms": round(med["timed"], 4), "runtime_execute_ms": round(med["runtime"], 4),
            "python_over_runtime": round(med["timed"] / med["runtime"] - 1, 4)}


def main(argv=None) -> int:
    from mobilellm.logs import quiet
    quiet()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("artifact", type=Path)
    p.add_argument("--prompt-len", type=int, default=128)
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    ns = p.parse_args(argv)
    if not ns.artifact.is_file():
        print(f"timer_check: {ns.artifact} does not exist", file=sys.stderr)
        return 2
    res = measure(ns.artifact, ns.prompt_len, ns.iters, ns.warmup, ns.threads)
    print(json.dumps(res, indent=1))
    print(f"bench's decode step {res['bench_decode_ms']:.3f} ms vs bare Method.execute {res['bare_method_execute_ms']:.3f} ms "
          f"({res['wrapper_over_bare'] * 100:+.2f}%); timed from Python {res['python_timed_profiled_ms']:.3f} ms vs "
          f"ExecuTorch's own Method::execute {res['runtime_execute_ms']:.3f} ms ({res['python_over_runtime'] * 100:+.2f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
