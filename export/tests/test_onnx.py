"""ONNX backend: export per scheme through the shared pipeline (verified against eager PyTorch), the
builder-shaped graph (GroupQueryAttention, one cache buffer per executed block shared by past and present),
shared weights stored once, the .ort twin, generate over both files, and one clear error for each bad input."""
import json

import numpy as np
import onnx
import pytest

from mobilellm.errors import UserError
from mobilellm.export.backends.onnx import OnnxSession
from mobilellm.export.onnx_graph import export_float, io_names
from mobilellm.export.base import ExportConfig, get_backend
from mobilellm.export.pipeline import export_artifact
from mobilellm.models.config import from_name
from mobilellm.models.generate import every_position
from mobilellm.models.model import build

MSL = 64
SCHEMES = ("fp32", "w8a8", "w8a8-static", "w8a8-dynamic-per-tensor", "w8a8-block", "w4a8-block")


def _export(out, scheme, repeat=1, **cfg):
    model = build(from_name("tiny-random", repeat=repeat), seed=1, max_seq_len=MSL)
    cfg = ExportConfig(quant=scheme, max_seq_len=MSL, **cfg)
    return export_artifact(model, "random (seed 1)", get_backend("onnx"), cfg, out, quiet=True)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx")
    return {s: _export(out, s) for s in SCHEMES}


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    return _export(tmp_path_factory.mktemp("onnx_ls"), "w8a8-static", repeat=2)


def _session(path):
    s = OnnxSession(path)
    s.load()
    s.init()
    return s


@pytest.mark.parametrize("scheme", SCHEMES)
def test_each_scheme_exports_and_verifies(exported, scheme):
    path, m = exported[scheme]
    assert path.is_file() and path.suffix == ".onnx"
    v = m["verification"]
    assert v["passed"] and v["scheme"] == scheme, v
    assert m["opset"]["ai.onnx"] == 23 and m["quant"]["scheme"] == scheme
    assert m["sizes"]["embedding_bytes"] > 0 and m["sizes"]["blocks_bytes"] > 0
    g = onnx.load(str(path), load_external_data=False).graph
    ops = [n.op_type for n in g.node]
    assert ops.count("GroupQueryAttention") == 2 and ops.count("SkipSimplifiedLayerNormalization") == 2 * 2
    dims = [[d.dim_value or d.dim_param for d in o.type.tensor_type.shape.dim] for o in g.output]
    assert g.output[0].name == "logits" and dims[0] == [1, 1, 512]
    if scheme != "fp32":
        q = m["quant"]
        assert q["quantized_matmuls"] == 5 * 2 + 1  # q/k/v packed, o, gate, up, down per stored block + the head
        assert q["excluded_nodes"] == []  # attention is inside GroupQueryAttention: every MatMul is a weight's
    if scheme.endswith("-block"):
        assert ops.count("MatMulNBits") == 11 and "MatMul" not in ops
    if scheme == "w8a8-static":
        assert m["quant"]["activation_type"].startswith("uint8") and "seeded random" in m["quant"]["calibration"]


def test_cache_names_one_pair_per_executed_block(exported, shared):
    for (path, m), executed in ((exported["fp32"], 2), (shared, 4)):
        ins, outs = io_names(executed)
        g = onnx.load(str(path), load_external_data=False).graph
        assert [i.name for i in g.input] == ins and [o.name for o in g.output] == outs
        assert list(m["io"]["inputs"]) == ins and m["io"]["inputs"]["input_ids"][1] == "sequence_length"
        assert ins[-1] == f"past_key_values.{executed - 1}.value" and outs[1] == "present.0.key"
    assert shared[1]["model"]["executed_blocks"] == 2 * exported["fp32"][1]["model"]["executed_blocks"]


def test_shared_weights_stored_once(exported, shared):
    # the LS model's stored weights are byte-for-byte the size of the unshared one's
    assert shared[1]["sizes"]["blocks_bytes"] == exported["w8a8-static"][1]["sizes"]["blocks_bytes"]
    assert shared[1]["sizes"]["embedding_bytes"] == exported["w8a8-static"][1]["sizes"]["embedding_bytes"]


