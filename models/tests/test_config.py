import pytest

from mobilellm.errors import UserError
from mobilellm.models.config import ALIASES, ModelArgs, from_name

# ../shared/MOBILELLM.md, exact counts with the shared embedding
TABLE = {"125M": 124_635_456, "350M": 345_355_200, "600M": 603_188_352, "1B": 1_005_461_760,
         "1.5B": 1_511_188_800, "LS-125M": 124_635_456, "LS-350M": 345_355_200}


@pytest.mark.parametrize("name,count", TABLE.items())
def test_param_count_matches_table(name, count):
    assert from_name(name).param_count() == count


def test_layer_share_presets_execute_twice():
    a = from_name("LS-125M")
    assert (a.n_layers, a.n_executed, a.repeat) == (30, 60, 2)
    assert a.schedule[:6] == [0, 0, 1, 1, 2, 2] and a.schedule[-1] == 29


def test_hub_aliases():
    assert from_name("facebook/MobileLLM-125M-layer-share") == from_name("LS-125M")
    assert set(ALIASES.values()) <= {"125M", "350M", "600M", "1B", "1.5B", "LS-125M", "LS-350M",
                                     "R1-140M", "R1-360M", "R1-950M"}


def test_overrides_build_paper_controls():
    deep = from_name("125M", n_layers=60)
    assert deep.n_executed == 60 and deep.repeat == 1
    assert from_name("125M", repeat=3).n_executed == 90


def test_unknown_preset_lists_valid():
    with pytest.raises(UserError, match="valid: 125M, 350M"):
        from_name("125m-typo")


def test_hf_config_roundtrip():
    a = from_name("LS-350M")
    b = ModelArgs.from_hf_config(a.to_hf_config())
    assert b == a


def test_released_config_keys():
    cfg = {"model_type": "mobilellm", "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
           "num_attention_heads": 9, "num_key_value_heads": 3, "share_embedding": True, "layer_sharing": True,
           "head_dim": 64, "tie_word_embeddings": False, "vocab_size": 32000}
    a = ModelArgs.from_hf_config(cfg)
    assert a.repeat == 2 and a.param_count() == TABLE["125M"]
    plain_llama = {k: v for k, v in cfg.items() if k not in ("share_embedding", "layer_sharing", "head_dim")}
    plain_llama["model_type"] = "llama"
    assert ModelArgs.from_hf_config(plain_llama).repeat == 1


def test_bad_configs():
    with pytest.raises(UserError, match="lacks required keys: hidden_size"):
        ModelArgs.from_hf_config({"intermediate_size": 1, "num_hidden_layers": 1, "num_attention_heads": 1})
    with pytest.raises(UserError, match="multiple of n_kv_heads"):
        from_name("125M", n_kv_heads=4)
    with pytest.raises(UserError, match="model_type 'gpt2'"):
        ModelArgs.from_hf_config({**from_name("125M").to_hf_config(), "model_type": "gpt2"})


# MobileLLM-R1: computed from the architecture (tied embedding, no QK-norm weights); the README's
# rounded figures are 140M / 359M / 949M.
R1_TABLE = {"R1-140M": 140_248_512, "R1-360M": 359_431_168, "R1-950M": 949_685_760}


@pytest.mark.parametrize("name,count", R1_TABLE.items())
def test_r1_param_counts_and_aliases(name, count):
    a = from_name(name)
    assert a.param_count() == count and from_name(f"facebook/MobileLLM-{name}") == a
    assert a.rope_interleaved and a.qk_norm and a.share_embedding and a.vocab_size == 128256


def test_r1_embedding_is_the_largest_tensor():
    a = from_name("R1-950M")
    assert a.vocab_size * a.dim == 197_001_216


def test_r1_hf_config_roundtrip_with_sharing():
    a = from_name("tiny-r1-random", repeat=2, nope_layers=[1], attn_temperature_tuning=True)
    cfg = a.to_hf_config()
    assert cfg["model_type"] == "llama4_text" and cfg["no_rope_layers"] == [1, 0]
    assert ModelArgs.from_hf_config(cfg) == a


def test_info_prints_r1_count(capsys):
    from mobilellm.cli import main
    assert main(["info", "R1-950M"]) == 0
    out = capsys.readouterr().out
    assert "949,685,760" in out and "interleaved pairs (Llama4)" in out and "QK-norm on" in out
