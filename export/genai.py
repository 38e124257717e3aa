"""An onnxruntime-genai model directory beside an ONNX artifact: `og.Model(dir)` loads it and its generator
runs the published graph as it is (issue 17's first step; the graph is still this project's, not the
builder's GroupQueryAttention / MatMulNBits one).

    <name>.genai/
        model.onnx          a hard link to <name>.onnx (one copy on disk; a copy where links are refused)
        genai_config.json   decoder type llama, one past/present pair per executed block, growing cache
        tokenizer files     those beside the checkpoint's tokenizer, when the export was given one

The graph's inputs carry onnxruntime-genai's names (`input_ids`, `position_ids`, `past_key_values.%d.*`;
export/backends/onnx.py), so nothing is renamed here."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from mobilellm.io import register_staged, remove_path, unregister_staged

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model")


def genai_dir(artifact: Path) -> Path:
    return Path(artifact).with_suffix(".genai")


def config(args, max_seq_len: int, threads: int = 2) -> dict:
    """genai_config.json for this graph: the executed depth is the layer count (layer sharing runs a stored
    block twice, each run with its own cache pair)."""
    eos = list(args.eos_ids)
    return {
        "model": {
            "type": "llama", "vocab_size": args.vocab_size, "context_length": max_seq_len,
            "bos_token_id": args.bos_id, "eos_token_id": eos[0] if len(eos) == 1 else eos, "pad_token_id": eos[0],
            "decoder": {
                "filename": "model.onnx", "head_size": args.head_dim, "hidden_size": args.dim,
                "num_attention_heads": args.n_heads, "num_key_value_heads": args.n_kv_heads,
                "num_hidden_layers": args.n_executed,
                "session_options": {"intra_op_num_threads": threads, "provider_options": []},
                "inputs": {"input_ids": "input_ids", "position_ids": "position_ids",
                           "past_key_names": "past_key_values.%d.key", "past_value_names": "past_key_values.%d.value"},
                "outputs": {"logits": "logits", "present_key_names": "present.%d.key",
                            "present_value_names": "present.%d.value"}}},
        "search": {"do_sample": False, "num_beams": 1, "num_return_sequences": 1, "max_length": max_seq_len,
                   "min_length": 0, "past_present_share_buffer": False, "top_k": 1, "top_p": 1.0, "temperature": 1.0,
                   "repetition_penalty": 1.0, "length_penalty": 1.0, "early_stopping": True,
                   "no_repeat_ngram_size": 0, "diversity_penalty": 0.0}}


def write(artifact: Path, args, max_seq_len: int, tokenizer: Path | None = None, threads: int = 2) -> Path:
    """Write `<name>.genai/` for the published `artifact`, atomically: staged beside it, then renamed over
    any previous one. Returns the directory."""
    artifact = Path(artifact)
    final = genai_dir(artifact)
    stage = Path(tempfile.mkdtemp(prefix=f".partial-{os.getpid()}-genai-", dir=artifact.parent))
    register_staged(stage)
    try:
        try:
            os.link(artifact, stage / "model.onnx")
        except OSError:  # a filesystem without hard links (FAT, some network mounts)
            shutil.copyfile(artifact, stage / "model.onnx")
        (stage / "genai_config.json").write_text(json.dumps(config(args, max_seq_len, threads), indent=1) + "\n")
        if tokenizer is not None:
            src = Path(tokenizer).parent if Path(tokenizer).is_file() else Path(tokenizer)
            for name in TOKENIZER_FILES:
                f = src / name
                if f.is_file():
                    shutil.copyfile(f, stage / name)
        remove_path(final)
        os.replace(stage, final)
    finally:
        remove_path(stage)
        unregister_staged(stage)
    return final
