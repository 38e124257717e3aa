"""The peer benchmarks' shared pieces: the checkpoint every tool reads is a faithful LLaMA (transformers' own
LlamaForCausalLM computes this project's logits from it), its tokenizers load, and the measurement process
reports what it claims on a real artifact."""
import json

import numpy as np
import pytest
import torch

from mobilellm.benchmarks import peers


def test_the_peer_checkpoint_is_the_model_as_transformers_reads_it(tmp_path):
    from transformers import AutoTokenizer, LlamaForCausalLM
    from mobilellm.models.checkpoint import load_model
    from mobilellm.models.config import from_name
    from mobilellm.models.model import build
    d = peers.write_llama_checkpoint("tiny-random", tmp_path / "hf", seed=3, context=64)
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLM"] and cfg["tie_word_embeddings"] is True
    ours = build(from_name("tiny-random"), seed=3, max_seq_len=64)
    ref = LlamaForCausalLM.from_pretrained(str(d)).eval()
    ids = torch.tensor([[1, 5, 9, 33, 17, 8, 64, 3, 200, 7]])
    with torch.no_grad():
        np.testing.assert_allclose(ref(ids).logits.numpy(), ours(ids, torch.tensor([0])).numpy(), atol=1e-4, rtol=0)
    back = load_model(d, max_seq_len=64)  # and this project reads it back as the same model
    assert back.args.share_embedding and torch.equal(back.output_weight(), ours.output_weight())
    tok = AutoTokenizer.from_pretrained(str(d))
    assert tok.convert_tokens_to_ids(["<s>", "t5", "</s>"]) == [1, 5, 2]
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=str(d / "tokenizer.model"))  # what llama.cpp's converter reads
    assert sp.get_piece_size() == cfg["vocab_size"] and sp.id_to_piece(5) == "t5" and sp.bos_id() == 1


def test_the_measurement_process_reports_each_stage(tmp_path):
    """peer_measure on this project's own ONNX export: load / init / RSS / prefill / decode per position, through
    onnxruntime-genai and through the plain session, in fresh processes."""
    from mobilellm.export.base import ExportConfig, get_backend
    from mobilellm.export.pipeline import export_artifact
    from mobilellm.models.config import from_name
    from mobilellm.models.model import build
    path, _ = export_artifact(build(from_name("tiny-random"), max_seq_len=64), "random (seed 0)", get_backend("onnx"),
                              ExportConfig(quant="fp32", max_seq_len=64), tmp_path, quiet=True)
    common = {"max_length": 64, "prompt_len": 16, "positions": [16, 40], "steps": 4, "warmup": 1, "vocab": 512}
    runs = peers.alternate("mobilellm.benchmarks.peer_measure",
                           [{**common, "name": "og", "engine": "genai", "path": str(path.with_suffix(".genai"))},
                            {**common, "name": "plain", "engine": "ort", "path": str(path)}], passes=1)
    for r in runs[0]:
        assert r["load_ms"] > 0 and r["rss_after_init_mb"] > 0 and r["prefill_tokens_per_s"] > 0, r
        assert r["decode_ms_at_16"] > 0 and r["decode_ms_at_40"] > 0
    assert [r["name"] for r in runs[0]] == ["og", "plain"]


def test_bandwidth_probe_and_bad_spec():
    bw = peers.read_bandwidth(1, 1 << 20, dram_bytes=1 << 26, reps=2, model_bytes=1 << 22)
    assert bw["dram_read_gb_s"] > 0 and bw["block_read_gb_s"] > 0 and bw["block_bytes"] == 1 << 20
    assert bw["model_read_gb_s"] > 0
    llc = bw["last_level_cache_mib"]  # sysfs's largest cache of cpu0 (this host: 300 MiB of L3)
    assert llc is None or llc > 0
    with pytest.raises(SystemExit, match="measurement of nothing died"):
        peers.measure_in_process("mobilellm.benchmarks.peer_measure", {"name": "nothing", "engine": "nope"})
