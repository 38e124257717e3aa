"""One artifact, one fresh process: raw samples of load / init / execute, tokens/s and memory.

Run as `python -m mobilellm.benchmarks.measure SPEC_JSON`; prints one JSON object of raw samples.
The parent (benchmarks/bench.py) turns samples from several cold processes into records.

Definitions (the paper's, per backend):
  load     reading the artifact into the runtime (ExecuTorch load_program; ORT reads the file)
  init     making it ready to run (ExecuTorch load_method incl. XNNPACK packing; ORT session)
  decode   one forward of 1 token at cache position P, after a P-token prefill: the steps advance
           (P, P+1, ...) as in a generation, so no runtime re-feeds or copies a cache it would not
  decode at Q  the same at each extra position Q of `positions` (the cache filled to Q in chunks)
  prefill  one forward of P tokens from position 0
  tokens/s over a greedy generation: P-token prefill, then N decode steps
  paired   several artifacts open in one process, their decode steps at P timed in turns of `iters` steps,
           `pairs` turns each: neighbouring turns meet the same machine (this host's speed drifts by tens of
           percent over seconds, more than the gap between two processes can pair away)
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def rss_mb() -> tuple[float, float]:
    """(current, peak) resident set size of this process in MB, from /proc (Linux)."""
    cur = peak = float("nan")
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                cur = int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                peak = int(line.split()[1]) / 1024
    except OSError:
        import resource
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 if sys.platform != "darwin" else 2**20)
    return cur, peak


def set_threads(n: int) -> None:
    os.environ["MOBILELLM_THREADS"] = str(n)
    import torch
    torch.set_num_threads(n)
    try:
        from executorch.extension.pybindings import portable_lib
        portable_lib._unsafe_reset_threadpool(n)
    except (ImportError, AttributeError, RuntimeError):
        pass


def measure(spec: dict) -> dict:
    from mobilellm.export.base import get_backend
    from mobilellm.manifest import read_manifest

    path = Path(spec["artifact"])
    manifest = read_manifest(path)
    backend = get_backend(manifest["backend"])
    set_threads(spec["threads"])
    prompt_len, warmup, iters, gen = spec["prompt_len"], spec["warmup"], spec["iters"], spec["gen_tokens"]
    vocab = manifest["model"]["args"]["vocab_size"]
    prompt = _prompt(vocab, prompt_len)
    out: dict = {"rss_before_load_mb": rss_mb()[0]}

    session = backend.open(path, manifest)
    t0 = time.perf_counter()
    session.load()
    t1 = time.perf_counter()
    session.init()
    t2 = time.perf_counter()
    out.update(load_ms=[(t1 - t0) * 1e3], init_ms=[(t2 - t1) * 1e3], rss_after_init_mb=rss_mb()[0],
               runtime_options={**getattr(session, "runtime_options", {}),  # and what a prefill computes: the head
                                "logits_rows": "last" if getattr(session, "last_position_only", False) else "every"})

    prefill = []
    for i in range(warmup + iters):
        a = time.perf_counter()
        session.forward(prompt, 0)
        if i >= warmup:
            prefill.append((time.perf_counter() - a) * 1e3)
    session.forward(prompt, 0)
    decode = _decode_steps(session, prompt_len, warmup, iters)
    out.update(prefill_ms=prefill, decode_ms=decode)
    at = {}
    for q in spec.get("positions") or []:
        if q == prompt_len:
            continue
        session.reset()
        for start in range(0, q, 128):  # fill the cache to q as a runner would: prompt chunks
            n = min(128, q - start)
            session.forward([(7 * (start + i) + 3) % (vocab - 3) + 3 for i in range(n)], start)
        at[str(q)] = _decode_steps(session, q, warmup, iters)
    if at:
        out["decode_ms_at"] = [at]

    session.reset()
    a = time.perf_counter()
    logits = session.forward(prompt, 0)
    b = time.perf_counter()
    tok = int(logits[-1].argmax())
    for pos in range(prompt_len, prompt_len + gen):
        tok = int(session.forward([tok], pos)[-1].argmax())
    c = time.perf_counter()
    out.update(prefill_tokens_per_s=[prompt_len / (b - a)], decode_tokens_per_s=[gen / (c - b)],
               rss_after_generate_mb=rss_mb()[0], peak_rss_mb=rss_mb()[1])
    return out


def paired(spec: dict) -> dict:
    """Median decode ms at P of each artifact (spec["artifacts"]) in each of `pairs` turns."""
    from mobilellm.export.base import get_backend
    from mobilellm.manifest import read_manifest
    set_threads(spec["threads"])
    sessions = []
    for a in spec["artifacts"]:
        manifest = read_manifest(Path(a))
        session = get_backend(manifest["backend"]).open(Path(a), manifest)
        session.load()
        session.init()
        session.forward(_prompt(manifest["model"]["args"]["vocab_size"], spec["prompt_len"]), 0)
        sessions.append(session)
    turns: list[list[float]] = [[] for _ in sessions]
    for _ in range(spec["pairs"]):
        for times, session in zip(turns, sessions):  # the same positions each turn: the cost of step P
            xs = sorted(_decode_steps(session, spec["prompt_len"], spec["warmup"], spec["iters"]))
            times.append(xs[len(xs) // 2])
    return {"paired_decode_ms": turns}


def _prompt(vocab: int, n: int) -> list[int]:
    """The fixed benchmark prompt: BOS, then n - 1 ids spread over the vocabulary (no special ids)."""
    return [1] + [(7 * i + 3) % (vocab - 3) + 3 for i in range(n - 1)]


def _decode_steps(session, pos: int, warmup: int, iters: int) -> list[float]:
    """ms per decode step at positions pos, pos+1, ... (the first `warmup` untimed)."""
    times = []
    for i in range(warmup + iters):
        a = time.perf_counter()
        session.forward([5], pos + i)
        if i >= warmup:
            times.append((time.perf_counter() - a) * 1e3)
    return times


def main(argv=None) -> int:
    from mobilellm.errors import UserError
    from mobilellm.logs import quiet
    quiet()
    spec = json.loads((argv or sys.argv[1:])[0])
    try:
        print("MEASURE " + json.dumps(paired(spec) if "artifacts" in spec else measure(spec)), flush=True)
    except UserError as e:
        print("MEASURE " + json.dumps({"error": str(e)}), flush=True)
        return 2
    return 0


def last_level_cache_mib() -> float | None:
    """The largest CPU cache Linux reports for cpu0 (sysfs), in MiB; None where it reports none. A model whose
    weights fit stays cache-resident between decode steps on this host (a phone's CPU caches hold a few MiB)."""
    sizes = []
    for f in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        text = f.read_text().strip()
        if text[:-1].isdigit():
            sizes.append(int(text[:-1]) * {"K": 1 / 1024, "M": 1.0}.get(text[-1], 0.0))
    return max(sizes) if sizes else None


if __name__ == "__main__":
    sys.exit(main())
