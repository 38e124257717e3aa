"""Where an ExecuTorch decode step goes: the runtime's own per-op profile (ETDump, read with
`executorch.devtools.Inspector`), summed per step into the LLM ops outside the delegate (SDPA, cache
writes), XNNPACK's GEMMs, XNNPACK's other ops, and the rest, at one or more positions.

    python benchmarks/scripts/decode_profile.py runs/default/artifacts/125M_w8a8-emb8_executorch.pte \
        --positions 128,1000 --steps 30 --passes 2

Each position is a fresh program instance: a prompt fills the cache to the position, then `--steps`
decode steps are profiled (the prompt's own run is left out). Not a test: full-size work belongs here."""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

GROUPS = (("attention (llama::custom_sdpa)", ("custom_sdpa", "custom_quantized_sdpa")),
          ("cache writes (llama::update_cache)", ("update_cache",)),
          ("XNNPACK GEMMs (linears, head)", ("Fully Connected",)),
          ("embedding gather", ("embedding",)))


def group_of(name: str, backend: str) -> str:
    for group, keys in GROUPS:
        if any(k in name for k in keys):
            return group
    return "XNNPACK other ops" if backend else "other ops outside XNNPACK"


def profile(path: Path, position: int, steps: int, threads: int) -> dict:
    """ms per decode step at `position`: the whole step (Method::execute) and each group's share."""
    import torch

    from mobilellm.export import executorch_blas
    blas = executorch_blas.load_llm_kernels()  # as `mobilellm bench` runs a .pte
    from executorch.devtools import Inspector
    from executorch.extension.pybindings import portable_lib
    from mobilellm.benchmarks.measure import set_threads
    from mobilellm.export.xnnpack_options import set_weight_cache

    from mobilellm.export.backends.executorch import cache_safe
    from mobilellm.manifest import read_manifest
    from mobilellm.quant import schemes

    set_threads(threads)
    scheme = ((read_manifest(path, required=False) or {}).get("quant") or {}).get("scheme")
    set_weight_cache(scheme is None or cache_safe(schemes.get(scheme)))  # as `mobilellm bench` decides
    module = portable_lib._load_for_executorch(str(path), enable_etdump=True, debug_buffer_size=0)
    module.forward((torch.tensor([[1] + [5] * (position - 1)]), torch.tensor([0])))
    for i in range(steps):
        module.forward((torch.tensor([[5]]), torch.tensor([position + i])))
    with tempfile.TemporaryDirectory() as d:
        etdump = Path(d) / "run.etdp"
        module.write_etdump_result_to_file(str(etdump))
        inspector = Inspector(etdump_path=str(etdump))
    per_group, step_ms, top = defaultdict(float), [], defaultdict(float)
    for block in inspector.event_blocks:
        for ev in block.events:
            if ev.perf_data is None or len(ev.perf_data.raw) < 2:
                continue
            decode = ev.perf_data.raw[1:]  # the first call is the prompt
            if ev.name == "Method::execute":
                step_ms = decode
                continue
            if ev.name in ("OPERATOR_CALL", "DELEGATE_CALL") or ev.name.startswith("Method::"):
                continue  # containers of the events below
            ms = statistics.median(decode)
            per_group[group_of(ev.name, ev.delegate_backend_name or "")] += ms
            top[ev.name.split(" #")[0]] += ms
    total = statistics.median(step_ms)
    groups = {g: round(v, 3) for g, v in sorted(per_group.items(), key=lambda kv: -kv[1])}
    groups["unattributed (dispatch, delegate entry, synchronisation)"] = round(total - sum(per_group.values()), 3)
    return {"position": position, "steps": steps, "llm_ops_blas": blas, "step_ms": round(total, 3), "groups_ms": groups,
            "top_ops_ms": {k: round(v, 3) for k, v in sorted(top.items(), key=lambda kv: -kv[1])[:8]}}


def main(argv=None) -> int:
    from mobilellm.logs import quiet
    quiet()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("artifacts", nargs="+", type=Path, help="ExecuTorch .pte files (single-file)")
    p.add_argument("--positions", default="128,1000", help="comma-separated decode positions")
    p.add_argument("--steps", type=int, default=30, help="profiled decode steps per position")
    p.add_argument("--passes", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, help="also write the results here")
    a = p.parse_args(argv)
    try:
        positions = [int(x) for x in a.positions.split(",")]
    except ValueError:
        p.error(f"--positions must be comma-separated integers, got {a.positions!r}")
    if min(positions) < 1 or a.steps < 1 or a.passes < 1 or a.threads < 1:
        p.error("--positions, --steps, --passes and --threads must be >= 1")
    for art in a.artifacts:
        if art.suffix != ".pte" or not art.is_file():
            p.error(f"{art}: not an ExecuTorch .pte file")
    rows = []
    for n in range(a.passes):
        for art in a.artifacts:
            for pos in positions:
                try:
                    r = {"pass": n + 1, "artifact": art.name, **profile(art, pos, a.steps, a.threads)}
                except (RuntimeError, ValueError) as e:  # the runtime refusing the file or a position past its cache
                    p.exit(2, f"{p.prog}: error: {art.name} at position {pos} (+{a.steps} steps): "
                              f"{str(e).splitlines()[0] if str(e) else type(e).__name__}\n")
                rows.append(r)
                shares = "; ".join(f"{g} {v:.2f}" for g, v in r["groups_ms"].items())
                print(f"pass {n + 1}  {art.name}  position {pos}: {r['step_ms']:.2f} ms/step = {shares}", flush=True)
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
