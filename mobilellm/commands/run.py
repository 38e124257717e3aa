"""`mobilellm run`: export the three sharing variants to every backend, verify, benchmark, report."""
from __future__ import annotations

from pathlib import Path


def add_arguments(p):
    p.add_argument("--models", default="125M",
                   help="comma-separated presets; each gives N layers, LS 2xN shared and 2N layers (default 125M)")
    p.add_argument("--checkpoint", type=Path, help="use a local checkpoint's weights instead of seeded random ones")
    from mobilellm.export.base import backend_names
    p.add_argument("--backends", default=None,
                   help=f"comma-separated subset of {', '.join(backend_names())}, or 'all' (default: all but the "
                        "Apple-only ones off macOS)")
    p.add_argument("--quant", default="w8a8", help="comma-separated quantization schemes, each for every backend (default "
                   "w8a8, the paper's); a backend without one runs its declared closest, named in the report")
    p.add_argument("--variants", default="base,shared,deep", help="comma-separated subset of base,shared,deep")
    p.add_argument("--max-seq-len", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("runs/default"), help="report directory (reused artifacts live here)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--cold-runs", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--prompt-len", type=int, default=128)
    p.add_argument("--pairs", type=int, default=8,
                   help="turns per variant in each round's paired process (the sharing table's side-by-side overhead)")
    p.add_argument("--positions", default="auto",
                   help="extra decode positions timed per artifact (comma-separated); 'auto': the longest that fits "
                        "the max sequence length; 'none' to skip")
    p.add_argument("--accuracy", default="tiny,tiny-LS",
                   help="trained presets scored on held-out text (perplexity, top-1, KL vs fp32); 'none' to skip")
    p.add_argument("--accuracy-schemes", default=None,
                   help="schemes exported for the accuracy half (default: --quant); e.g. fp32,w8a8,8da4w; "
                        "a backend without a scheme skips it")
    p.add_argument("--kv-cache", default="fp32", choices=["fp32", "int8"],
                   help="int8: ExecuTorch artifacts keep an int8 KV cache (the other backends keep fp32)")
    p.add_argument("--external-weights", action="store_true",
                   help="executorch artifacts keep their weights in a .ptd beside the .pte (see `export --help`)")
    p.add_argument("--workers", type=int, default=2, help="exports run in parallel (lowering is single-threaded)")
    p.add_argument("--executor", default="local",
                   help="local: a process pool on this machine (default); ray: one Ray task per export and accuracy job "
                        "(pip install 'mobilellm[ray]')")
    p.add_argument("--ray-address", default=None,
                   help="HOST:PORT of a Ray cluster (or 'auto'); default: start or join a local Ray instance")
    p.add_argument("--bench-on", default="local",
                   help="where timing runs: local (here, default) or ray (whichever node is free; records name the host)")


def _names(s: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in s.split(",") if x.strip())


def _schemes(flag: str, names: tuple[str, ...]) -> tuple[str, ...]:
    """Canonical scheme names, in order and once each; unknown or none: one line with the valid ones."""
    from mobilellm.errors import UserError
    from mobilellm.quant import schemes
    bad = [s for s in names if schemes.ALIASES.get(s, s) not in schemes.SCHEMES]
    if bad or not names:
        raise UserError(f"{flag}: {f'unknown scheme(s) {bad}' if bad else 'no scheme given'}; valid: "
                        f"{', '.join(schemes.names())}")
    return tuple(dict.fromkeys(schemes.canonical(s) for s in names))


def main(ns):
    from mobilellm.benchmarks.bench import BenchConfig
    from mobilellm.benchmarks.pipeline import RunConfig, run
    from mobilellm.errors import UserError
    from mobilellm.export.base import get_backend
    from mobilellm.models.config import from_name
    if ns.positions.strip() == "auto":
        positions = (ns.max_seq_len - ns.warmup - ns.iters - 2,)
    elif ns.positions.strip() == "none":
        positions = ()
    else:
        try:
            positions = tuple(int(x) for x in ns.positions.split(",") if x.strip())
        except ValueError:
            raise UserError(f"--positions must be comma-separated integers, 'auto' or 'none'; got {ns.positions!r}") from None
    bench_cfg = BenchConfig(warmup=ns.warmup, iters=ns.iters, threads=ns.threads, prompt_len=ns.prompt_len,
                            cold_runs=ns.cold_runs, positions=positions, pairs=ns.pairs)
    variants = _names(ns.variants)
    bad = [v for v in variants if v not in ("base", "shared", "deep")]
    if bad or not variants:
        raise UserError(f"unknown variant(s) {bad}; valid: base, shared, deep")
    from mobilellm.benchmarks.pipeline import default_backends
    from mobilellm.export.base import backend_names
    backends = (default_backends() if ns.backends is None else tuple(backend_names()) if ns.backends.strip() == "all"
                else _names(ns.backends))
    for b in backends:
        try:
            get_backend(b)  # unknown names fail here, listing the valid ones
        except UserError as e:
            raise UserError(f"{e}; or --backends all") from None
    models = _names(ns.models)
    for m in models:
        a = from_name(m)
        if ns.max_seq_len > a.context_len:
            raise UserError(f"--max-seq-len {ns.max_seq_len} exceeds {m}'s context of {a.context_len}")
    accuracy = () if ns.accuracy.strip() == "none" else _names(ns.accuracy)
    from mobilellm.models.config import TRAINED
    bad = [a for a in accuracy if a not in TRAINED]
    if bad:
        raise UserError(f"--accuracy: {bad} are not trained presets; valid: {', '.join(TRAINED)}, or none")
    quant = _schemes("--quant", _names(ns.quant))
    acc_schemes = _schemes("--accuracy-schemes", _names(ns.accuracy_schemes)) if ns.accuracy_schemes else quant
    cfg = RunConfig(models=models, backends=backends, quant=quant, max_seq_len=ns.max_seq_len, out=ns.out,
                    seed=ns.seed, checkpoint=ns.checkpoint, variants=variants,
                    workers=ns.workers, accuracy=accuracy, accuracy_schemes=acc_schemes,
                    external_weights=ns.external_weights, kv_cache=ns.kv_cache, executor=ns.executor, ray_address=ns.ray_address,
                    bench_on=ns.bench_on)
    run(cfg, bench_cfg)
    return 0
