"""One engine, one artifact, one fresh process: the peer benchmarks' measurement (benchmarks/peers.py runs it).

    python -m mobilellm.benchmarks.peer_measure '{"engine": "genai", "path": DIR, ...}'

Prints `RESULT {json}`: load_ms, init_ms, rss_after_init_mb, prefill_tokens_per_s (a `prompt_len`-token prompt
from position 0, median of `prefill_reps`), and decode_ms_at_P for each P of `positions` (median of `steps`
steps after `warmup`, the cache holding P positions and growing by one per step as in a generation).

Engines: `genai` (an onnxruntime-genai model directory through og.Generator, as an app runs it), `ort` (a
mobilellm .onnx through mobilellm's own plain-session runner), `executorch` (a .pte through ExecuTorch's
runtime: this project's `forward(tokens, input_pos)` or optimum-executorch's `forward(input_ids,
cache_position)`), `llamacpp` (a GGUF through llama-cpp-python)."""
from __future__ import annotations

import json
import os
import statistics
import sys
import time


def _prompt(n: int, vocab: int = 32000) -> list[int]:
    return [1] + [(7 * i + 3) % (vocab - 3) + 3 for i in range(n - 1)]


def _result(spec, load, init, rss, prefill_s, decode):
    return {"load_ms": round(load * 1e3, 1), "init_ms": round(init * 1e3, 1), "rss_after_init_mb": round(rss, 1),
            "prefill_tokens_per_s": round(spec["prompt_len"] / statistics.median(prefill_s), 1),
            **{f"decode_ms_at_{p}": round(statistics.median(xs[spec["warmup"]:]) * 1e3, 3) for p, xs in decode.items()}}


def _steps(step, first_pos: int, n: int) -> list[float]:
    out = []
    for i in range(n):
        t = time.perf_counter()
        step(first_pos + i)
        out.append(time.perf_counter() - t)
    return out


def genai(spec):
    import onnxruntime_genai as og
    from mobilellm.benchmarks.peers import rss_mb
    t0 = time.perf_counter()
    model = og.Model(spec["path"])
    t1 = time.perf_counter()

    def generator():
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=spec["max_length"], do_sample=False)
        return og.Generator(model, params)
    gen = generator()
    t2 = time.perf_counter()
    rss = rss_mb()
    prompt = _prompt(spec["prompt_len"], spec["vocab"])
    prefill = []
    for _ in range(spec["prefill_reps"]):
        gen = generator()
        t = time.perf_counter()
        gen.append_tokens(prompt)
        prefill.append(time.perf_counter() - t)
    decode = {}
    for p in spec["positions"]:
        gen = generator()
        gen.append_tokens(_prompt(p, spec["vocab"]))
        decode[p] = _steps(lambda pos: gen.generate_next_token(), p, spec["warmup"] + spec["steps"])
    return _result(spec, t1 - t0, t2 - t1, rss, prefill, decode)


def runner_based(spec, session):
    """Any mobilellm Session (load, init, forward(ids, start)) — the plain ORT path and ExecuTorch."""
    from mobilellm.benchmarks.peers import rss_mb
    t0 = time.perf_counter()
    session.load()
    t1 = time.perf_counter()
    session.init()
    t2 = time.perf_counter()
    rss = rss_mb()
    prompt = _prompt(spec["prompt_len"], spec["vocab"])
    prefill = []
    for _ in range(spec["prefill_reps"]):
        session.reset()
        t = time.perf_counter()
        session.forward(prompt, 0)
        prefill.append(time.perf_counter() - t)
    decode = {}
    for p in spec["positions"]:
        session.reset()
        for s in range(0, p, 128):
            session.forward(_prompt(min(128, p - s), spec["vocab"]), s)
        decode[p] = _steps(lambda pos: session.forward([5], pos), p, spec["warmup"] + spec["steps"])
    return _result(spec, t1 - t0, t2 - t1, rss, prefill, decode)


def ort(spec):
    from mobilellm.export.backends.onnx import OnnxSession
    return runner_based(spec, OnnxSession(spec["path"], threads=spec["threads"]))


def executorch(spec):
    """A .pte through ExecuTorch's runtime: this project's (`forward(tokens [1, T], input_pos [1])`, opened by
    mobilellm's ExecuTorchSession with its manifest) or optimum-executorch's (`forward(input_ids [1, T],
    cache_position [T])`), as `spec["signature"]` says."""
    from mobilellm.export.backends.executorch import ExecuTorchSession
    from mobilellm.manifest import read_manifest
    if spec.get("blas"):  # which BLAS the LLM ops bind in this (fresh) process: mobilellm.export.executorch_blas
        os.environ["MOBILELLM_EXECUTORCH_BLAS"] = spec["blas"]
    if spec.get("signature", "mobilellm") == "mobilellm":
        return runner_based(spec, ExecuTorchSession(spec["path"], read_manifest(spec["path"])))
    return runner_based(spec, _OptimumPte(spec["path"]))


class _OptimumPte:
    """optimum-executorch's CausalLM .pte: forward(input_ids [1, T] int64, cache_position [T] int64) -> logits
    [1, T, V] (every position; ours returns the last, [1, 1, V]); its KV cache lives in the program, as ours does."""

    def __init__(self, path):
        from mobilellm.export import executorch_blas
        executorch_blas.load_llm_kernels()  # BLAS as the spec says (executorch_peers.py times optimum's file with both)
        from executorch.runtime import Runtime
        self.runtime, self.path = Runtime.get(), path

    def load(self):
        self.program = self.runtime.load_program(self.path)

    def init(self):
        self.method = self.program.load_method("forward")

    def reset(self):
        pass

    def forward(self, ids, start):
        import torch
        return self.method.execute((torch.tensor([list(ids)], dtype=torch.long),
                                    torch.arange(start, start + len(ids), dtype=torch.long)))[0]


def llamacpp(spec):
    """A GGUF through llama-cpp-python: load + init = Llama(...) (llama.cpp maps the file and builds its context in
    one call: reported as load, init 0); prefill = eval of the prompt; decode = eval of one token."""
    import llama_cpp
    from mobilellm.benchmarks.peers import rss_mb
    t0 = time.perf_counter()
    llm = llama_cpp.Llama(spec["path"], n_ctx=spec["max_length"], n_threads=spec["threads"],
                          n_threads_batch=spec["threads"], n_batch=512, verbose=False,
                          flash_attn=bool(spec.get("flash_attn", False)))
    t1 = time.perf_counter()
    rss = rss_mb()
    prompt = _prompt(spec["prompt_len"], spec["vocab"])
    prefill = []
    for _ in range(spec["prefill_reps"]):
        llm.reset()
        t = time.perf_counter()
        llm.eval(prompt)
        prefill.append(time.perf_counter() - t)
    decode = {}
    for p in spec["positions"]:
        llm.reset()
        llm.eval(_prompt(p, spec["vocab"]))
        decode[p] = _steps(lambda pos: llm.eval([5]), p, spec["warmup"] + spec["steps"])
    return _result(spec, t1 - t0, 0.0, rss, prefill, decode)


def main(argv=None) -> int:
    spec = json.loads((argv or sys.argv[1:])[0])
    spec = {"prompt_len": 128, "prefill_reps": 5, "positions": [128, 1000], "steps": 50, "warmup": 10, "threads": 2,
            "vocab": 32000, **spec}
    from mobilellm.benchmarks.measure import set_threads
    set_threads(spec["threads"])
    res = {"genai": genai, "ort": ort, "executorch": executorch, "llamacpp": llamacpp}[spec["engine"]](spec)
    print("RESULT " + json.dumps(res), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
