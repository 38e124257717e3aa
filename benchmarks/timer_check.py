"""Is `mobilellm bench`'s execute figure the runtime's own? Compares, for one ExecuTorch `.pte`,
the decode-step time as `bench` takes it (perf_counter around Session.forward: tensor creation,
Method.execute, logits to numpy) with the time ExecuTorch itself records for the same calls in
its ETDump profile ("Method::execute" events, the runtime's own clock).

    python -m mobilellm.benchmarks.timer_check runs/default/artifacts/125M_w8a8-emb8_executorch.pte

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
    import torch

    import executorch.kernels.quantized  # noqa: F401  int8 embedding kernels
    from executorch.devtools import Inspector
    from executorch.extension.llm.custom_ops import custom_ops  # noqa: F401
    from executorch.extension.pybindings import portable_lib
    from mobilellm.benchmarks.measure import set_threads
    from mobilellm.models.generate import check_tokens

    set_threads(threads)
    module = portable_lib._load_for_executorch(str(path), enable_etdump=True)
    max_seq_len = int(module.run_method("get_max_seq_len", ())[0]) if "get_max_seq_len" in module.method_names() else 512
    vocab = int(module.run_method("get_vocab_size", ())[0])
    prompt = [1] + [(7 * i + 3) % (vocab - 3) + 3 for i in range(prompt_len - 1)]

    def forward(ids, start):  # the same work as ExecuTorchSession.forward, on the profiled module
        check_tokens(ids, start, max_seq_len, vocab)
        out = module.forward((torch.tensor([list(ids)], dtype=torch.long), torch.tensor([start], dtype=torch.long)))[0]
        return out[0].numpy().astype(np.float32, copy=False)

    forward(prompt, 0)
    ours = []
    for i in range(warmup + iters):
        a = time.perf_counter()
        forward([5], prompt_len)
        if i >= warmup:
            ours.append((time.perf_counter() - a) * 1e3)
    with tempfile.TemporaryDirectory() as d:
        etdump = Path(d) / "run.etdp"
        module.write_etdump_result_to_file(str(etdump))
        insp = Inspector(etdump_path=str(etdump))
        runtime = [t for block in insp.event_blocks for ev in block.events if ev.name == "Method::execute"
                   for t in ev.perf_data.raw] if insp.event_blocks else []
    # ETDump holds every execute call: the metadata calls, the prefill, warm-up, then the timed steps.
    runtime = runtime[-iters:]
    m_ours, m_rt = float(np.median(ours)), float(np.median(runtime))
    return {"artifact": path.name, "iters": iters, "threads": threads, "decode_position": prompt_len,
            "bench_decode_ms_median": round(m_ours, 4), "runtime_execute_ms_median": round(m_rt, 4),
            "bench_over_runtime": round(m_ours / m_rt - 1, 4),
            "python_overhead_ms_median": round(float(np.median(np.asarray(ours) - np.asarray(runtime))), 4)}


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
    print(f"bench's decode step {res['bench_decode_ms_median']:.3f} ms vs ExecuTorch's own Method::execute "
          f"{res['runtime_execute_ms_median']:.3f} ms: {res['bench_over_runtime'] * 100:+.2f}% "
          f"(Python around the call: {res['python_overhead_ms_median'] * 1e3:.0f} us)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