def test_layer_shared_file_within_one_percent(tmp_path):
    # wide enough that weights, not graph nodes, make the file (as in the released sizes)
    sizes = {}
    for repeat in (1, 2):
        a = from_name("tiny-random", dim=512, ffn_hidden=1536, n_heads=8, n_kv_heads=2, head_dim=64, repeat=repeat)
        export_float(build(a, max_seq_len=MSL), tmp_path / f"r{repeat}.onnx", MSL)
        sizes[repeat] = sum(p.stat().st_size for p in tmp_path.glob(f"r{repeat}.onnx*"))  # the graph and its data
    assert sizes[2] / sizes[1] - 1 < 0.01, sizes


def test_no_nan_with_dynamic_quantization(exported):
    # masks, RoPE and embedding tables stay float: a quantized -inf mask gives NaN
    s = _session(exported["w8a8-dynamic-per-tensor"][0])
    ids = [1] + np.random.default_rng(0).integers(3, 512, 47).tolist()
    out = [every_position(s, ids[:40], 0)] + [s.forward([t], 40 + i) for i, t in enumerate(ids[40:])]
    assert np.isfinite(np.concatenate(out)).all()
    g = onnx.load(str(exported["w8a8-dynamic-per-tensor"][0])).graph
    quantized_inputs = {n.output[0] for n in g.node if n.op_type == "DynamicQuantizeLinear"}
    assert {n.op_type for n in g.node if quantized_inputs & set(n.input)} == {"MatMulInteger"}


def test_the_graph_returns_the_last_positions_logits(exported, tmp_path):
    """By default the graph's logits are the last position's, [1, 1, V] with a static 1 (what onnxruntime-genai's
    builder writes with prune_lm_head and its runtime detects): the head runs over one row of a prompt.
    --full-logits keeps [1, T, V] (name suffix -fl); every row agrees with the default graph's, the earlier
    ones fetched one token at a time (every_position)."""
    path, m = _export(tmp_path, "fp32", full_logits=True)
    assert path.name == "tiny-random_fp32-fl_onnx.onnx" and m["verification"]["passed"]
    assert m["io"]["outputs"]["logits"] == [1, "sequence_length", 512]
    assert exported["fp32"][1]["io"]["outputs"]["logits"] == [1, 1, 512]
    full, last = _session(path), _session(exported["fp32"][0])  # the same seeded weights
    assert not full.last_position_only and last.last_position_only
    ids = [1] + np.random.default_rng(3).integers(3, 512, 20).tolist()
    want = full.forward(ids, 0)
    assert want.shape == (len(ids), 512) and last.forward(ids, 0).shape == (1, 512)
    np.testing.assert_allclose(every_position(last, ids, 0), want, rtol=0, atol=1e-4 * np.abs(want).max())
    with pytest.raises(ValueError, match="last position only"):  # a runner that does not say so is refused
        from mobilellm.models.generate import complete_rows
        complete_rows(full, ids, 0, want[-1:])
    # eval's path: chunks through the cache, each continuing where the last left it, in the plain session and in
    # onnxruntime-genai's generator (which truncates its sequence on a rewind: the chunk's own call comes last)
    from mobilellm.benchmarks.accuracy import run_window
    from mobilellm.export.base import open_artifact
    genai = open_artifact(exported["fp32"][0].with_suffix(".genai"))
    genai.init()
    for runner in (last, genai):
        np.testing.assert_allclose(run_window(runner, ids, 8), want, rtol=0, atol=1e-4 * np.abs(want).max())
    # the -fl directory: an unpruned graph, every row through onnxruntime-genai too
    genai_full = open_artifact(path.with_suffix(".genai"))
    genai_full.init()
    assert not genai_full.last_position_only
    np.testing.assert_allclose(genai_full.forward(ids, 0), want, rtol=1e-5, atol=1e-5)


