"""PT2E static quantization must not keep the float model alive: once the converted graph is the model,
releasing the eager weights frees them (torchao's and torch.ao's per-module device caches held every
prepared model for the life of the process; convert_pt2e left the folded fp32 weights as unread attributes)."""
import contextlib
import gc
import weakref

import torch

from mobilellm.export.backends import coreml as C
from mobilellm.export.base import ExportConfig
from mobilellm.models.config import from_name
from mobilellm.models.model import build
from mobilellm.quant import coreml as Q
from mobilellm.quant import executorch as QE


class _Steps:
    @staticmethod
    def step(name):
        return contextlib.nullcontext()


def _weights(model):
    return [weakref.ref(blk.mlp.up_proj.weight) for blk in model.model.layers]


def test_coreml_pt2e_lets_the_fp32_weights_go():
    model = build(from_name("tiny-random"), seed=0, max_seq_len=64)
    cfg = ExportConfig(quant="w8a8-static", max_seq_len=64)
    em, example, dyn = C.state_model(model, cfg)
    refs = _weights(model)
    gm, facts, runner = Q.calibrated(model, em, example, dyn, cfg, _Steps, max(C.chunk_lengths(64)))
    assert not any(t.dtype == torch.float32 and t.dim() == 2 and t.shape[0] == model.args.ffn_hidden
                   for t in gm.state_dict().values())  # no unread fp32 linear weight left in the graph module
    em.release_weights(), model.release_weights()
    gc.collect()
    assert [r() for r in refs] == [None] * len(refs)
    runner.reset()  # the converted graph still runs without them
    out = runner.model(torch.tensor([[1, 2, 3]]), torch.tensor([0]))
    assert out.shape == (1, 3, model.args.vocab_size) and torch.isfinite(out).all()


def test_executorch_pt2e_forgets_the_prepared_model(monkeypatch):
    model = build(from_name("tiny-random"), seed=0, max_seq_len=64).set_kv("custom").eval()
    example = (torch.zeros(1, 2, dtype=torch.long), torch.tensor([0], dtype=torch.long))
    ep = torch.export.export(model, example, dynamic_shapes=({1: torch.export.Dim("seq", min=1, max=63)}, None),
                             strict=False)
    prepared = []
    import torchao.quantization.pt2e.quantize_pt2e as P
    real = P.prepare_pt2e
    monkeypatch.setattr(P, "prepare_pt2e", lambda *a, **k: (prepared.append(weakref.ref(m := real(*a, **k))), m)[1])
    QE.quantize_static_pt2e(ep, [[1, 5, 9, 13]])
    gc.collect()
    assert prepared and prepared[0]() is None
