"""`mobilellm generate`: text through the KV cache, eager PyTorch or an exported artifact."""
from __future__ import annotations

import sys
from pathlib import Path

from mobilellm.commands.common import add_model_arguments, build_model
from mobilellm.errors import UserError


def add_arguments(p):
    add_model_arguments(p, default_model="tiny")  # the trained preset: text quality matters here
    p.add_argument("--artifact", type=Path, help="run an exported .pte/.onnx/.ort/.mlpackage instead of eager PyTorch")
    p.add_argument("--tokenizer", type=Path, help="tokenizer.model or tokenizer.json (default: from --checkpoint)")
    p.add_argument("--prompt", default="Once upon a time", help="prompt text")
    p.add_argument("--prompt-ids", help="comma-separated token ids instead of text (no tokenizer needed)")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--max-seq-len", type=int, default=None,
                   help="KV-cache length of the eager model (default: 512 or the model's context if smaller)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=None)


def _tokenizer(ns):
    from mobilellm.models.tokenizer import Tokenizer
    path = ns.tokenizer or ns.checkpoint
    if path is None and ns.artifact is not None and Path(ns.artifact).is_dir():  # an onnxruntime-genai directory
        from mobilellm.errors import UserError
        from mobilellm.export.genai import tokenizer_in
        try:  # its own tokenizer files, as the apps read them
            return Tokenizer(tokenizer_in(ns.artifact))
        except UserError:
            if ns.prompt_ids:
                return None
            raise
    if path is None and ns.artifact is not None:
        from mobilellm.manifest import read_manifest
        m = read_manifest(ns.artifact, required=False) or {}
        path = Path(m["tokenizer"]) if m.get("tokenizer") else None
    return Tokenizer(path) if path is not None else None


def main(ns):
    from mobilellm.models.generate import EagerRunner, check_sampling, check_tokens, generate
    check_sampling(ns.max_new_tokens, ns.temperature, ns.top_k)  # before minutes of loading
    if ns.artifact is not None:
        from mobilellm.export.base import backend_for_artifact, open_artifact
        runner = open_artifact(ns.artifact)
        source = f"{ns.artifact} ({backend_for_artifact(ns.artifact).name})"
    else:
        from mobilellm.commands.common import model_args
        msl = ns.max_seq_len or min(512, model_args(ns)[0].context_len)
        model, weights = build_model(ns, max_seq_len=msl)
        runner = EagerRunner(model)
        source = f"eager PyTorch, {model.args.name}, weights {weights}"
    tok = _tokenizer(ns)
    if ns.prompt_ids:
        try:
            ids = [int(x) for x in ns.prompt_ids.split(",") if x.strip()]
        except ValueError:
            raise UserError(f"--prompt-ids must be comma-separated integers, got {ns.prompt_ids!r}") from None
    elif tok is not None:
        tok.check_vocab(runner.vocab_size)
        ids = tok.encode(ns.prompt)
    else:
        raise UserError("no tokenizer: pass --checkpoint DIR (with tokenizer.model or tokenizer.json), "
                        "--tokenizer FILE, or --prompt-ids 1,2,3")
    check_tokens(ids, 0, runner.max_seq_len, runner.vocab_size)  # before a tokenizer decodes them
    if tok is not None:
        tok.check_vocab(runner.vocab_size)
    print(f"# {source}", file=sys.stderr)
    if tok is not None:
        print(ns.prompt if not ns.prompt_ids else tok.decode(ids), end="", flush=True)
    shown, printed = [], [""]

    def on_token(t):
        shown.append(t)
        if tok is not None:  # decode the whole continuation so SentencePiece spacing is right
            text = tok.decode(shown)
            print(text[len(printed[0]):], end="", flush=True)
            printed[0] = text
        else:
            print(t, end=" ", flush=True)

    res = generate(runner, ids, ns.max_new_tokens, ns.temperature, ns.top_k, seed=ns.seed,
                   eos_id=tok.eos_ids if tok is not None else None, on_token=on_token)
    print()
    print(f"# prompt {len(ids)} tokens: prefill {res.prefill_s * 1e3:.1f} ms ({res.prefill_tokens_per_s:.1f} tokens/s); "
          f"decode {len(res.new_ids)} tokens at {res.decode_tokens_per_s:.1f} tokens/s", file=sys.stderr)
    return 0
