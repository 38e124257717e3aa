"""mobilellm::gqa (export/onnx_gqa.py) against onnxruntime's GroupQueryAttention kernel it exports to: the same
outputs and cache writes for a prompt from position 0, a chunk after a past, and single-token decode, with RoPE
fused (half-split and interleaved) or not, the cache one buffer bound as both past and present."""
import numpy as np
import pytest
import torch

from mobilellm.export import onnx_gqa  # noqa: F401  registers mobilellm::gqa

H, HKV, D, S, DIM = 4, 2, 16, 32, 48


class _One(torch.nn.Module):
    def __init__(self, rotary: bool, interleaved: bool):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w = torch.nn.Parameter(torch.randn(DIM, (H + 2 * HKV) * D, generator=g) * 0.2, requires_grad=False)
        ang = torch.outer(torch.arange(S).float(), 1.0 / 10000 ** (torch.arange(0, D, 2).float() / D))
        self.register_buffer("cos", ang.cos())
        self.register_buffer("sin", ang.sin())
        self.rotary, self.interleaved = rotary, interleaved

    def forward(self, x, attention_mask, past_k, past_v):
        seqlens = (attention_mask.sum(1) - 1).to(torch.int32)
        total = torch.full((), attention_mask.shape[1], dtype=torch.int32)
        return torch.ops.mobilellm.gqa(x @ self.w, past_k, past_v, seqlens, total, self.cos, self.sin, H, HKV,
                                       self.rotary, self.interleaved, D ** -0.5)


@pytest.mark.parametrize("rotary,interleaved", [(True, False), (True, True), (False, False)])
def test_the_onnxruntime_kernel_computes_the_reference(tmp_path, rotary, interleaved):
    import onnxruntime as ort
    m = _One(rotary, interleaved).eval()
    x, mask, pk = torch.randn(1, 3, DIM), torch.ones(1, 5, dtype=torch.long), torch.randn(1, HKV, S, D)
    t, tot, cap = (torch.export.Dim(n, min=1, max=S) for n in ("t", "total", "cap"))
    prog = torch.onnx.export(m, (x, mask, pk, pk.clone()), dynamo=True, dynamic_shapes=({1: t}, {1: tot}, {2: cap}, {2: cap}),
                             input_names=["x", "attention_mask", "past_k", "past_v"], output_names=["y", "k", "v"],
                             opset_version=23, custom_translation_table=onnx_gqa.TRANSLATIONS, verbose=False)
    prog.save(str(tmp_path / "gqa.onnx"))
    assert [n.op_type for n in prog.model_proto.graph.node].count("GroupQueryAttention") == 1
    sess = ort.InferenceSession(str(tmp_path / "gqa.onnx"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    buf_k = rng.standard_normal((1, HKV, S, D)).astype(np.float32)  # stale values past the mask: never read
    buf_v = rng.standard_normal((1, HKV, S, D)).astype(np.float32)
    ref_k, ref_v = torch.from_numpy(buf_k.copy()), torch.from_numpy(buf_v.copy())
    k_ort, v_ort = ort.OrtValue.ortvalue_from_numpy(buf_k), ort.OrtValue.ortvalue_from_numpy(buf_v)
    binding = sess.io_binding()
    binding.bind_output("y")
    binding.bind_ortvalue_input("past_k", k_ort)
    binding.bind_ortvalue_input("past_v", v_ort)
    binding.bind_ortvalue_output("k", k_ort)  # the shared buffer, as onnxruntime-genai binds it
    binding.bind_ortvalue_output("v", v_ort)
    pos = 0
    for T in (6, 3, 1, 1):  # a prompt, a chunk after it, two decode steps
        xs = torch.randn(1, T, DIM)
        am = torch.ones(1, pos + T, dtype=torch.long)
        with torch.no_grad():
            y, ref_k, ref_v = m(xs, am, ref_k, ref_v)
        binding.bind_cpu_input("x", xs.numpy())
        binding.bind_cpu_input("attention_mask", am.numpy())
        binding.bind_output("y")
        sess.run_with_iobinding(binding)
        np.testing.assert_allclose(binding.get_outputs()[0].numpy(), y.numpy(), atol=2e-5, rtol=1e-4)
        np.testing.assert_allclose(k_ort.numpy()[:, :, :pos + T], ref_k[:, :, :pos + T].numpy(), atol=2e-5, rtol=1e-4)
        np.testing.assert_allclose(v_ort.numpy()[:, :, :pos + T], ref_v[:, :, :pos + T].numpy(), atol=2e-5, rtol=1e-4)
        pos += T
    assert binding.get_outputs()[1].data_ptr() == k_ort.data_ptr()  # written in place: no present copy
