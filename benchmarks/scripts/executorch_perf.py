"""ExecuTorch W8A8 performance for one model's three variants, side by side, with the
memory-bandwidth bound of a decode step.

    python benchmarks/executorch_perf.py --model 125M --out runs/et-perf

Exports (or reuses) N layers, LS 2xN and 2N layers through `mobilellm run` (executorch backend),
then prints decode ms/token, prefill tokens/s (128-token prompt), load/init ms, resident memory
after init beside the KV cache's own size, file size and export wall time. The bound: bytes of
weights (plus KV cache) read per generated token / read bandwidth measured here with the same
thread count. Not a test: full-size work belongs here."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def read_bandwidth_gbs(threads: int, mib: int = 1024, reps: int = 5) -> float:
    """Sustained read bandwidth: sum over a buffer far larger than the caches."""
    import torch
    torch.set_num_threads(threads)
    x = torch.ones(mib * 2**20 // 4, dtype=torch.float32)
    x.sum()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        x.sum()
        best = min(best, time.perf_counter() - t)
    return x.numel() * 4 / best / 1e9


def bytes_per_token(manifest: dict, position: int) -> int:
    """int8 block weights as executed (a shared block is read once per run), the output head,
    and the KV cache read by attention at `position`."""
    a = manifest["model"]["args"]
    d, hd = a["dim"], a["head_dim"]
    block = d * a["n_heads"] * hd * 2 + d * a["n_kv_heads"] * hd * 2 + 3 * d * a["ffn_hidden"]
    executed = manifest["model"]["executed_blocks"]
    head = manifest["sizes"].get("output_head_bytes", a["vocab_size"] * d)
    kv = 2 * executed * position * a["n_kv_heads"] * hd * 4
    return executed * block + head + kv


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="125M")
    ap.add_argument("--out", type=Path, default=Path("runs/et-perf"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--external-weights", action="store_true", help="weights in a .ptd beside each .pte")
    args = ap.parse_args()
    from mobilellm.cli import main as cli
    rc = cli(["run", "--models", args.model, "--backends", "executorch", "--quant", "w8a8", "--out", str(args.out),
              "--iters", str(args.iters), "--threads", str(args.threads), "--prompt-len", "128", "--cold-runs", "2",
              "--accuracy", "none", *(["--external-weights"] if args.external_weights else [])])
    if rc:
        raise SystemExit(rc)
    bw = read_bandwidth_gbs(args.threads)
    recs = json.loads((args.out / "results.json").read_text())["records"]
    print(f"\nread bandwidth ({args.threads} threads): {bw:.1f} GB/s\n")
    hdr = ("variant", "decode ms", "bound ms", "x bound", "prefill tok/s", "load ms", "init ms", "RSS init MB",
           "KV MB", "size MB", "B/param", "export s")
    print(" | ".join(hdr))
    for j in json.loads((args.out / "jobs.json").read_text()):
        if not j["artifact"]:
            continue
        man = json.loads(Path(j["artifact"] + ".manifest.json").read_text())
        m = {r["metric"]: r["value"] for r in recs if r["artifact"] == Path(j["artifact"]).name
             and r["statistic"] in ("median", "single")}
        pos = next(r["settings"]["decode_position"] for r in recs if r["artifact"] == Path(j["artifact"]).name)
        bound = bytes_per_token(man, pos) / (bw * 1e9) * 1e3
        print(" | ".join([man["model"]["variant"], f"{m['decode_ms']:.2f}", f"{bound:.2f}",
                          f"{m['decode_ms'] / bound:.2f}", f"{m['prefill_tokens_per_s']:.0f}", f"{m['load_ms']:.1f}",
                          f"{m['init_ms']:.1f}", f"{m['rss_after_init_mb']:.0f}", f"{m['kv_cache_mb']:.1f}",
                          f"{m['size_mb']:.1f}", f"{man['sizes']['file_bytes'] / man['model']['param_count']:.3f}",
                          f"{man['export_seconds']:.0f}"]))


if __name__ == "__main__":
    main()
