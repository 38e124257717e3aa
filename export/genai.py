"""An onnxruntime-genai model directory beside an ONNX artifact: `og.Model(dir)` loads it and its generator
runs the published graph as it is (the graph is the one the builder writes for a LLaMA: export/onnx_graph.py).

    <name>.genai/
        model.onnx          a hard link to <name>.onnx (one copy on disk; a copy where links are refused)
        genai_config.json   decoder type llama, one past/present pair per executed block, the cache one buffer
                            of context_length positions per tensor shared by past and present
        tokenizer files     those beside the checkpoint's tokenizer, when the export was given one

The graph's inputs carry onnxruntime-genai's names (`input_ids`, `attention_mask`, `past_key_values.%d.*`),
so nothing is renamed here."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from mobilellm.export.base import Session
from mobilellm.io import register_staged, remove_path, unregister_staged

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model")


def genai_dir(artifact: Path) -> Path:
    return Path(artifact).with_suffix(".genai")


def config(args, max_seq_len: int, threads: int = 2) -> dict:
    """genai_config.json for this graph: the executed depth is the layer count (layer sharing runs a stored
    block twice, each run with its own cache pair)."""
    eos = list(args.eos_ids)
    return {
        "model": {
            "type": "llama", "vocab_size": args.vocab_size, "context_length": max_seq_len,
            "bos_token_id": args.bos_id, "eos_token_id": eos[0] if len(eos) == 1 else eos, "pad_token_id": eos[0],
            "decoder": {
                "filename": "model.onnx", "head_size": args.head_dim, "hidden_size": args.dim,
                "num_attention_heads": args.n_heads, "num_key_value_heads": args.n_kv_heads,
                "num_hidden_layers": args.n_executed,
                "session_options": {"intra_op_num_threads": threads, "provider_options": []},
                "inputs": {"input_ids": "input_ids", "attention_mask": "attention_mask",
                           "past_key_names": "past_key_values.%d.key", "past_value_names": "past_key_values.%d.value"},
                "outputs": {"logits": "logits", "present_key_names": "present.%d.key",
                            "present_value_names": "present.%d.value"}}},
        "search": {"do_sample": False, "num_beams": 1, "num_return_sequences": 1, "max_length": max_seq_len,
                   "min_length": 0, "past_present_share_buffer": True, "top_k": 1, "top_p": 1.0, "temperature": 1.0,
                   "repetition_penalty": 1.0, "length_penalty": 1.0, "early_stopping": True,
                   "no_repeat_ngram_size": 0, "diversity_penalty": 0.0}}


def write(artifact: Path, args, max_seq_len: int, tokenizer: Path | None = None, threads: int = 2) -> Path:
    """Write `<name>.genai/` for the published `artifact`, atomically: staged beside it, then renamed over
    any previous one. Returns the directory."""
    artifact = Path(artifact)
    final = genai_dir(artifact)
    stage = Path(tempfile.mkdtemp(prefix=f".partial-{os.getpid()}-genai-", dir=artifact.parent))
    register_staged(stage)
    try:
        try:
            os.link(artifact, stage / "model.onnx")
        except OSError:  # a filesystem without hard links (FAT, some network mounts)
            shutil.copyfile(artifact, stage / "model.onnx")
        (stage / "genai_config.json").write_text(json.dumps(config(args, max_seq_len, threads), indent=1) + "\n")
        if tokenizer is not None:
            src = Path(tokenizer).parent if Path(tokenizer).is_file() else Path(tokenizer)
            for name in TOKENIZER_FILES:
                f = src / name
                if f.is_file():
                    shutil.copyfile(f, stage / name)
        remove_path(final)
        os.replace(stage, final)
    finally:
        remove_path(stage)
        unregister_staged(stage)
    return final


MIN_OG = (0, 18)  # the onnxruntime-genai release this directory layout is tested with (pinned in the genai extra)


def _og():
    """onnxruntime_genai, or one line naming what is missing or too old."""
    from mobilellm.errors import UserError
    try:
        import onnxruntime_genai as og
    except ImportError:
        raise UserError("running an onnxruntime-genai directory needs onnxruntime-genai >= "
                        f"{'.'.join(map(str, MIN_OG))}: pip install 'mobilellm[genai]'") from None
    have = tuple(int(x) for x in og.__version__.split(".")[:2] if x.isdigit())
    if have < MIN_OG:
        raise UserError(f"onnxruntime-genai {og.__version__} is too old for this directory; need >= "
                        f"{'.'.join(map(str, MIN_OG))}: pip install 'mobilellm[genai]'")
    return og


def check_dir(d: Path) -> tuple[dict, bool]:
    """A model directory onnxruntime-genai can run, or one line naming the file at fault. Returns its config, and
    whether its graph's logits are the last position's only ([1, 1, V], as the runtime's Model::IsPruned decides)."""
    import onnx
    from mobilellm.errors import UserError
    d = Path(d)
    conf_path = d / "genai_config.json"
    if not conf_path.is_file():
        raise UserError(f"{d} has no genai_config.json: not an onnxruntime-genai model directory "
                        "(`mobilellm export --backend onnx` writes <name>.genai/ beside the .onnx)")
    try:
        dec = json.loads(conf_path.read_text())["model"]["decoder"]
        layers, graph = int(dec["num_hidden_layers"]), d / dec["filename"]
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"{conf_path} is not a valid genai_config.json (model.decoder.{e} missing or malformed)") from None
    if not graph.is_file():
        raise UserError(f"{conf_path} names the graph {graph.name}, which is not in {d}")
    proto = onnx.load(str(graph), load_external_data=False)
    inputs = [i.name for i in proto.graph.input]
    pattern = dec.get("inputs", {}).get("past_key_names", "past_key_values.%d.key")
    kv = sum(1 for i in inputs if any(i == pattern % n for n in range(len(inputs))))
    if kv != layers:
        raise UserError(f"{conf_path} says num_hidden_layers {layers} but {graph.name} has {kv} key-cache inputs "
                        f"({pattern}); re-export the directory")
    from mobilellm.export.backends.onnx import logits_last_only
    logits = dec.get("outputs", {}).get("logits", "logits")
    dims = [[d.dim_value if d.HasField("dim_value") else d.dim_param for d in o.type.tensor_type.shape.dim]
            for o in proto.graph.output if o.name == logits]
    return json.loads(conf_path.read_text()), bool(dims) and logits_last_only(dims[0])


