"""Training text that ships with Python itself: the standard library's sources and the
documentation topics `pydoc` serves (pydoc_data.topics). Nothing is downloaded.

Documents are whole files (one per source file, one per topic). The held-out split is by
document, decided by a hash of its name, so a held-out file is never seen in training and the
split does not depend on how many files this Python version has."""
from __future__ import annotations

import io
import sysconfig
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mobilellm.errors import UserError

# Directories that are mostly test data, generated tables or vendored code, not prose or code style.
_SKIP_DIRS = {"site-packages", "test", "tests", "idle_test", "lib2to3", "encodings", "ensurepip",
              "__pycache__", "config-3", "turtledemo", "tkinter", "idlelib", "pydoc_data"}


@dataclass(frozen=True)
class Document:
    name: str
    text: str

    @property
    def held_out(self) -> bool:
        return is_held_out(self.name)


def is_held_out(name: str, every: int = 10) -> bool:
    """One document in `every` is held out, chosen by a stable hash of its name."""
    return zlib.crc32(name.encode()) % every == 0


def stdlib_documents() -> list[Document]:
    root = Path(sysconfig.get_paths()["stdlib"])
    docs = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if any(part in _SKIP_DIRS or part.startswith("config-") for part in rel.parts[:-1]):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if text.strip():
            docs.append(Document(f"stdlib/{rel.as_posix()}", text))
    return docs


def topic_documents() -> list[Document]:
    try:
        from pydoc_data.topics import topics
    except ImportError:  # some distributions strip it
        return []
    return [Document(f"topics/{k}", v) for k, v in sorted(topics.items()) if v.strip()]


def corpus(sources: tuple[str, ...] = ("stdlib", "topics")) -> list[Document]:
    loaders = {"stdlib": stdlib_documents, "topics": topic_documents}
    unknown = [s for s in sources if s not in loaders]
    if unknown:
        raise UserError(f"unknown text source(s) {unknown}; valid: {', '.join(loaders)}")
    docs = [d for s in sources for d in loaders[s]()]
    if not docs:
        raise UserError(f"no text found in sources {', '.join(sources)}")
    return docs


def split(docs: list[Document]) -> tuple[list[Document], list[Document]]:
    train = [d for d in docs if not d.held_out]
    held = [d for d in docs if d.held_out]
    if not train or not held:
        raise UserError(f"{len(docs)} documents are too few to split into training and held-out text")
    return train, held


def train_tokenizer(docs: list[Document], out: Path, vocab_size: int, max_lines: int = 400_000) -> Path:
    """A SentencePiece BPE model with LLaMA's conventions (unk=0, bos=1, eos=2, byte fallback,
    whitespace kept), trained on the training documents only."""
    import sentencepiece as spm

    lines = [line for d in docs for line in d.text.splitlines() if line.strip()][:max_lines]
    buf = io.BytesIO()
    try:
        spm.SentencePieceTrainer.Train(
            sentence_iterator=iter(lines), model_writer=buf, vocab_size=vocab_size, model_type="bpe",
            unk_id=0, bos_id=1, eos_id=2, pad_id=-1, byte_fallback=True, character_coverage=1.0,
            normalization_rule_name="identity", remove_extra_whitespaces=False, split_digits=True,
            allow_whitespace_only_pieces=True, max_sentence_length=4096, shuffle_input_sentence=False,
            num_threads=1, minloglevel=2)
    except RuntimeError as e:  # e.g. fewer pieces than the text's distinct characters + 256 bytes
        raise UserError(f"tokenizer training failed: {str(e).split('] ')[-1]}") from None
    from mobilellm.io import atomic_path
    with atomic_path(out) as tmp:
        Path(tmp).write_bytes(buf.getvalue())
    return out


def token_stream(docs: list[Document], tok) -> np.ndarray:
    """All documents as one int32 stream, each opened with bos and closed with eos."""
    parts = []
    for d in docs:
        parts.append(np.asarray(tok.encode(d.text) + [tok.eos_id], dtype=np.int32))
    return np.concatenate(parts)


def heldout_sample(docs: list[Document], max_chars: int) -> str:
    """Whole held-out documents, a spread of them (in name-hash order, not alphabetical), up to
    `max_chars`: the text `mobilellm eval` scores by default."""
    picked, used = [], 0
    for d in sorted(docs, key=lambda d: zlib.crc32(d.name.encode()) // 10):
        if used + len(d.text) <= max_chars:
            picked.append(d)
            used += len(d.text) + 2
    return "\n\n".join(d.text for d in sorted(picked, key=lambda d: d.name))


def read_text(path: Path) -> str:
    """A user's text file for eval: must be non-empty UTF-8 text."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"text file {path} does not exist")
    raw = path.read_bytes()
    if b"\x00" in raw[:65536]:
        raise UserError(f"{path} looks binary (it has NUL bytes); give a UTF-8 text file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not UTF-8 text: {e}") from None
    if not text.strip():
        raise UserError(f"text file {path} is empty")
    return text