def test_prefill_decode_and_rewind(exported):
    s = _session(exported["fp32"][0])
    ids = [1] + np.random.default_rng(0).integers(3, 512, 47).tolist()
    last = s.forward(ids, 0)
    assert last.shape == (1, 512) and last.dtype == np.float32 and s.last_position_only  # the last position's
    full = every_position(s, ids, 0)
    assert full.shape == (48, 512)
    np.testing.assert_array_equal(full[-1], last[0])
    s.forward(ids[:40], 0)
    steps = np.concatenate([s.forward([t], 40 + i) for i, t in enumerate(ids[40:])])
    assert np.allclose(steps, full[40:], atol=1e-4)
    again = every_position(s, ids[44:], 44)  # rewind: the cache keeps the first 44 positions
    assert np.allclose(again, full[44:], atol=1e-4)
    with pytest.raises(UserError, match="maximum sequence length 64"):
        s.forward([5] * 30, 40)
    with pytest.raises(UserError, match="skips past the cache"):
        s.forward([5], 60)


def test_threads_setting(exported, monkeypatch):
    monkeypatch.setenv("MOBILELLM_THREADS", "3")
    assert OnnxSession(exported["fp32"][0]).threads == 3
    monkeypatch.setenv("MOBILELLM_THREADS", "many")
    with pytest.raises(UserError, match="MOBILELLM_THREADS must be a positive integer"):
        OnnxSession(exported["fp32"][0])


def test_ort_format_written_verified_and_loads(exported):
    path, m = exported["w8a8-static"]
    ort_path = path.with_suffix(".ort")
    man = json.loads((ort_path.parent / (ort_path.name + ".manifest.json")).read_text())
    assert man["artifact"] == ort_path.name and man["companion_of"] == path.name and man["verification"]["passed"]
    assert man["sizes"]["file_bytes"] == ort_path.stat().st_size
    a, b = _session(path), _session(ort_path)
    ids = [1, 7, 9, 11]
    assert np.allclose(every_position(a, ids, 0), every_position(b, ids, 0), atol=1e-3)


def test_generate_over_onnx_and_ort(cli, exported):
    path = exported["fp32"][0]
    for p in (path, path.with_suffix(".ort")):
        r = cli("generate", "--artifact", p, "--prompt-ids", "1,5,9", "--max-new-tokens", "5")
        assert len(r.stdout.split()) == 5 and "(onnx)" in r.stderr
    eager = cli("generate", "--model", "tiny-random", "--seed", "1", "--max-seq-len", str(MSL),
                "--prompt-ids", "1,5,9", "--max-new-tokens", "5")
    assert r.stdout == eager.stdout  # greedy tokens match eager PyTorch


def test_corrupt_onnx_is_a_clear_error(cli, exported, tmp_path):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(exported["fp32"][0].read_bytes()[:1000])
    r = cli("generate", "--artifact", bad, "--prompt-ids", "1,2", check_rc=2)
    assert f"{bad} is not a loadable ONNX model" in r.stderr and "Traceback" not in r.stderr


def test_unsupported_scheme_and_options_refused(tmp_path):
    with pytest.raises(UserError, match="backend 'onnx' cannot do quantization scheme '8da4w': onnxruntime's int4 GEMM "
                                        r".* its closest to 8da4w is 'w4a8-block'; valid for onnx: fp32, w8a8, "):
        _export(tmp_path, "8da4w")
    for scheme in ("w8a8-static", "fp32"):  # the shared table is the head's quantized weights
        with pytest.raises(UserError, match=f"--quantize-embedding on onnx goes with w8a8, w8a8-dynamic-per-tensor, "
                                            f"w8a8-block, w4a8-block, not {scheme}"):
            _export(tmp_path, scheme, quantize_embedding=True)
    with pytest.raises(UserError, match="--group-size 48: MatMulNBits blocks are a power of two, at least 16"):
        _export(tmp_path, "w8a8-block", group_size=48)
    assert not list(tmp_path.iterdir())  # nothing half-written is left under a final name


