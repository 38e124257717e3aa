"""ExecuTorch's attention kernels alone, as a `.pte` calls them: `llama::custom_sdpa` over the fp32 cache and
`llama::custom_quantized_sdpa` over the int8 one (its [B, S, H, D] layout and its transposed [B, H, S, D] one),
one call of one block of a model's shape, bound to the BLAS `mobilellm bench` binds (ExecuTorch's).

    python benchmarks/scripts/sdpa_micro.py --model 125M --positions 128,1000 --prefill 128 --cache 1068 --passes 2

Prints the median microseconds per call (--calls timed after a warm-up) for a decode step at each position and a
prefill of --prefill tokens from position 0; `--cache` takes several lengths (the kernel's cost should not depend
on it). Not a test: full-size work belongs here."""
from __future__ import annotations

import argparse
import statistics
import time


def _time(fn, calls: int) -> float:
    for _ in range(max(3, calls // 10)):
        fn()
    ts = []
    for _ in range(calls):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts) * 1e6


def kernels(shape: tuple[int, int, int], cache: int, pos: int, T: int):
    """{name: zero-argument call} for one attention of `shape` (heads, kv heads, head dim)."""
    import torch
    H, KV, D = shape

    def q8(x):  # ExecuTorch's per-token asymmetric int8 (its QuantizedKVCache's)
        s, z = torch.ops.quantized_decomposed.choose_qparams_per_token_asymmetric.default(x, torch.int8)
        return torch.ops.quantized_decomposed.quantize_per_token(x, s, z, -128, 127, torch.int8), s.float(), z.to(torch.int8)

    g = torch.Generator().manual_seed(0)
    k, v, q = (torch.randn(1, cache, KV, D, generator=g), torch.randn(1, cache, KV, D, generator=g),
               torch.randn(1, T, H, D, generator=g))
    (kq, ks, kz), (vq, vs, vz), (qq, qs, qz) = q8(k), q8(v), q8(q)
    tr = [t.transpose(1, 2).contiguous() for t in (qq, qs, qz, kq, ks, kz, vq, vs, vz)]
    sdpa, qsdpa = torch.ops.llama.custom_sdpa, torch.ops.llama.custom_quantized_sdpa
    return {
        "custom_sdpa, fp32 cache": lambda: sdpa(q, k, v, pos, None, 0.0, True),
        "custom_quantized_sdpa, int8 [B,S,H,D]": lambda: qsdpa(qq, kq, vq, pos, None, 0.0, True, None,
                                                               qz, qs, kz, ks, vz, vs),
        "custom_quantized_sdpa, int8 [B,H,S,D]": lambda: qsdpa(tr[0], tr[3], tr[6], pos, None, 0.0, True, None,
                                                               tr[2], tr[1], tr[5], tr[4], tr[8], tr[7], True),
    }


def main(argv=None) -> int:
    from mobilellm.logs import native_stderr_silenced, quiet
    quiet()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="125M", help="a preset whose attention shape is timed")
    p.add_argument("--positions", default="128,1000", help="comma-separated decode positions")
    p.add_argument("--prefill", type=int, default=128, help="prompt length timed from position 0 (0: none)")
    p.add_argument("--cache", default="1068", help="comma-separated cache lengths (max_seq_len)")
    p.add_argument("--calls", type=int, default=300)
    p.add_argument("--passes", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    try:
        positions = [int(x) for x in a.positions.split(",")]
        caches = [int(x) for x in a.cache.split(",")]
    except ValueError:
        p.error(f"--positions and --cache must be comma-separated integers, got {a.positions!r} and {a.cache!r}")
    if min(positions + caches) < 1 or a.calls < 1 or a.passes < 1 or a.threads < 1 or a.prefill < 0:
        p.error("--positions, --cache, --calls, --passes and --threads must be >= 1, --prefill >= 0")
    if max(positions) >= min(caches) or a.prefill > min(caches):
        p.error(f"every position (and the prefill) must fit the smallest cache, {min(caches)}")
    from mobilellm.errors import UserError
    from mobilellm.models.config import from_name
    try:
        args = from_name(a.model)
    except UserError as e:
        p.error(str(e))
    from mobilellm.export import executorch_blas
    print(f"BLAS under the LLM ops: {executorch_blas.load_llm_kernels()}")
    from mobilellm.benchmarks.measure import set_threads
    set_threads(a.threads)
    shape = (args.n_heads, args.n_kv_heads, args.head_dim)
    cases = [(c, pos, 1) for c in caches for pos in positions] + ([(c, 0, a.prefill) for c in caches] if a.prefill else [])
    print(f"{a.model}: {shape[0]} heads, {shape[1]} kv heads, head dim {shape[2]}; us per call, median of {a.calls}, "
          f"passes {' / '.join(str(i + 1) for i in range(a.passes))}")
    for cache, pos, T in cases:
        fns = kernels(shape, cache, pos, T)
        got = {n: [] for n in fns}
        with native_stderr_silenced():  # the int8 kernel logs once per call outside a program
            for _ in range(a.passes):
                for n, fn in fns.items():  # alternating kernels within a pass
                    got[n].append(_time(fn, a.calls if T == 1 else max(10, a.calls // 10)))
        what = f"decode at {pos}" if T == 1 else f"prefill of {T}"
        for n, us in got.items():
            print(f"  cache {cache:5d}  {what:16s} {n:38s} " + " / ".join(f"{u:8.1f}" for u in us))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
