"""Tokenizers from a local checkpoint directory: SentencePiece `tokenizer.model` (the LLaMA-2
tokenizer MobileLLM ships: unk=0, bos=1, eos=2) or a Hugging Face `tokenizer.json`."""
from __future__ import annotations

from pathlib import Path

from mobilellm.errors import UserError

TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json")


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
        self._encode = lambda s: self._sp.EncodeAsIds(s)
        self._decode = lambda ids: self._sp.DecodeIds(ids)

    def _load_hf(self, path):
        from tokenizers import Tokenizer as HFTokenizer
        try:
            tk = HFTokenizer.from_file(str(path))
        except Exception as e:  # the Rust side raises plain Exception
            raise UserError(f"{path} is not a tokenizers JSON file: {e}") from None
        self.vocab_size = tk.get_vocab_size()
        vocab = tk.get_vocab()
        self.bos_id = vocab.get("<s>", 1)
        self.eos_id = vocab.get("</s>", 2)
        self._encode = lambda s: tk.encode(s, add_special_tokens=False).ids
        self._decode = lambda ids: tk.decode(ids)

    def encode(self, text: str, bos: bool = True) -> list[int]:
        return ([self.bos_id] if bos else []) + list(self._encode(text))

    def decode(self, ids) -> str:
        return self._decode([int(i) for i in ids])

    def check_vocab(self, model_vocab: int) -> None:
        if self.vocab_size > model_vocab:
            raise UserError(f"tokenizer {self.path} has {self.vocab_size} tokens but the model's vocabulary "
                            f"is {model_vocab}: they do not belong together")
