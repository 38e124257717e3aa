"""Shared fixtures: tiny models shrunk from a real preset, and tokenizers/checkpoints the tests build."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")

ROOT = Path(__file__).parent


def corpus_text(max_chars: int = 200_000) -> str:
    """Text every machine has: the standard library's own sources."""
    import json, textwrap, argparse, dataclasses, pathlib  # noqa: E401
    parts = []
    for mod in (json, textwrap, argparse, dataclasses, pathlib):
        parts.append(Path(mod.__file__ if not hasattr(mod, "__path__") else Path(mod.__path__[0]) / "__init__.py").read_text())
    return "\n".join(parts)[:max_chars]


@pytest.fixture(scope="session")
def sp_tokenizer(tmp_path_factory) -> Path:
    """A SentencePiece model with LLaMA conventions (unk=0, bos=1, eos=2), 512 pieces."""
    import sentencepiece as spm
    d = tmp_path_factory.mktemp("sp")
    (d / "corpus.txt").write_text(corpus_text())
    spm.SentencePieceTrainer.Train(input=str(d / "corpus.txt"), model_prefix=str(d / "tokenizer"), vocab_size=512,
                                   model_type="bpe", unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
                                   byte_fallback=True, character_coverage=1.0, minloglevel=2,
                                   normalization_rule_name="identity", remove_extra_whitespaces=False,
                                   split_digits=True, allow_whitespace_only_pieces=True)
    return d / "tokenizer.model"


@pytest.fixture(scope="session")
def tiny_args():
    from mobilellm.models.config import from_name
    return from_name("tiny-random")


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory, sp_tokenizer) -> Path:
    """A checkpoint dir in the released format: config.json, model.safetensors, tokenizer.model."""
    import shutil
    from mobilellm.models.checkpoint import save_checkpoint
    from mobilellm.models.config import from_name
    from mobilellm.models.model import build
    d = tmp_path_factory.mktemp("ckpt") / "tiny"
    save_checkpoint(build(from_name("tiny-random"), seed=1), d)
    shutil.copy(sp_tokenizer, d / "tokenizer.model")
    return d


def run_cli(*args, check_rc: int | None = 0, timeout: int = 600) -> subprocess.CompletedProcess:
    """The console script in a fresh process, as a user runs it."""
    p = subprocess.run([sys.executable, "-m", "mobilellm.cli", *map(str, args)], capture_output=True, text=True,
                       timeout=timeout, cwd=ROOT)
    if check_rc is not None:
        assert p.returncode == check_rc, f"rc={p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr[-3000:]}"
    return p


def call_cli(*args, check_rc: int | None = 0) -> subprocess.CompletedProcess:
    """The console script's `main` in this process (no interpreter and torch start-up: ~3 s less a
    call): for bad-input catalogues. Its stdout, stderr and exit code are the script's; the process
    boundary itself is pinned by every `run_cli` test."""
    import contextlib
    import io
    import signal
    from mobilellm.cli import main
    argv = list(map(str, args))
    out, err = io.StringIO(), io.StringIO()
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = main(argv)
            except SystemExit as e:  # argparse: --help, usage errors
                rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
    p = subprocess.CompletedProcess(["mobilellm", *argv], rc, out.getvalue(), err.getvalue())
    if check_rc is not None:
        assert p.returncode == check_rc, f"rc={p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr[-3000:]}"
    return p


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture
def cli_here():
    return call_cli