def test_quantized_embedding_is_the_head_int8_matrix_stored_once(exported, tmp_path):
    """--quantize-embedding: the token gather reads the output head's uint8 weights (one matrix for
    both), the float table is gone, and the artifact still verifies against fp32 (and its .ort twin)."""
    path, m = _export(tmp_path, "w8a8", quantize_embedding=True)
    args = from_name("tiny-random")
    assert m["verification"]["passed"] and m["quant"]["quantize_embedding"] and path.name.endswith("-emb8_onnx.onnx")
    g = onnx.load(str(path)).graph
    names = {i.name for i in g.initializer}
    assert not [n for n in names if n.endswith("embed_tokens.weight")]
    gathers = [n for n in g.node if n.op_type == "Gather" and "embed_tokens" in n.input[0]]
    heads = [n for n in g.node if n.op_type == "MatMulInteger" and "embed_tokens" in n.input[1]]
    assert len(heads) == 1 and gathers[0].input[0] == heads[0].input[1]  # one matrix, two readers
    plain = exported["w8a8"][1]["sizes"]
    assert plain["embedding_bytes"] - m["sizes"]["embedding_bytes"] == args.vocab_size * args.dim * 4
    assert m["sizes"]["file_bytes"] < plain["file_bytes"] - args.vocab_size * args.dim * 3
    ids = [args.bos_id, 7, 300, 12]  # the dequantized rows: (q - 128) * scale, exactly what the head multiplies
    from onnx.reference import ReferenceEvaluator
    sub = onnx.helper.make_model(onnx.helper.make_graph(
        [n for n in g.node if n.name.startswith("emb_shared")], "emb",
        [onnx.helper.make_tensor_value_info("input_ids", onnx.TensorProto.INT64, [1, None])],
        [onnx.helper.make_tensor_value_info(next(n for n in g.node if n.name == "emb_shared_out").output[0],
                                            onnx.TensorProto.FLOAT, None)],
        [i for i in g.initializer if "embed_tokens" in i.name or i.name.startswith(("emb_shared", heads[0].input[3]))]),
        opset_imports=[onnx.helper.make_opsetid("", 23)])
    got = ReferenceEvaluator(sub).run(None, {"input_ids": np.array([ids], np.int64)})[0]
    wq = {i.name: onnx.numpy_helper.to_array(i) for i in g.initializer}
    scale = wq[heads[0].input[1].replace("_quantized_u8", "_scale")]
    want = (wq[heads[0].input[1]][:, ids].T.astype(np.float32) - 128.0) * scale[ids][:, None]
    np.testing.assert_array_equal(got[0], want)


def test_w8a8_is_per_token_and_closer_to_fp32_than_per_tensor(exported):
    """The paper's W8A8 on ONNX Runtime: one activation scale per token (ReduceMax/ReduceMin over the
    row) instead of one per tensor, which makes it measurably closer to fp32 on the same weights."""
    path, m = exported["w8a8"]
    g = onnx.load(str(path)).graph
    ops = [n.op_type for n in g.node]
    assert ops.count("ReduceMax") == ops.count("ReduceMin") == m["quant"]["per_token_quantizers"] > 0
    assert "DynamicQuantizeLinear" not in ops and "per token" in m["quant"]["activation_type"]
    per_token = m["verification"]["vs_fp32"]
    per_tensor = exported["w8a8-dynamic-per-tensor"][1]["verification"]["vs_fp32"]
    assert per_token["mean_abs_err"] < per_tensor["mean_abs_err"], (per_token, per_tensor)


