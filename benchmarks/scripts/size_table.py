"""Export every MobileLLM size (random weights, the real architecture) and tabulate what it cost:
export seconds, peak resident memory (the export's own process), bytes per parameter, artifact size,
and decode ms where the backend runs here.

    python benchmarks/scripts/size_table.py --models 125M,350M,600M,1B,1.5B --out runs/sizes \\
        --jobs executorch:w8a8,onnx:w8a8,executorch:8da4w

A job is backend:scheme, optionally +emb8 (--quantize-embedding) and +ptd (--external-weights), e.g.
`executorch:w8a8+emb8+ptd` or `onnx:w8a8+emb8`: the embedding rows of issue 19.

Each export runs in its own process (`mobilellm export`), one at a time: the peak RSS in its
manifest (`export_peak_rss_mb`, ru_maxrss) is that export's alone. Decode: `mobilellm bench`, one
cold process. A row that fails keeps its one-line reason; the others still run."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path


def _cli(*args, timeout=4 * 3600):
    return subprocess.run([sys.executable, "-m", "mobilellm.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


FLAGS = {"emb8": "--quantize-embedding", "ptd": "--external-weights"}


def _stored(m: dict) -> int:
    """Bytes on disk: the artifact and, with --external-weights, its .ptd (the manifest's file_bytes counts both)."""
    return m["sizes"]["file_bytes"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="125M,350M,600M,1B,1.5B,LS-125M,LS-350M")
    ap.add_argument("--jobs", default="executorch:w8a8,onnx:w8a8,executorch:8da4w", help="backend:scheme,...")
    ap.add_argument("--max-seq-len", type=int, default=512)
    ap.add_argument("--out", type=Path, default=Path("runs/sizes"))
    ap.add_argument("--no-bench", action="store_true")
    a = ap.parse_args(argv)
    from mobilellm.errors import UserError
    from mobilellm.models.config import from_name
    for job in a.jobs.split(","):  # bad input: one line, before any export
        if job.count(":") != 1 or set(job.split(":")[1].split("+")[1:]) - set(FLAGS):
            ap.error(f"--jobs takes backend:scheme[+emb8][+ptd],...; got {job!r}")
    try:
        [from_name(m) for m in a.models.split(",")]
    except UserError as e:
        ap.error(str(e))
    rows = []
    for model in a.models.split(","):
        args = from_name(model)
        for job in a.jobs.split(","):
            backend, spec = job.split(":")
            scheme, *flags = spec.split("+")
            out = a.out / f"{model}_{backend}_{spec}"
            p = _cli("export", "--model", model, "--backend", backend, "--quant", scheme, "--max-seq-len",
                     a.max_seq_len, "--out", out, "--force", "--json", *[FLAGS[f] for f in flags])
            row = {"model": model, "backend": backend, "scheme": spec, "params": args.param_count()}
            # a shared block's weights count once per run: the same depth unshared has the executed parameters
            executed = args.replace(n_layers=args.n_executed, repeat=1).param_count()
            if p.returncode != 0:
                row["error"] = (p.stderr.strip().splitlines() or ["?"])[-1][:200]
                rows.append(row)
                print(json.dumps(row), flush=True)
                continue
            m = json.loads(p.stdout)
            art = out / m["artifact"]
            row.update(export_s=m["export_seconds"], peak_rss_mb=m["export_peak_rss_mb"],
                       peak_bytes_per_param=round(m["export_peak_rss_mb"] * 2**20 / args.param_count(), 2),
                       peak_bytes_per_executed_param=round(m["export_peak_rss_mb"] * 2**20 / executed, 2),
                       size_mb=round(_stored(m) / 1e6, 1), bytes_per_param=round(_stored(m) / args.param_count(), 3),
                       embedding_mb=round(m["sizes"].get("embedding_bytes", 0) / 1e6, 1),
                       verified=(m.get("verification") or {}).get("passed"),
                       peak_step=next((k for k, v in (m.get("export_step_peak_rss_mb") or {}).items()
                                       if v >= m["export_peak_rss_mb"]), None))
            if not a.no_bench:
                b = _cli("bench", art, "--cold-runs", "1", "--iters", "20", "--warmup", "3", "--out", out / "bench.json")
                if b.returncode == 0:
                    recs = json.loads((out / "bench.json").read_text())["records"]
                    row["decode_ms"] = next((r["value"] for r in recs if r["metric"] == "decode_ms"
                                             and r["statistic"] == "median"), None)
            rows.append(row)
            print(json.dumps(row), flush=True)
    cols = ["model", "backend", "scheme", "export_s", "peak_rss_mb", "peak_bytes_per_param",
            "peak_bytes_per_executed_param", "peak_step", "size_mb", "embedding_mb",
            "bytes_per_param", "decode_ms", "verified", "error"]
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r.get(c, "")) for c in cols) + " |")
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "sizes.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
