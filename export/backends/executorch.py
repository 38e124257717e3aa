"""ExecuTorch `.pte`, XNNPACK-delegated: the headline artifact for Android and iOS CPUs.

The decode/prefill graph uses ExecuTorch's LLM ops (`llama::update_cache`, `llama::custom_sdpa`;
cache layout [B, S, Hkv, D], one slot per executed block) and carries the metadata methods and
the `forward(tokens [1,T], input_pos [1])` contract of ExecuTorch's LLM runner, so
`TextLLMRunner` (what Android's LlmModule and iOS's TextRunner wrap) generates from it."""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from mobilellm.errors import UserError
from mobilellm.export.base import Backend, ExportConfig, ExportResult, Session, register
from mobilellm.models.generate import EagerRunner, GraphRunner, check_tokens

# The schemes this backend implements, and with which quantizer (quant/executorch.py runs them).
SCHEMES = {
    "fp32": "none",
    "w8a8": "torchao Int8DynamicActivationIntxWeightConfig(weight_dtype=int8, PerAxis(0)): XNNPACK's dynamically "
            "quantized GEMM (qd8, per-token)",
    "8da4w": "torchao Int8DynamicActivationIntxWeightConfig(weight_dtype=int4, PerGroup(group_size))",
    "w8a8-static": "PT2E: ExecuTorch XNNPACKQuantizer, get_symmetric_quantization_config(is_per_channel=True, "
                   "is_dynamic=False), calibrated on text windows",
}


def cache_safe(scheme) -> bool:
    """XNNPACK's weight cache may pack a weight once for every call site: true unless activations are
    calibrated (then the packed weights carry each call site's input zero point)."""
    return not scheme.calibrated


def llm_metadata(args, max_seq_len: int) -> dict:
    """Constant methods ExecuTorch's LLM runners read (names as in examples/models/llama)."""
    return {
        "get_max_seq_len": max_seq_len, "get_max_context_len": max_seq_len, "get_vocab_size": args.vocab_size,
        "get_n_layers": args.n_executed, "get_bos_id": args.bos_id, "get_eos_ids": list(args.eos_ids), "use_kv_cache": True,
        "use_sdpa_with_kv_cache": False, "enable_dynamic_shape": True,
    }


def export_model(model, cfg: ExportConfig, out: Path, steps) -> dict:
    from executorch.exir import EdgeCompileConfig, ExecutorchBackendConfig, to_edge_transform_and_lower
    from mobilellm.export import ptd
    from mobilellm.export.xnnpack_passes import partitioner, skip_unused_passes
    from mobilellm.quant import executorch as Q

    args, msl = model.args, cfg.max_seq_len
    # The pipeline hands over a model of our own (a copy, or the caller's when it consumes it): quantized in place,
    # so no fp32 copy of the blocks outlives quantization.
    em = (model.set_kv("custom-int8" if cfg.kv_cache == "int8" else "custom").tie_output_module().unshare_blocks()
          .fuse_projections().rope_from_positions().eval().requires_grad_(False))
    em.last_logits_only = not cfg.full_logits  # the program's output: the last position's logits (the runner's need)
    quant: dict = {}
    with steps.step(f"quantize ({cfg.quant}{' + int8 embedding' if cfg.quantize_embedding else ''})"):
        quant = Q.quantize_eager(em, cfg.scheme, cfg.group_size, cfg.quantize_embedding)
    example = (torch.zeros(1, 2, dtype=torch.long), torch.tensor([0], dtype=torch.long))
    dyn = ({1: torch.export.Dim("seq", min=1, max=msl - 1)}, None)
    with steps.step("torch.export"), torch.no_grad():
        ep = torch.export.export(em, example, dynamic_shapes=dyn, strict=False)
    em.last_logits_only = False  # the eager reference gives every row in one call (verification replays it)
    quant_ref = EagerRunner(em) if cfg.scheme.quantized or cfg.quantize_embedding else None
    if cfg.scheme.calibrated:
        from mobilellm.quant.calibration import calibration_for
        windows, source = calibration_for(cfg, args.vocab_size)
        with steps.step(f"calibrate and convert (PT2E, {len(windows)} windows)"):
            gm, quant = Q.quantize_static_pt2e(ep, windows, token_by_token=not cfg.full_logits)
            quant["calibration"] = source
            quant_ref = GraphRunner(gm, msl, args.vocab_size, last_position_only=not cfg.full_logits)
            ep = torch.export.export(gm, example, dynamic_shapes=dyn, strict=False)
    if cfg.external_weights:
        ptd.tag_weights(ep)
    with steps.step("lower to XNNPACK"), skip_unused_passes(ep) as skipped:
        xnn = partitioner()
        edge = to_edge_transform_and_lower(
            ep, partitioner=[xnn], constant_methods=llm_metadata(args, msl),
            compile_config=EdgeCompileConfig(_check_ir_validity=False))
        delegation = delegation_report(edge.exported_program().graph_module)
        delegation["xnnpack_passes_skipped"] = skipped  # rewrite ops absent from this graph
        delegation["decomposition_check"] = "per node" if xnn.checked is not False else "skipped: every kept node passes"
    with steps.step("serialize"):
        prog = edge.to_executorch(ExecutorchBackendConfig(
            extract_delegate_segments=True, do_quant_fusion_and_const_prop=cfg.quantize_embedding,
            external_constants=ptd.external_constant_tag if cfg.external_weights else False))
        with open(out, "wb") as f:
            prog.write_to_file(f)
        sizes = weight_bytes(args, cfg)
        if cfg.external_weights:  # <stem>.ptd beside the program; the pipeline publishes it first
            data = ptd.write_data(prog, out)
            storage = ptd.storage_report(data, args.vocab_size * args.dim * (1 if cfg.quantize_embedding else 4))
            sizes.update(data_file_bytes=data.stat().st_size, embedding_stored_twice=not storage["embedding_shared_with_head"],
                         data_file_storage=storage)
    return ExportResult(quant=quant, quantized_reference=quant_ref, data_file=cfg.external_weights, facts={
        "delegation": delegation, "io": io_contract(args, msl, cfg.kv_cache, cfg.full_logits), "sizes": sizes,
        "runtime": {"name": "executorch", "method": "forward"}})


