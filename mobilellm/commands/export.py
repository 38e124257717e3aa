"""`mobilellm export`: quantize and lower one model to one backend, verify, write the manifest."""
from __future__ import annotations

import json
from pathlib import Path

from mobilellm.commands.common import add_model_arguments, build_model


def add_arguments(p):
    from mobilellm.export.base import UNAVAILABLE, backend_names
    from mobilellm.quant.schemes import help_text
    add_model_arguments(p)
    g = p.add_argument_group("export")
    g.add_argument("--backend", default=None,
                   help=f"one of: {', '.join(backend_names())} (absent: {', '.join(UNAVAILABLE)}); default: the "
                        "registry's first (lowest rank) backend that runs on this OS: executorch")
    g.add_argument("--quant", default=None, help="quantization scheme (default: the backend's own); " + help_text())
    g.add_argument("--max-seq-len", type=int, default=None,
                   help="KV-cache length baked into the artifact (default 512, or the model's context if smaller)")
    g.add_argument("--group-size", type=int, default=32, help="weight group size of 8da4w")
    g.add_argument("--quantize-embedding", action="store_true", help="also quantize the embedding table (executorch: int8 per row, any scheme; onnx: the token lookup reads the output head's quantized weights, one matrix stored once: int8 with w8a8, w8a8-dynamic-per-tensor and w8a8-block, int4 with w4a8-block)")
    g.add_argument("--external-weights", action="store_true",
                   help="executorch: write the weights to <name>.ptd beside the .pte (ExecuTorch program-data "
                        "separation); the shared embedding/output matrix is then stored once. Load with the data "
                        "file: TextLLMRunner(pte, tokenizer, data_path), Android LlmModule(..., dataPath), "
                        "Module(filePath, dataFilePaths) on iOS (iOS TextRunner takes no data file)")
    g.add_argument("--kv-cache", default="fp32", help="KV-cache storage: fp32 (default) or int8 (executorch: "
                   "ExecuTorch's quantized cache, per-token scales; a quarter of the bytes a long-context step reads)")
    g.add_argument("--full-logits", action="store_true",
                   help="executorch, onnx: logits for every position of a call, [1, T, vocab] (default: the last "
                        "position's, [1, 1, vocab], as ExecuTorch's export_llama writes and onnxruntime-genai's "
                        "builder with prune_lm_head, and as their LLM runners read; the graph then skips the output "
                        "head for the prompt's other positions and holds no [T, vocab] output)")
    g.add_argument("--calibration", type=Path, help="text or token-id file for static activation calibration")
    g.add_argument("--tokenizer", type=Path, help="tokenizer to record in the manifest (default: from --checkpoint)")
    g.add_argument("--out", type=Path, default=Path("out"), help="output directory")
    g.add_argument("--name", help="artifact file name (default: <model>_<quant>_<backend><suffix>)")
    g.add_argument("--force", action="store_true", help="overwrite an existing artifact")
    g.add_argument("--no-verify", action="store_true", help="skip running the artifact against eager PyTorch")
    g.add_argument("--json", action="store_true", help="print the manifest instead of the summary")


def main(ns):
    from mobilellm.export.base import ExportConfig, default_backends, get_backend
    from mobilellm.export.pipeline import export_artifact
    backend = get_backend(ns.backend or default_backends()[0])
    ns.quant = backend.check_scheme(ns.quant or backend.default_scheme)
    from mobilellm.commands.common import resolve_trained
    from mobilellm.models.tokenizer import tokenizer_file
    resolve_trained(ns)
    tokenizer = ns.tokenizer or (tokenizer_file(ns.checkpoint) if ns.checkpoint else None)
    if ns.max_seq_len is None:
        from mobilellm.commands.common import model_args
        ns.max_seq_len = min(512, model_args(ns)[0].context_len)
    cfg = ExportConfig(quant=ns.quant, max_seq_len=ns.max_seq_len, group_size=ns.group_size,
                       quantize_embedding=ns.quantize_embedding, calibration=ns.calibration, tokenizer=tokenizer,
                       external_weights=ns.external_weights, kv_cache=ns.kv_cache,
                       full_logits=ns.full_logits)
    from mobilellm.export.pipeline import check_full_logits
    check_full_logits(backend, cfg)  # before the model is built
    if ns.calibration is not None:  # refuse a bad file before minutes of lowering, not after
        from mobilellm.commands.common import model_args
        from mobilellm.quant.calibration import calibration_for
        calibration_for(cfg, model_args(ns)[0].vocab_size)
    model, weights = build_model(ns, max_seq_len=ns.max_seq_len)
    path, m = export_artifact(model, weights, backend, cfg, ns.out, name=ns.name, force=ns.force,
                              verify=not ns.no_verify, consume=True)
    if ns.json:
        print(json.dumps(m, indent=2, default=str))
    else:
        print_summary(path, m)
    return 0



def print_summary(path: Path, m: dict) -> None:
    from mobilellm.export.verify import summary
    mm, sizes = m["model"], m["sizes"]
    data = sizes.get("data_file_bytes", 0)
    print(f"artifact     {path}  ({(sizes['file_bytes'] - data) / 2**20:.1f} MiB, sha256 {m['sha256'][:12]}...)")
    if m.get("data_file"):
        print(f"weights      {path.with_name(m['data_file'])}  ({data / 2**20:.1f} MiB, sha256 "
              f"{m['data_file_sha256'][:12]}...; {sizes['file_bytes'] / 2**20:.1f} MiB together; the runner's data path)")
    print(f"model        {mm['name']}: {mm['variant']}, {mm['stored_blocks']} stored / {mm['executed_blocks']} "
          f"executed blocks, {mm['param_count']:,} parameters; weights {mm['weights']}")
    print(f"backend      {m['backend']}: {m['backend_summary']}")
    print(f"quant        {m['quant']['scheme']}: {m['quant']['definition']}; quantizer: {m['quant']['quantizer']}")
    if "embedding_bytes" in sizes:
        twice = (f", output head {sizes['output_head_bytes'] / 2**20:.1f} MiB (same matrix, second copy)"
                 if sizes.get("embedding_stored_twice") else " (also the output head: stored once)")
        rest = sizes.get("blocks_and_other_bytes", sizes.get("blocks_bytes"))
        print(f"bytes        embedding {sizes['embedding_bytes'] / 2**20:.1f} MiB{twice}"
              + (f", blocks and rest {rest / 2**20:.1f} MiB" if rest is not None else "")
              + f"; {sizes['file_bytes'] / mm['param_count']:.3f} bytes per stored parameter")
    if m.get("delegation"):
        d = m["delegation"]
        print(f"delegation   {d.get('summary', d)}")
    v = m.get("verification") or {}
    if "vs_fp32" in v:
        print(f"verified     {summary(v)}")
    elif v:
        print(f"verified     {v.get('skipped') or v.get('numerical')}")
    if m.get("genai_dir"):
        print(f"genai        {path.parent / m['genai_dir']['path']}/  ({m['genai_dir']['loader']}; "
              f"{', '.join(m['genai_dir']['files'])})")
    print(f"max seq len  {m['max_seq_len']};  export {m['export_seconds']} s;  manifest {path.name}.manifest.json")
