"""`mobilellm info`: the architecture and exact parameter count of a preset or checkpoint."""
from __future__ import annotations

import json

from mobilellm.commands.common import add_model_arguments, model_args


def add_arguments(p):
    p.add_argument("name", nargs="?", help="preset or hub id (same as --model)")
    add_model_arguments(p)
    p.add_argument("--max-seq-len", type=int, default=None, help="cache length used for the KV-cache size line (default 512, or the context if smaller)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")


def main(ns):
    if ns.name:
        ns.model = ns.name
    args, weights = model_args(ns)
    ns.max_seq_len = ns.max_seq_len or min(512, args.context_len)
    kv_mb = args.kv_cache_bytes(ns.max_seq_len) / 2**20
    info = {
        "name": args.name, "variant": args.variant, "stored_blocks": args.n_layers,
        "executed_blocks": args.n_executed, "repeat": args.repeat, "dim": args.dim, "heads": args.n_heads,
        "kv_heads": args.n_kv_heads, "head_dim": args.head_dim, "ffn_hidden": args.ffn_hidden,
        "vocab_size": args.vocab_size, "context_len": args.context_len, "share_embedding": args.share_embedding,
        "parameters": args.param_count(), "kv_cache_mb_fp32": round(kv_mb, 2), "max_seq_len": ns.max_seq_len,
        "rope": _rope(args), "rope_theta": args.rope_theta, "qk_norm": args.qk_norm,
        "nope_layers": list(args.nope_layers), "attn_temperature_tuning": args.attn_temperature_tuning,
        "weights": weights,
    }
    if ns.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"model            {args.name} ({args.variant})")
    print(f"blocks           {args.n_layers} stored, {args.n_executed} executed (repeat {args.repeat})")
    print(f"width            dim {args.dim}, ffn {args.ffn_hidden}, heads {args.n_heads} (kv {args.n_kv_heads}, "
          f"head_dim {args.head_dim})")
    print(f"vocab / context  {args.vocab_size} / {args.context_len}; "
          f"embedding {'shared with output' if args.share_embedding else 'separate output head'}")
    print(f"attention        RoPE {_rope(args)} (theta {args.rope_theta:g}), QK-norm {'on' if args.qk_norm else 'off'}"
          + (f", NoPE blocks {list(args.nope_layers)}" if args.nope_layers else "")
          + (" with temperature tuning" if args.nope_layers and args.attn_temperature_tuning else ""))
    print(f"parameters       {args.param_count():,}")
    print(f"KV cache         {kv_mb:.1f} MiB fp32 at {ns.max_seq_len} positions ({args.n_executed} slots)")
    print(f"weights          {weights}")
    return 0


def _rope(args) -> str:
    return "interleaved pairs (Llama4)" if args.rope_interleaved else "rotate-half (LLaMA)"
