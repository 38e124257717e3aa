import pytest
import torch

from mobilellm.models.config import from_name
from mobilellm.models.kv import KV_KINDS
from mobilellm.models.model import MobileLLM, build


def _incremental(m, toks, split):
    m.reset_cache()
    out = [m(toks[:, :split], torch.tensor([0]))]
    for t in range(split, toks.shape[1]):
        out.append(m(toks[:, t:t + 1], torch.tensor([t])))
    return torch.cat(out, 1)


@pytest.mark.parametrize("repeat", [1, 2, 3])
@pytest.mark.parametrize("kind", [k for k in KV_KINDS if k not in ("train", "custom-int8")])
def test_prefill_equals_prefix_then_decode(repeat, kind):
    a = from_name("tiny-random", repeat=repeat)
    ref = build(a, seed=3, max_seq_len=40)
    toks = torch.randint(0, a.vocab_size, (1, 24), generator=torch.Generator().manual_seed(0))
    full = ref(toks, torch.tensor([0]))  # eager reference, one prefill
    m = build(a, seed=3, max_seq_len=40, kv_kind=kind)
    inc = _incremental(m, toks, 7)
    assert torch.allclose(inc, full, atol=1e-5, rtol=0), (inc - full).abs().max()


@pytest.mark.parametrize("repeat", [1, 2])
def test_the_int8_cache_stores_a_quarter_and_stays_close(repeat):
    """ExecuTorch's int8 cache (custom-int8): keys/values stored int8 with one scale and zero point per position and
    head; prefill then decode stays within int8 rounding of the fp32 cache (per-position cosine), and is not exact."""
    a = from_name("tiny-random", repeat=repeat)
    ref = build(a, seed=3, max_seq_len=40)
    toks = torch.randint(0, a.vocab_size, (1, 24), generator=torch.Generator().manual_seed(0))
    full = ref(toks, torch.tensor([0]))
    m = build(a, seed=3, max_seq_len=40, kv_kind="custom-int8")
    kv = m.kv[0]
    assert kv.k_cache.dtype == torch.int8 and kv.k_scales.shape == (1, 40, a.n_kv_heads, 1)
    inc = _incremental(m, toks, 7)
    cos = torch.nn.functional.cosine_similarity(inc[0], full[0], dim=-1)
    assert cos.min() > 0.9999 and (inc - full).abs().max() > 1e-6, (cos.min(), (inc - full).abs().max())


@pytest.mark.parametrize("repeat", [1, 2])
def test_training_piece_equals_the_cached_prefill_per_sequence(repeat):
    a = from_name("tiny-random", repeat=repeat)
    ref = build(a, seed=3, max_seq_len=40)
    train = build(a, seed=3, kv_kind="train")
    toks = torch.randint(0, a.vocab_size, (3, 24), generator=torch.Generator().manual_seed(1))
    batched = train(toks, torch.tensor([0]))  # one batch of 3, no cache
    for b in range(3):
        ref.reset_cache()
        one = ref(toks[b:b + 1], torch.tensor([0]))
        assert torch.allclose(batched[b:b + 1], one, atol=1e-5, rtol=0)


def test_cache_has_one_slot_per_executed_block():
    m = build(from_name("tiny-random", repeat=2), max_seq_len=16)
    assert len(m.kv) == 4 and len(m.model.layers) == 2
    ptrs = {kv.k_cache.data_ptr() for kv in m.kv}
    assert len(ptrs) == 4  # two runs of one shared block keep separate keys


def test_shared_weights_stored_once():
    m = build(from_name("tiny-random", repeat=2))
    a, b = from_name("tiny-random", repeat=2).schedule[:2]
    assert a == b  # executed blocks 0 and 1 are the same stored module
    n_unshared = sum(p.numel() for p in build(from_name("tiny-random")).parameters())
    assert sum(p.numel() for p in m.parameters()) == n_unshared
    ptrs = [p.data_ptr() for p in m.parameters()]
    assert len(ptrs) == len(set(ptrs))


def test_sharing_changes_output_with_same_weights():
    plain = build(from_name("tiny-random"), seed=5)
    shared = MobileLLM(from_name("tiny-random", repeat=2)).eval()
    shared.load_state_dict(plain.state_dict())
    toks = torch.randint(0, 512, (1, 8))
    with torch.no_grad():
        d = (plain(toks, torch.tensor([0])) - shared(toks, torch.tensor([0]))).abs().max()
    assert d > 1e-3


def test_logits_use_the_shared_embedding():
    m = build(from_name("tiny-random"))
    assert not hasattr(m, "lm_head")
    assert m.output_weight() is m.model.embed_tokens.weight


def test_max_seq_len_bounded_by_context():
    with pytest.raises(ValueError, match="exceeds the model context"):
        build(from_name("tiny-random"), max_seq_len=10_000)


@pytest.mark.parametrize("kind", [k for k in KV_KINDS if k not in ("train", "custom-int8")])  # int8: its own test
def test_r1_switches_prefill_equals_prefix_then_decode(kind):
    """Every KV piece under R1's switches (Llama4 RoPE, QK-norm) plus a NoPE block with temperature tuning."""
    a = from_name("tiny-r1-random", repeat=2, nope_layers=(1,), attn_temperature_tuning=True, floor_scale=4)
    toks = torch.randint(0, a.vocab_size, (1, 24), generator=torch.Generator().manual_seed(0))
    full = build(a, seed=3, max_seq_len=40)(toks, torch.tensor([0]))
    inc = _incremental(build(a, seed=3, max_seq_len=40, kv_kind=kind), toks, 7)
    assert torch.allclose(inc, full, atol=1e-5, rtol=0), (inc - full).abs().max()


@pytest.mark.parametrize("name", ["tiny-random", "tiny-r1-random"])
def test_rope_computed_from_positions_matches_the_tables(name):
    """An export copy computes RoPE's cos/sin per call (no [max_seq_len, D] tables in the file): the same logits as
    the tables give, for the rotate-half and the interleaved (Llama4) layouts, in a prefill and at a late position."""
    m = build(from_name(name), max_seq_len=256)
    prompt, late = torch.tensor([[1, 5, 9, 13, 50, 7]]), torch.tensor([[3]])
    want = [m(prompt, torch.tensor([0])), m(late, torch.tensor([250]))]
    m.reset_cache()
    m.rope_from_positions()
    assert m.rope_cos is None and "rope_cos" not in dict(m.named_buffers())
    got = [m(prompt, torch.tensor([0])), m(late, torch.tensor([250]))]
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=0, atol=1e-4 * w.abs().max().item())
