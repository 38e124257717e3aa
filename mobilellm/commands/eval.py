"""`mobilellm eval ARTIFACT... --text FILE`: perplexity, top-1 agreement and KL divergence of each
artifact, run in its own runtime, against the eager fp32 model it was exported from."""
from __future__ import annotations

import sys
from pathlib import Path



def add_arguments(p):
    p.add_argument("artifacts", nargs="+", type=Path, help=".pte / .onnx / .ort / .mlpackage, each with its manifest")
    p.add_argument("--text", type=Path, help="UTF-8 text to score (default: heldout.txt of the artifact's checkpoint)")
    p.add_argument("--tokenizer", type=Path, help="tokenizer.model or tokenizer.json (default: the artifact's)")
    p.add_argument("--checkpoint", type=Path, metavar="DIR",
                   help="weights of the fp32 reference (default: those named in the artifact's manifest)")
    p.add_argument("--window", type=int, default=256, help="tokens per window, bos included (capped by max_seq_len)")
    p.add_argument("--chunk", type=int, default=64,
                   help="tokens per forward call through the KV cache (an artifact that returns the last position's "
                        "logits only, a default ExecuTorch .pte or ONNX graph, gives the others one token at a time)")
    p.add_argument("--max-tokens", type=int, default=8192, help="text tokens scored at most")
    p.add_argument("--threads", type=int, default=2, help="runtime threads")
    p.add_argument("--out", type=Path, default=Path("eval.json"), help="results file (schema mobilellm.results/1)")


def main(ns):
    from mobilellm.benchmarks import schema
    from mobilellm.benchmarks.accuracy import EvalConfig, eval_artifact, merge_records
    from mobilellm.benchmarks.measure import set_threads
    cfg = EvalConfig(window=ns.window, chunk=ns.chunk, max_tokens=ns.max_tokens, threads=ns.threads)
    set_threads(cfg.threads)
    records, missing, seen = [], [], set()
    try:
        for path in ns.artifacts:
            recs, miss = eval_artifact(path, cfg, text=ns.text, tokenizer=ns.tokenizer, checkpoint=ns.checkpoint)
            merge_records(records, seen, recs)
            missing += miss
    finally:  # a failure keeps every finished record
        if records or missing:
            schema.save(ns.out, records, missing)
            print(f"wrote {len(records)} records to {ns.out}", file=sys.stderr)
    return 0
