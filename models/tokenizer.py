"""Tokenizers from a local checkpoint directory: SentencePiece `tokenizer.model` (the LLaMA-2
tokenizer MobileLLM ships: unk=0, bos=1, eos=2) or a Hugging Face `tokenizer.json` alone (the
Llama-3 tokenizer MobileLLM-R1 ships: bos <|begin_of_text|> 128000, eos 128001/128008/128009)."""
from __future__ import annotations

import json
from pathlib import Path

from mobilellm.errors import UserError

TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json")
# Special-token spellings tried when neither config.json nor tokenizer_config.json names them.
BOS_NAMES = ("<s>", "<|begin_of_text|>", "<bos>")
EOS_NAMES = ("</s>", "<|end_of_text|>", "<|eot_id|>", "<eos>")


def tokenizer_file(ckpt: Path) -> Path | None:
    """The tokenizer file in a checkpoint directory, if it has one."""
    found = [Path(ckpt) / f for f in TOKENIZER_FILES if (Path(ckpt) / f).is_file()]
    return found[0] if found else None


class Tokenizer:
    def __init__(self, path: Path):
        path = Path(path)
        if path.is_dir():
            found = [path / f for f in TOKENIZER_FILES if (path / f).is_file()]
            if not found:
                raise UserError(f"{path} has no tokenizer; expected one of: {', '.join(TOKENIZER_FILES)}")
            path = found[0]
        if not path.is_file():
            raise UserError(f"tokenizer {path} does not exist")
        self.path = path
        if path.suffix == ".json":
            self._load_hf(path)
        else:
            self._load_sp(path)

    def _load_sp(self, path):
        import sentencepiece as spm
        self._sp = spm.SentencePieceProcessor()
        try:
            self._sp.Load(str(path))
        except (OSError, RuntimeError) as e:
            raise UserError(f"{path} is not a SentencePiece model: {e}") from None
        self.vocab_size = self._sp.GetPieceSize()
        self.bos_id, self.eos_id = self._sp.bos_id(), self._sp.eos_id()
        self.eos_ids = (self.eos_id,)
        self._encode = lambda s: self._sp.EncodeAsIds(s)
        self._decode = lambda ids: self._sp.DecodeIds(ids)

    def _load_hf(self, path):
        from tokenizers import Tokenizer as HFTokenizer
        try:
            tk = HFTokenizer.from_file(str(path))
        except Exception as e:  # the Rust side raises plain Exception
            raise UserError(f"{path} is not a tokenizers JSON file: {e}") from None
        self.vocab_size = tk.get_vocab_size()  # added (special) tokens included
        bos, eos = _special_ids(path.parent, tk.get_vocab())
        self.bos_id = bos if bos is not None else 1
        self.eos_ids = tuple(eos) if eos else (2,)
        self.eos_id = self.eos_ids[0]
        self._encode = lambda s: tk.encode(s, add_special_tokens=False).ids
        self._decode = lambda ids: tk.decode(ids)

    def encode(self, text: str, bos: bool = True) -> list[int]:
        return ([self.bos_id] if bos else []) + list(self._encode(text))

    def decode(self, ids) -> str:
        return self._decode([int(i) for i in ids])

    def check_vocab(self, model_vocab: int, exact: bool = False) -> None:
        """Refuse ids the model has no row for; `exact`: refuse any other size (a checkpoint's own tokenizer)."""
        if self.vocab_size > model_vocab or (exact and self.vocab_size != model_vocab):
            raise UserError(f"tokenizer {self.path} has {self.vocab_size} tokens but the model's vocabulary "
                            f"is {model_vocab}: they do not belong together")


def _special_ids(folder: Path, vocab: dict[str, int]) -> tuple[int | None, list[int]]:
    """bos id and eos ids: config.json's bos_token_id/eos_token_id, else tokenizer_config.json's
    bos_token/eos_token, else the usual spellings in the vocabulary."""
    def read(name):
        try:
            doc = json.loads((folder / name).read_text())
        except (OSError, ValueError):
            return {}
        return doc if isinstance(doc, dict) else {}

    def token_id(tok):
        tok = tok.get("content") if isinstance(tok, dict) else tok
        return vocab.get(tok) if isinstance(tok, str) else None

    cfg, tcfg = read("config.json"), read("tokenizer_config.json")
    bos = cfg.get("bos_token_id")
    if not isinstance(bos, int):
        bos = token_id(tcfg.get("bos_token"))
    if bos is None:
        bos = next((vocab[n] for n in BOS_NAMES if n in vocab), None)
    eos = cfg.get("eos_token_id")
    eos = [eos] if isinstance(eos, int) else [e for e in eos if isinstance(e, int)] if isinstance(eos, list) else []
    if not eos and token_id(tcfg.get("eos_token")) is not None:
        eos = [token_id(tcfg.get("eos_token"))]
    if not eos:
        eos = [vocab[n] for n in EOS_NAMES if n in vocab][:1]
    return bos, eos
