import json
import pickle

import pytest
import torch

from mobilellm.errors import UserError
from mobilellm.models.checkpoint import load_model, read_weights, save_checkpoint
from mobilellm.models.config import from_name
from mobilellm.models.model import build


@pytest.mark.parametrize("fmt,shard", [("safetensors", None), ("safetensors", 40_000), ("bin", None)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_roundtrip_bit_exact(tmp_path, fmt, shard, dtype):
    m = build(from_name("tiny-random", repeat=2), seed=2)
    save_checkpoint(m, tmp_path, fmt=fmt, dtype=dtype, shard_bytes=shard)
    if shard:
        assert len(list(tmp_path.glob("model-*-of-*.safetensors"))) > 1
    back = load_model(tmp_path)
    assert back.args.repeat == 2
    for k, v in m.state_dict().items():
        assert torch.equal(back.state_dict()[k], v.to(dtype).float()), k


def test_unused_lm_head_ignored_and_llama_config(tmp_path):
    """A MobileLLM config (share_embedding) ignores an lm_head.weight beside the shared table (as in the 1B/1.5B
    files); a llama config follows its tie_word_embeddings: tied (or absent) ignores it, untied uses it."""
    m = build(from_name("tiny-random"), seed=2)
    sd = {k: v.half() for k, v in m.state_dict().items()}
    sd["lm_head.weight"] = torch.randn_like(sd["model.embed_tokens.weight"])
    torch.save(sd, tmp_path / "pytorch_model.bin")
    base = m.args.to_hf_config()
    (tmp_path / "config.json").write_text(json.dumps(base))
    assert torch.equal(load_model(tmp_path).output_weight(), sd["model.embed_tokens.weight"].float())
    llama = {k: v for k, v in base.items() if k not in ("share_embedding", "layer_sharing", "layer_repeat",
                                                         "tie_word_embeddings")}
    llama.update(model_type="llama", architectures=["LlamaForCausalLM"])
    for tie, want in ((None, "model.embed_tokens.weight"), (True, "model.embed_tokens.weight"), (False, "lm_head.weight")):
        (tmp_path / "config.json").write_text(json.dumps(llama if tie is None else {**llama, "tie_word_embeddings": tie}))
        back = load_model(tmp_path)
        assert torch.equal(back.output_weight(), sd[want].float()), tie


def _ckpt(tmp_path, mutate_sd=None, mutate_cfg=None):
    m = build(from_name("tiny-random"))
    save_checkpoint(m, tmp_path)
    if mutate_sd:
        from safetensors.torch import load_file, save_file
        sd = load_file(tmp_path / "model.safetensors")
        mutate_sd(sd)
        save_file(sd, tmp_path / "model.safetensors")
    if mutate_cfg:
        cfg = json.loads((tmp_path / "config.json").read_text())
        mutate_cfg(cfg)
        (tmp_path / "config.json").write_text(json.dumps(cfg))
    return tmp_path


def test_missing_tensor_named(tmp_path):
    _ckpt(tmp_path, mutate_sd=lambda sd: sd.pop("model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(UserError, match=r"missing 1 tensor\(s\), e.g. model.layers.1.mlp.up_proj.weight"):
        load_model(tmp_path)


def test_unexpected_tensor_named(tmp_path):
    _ckpt(tmp_path, mutate_sd=lambda sd: sd.update({"model.extra.weight": torch.zeros(2)}))
    with pytest.raises(UserError, match="unexpected 1 tensor.*model.extra.weight"):
        load_model(tmp_path)


def test_wrong_shape_names_both(tmp_path):
    _ckpt(tmp_path, mutate_sd=lambda sd: sd.update({"model.norm.weight": torch.ones(65)}))
    with pytest.raises(UserError, match=r"model.norm.weight has shape \(65,\), config.json implies \(64,\)"):
        load_model(tmp_path)


def test_config_contradicts_weights(tmp_path):
    _ckpt(tmp_path, mutate_cfg=lambda c: c.update(num_hidden_layers=3))
    with pytest.raises(UserError, match="missing .*model.layers.2"):
        load_model(tmp_path)


def test_dir_without_config_or_weights(tmp_path):
    with pytest.raises(UserError, match="no config.json"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(from_name("tiny-random").to_hf_config()))
    with pytest.raises(UserError, match="has no weights; expected one of: model.safetensors"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        load_model(tmp_path)


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickle_that_runs_code_is_refused(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps(from_name("tiny-random").to_hf_config()))
    with open(tmp_path / "pytorch_model.bin", "wb") as f:
        pickle.dump({"model.norm.weight": _Evil()}, f)
    with pytest.raises(UserError, match="weights-only unpickler"):
        read_weights(tmp_path)
    assert "pwned" not in capsys.readouterr().out


def test_corrupt_safetensors(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(from_name("tiny-random").to_hf_config()))
    (tmp_path / "model.safetensors").write_bytes(b"\x10\x00\x00\x00garbage")
    with pytest.raises(UserError, match="corrupt safetensors"):
        read_weights(tmp_path)