def io_contract(args, msl: int, kv_cache: str = "fp32", full_logits: bool = False) -> dict:
    kv = "fp32" if kv_cache == "fp32" else "int8 (+ fp32 scale, int8 zero point per position and head)"
    logits = (f"float32 [1, T, {args.vocab_size}]" if full_logits else
              f"float32 [1, 1, {args.vocab_size}]: the last position's (export with --full-logits for every position)")
    return {"method": "forward", "inputs": {"tokens": f"int64 [1, T], 1 <= T <= {msl - 1}",
                                            "input_pos": "int64 [1], start position of tokens[0]"},
            "outputs": {"logits": logits},
            "kv_cache": f"inside the program: {args.n_executed} slots (one per executed block), "
                        f"[1, {msl}, {args.n_kv_heads}, {args.head_dim}] {kv} each for k and v",
            "metadata_methods": llm_metadata(args, msl)}


def weight_bytes(args, cfg: ExportConfig) -> dict:
    """Bytes of the embedding table and the output head as stored (the head is the same matrix:
    XNNPACK holds it for the output GEMM, the gather table sits outside the delegate; in one .pte both
    copies stay, with --external-weights the data file may keep one: see export/ptd.py)."""
    table = args.vocab_size * args.dim
    emb = table + 4 * args.vocab_size if cfg.quantize_embedding else 4 * table
    s = cfg.scheme
    head = (4 * table if not s.quantized else table + 4 * args.vocab_size if s.weights == "int8"
            else table // 2 + 4 * args.vocab_size * (args.dim // cfg.group_size))
    return {"embedding_bytes": emb, "output_head_bytes": head, "embedding_stored_twice": True}


def delegation_report(gm) -> dict:
    """Which ops XNNPACK took and which stayed in the portable runtime."""
    outside = Counter()
    delegates = 0
    for n in gm.graph.nodes:
        if n.op != "call_function":
            continue
        name = getattr(n.target, "__name__", str(n.target))
        if name == "executorch_call_delegate":
            delegates += 1
        elif "." in name and not name.startswith(("aten._assert", "aten.sym_size", "aten._local_scalar")):
            # an operator (Python callables and the ops above are symbolic-shape bookkeeping)
            outside[name.removeprefix("aten.").removesuffix(".default")] += 1
    return {"xnnpack_partitions": delegates, "ops_outside_xnnpack": dict(outside.most_common()),
            "summary": f"{delegates} XNNPACK partitions; outside: "
                       + ", ".join(f"{k} x{v}" for k, v in outside.most_common(6))}


class ExecuTorchSession(Session):
    """load = Runtime.load_program, init = Program.load_method('forward'), execute = Method.execute.

    The KV cache lives in the loaded method; `reset` needs no work because every call writes
    positions start..start+T-1 and attends only to positions below start+T."""

    def __init__(self, path: Path, manifest: dict | None):
        from mobilellm.export import executorch_blas
        blas = executorch_blas.load_llm_kernels()  # llama::* bound to ExecuTorch's BLAS, not torch's MKL
        from executorch.runtime import Runtime
        from mobilellm.export.xnnpack_options import set_weight_cache
        self.runtime = Runtime.get()  # imports and runtime start-up are not part of "load"
        # Pack each weight once however many blocks use it (layer sharing); MOBILELLM_XNNPACK_WEIGHT_CACHE=0 to
        # compare. Not for static activation quantization: XNNPACK folds the input's zero point into the packed
        # weights, so one cached packing is wrong for a weight fed by differently-quantized inputs (a shared
        # block's second run, RoPE's rotation in every block): +30% perplexity on `tiny` until this was found.
        from mobilellm.quant import schemes
        name = ((manifest or {}).get("quant") or {}).get("scheme")
        want = os.environ.get("MOBILELLM_XNNPACK_WEIGHT_CACHE", "1") != "0" and (
            name is None or cache_safe(schemes.get(name)))
        why = set_weight_cache(want)
        self.runtime_options = {"xnnpack_weight_cache": want and why is None, "llm_ops_blas": blas}
        if why:
            self.runtime_options["xnnpack_weight_cache_note"] = why
        self.path = Path(path)
        m = manifest or {}
        from mobilellm.export.ptd import data_path
        # weights in <stem>.ptd (--external-weights): named by the manifest, or found beside a bare .pte
        self.data_path = data_path(self.path) if m.get("data_file") or (not m and data_path(self.path).is_file()) else None
        self.max_seq_len = m.get("max_seq_len")
        self.vocab_size = (m.get("model") or {}).get("args", {}).get("vocab_size")
        self.program = self.method = None
        self.last_position_only = False  # known after init, from the program's output shape

    def load(self):
        if not self.path.is_file():
            raise UserError(f"{self.path} does not exist")
        if self.data_path and not self.data_path.is_file():
            raise UserError(f"{self.path} keeps its weights in {self.data_path.name}, which is missing")
        try:
            self.program = self.runtime.load_program(self.path, data_path=self.data_path)
        except (RuntimeError, ValueError) as e:
            extra = f" with its weights file {self.data_path.name}" if self.data_path else ""
            raise UserError(f"{self.path}{extra} is not a loadable ExecuTorch program (corrupt or truncated?): {e}") from None

    def init(self):
        try:
            self.method = self.program.load_method("forward")
        except (RuntimeError, ValueError) as e:
            raise UserError(f"{self.path}: cannot initialise method 'forward': {e}") from None
        if self.method is None:
            raise UserError(f"{self.path} has no 'forward' method")
        # [1, 1, V] at every length: the program gives the last position's logits only (the default export)
        self.last_position_only = tuple(self.method.metadata.output_tensor_meta(0).sizes())[1:2] == (1,)
        meta = {n: self.program.load_method(n).execute([])[0] for n in ("get_max_seq_len", "get_vocab_size")
                if n in self.program.method_names}
        self.max_seq_len = int(meta.get("get_max_seq_len", self.max_seq_len or 0))
        self.vocab_size = int(meta.get("get_vocab_size", self.vocab_size or 0))

    def execute(self, tokens: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
        return self.method.execute((tokens, input_pos))[0]

    def forward(self, ids, start_pos):
        check_tokens(ids, start_pos, self.max_seq_len, self.vocab_size)
        out = self.execute(torch.tensor([list(ids)], dtype=torch.long), torch.tensor([start_pos], dtype=torch.long))
        return out[0].numpy().astype(np.float32, copy=False)

    def reset(self):
        pass


register(Backend(
    name="executorch", suffix=".pte", schemes=SCHEMES,
    summary="ExecuTorch .pte, XNNPACK delegate (Android/iOS CPU), llama custom SDPA + KV-cache ops",
    export=export_model, open=ExecuTorchSession, external_weights=True, quantizes_embedding=True, rank=0,
    last_logits=True,  # forward returns [1, 1, V] (the runner's need); --full-logits: [1, T, V]
    kv_caches=("fp32", "int8"),  # int8: ExecuTorch's quantized cache (llama::custom_quantized_sdpa; models/kv.py)
    export_memory=(1500.0, 5.0),  # W8A8: R1-140M 2,006 MiB, 350M 2,417, R1-950M 5,560
))
