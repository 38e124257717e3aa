"""Calibration data for static activation quantization: a text or token-id file, or the built-in text."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from mobilellm.errors import UserError

DEFAULT_TEXT = Path(__file__).resolve().parent.parent / "benchmarks" / "data" / "calibration.txt"


def calibration_windows(path: Path | None, vocab_size: int, tokenizer=None, window: int = 64,
                        max_windows: int = 8, seed: int = 0) -> tuple[list[list[int]], str]:
    """Token windows and a description of where they came from. A file of whitespace/comma
    separated integers is read as token ids; anything else is text (needs a tokenizer). With no
    file and no tokenizer (random-weight presets), seeded random ids stand in."""
    if path is None and tokenizer is None:
        rng = np.random.default_rng(seed)
        return ([[1] + rng.integers(3, vocab_size, window - 1).tolist() for _ in range(max_windows)],
                f"{max_windows} windows of seeded random token ids (no tokenizer for a random-weight model)")
    path = Path(path) if path is not None else DEFAULT_TEXT
    if not path.is_file():
        raise UserError(f"calibration file {path} does not exist")
    raw = path.read_bytes()
    if not raw.strip():
        raise UserError(f"calibration file {path} is empty")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"calibration file {path} is neither UTF-8 text nor token ids") from None
    parts = text.replace(",", " ").split()
    if all(p.lstrip("-").isdigit() for p in parts):
        ids = [int(p) for p in parts]
        bad = [i for i in ids if not 0 <= i < vocab_size]
        if bad:
            raise UserError(f"calibration file {path}: token ids {bad[:5]} outside the vocabulary [0, {vocab_size})")
        source = f"token ids from {path}"
    else:
        if tokenizer is None:
            raise UserError(f"calibration file {path} is text but the model has no tokenizer; "
                            f"give token ids instead, or a --checkpoint/--tokenizer")
        ids = tokenizer.encode(text, bos=False)
        source = f"text from {path}"
    windows = [[1] + ids[i:i + window - 1] for i in range(0, len(ids), window - 1)][:max_windows]
    windows = [w for w in windows if len(w) > 1]
    if not windows:
        raise UserError(f"calibration file {path} holds no tokens")
    return windows, f"{len(windows)} windows of up to {window} tokens, {source}"


def calibration_for(cfg, vocab_size: int, window: int = 64) -> tuple[list[list[int]], str]:
    """Windows for an ExportConfig: its --calibration file and --tokenizer (if any)."""
    from mobilellm.models.tokenizer import Tokenizer
    tok = Tokenizer(cfg.tokenizer) if cfg.tokenizer else None
    return calibration_windows(cfg.calibration, vocab_size, tok, window=window)