def tokenizer_in(d: Path) -> Path:
    """The tokenizer file of a model directory (onnxruntime-genai reads tokenizer.json or a SentencePiece
    tokenizer.model), or one line saying there is none."""
    from mobilellm.errors import UserError
    for name in ("tokenizer.json", "tokenizer.model"):
        if (Path(d) / name).is_file():
            return Path(d) / name
    raise UserError(f"{d} has no tokenizer (tokenizer.json or tokenizer.model): export with a checkpoint's "
                    "tokenizer, or give --prompt-ids")


class GenaiSession(Session):
    """A `<name>.genai/` directory through onnxruntime-genai's own generator, as an app would run it:
    load = og.Model(dir), init = GeneratorParams + Generator. `forward` appends tokens (a rewind first when
    the position is earlier than what the generator holds) and returns that call's logits."""

    def __init__(self, path: Path, manifest: dict | None = None, threads: int | None = None):
        self.path, self.manifest = Path(path), manifest or {}
        conf, self.last_position_only = check_dir(self.path)  # last only: logits [1, 1, V] (a pruned head)
        conf = conf["model"]
        self.max_seq_len, self.vocab_size = int(conf["context_length"]), int(conf["vocab_size"])
        self.threads = threads
        self._og, self._model, self._gen = _og(), None, None

    def load(self) -> None:
        self._model = self._og.Model(str(self.path))

    def init(self) -> None:
        if self._model is None:
            self.load()
        self.reset()

    def reset(self) -> None:
        params = self._og.GeneratorParams(self._model)
        params.set_search_options(max_length=self.max_seq_len)
        self._gen, self._len = self._og.Generator(self._model, params), 0

    def forward(self, ids, start_pos: int):
        import numpy as np
        from mobilellm.errors import UserError
        from mobilellm.models.generate import check_tokens
        check_tokens(ids, start_pos, self.max_seq_len, self.vocab_size)
        if start_pos > self._len:
            raise UserError(f"start position {start_pos} skips past the cache, which holds {self._len} positions")
        if start_pos < self._len:
            if start_pos == 0:
                self.reset()
            else:
                self._gen.rewind_to(start_pos)
        self._gen.append_tokens(list(map(int, ids)))
        self._len = start_pos + len(ids)
        return np.asarray(self._gen.get_output("logits"), dtype=np.float32)[0]