@pytest.mark.parametrize("scheme", ["w8a8", "w8a8-dynamic-per-tensor"])
def test_dynamic_int8_gemms_are_exact_on_this_cpu(exported, scheme):
    """Each MatMulInteger of the dynamic schemes, run alone in onnxruntime with full-range activations,
    equals the exact integer product of its (zero-point-corrected) weights. On x86 without VNNI the
    U8S8 kernel saturates (seen: up to 11% off); the stored U8U8 weights must not."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper
    path, m = exported[scheme]
    g = onnx.load(str(path)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    mmis = [n for n in g.node if n.op_type == "MatMulInteger"]
    assert mmis and all(inits[n.input[1]].dtype == np.uint8 for n in mmis), "weights stored as uint8"
    rng = np.random.default_rng(0)
    for n in mmis[:3]:
        w, wz = inits[n.input[1]], inits[n.input[3]]
        a = rng.integers(0, 256, (8, w.shape[0])).astype(np.uint8)
        one = helper.make_graph(
            [helper.make_node("MatMulInteger", ["a", "w", "az", "wz"], ["y"])], "one",
            [helper.make_tensor_value_info("a", TensorProto.UINT8, list(a.shape))],
            [helper.make_tensor_value_info("y", TensorProto.INT32, None)],
            [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array(0, np.uint8), "az"),
             numpy_helper.from_array(wz, "wz")])
        sess = ort.InferenceSession(helper.make_model(one, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString(),
                                    providers=["CPUExecutionProvider"])
        want = a.astype(np.int64) @ (w.astype(np.int64) - wz.astype(np.int64))
        assert np.array_equal(sess.run(None, {"a": a})[0], want), n.name
    assert "uint8 = int8 + 128" in m["quant"]["weight_storage"]


def test_static_weights_are_stored_unsigned(exported):
    """QDQ static: every weight DequantizeLinear reads uint8 with zero point 128, so onnxruntime fuses
    U8U8 GEMMs (exact) rather than the saturating AVX2 U8S8 kernel; the values are the int8 ones."""
    from onnx import numpy_helper
    path, m = exported["w8a8-static"]
    g = onnx.load(str(path)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    deq = [n for n in g.node if n.op_type == "DequantizeLinear" and n.input[0] in inits
           and inits[n.input[0]].ndim == 2]
    assert deq and all(inits[n.input[0]].dtype == np.uint8 and np.all(inits[n.input[2]] == 128) for n in deq)
    assert "uint8 = int8 + 128" in m["quant"]["weight_storage"]


@pytest.mark.parametrize("scheme", ["w8a8", "w8a8-static"])
def test_a_model_over_the_protobuf_limit_goes_through_external_data(tmp_path, monkeypatch, scheme):
    """Models over protobuf's 2 GB (the float graph of 600M and up) write every intermediate with its
    tensors in a data file; the published int8 file holds them inline again, and verifies. The limit
    is lowered here so a tiny model takes that path."""
    import mobilellm.export.backends.onnx as O
    monkeypatch.setattr(O, "EXTERNAL_OVER_BYTES", 10_000)
    path, m = _export(tmp_path, scheme)
    assert m["verification"]["passed"] and sorted(p.name for p in tmp_path.iterdir() if "manifest" not in p.name
                                                and not p.name.startswith(".partial")) == [
        path.with_suffix(".genai").name, path.name, path.with_suffix(".ort").name]
    g = onnx.load(str(path), load_external_data=False).graph
    assert all(t.data_location != onnx.TensorProto.EXTERNAL for t in g.initializer)
    with pytest.raises(UserError, match="fp32 ONNX file of a model over 2 GB"):
        _export(tmp_path / "f", "fp32")


def test_quantizing_in_passes_gives_the_same_model(exported, tmp_path, monkeypatch):
    """A big model is quantized a group of weights per onnxruntime call (each call holds three copies of
    what it quantizes); the passes must write the model one call writes: the same tensors, the same ops,
    bit-identical logits. The budget is lowered so a tiny model takes several passes."""
    import mobilellm.quant.onnx as Q
    monkeypatch.setattr(Q, "PASS_WEIGHT_BYTES", 40_000)
    path, m = _export(tmp_path, "w8a8")
    one_path, one = exported["w8a8"]
    assert m["quant"]["quantizer_passes"] > 3 and one["quant"]["quantizer_passes"] == 1
    assert m["verification"]["passed"]
    a, b = onnx.load(str(path)).graph, onnx.load(str(one_path)).graph
    assert sorted(n.op_type for n in a.node) == sorted(n.op_type for n in b.node)
    tensors = lambda g: sorted(t.raw_data for t in g.initializer)  # noqa: E731
    assert tensors(a) == tensors(b)
    ids = list(range(5, 21))
    np.testing.assert_array_equal(every_position(_session(path), ids, 0), every_position(_session(one_path), ids, 0))
    assert [p.name for p in tmp_path.rglob("*") if ".prep" in p.name or ".pass" in p.name] == []  # no intermediates


@pytest.mark.parametrize("preset", ["tiny", "tiny-LS"])
def test_the_genai_directory_generates_what_eager_pytorch_does(tmp_path, preset):
    """`<name>.genai/` beside the artifact: onnxruntime-genai loads it unchanged (one cache pair per
    executed block) and its greedy tokens equal eager PyTorch's and the plain session's on a trained model."""
    import json as _json

    import onnxruntime_genai as og
    from mobilellm.models.checkpoint import load_model
    from mobilellm.models.config import trained_checkpoint
    from mobilellm.models.generate import EagerRunner
    ckpt = trained_checkpoint(preset)
    model = load_model(ckpt, max_seq_len=MSL)
    eager = EagerRunner(load_model(ckpt, max_seq_len=MSL))
    cfg = ExportConfig(quant="fp32", max_seq_len=MSL, tokenizer=ckpt / "tokenizer.model")
    path, m = export_artifact(model, "trained", get_backend("onnx"), cfg, tmp_path, quiet=True)
    d = path.with_suffix(".genai")
    assert m["genai_dir"]["path"] == d.name and (d / "model.onnx").stat().st_ino == path.stat().st_ino  # one copy
    assert sorted(p.name for p in d.iterdir()) == ["genai_config.json", "model.onnx", "tokenizer.model"]
    conf = _json.loads((d / "genai_config.json").read_text())
    assert conf["model"]["decoder"]["num_hidden_layers"] == model.args.n_executed
    prompt, n = [model.args.bos_id, 5, 9, 33, 17, 8, 64, 3], 12
    genai_model = og.Model(str(d))
    params = og.GeneratorParams(genai_model)
    params.set_search_options(max_length=len(prompt) + n)
    gen = og.Generator(genai_model, params)
    gen.append_tokens(prompt)
    got = []
    while not gen.is_done() and len(got) < n:
        gen.generate_next_token()
        got.append(int(gen.get_next_tokens()[0]))

    def greedy(runner):
        runner.reset()
        ids, out = list(prompt), []
        logits = runner.forward(ids, 0)
        for _ in range(n):
            out.append(int(np.argmax(logits[-1])))
            logits = runner.forward([out[-1]], len(ids))
            ids.append(out[-1])
        return out
    assert got == greedy(eager) == greedy(_session(path)), (got, preset)


def test_a_genai_directory_runs_through_generate_and_bench(exported, cli_here, tmp_path):
    """`<name>.genai/` opens through onnxruntime-genai's generator (load = og.Model, init = the generator):
    its logits are the plain session's on the same graph, rewinds included, and bench and generate take
    the directory (its manifest is the graph's)."""
    from mobilellm.export.base import open_artifact
    from mobilellm.export.genai import GenaiSession
    path, _ = exported["w8a8"]
    d = path.with_suffix(".genai")
    og_s, plain = open_artifact(d), _session(path)
    assert isinstance(og_s, GenaiSession) and og_s.max_seq_len == MSL
    assert og_s.last_position_only and plain.last_position_only  # a pruned head, as onnxruntime-genai reads it
    prompt = [1, 5, 9, 33, 17, 8]
    for ids, pos in ((prompt, 0), ([44], 6), ([3], 7), (prompt[3:], 3), ([12, 13], 0)):  # decode, rewind, restart
        np.testing.assert_allclose(every_position(og_s, ids, pos), every_position(plain, ids, pos), rtol=1e-5, atol=1e-5)
    cli = cli_here
    r = cli("generate", "--artifact", d, "--prompt-ids", "1,5,9", "--max-new-tokens", "4")
    p = cli("generate", "--artifact", path, "--prompt-ids", "1,5,9", "--max-new-tokens", "4")
    assert r.stdout == p.stdout and r.stdout.strip() and f"{d.name} (onnx)" in r.stderr  # the same greedy tokens
    cli("bench", d, "--cold-runs", "1", "--iters", "3", "--warmup", "1", "--out", tmp_path / "b.json")
    recs = json.loads((tmp_path / "b.json").read_text())["records"]
    assert {r["metric"] for r in recs} >= {"load_ms", "init_ms", "decode_ms"}


def test_bad_genai_directories_are_one_line_each(exported, cli_here, tmp_path, monkeypatch):
    cli = cli_here
    import shutil
    src = exported["w8a8"][0].with_suffix(".genai")

    def copy(name):
        d = tmp_path / f"{name}.genai"
        shutil.copytree(src, d)
        return d
    no_conf = copy("noconf")
    (no_conf / "genai_config.json").unlink()
    wrong = copy("layers")
    conf = json.loads((wrong / "genai_config.json").read_text())
    conf["model"]["decoder"]["num_hidden_layers"] = 3
    (wrong / "genai_config.json").write_text(json.dumps(conf))
    no_graph = copy("nograph")
    (no_graph / "model.onnx").unlink()
    cases = [(no_conf, "has no genai_config.json"),
             (wrong, "says num_hidden_layers 3 but model.onnx has 2 key-cache inputs"),
             (no_graph, "names the graph model.onnx, which is not in")]
    for d, want in cases:
        r = cli("generate", "--artifact", d, "--prompt-ids", "1,2", check_rc=2)
        assert want in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = cli("generate", "--artifact", src, "--prompt", "hello", check_rc=2)  # random weights: no tokenizer files
    assert "has no tokenizer (tokenizer.json or tokenizer.model)" in r.stderr
    import onnxruntime_genai
    monkeypatch.setattr(onnxruntime_genai, "__version__", "0.17.2")
    r = cli("generate", "--artifact", src, "--prompt-ids", "1,2", check_rc=2)
    assert "onnxruntime-genai 0.17.2 is too old for this directory; need >= 0.18" in r.stderr
    monkeypatch.setitem(__import__("sys").modules, "onnxruntime_genai", None)
    r = cli("generate", "--artifact", src, "--prompt-ids", "1,2", check_rc=2)
    assert "needs onnxruntime-genai >= 0.18: pip install 'mobilellm[genai]'" in r.stderr


@pytest.mark.parametrize("scheme,bits", [("w8a8-block", 8), ("w4a8-block", 4)])
def test_blockwise_embedding_is_the_head_matrix_stored_once(exported, tmp_path, scheme, bits):
    """--quantize-embedding with MatMulNBits: the token lookup is GatherBlockQuantized over the head's own
    quantized weights (one matrix, two readers), the float table goes, and the rows it returns are exactly the
    dequantized rows the head multiplies: (q - 2^(bits-1)) * scale per block."""
    import onnxruntime as ort
    from onnx import helper, numpy_helper
    path, m = _export(tmp_path, scheme, quantize_embedding=True)
    assert m["verification"]["passed"] and "GatherBlockQuantized" in m["quant"]["embedding"]
    args = from_name("tiny-random")
    g = onnx.load(str(path)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    assert not [n for n in inits if n.endswith("embed_tokens.weight")]
    head = next(n for n in g.node if n.op_type == "MatMulNBits" and "embed_tokens" in n.input[1])
    reshape = next(n for n in g.node if n.name == "emb_shared_reshape")
    gbq = next(n for n in g.node if n.op_type == "GatherBlockQuantized")
    assert reshape.input[0] == head.input[1] and gbq.input[2] == head.input[2]  # the head's weights and scales
    plain = exported[scheme][1]["sizes"]
    assert plain["file_bytes"] - m["sizes"]["file_bytes"] > args.vocab_size * args.dim * 3.9
    sub = helper.make_model(helper.make_graph(
        [reshape, gbq], "emb", [helper.make_tensor_value_info("input_ids", onnx.TensorProto.INT64, [1, None])],
        [helper.make_tensor_value_info(gbq.output[0], onnx.TensorProto.FLOAT, None)],
        [i for i in g.initializer if i.name in (head.input[1], head.input[2], "emb_shared_shape")]),
        opset_imports=[helper.make_opsetid("", 23), helper.make_opsetid("com.microsoft", 1)])
    ids = [args.bos_id, 7, 300, 12]
    got = ort.InferenceSession(sub.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"input_ids": np.array([ids], np.int64)})[0][0]
    q, scale = inits[head.input[1]][ids].reshape(len(ids), -1), inits[head.input[2]][ids]  # [n, blocks*bytes], [n, blocks]
    if bits == 4:  # two values a byte, the first in the low nibble
        q = np.stack([q & 0xF, q >> 4], -1).reshape(len(ids), -1)
    want = (q.astype(np.float32) - (1 << (bits - 1))).reshape(len(ids), scale.shape[1], -1) * scale[:, :, None]
    np.testing.assert_array_equal(got, want.reshape(len(ids), -1)[:, :args.dim])


def test_the_cache_is_one_buffer_written_in_place(exported):
    """The plain session binds one buffer per cache tensor as both past and present (as onnxruntime-genai does):
    a step writes only its own positions, nothing is copied, and a rewind is a shorter mask."""
    s = _session(exported["fp32"][0])
    buf = s._past[0]
    assert buf.shape() == [1, 2, MSL, 16] and s._contract == "shared"
    s.forward([1, 5, 9], 0)
    k = buf.numpy()
    assert np.abs(k[:, :, :3]).sum() > 0 and np.abs(k[:, :, 3:]).sum() == 0  # positions 0..2 only
    s.forward([7], 3)
    assert s._binding.get_outputs()[1].data_ptr() == buf.data_ptr()  # present is the bound buffer itself
    first = every_position(s, [1, 5, 9, 7], 0)
    again = every_position(s, [9, 7], 2)  # rewind to 2: positions 2.. rewritten, 0..1 kept
    np.testing.assert_allclose(again, first[2:], atol=1e-5)


def test_bench_times_what_a_generation_costs(exported):
    """`bench`'s decode step at position P is one step of a generation at P (the cache grows by one, nothing is
    re-fed or copied): measured alternately step by step in one process against onnxruntime-genai's own
    generator on the same file, the median of the paired ratios is near 1."""
    import time

    import onnxruntime_genai as og
    from mobilellm.benchmarks.measure import _decode_steps
    path = exported["w8a8-block"][0]
    s = _session(path)
    model = og.Model(str(path.with_suffix(".genai")))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=MSL)
    gen = og.Generator(model, params)
    P, steps = 30, 30  # P + steps < MSL
    prompt = [1] + list(range(3, 3 + P - 1))
    gen.append_tokens(prompt)
    s.forward(prompt, 0)
    ours, theirs = [], []
    for i in range(steps):
        ours += _decode_steps(s, P + i, 0, 1)
        t = time.perf_counter()
        gen.generate_next_token()
        theirs.append((time.perf_counter() - t) * 1e3)
    # each step against its neighbour in time: a burst of load from a parallel test hits both
    ratio = float(np.median(np.array(ours) / np.array(theirs)))
    assert 0.5 < ratio < 1.5, (ratio, np.median(ours), np.median(theirs))
