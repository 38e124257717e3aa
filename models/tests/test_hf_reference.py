"""This project's logits held to transformers' own implementations (a reference no one here wrote):
MobileLLM-R1 through Llama4ForCausalLM (llama4_text), the original MobileLLM through LlamaForCausalLM.
Tiny random checkpoints are built and saved by transformers, then loaded by our loader."""
import copy
import json

import pytest
import torch

pytest.importorskip("transformers")
from transformers import Llama4ForCausalLM, Llama4TextConfig, LlamaConfig, LlamaForCausalLM  # noqa: E402

from mobilellm.errors import UserError  # noqa: E402
from mobilellm.models.checkpoint import load_model, save_checkpoint  # noqa: E402
from mobilellm.models.config import ModelArgs, from_name  # noqa: E402
from mobilellm.models.model import build  # noqa: E402

TOL = 1e-4  # max abs logit error, fp32
T, SPLIT = 12, 8  # sequence length; prefill of SPLIT tokens, then T - SPLIT cached decode steps


def _shape(name: str) -> dict:
    """A preset's shape as transformers' config keys (tests shrink a real preset)."""
    a = from_name(name)
    return dict(vocab_size=a.vocab_size, hidden_size=a.dim, num_hidden_layers=a.n_layers,
                num_attention_heads=a.n_heads, num_key_value_heads=a.n_kv_heads, head_dim=a.head_dim,
                max_position_embeddings=a.context_len, rms_norm_eps=a.norm_eps)


def _r1_config(**over) -> Llama4TextConfig:
    kw = dict(_shape("tiny-r1-random"), intermediate_size=160, intermediate_size_mlp=160,
              rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, use_qk_norm=True,
              no_rope_layers=None, attn_temperature_tuning=False, tie_word_embeddings=True, moe_layers=[],
              num_local_experts=0, interleave_moe_layer_step=0, attention_chunk_size=None,
              bos_token_id=1, eos_token_id=2, pad_token_id=None)
    kw.update(over)
    if kw["no_rope_layers"] is None:
        kw["no_rope_layers"] = [1] * kw["num_hidden_layers"]
    return Llama4TextConfig(**kw)


