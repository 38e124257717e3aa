
import pytest
import torch

from mobilellm.errors import UserError
from mobilellm.models.checkpoint import load_model
from mobilellm.models.generate import EagerRunner, generate
from mobilellm.models.tokenizer import Tokenizer


def test_sentencepiece_llama_conventions(sp_tokenizer):
    tok = Tokenizer(sp_tokenizer)
    assert (tok.bos_id, tok.eos_id, tok.vocab_size) == (1, 2, 512)
    ids = tok.encode("def main(argv):\n    return 0")
    assert ids[0] == 1 and tok.decode(ids[1:]) == "def main(argv):\n    return 0"


def test_tokenizer_json(tmp_path):
    from tokenizers import Tokenizer as HF, decoders, models, pre_tokenizers, trainers
    from conftest import corpus_text
    tk = HF(models.BPE(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel()
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator([corpus_text(50_000)], trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"]))
    tk.save(str(tmp_path / "tokenizer.json"))
    tok = Tokenizer(tmp_path)
    assert (tok.bos_id, tok.eos_id) == (1, 2)
    assert tok.decode(tok.encode("import json", bos=False)).strip() == "import json"


def test_tokenizer_errors(tmp_path):
    with pytest.raises(UserError, match="has no tokenizer; expected one of: tokenizer.model"):
        Tokenizer(tmp_path)
    (tmp_path / "tokenizer.model").write_bytes(b"not a model")
    with pytest.raises(UserError, match="not a SentencePiece model"):
        Tokenizer(tmp_path / "tokenizer.model")


def test_vocab_mismatch(sp_tokenizer):
    with pytest.raises(UserError, match="512 tokens but the model's vocabulary is 100"):
        Tokenizer(sp_tokenizer).check_vocab(100)


def test_greedy_generation_matches_no_cache_argmax(tiny_ckpt):
    m = load_model(tiny_ckpt, max_seq_len=64)
    res = generate(EagerRunner(m), [1, 5, 9, 13], 10)
    seq = [1, 5, 9, 13]
    for _ in range(10):  # recompute from scratch each step: the cache must not change the answer
        m.reset_cache()
        logits = m(torch.tensor([seq]), torch.tensor([0]))[0, -1]
        seq.append(int(logits.argmax()))
    assert res.new_ids == seq[4:]


def test_runner_rejects_bad_positions_and_ids(tiny_ckpt):
    r = EagerRunner(load_model(tiny_ckpt, max_seq_len=16))
    with pytest.raises(UserError, match="past the maximum sequence length 16"):
        r.forward([1, 2, 3], 14)
    with pytest.raises(UserError, match=r"outside the vocabulary \[0, 512\)"):
        r.forward([1, 999], 0)
    with pytest.raises(UserError, match="exceed the maximum sequence length 16"):
        generate(r, [1] * 10, 10)


def test_sampling_is_seeded(tiny_ckpt):
    r = EagerRunner(load_model(tiny_ckpt, max_seq_len=64))
    a = generate(r, [1, 7], 12, temperature=1.0, top_k=20, seed=4).new_ids
    b = generate(r, [1, 7], 12, temperature=1.0, top_k=20, seed=4).new_ids
    assert a == b


def test_every_position_from_a_runner_that_returns_the_last_one(tiny_ckpt):
    """A model giving the last position's logits only (ExecuTorch's default program) still yields every row through
    `every_position` (verification and perplexity need them), equal to the full forward's; generation is unchanged.
    A runner returning fewer rows without saying so is an error, not a silent misalignment."""
    import numpy as np
    from mobilellm.models.generate import every_position
    model = load_model(tiny_ckpt, max_seq_len=64).eval()
    r = EagerRunner(model)
    ids, more = [1, 40, 7, 300, 12, 5], [9, 11]
    want, want_more, want_gen = r.forward(ids, 0), r.forward(more, len(ids)), generate(r, ids, 5).new_ids
    model.last_logits_only = True
    assert r.last_position_only and r.forward(ids, 0).shape == (1, want.shape[1])
    np.testing.assert_allclose(r.forward(ids, 0)[-1], want[-1], rtol=0, atol=1e-5)
    np.testing.assert_allclose(every_position(r, ids, 0), want, rtol=0, atol=1e-5)
    np.testing.assert_allclose(every_position(r, more, len(ids)), want_more, rtol=0, atol=1e-5)  # continues the cache
    assert generate(r, ids, 5).new_ids == want_gen

    class Terse:  # returns one row for T tokens without declaring it
        def forward(self, ids, start_pos):
            return np.zeros((1, 4), dtype=np.float32)
    with pytest.raises(ValueError, match="returned 1 rows of logits for 3 tokens"):
        every_position(Terse(), [1, 2, 3], 0)
