"""What the peer benchmarks share (benchmarks/scripts/onnx_peers.py, executorch_peers.py): one Hugging Face
checkpoint in the released LLaMA format that every tool reads, memory-bandwidth probes measured in the same run,
timed subprocesses, and measurement processes run alternately so that drift on a shared machine falls on every
engine alike. Peer tools are benchmark-only extras (`pip install -e '.[peers]'`), never runtime dependencies."""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from mobilellm.benchmarks.measure import last_level_cache_mib


def write_llama_checkpoint(model: str, out: Path, seed: int = 0, context: int = 2048) -> Path:
    """`out/` as a LLaMA checkpoint of the preset's shape with seeded random weights, as transformers writes one:
    config.json (LlamaForCausalLM, tied embedding), model.safetensors, generation_config.json and a fast tokenizer
    (tokenizer.json: one word-level token per id, <s> </s> <unk> special) that every peer tool loads offline."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from mobilellm.models.checkpoint import save_checkpoint
    from mobilellm.models.config import from_name
    from mobilellm.models.model import build
    out = Path(out)
    args = from_name(model)
    if args.repeat != 1 or args.rope_interleaved:
        raise SystemExit(f"{model}: the peer checkpoint is a plain LLaMA (no layer sharing, no Llama4 RoPE)")
    save_checkpoint(build(args, seed=seed, max_seq_len=min(context, args.context_len)), out)
    cfg = json.loads((out / "config.json").read_text())
    for k in ("layer_repeat", "share_embedding", "layer_sharing"):
        cfg.pop(k, None)
    cfg.update(model_type="llama", architectures=["LlamaForCausalLM"], tie_word_embeddings=True,
               attention_bias=False, mlp_bias=False, initializer_range=0.02, use_cache=True, pretraining_tp=1,
               max_position_embeddings=min(context, args.context_len))
    (out / "config.json").write_text(json.dumps(cfg, indent=1))
    (out / "generation_config.json").write_text(json.dumps({"bos_token_id": args.bos_id, "eos_token_id": args.eos_ids[0],
                                                            "do_sample": False}))
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"t{i}": i for i in range(3, args.vocab_size)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(out / "tokenizer.json"))
    _write_sentencepiece(out / "tokenizer.model", args.vocab_size)  # the same vocabulary, for llama.cpp's converter
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
        "model_max_length": cfg["max_position_embeddings"]}))
    return out


def _write_sentencepiece(path: Path, vocab_size: int) -> None:
    """A SentencePiece model with tokenizer.json's vocabulary (<unk> <s> </s> t3 .. t{V-1}): llama.cpp's
    convert_hf_to_gguf.py does not recognise a word-level tokenizer.json, and reads this instead."""
    from sentencepiece import sentencepiece_model_pb2 as pb
    m, piece = pb.ModelProto(), pb.ModelProto.SentencePiece
    m.trainer_spec.model_type, m.trainer_spec.vocab_size = pb.TrainerSpec.BPE, vocab_size
    m.trainer_spec.unk_id, m.trainer_spec.bos_id, m.trainer_spec.eos_id, m.trainer_spec.pad_id = 0, 1, 2, -1
    m.normalizer_spec.name, m.normalizer_spec.add_dummy_prefix = "identity", False
    special = [("<unk>", piece.UNKNOWN), ("<s>", piece.CONTROL), ("</s>", piece.CONTROL)]
    for i, (text, kind) in enumerate(special + [(f"t{i}", piece.NORMAL) for i in range(3, vocab_size)]):
        p = m.pieces.add()
        p.piece, p.score, p.type = text, -float(i), kind
    path.write_bytes(m.SerializeToString())


def read_bandwidth(threads: int, block_bytes: int, dram_bytes: int = 1 << 30, reps: int = 5,
                   model_bytes: int | None = None) -> dict:
    """GB/s of `threads` threads reading (torch.sum over fp32, vectorised and split over the threads): a buffer far
    bigger than the caches (DRAM), one of `block_bytes` re-read while it stays cache-resident, and (`model_bytes`)
    one the size of the model's weights re-read, which is what decode re-reads every step: on a host whose last-level
    cache holds the model it is not DRAM's rate. Median of reps."""
    import torch
    torch.set_num_threads(threads)
    out = {}
    buffers = [("dram_read_gb_s", dram_bytes, 1), ("block_read_gb_s", block_bytes, 200)]
    if model_bytes:
        buffers.append(("model_read_gb_s", model_bytes, 3))
    for name, nbytes, inner in buffers:
        x = torch.ones(nbytes // 4)
        x.sum()  # touch it
        rates = []
        for _ in range(reps):
            t = time.perf_counter()
            for _ in range(inner):
                x.sum()
            rates.append(inner * nbytes / (time.perf_counter() - t) / 1e9)
        out[name] = round(statistics.median(rates), 1)
    out["block_bytes"] = block_bytes
    out["last_level_cache_mib"] = last_level_cache_mib()
    return out


def timed(cmd: list, cwd=None, env=None) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MiB of that child, its stderr) of a command run to completion (os.wait4: the
    child's own rusage)."""
    import tempfile
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t = time.perf_counter()
        p = subprocess.Popen([str(c) for c in cmd], stdout=out, stderr=err, cwd=cwd, env=env)
        _, status, usage = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t
        p.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        text = err.read()
    if p.returncode:
        raise SystemExit(f"{' '.join(map(str, cmd[:8]))} ... failed ({p.returncode}):\n{text[-3000:]}")
    return wall, round(usage.ru_maxrss / 1024, 1), text


def measure_in_process(module: str, spec: dict, timeout: float = 3600) -> dict:
    """Run `python -m module SPEC_JSON` (a fresh process) and return the JSON its last `RESULT ` line carries."""
    p = subprocess.run([sys.executable, "-m", module, json.dumps(spec)], capture_output=True, text=True,
                       timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    line = next((l for l in reversed(p.stdout.splitlines()) if l.startswith("RESULT ")), None)
    if line is None:
        raise SystemExit(f"measurement of {spec.get('name')} died ({p.returncode}): {p.stderr[-2000:]}")
    return json.loads(line[len("RESULT "):])


def alternate(module: str, specs: list[dict], passes: int) -> list[list[dict]]:
    """Each spec measured in its own fresh process, the specs in turn, `passes` times: [pass][spec] results."""
    return [[{**measure_in_process(module, s), "name": s["name"], "pass": k + 1} for s in specs] for k in range(passes)]


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def dir_bytes(path: Path) -> int:
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    seen, n = set(), 0
    for f in path.rglob("*"):
        if f.is_file() and f.stat().st_ino not in seen:  # a hard link counts once
            seen.add(f.stat().st_ino)
            n += f.stat().st_size
    return n


def median(xs) -> float:
    return round(statistics.median(xs), 3)


def table(rows: list[dict], cols: list[str]) -> str:
    fmt = lambda v: f"{v:,.2f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c, "—")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)