def _randomize(model, seed: int):
    """Weights large enough that every op changes the logits (the default init is near zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.15 * torch.randn(p.shape, generator=g))
    return model.eval()


def _save_hf(model, path):
    model.save_pretrained(path)  # safetensors, transformers' own config.json
    assert (path / "model.safetensors").is_file()
    return path


def _ours_incremental(m, toks):
    m.reset_cache()
    prefill = m(toks[:, :SPLIT], torch.tensor([0]))
    steps = [m(toks[:, t:t + 1], torch.tensor([t])) for t in range(SPLIT, toks.shape[1])]
    return prefill, torch.cat(steps, 1)


def _compare(ref, ours, toks):
    with torch.no_grad():
        full = ref(input_ids=toks, use_cache=False).logits  # [1, T, V], the reference per position
        prefill, decode = _ours_incremental(ours, toks)
    e_pre = (prefill - full[:, :SPLIT]).abs().max().item()
    e_dec = (decode - full[:, SPLIT:]).abs().max().item()
    assert e_pre < TOL and e_dec < TOL, f"prefill err {e_pre:.2e}, decode err {e_dec:.2e}"
    assert full.abs().max() > 1.0  # the comparison is not between near-zero numbers


def _tokens(vocab: int, seed: int = 0):
    return torch.randint(0, vocab, (1, T), generator=torch.Generator().manual_seed(seed))


def _repeat_layers(ref, k: int):
    """The LS reference: each transformers layer applied k times in a row (L0,L0,L1,L1,...)."""
    ref = copy.deepcopy(ref)
    ref.model.layers = torch.nn.ModuleList(layer for layer in ref.model.layers for _ in range(k))
    c = ref.config
    for key in ("layer_types", "no_rope_layers"):
        if getattr(c, key, None) is not None:
            setattr(c, key, [v for v in list(getattr(c, key))[:c.num_hidden_layers] for _ in range(k)])
    c.num_hidden_layers *= k
    return ref


R1_CASES = {
    "r1-shape": {},
    "r1-theta": dict(rope_parameters={"rope_type": "default", "rope_theta": 8e6}),
    "nope-temperature": dict(no_rope_layers=[1, 0], attn_temperature_tuning=True, floor_scale=3, attn_scale=0.5),
    "untied-no-qknorm": dict(tie_word_embeddings=False, use_qk_norm=False, no_rope_layers=[0, 1]),
}


@pytest.mark.parametrize("case", R1_CASES)
def test_llama4_text_matches_transformers(tmp_path, case):
    torch.manual_seed(0)
    ref = _randomize(Llama4ForCausalLM(_r1_config(**R1_CASES[case])), seed=1)
    ours = load_model(_save_hf(ref, tmp_path), max_seq_len=32)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["model_type"] == "llama4_text" and ours.args.rope_interleaved
    assert ours.args.share_embedding == cfg["tie_word_embeddings"]
    _compare(ref, ours, _tokens(ours.args.vocab_size))


def test_llama4_text_layer_sharing_matches_each_layer_applied_twice(tmp_path):
    torch.manual_seed(0)
    ref = _randomize(Llama4ForCausalLM(_r1_config(no_rope_layers=[1, 0], attn_temperature_tuning=True,
                                                  floor_scale=3)), seed=2)
    ours = load_model(_save_hf(ref, tmp_path), max_seq_len=32, repeat=2)
    assert ours.args.n_executed == 4 and len(ours.kv) == 4
    _compare(_repeat_layers(ref, 2), ours, _tokens(ours.args.vocab_size, seed=1))


def _llama_config(**over) -> LlamaConfig:
    kw = dict(_shape("tiny-random"), intermediate_size=from_name("tiny-random").ffn_hidden,
              rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, tie_word_embeddings=True,
              attention_bias=False, mlp_bias=False, hidden_act="silu", bos_token_id=1, eos_token_id=2)
    kw.update(over)
    return LlamaConfig(**kw)


@pytest.mark.parametrize("repeat", [1, 2])
def test_llama_matches_transformers(tmp_path, repeat):
    torch.manual_seed(0)
    ref = _randomize(LlamaForCausalLM(_llama_config()), seed=3)
    ours = load_model(_save_hf(ref, tmp_path), max_seq_len=32, repeat=repeat)
    assert not ours.args.rope_interleaved and ours.args.share_embedding
    _compare(_repeat_layers(ref, repeat) if repeat > 1 else ref, ours, _tokens(ours.args.vocab_size, seed=2))


def test_our_llama4_checkpoint_loads_in_transformers(tmp_path):
    """save_checkpoint writes llama4_text that transformers reads back to the same logits."""
    m = build(from_name("tiny-r1-random", nope_layers=(1,), attn_temperature_tuning=True, floor_scale=2), seed=4)
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(6.0)
    save_checkpoint(m, tmp_path)
    ref = Llama4ForCausalLM.from_pretrained(tmp_path).eval()
    assert load_model(tmp_path).args == m.args
    _compare(ref, load_model(tmp_path, max_seq_len=32), _tokens(m.args.vocab_size, seed=3))


# Bad input --------------------------------------------------------------------------------------
def _cfg_dict(**over) -> dict:
    d = _r1_config().to_dict()
    d.update(over)
    return d


@pytest.mark.parametrize("over,field", [
    (dict(num_local_experts=4, interleave_moe_layer_step=1, moe_layers=None), "moe_layers"),
    (dict(num_local_experts=4, moe_layers=[1]), "moe_layers"),
    (dict(attention_chunk_size=64, layer_types=None), "attention_chunk_size"),
    (dict(rope_parameters={"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0}), "rope_parameters"),
    (dict(attention_bias=True), "attention_bias"),
    (dict(hidden_act="gelu"), "hidden_act"),
    (dict(layer_types=["sliding_attention", "full_attention"]), "layer_types"),
])
def test_unsupported_llama4_fields_refused_by_name(over, field):
    with pytest.raises(UserError, match=rf"config.json {field} .*supported: ") as e:
        ModelArgs.from_hf_config(_cfg_dict(**over))
    assert "\n" not in str(e.value)


def test_chunked_attention_beyond_the_context_is_full_attention():
    a = ModelArgs.from_hf_config(_cfg_dict(attention_chunk_size=256, layer_types=None))  # context 256
    assert a.context_len == 256 and a == ModelArgs.from_hf_config(_cfg_dict())


def test_tokenizer_json_vocab_mismatch_names_both_sizes(tmp_path):
    from tokenizers import Tokenizer, models
    torch.manual_seed(0)
    _save_hf(_randomize(Llama4ForCausalLM(_r1_config()), seed=1), tmp_path)
    Tokenizer(models.WordLevel({f"w{i}": i for i in range(300)}, unk_token="w0")).save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(UserError, match="has 300 tokens but the model's vocabulary is 512"):
        load_model(tmp_path)


def test_tokenizer_json_special_tokens_from_config(tmp_path):
    from tokenizers import Tokenizer as HF, models
    from mobilellm.models.tokenizer import Tokenizer
    names = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"] + [f"w{i}" for i in range(509)]
    HF(models.WordLevel({n: i for i, n in enumerate(names)}, unk_token="w0")).save(str(tmp_path / "tokenizer.json"))
    assert (Tokenizer(tmp_path).bos_id, Tokenizer(tmp_path).eos_ids) == (0, (1,))  # by spelling
    (tmp_path / "config.json").write_text(json.dumps({"bos_token_id": 0, "eos_token_id": [1, 2]}))
    tok = Tokenizer(tmp_path)
    assert (tok.bos_id, tok.eos_id, tok.eos_ids, tok.vocab_size) == (0, 1, (1, 2), 512)
