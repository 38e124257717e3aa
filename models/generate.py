"""Decoding over any runtime that implements the `Runner` contract, eager PyTorch included."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from mobilellm.errors import UserError


class Runner(Protocol):
    """forward(ids, start_pos) -> logits [T, vocab] (float32 numpy) and advances the cache; a runner whose
    artifact gives the last position only (an ExecuTorch program's or ONNX graph's default) returns [1, vocab]: the row
    generation reads. `every_position` gets all T rows from either."""

    max_seq_len: int
    vocab_size: int

    def forward(self, ids: list[int], start_pos: int) -> np.ndarray: ...

    def reset(self) -> None: ...


def check_tokens(ids, start_pos: int, max_seq_len: int, vocab_size: int) -> None:
    if len(ids) == 0:
        raise UserError("no tokens to run")
    if start_pos < 0 or start_pos + len(ids) > max_seq_len:
        raise UserError(f"positions {start_pos}..{start_pos + len(ids) - 1} run past the maximum sequence "
                        f"length {max_seq_len} (the cache this model was built or exported with)")
    bad = [int(t) for t in ids if not 0 <= int(t) < vocab_size]
    if bad:
        raise UserError(f"token id(s) {bad[:5]} outside the vocabulary [0, {vocab_size})")


def every_position(runner: Runner, ids: list[int], start_pos: int) -> np.ndarray:
    """Logits [T, vocab] at every position of `ids` (verification, perplexity). From a runner that returns the
    last position only, the earlier rows come one token at a time (`rows_before_last`) and the last row from the one
    T-token call after them (the prefill path, the row generation reads), which writes those cache slots again and
    leaves the runner holding start_pos + T positions, so a next call continues at start_pos + T (one-token calls
    at earlier positions are rewinds: onnxruntime-genai truncates its sequence on one, the ONNX session counts what
    it holds). Verification, which must read the cache a prefill wrote, orders its calls itself (`complete_rows`)."""
    ids = list(ids)
    if len(ids) > 1 and getattr(runner, "last_position_only", False):
        earlier = rows_before_last(runner, ids, start_pos)
        return np.concatenate([earlier, runner.forward(ids, start_pos)[-1:]], 0)
    return complete_rows(runner, ids, start_pos, runner.forward(ids, start_pos))


def complete_rows(runner: Runner, ids: list[int], start_pos: int, out: np.ndarray) -> np.ndarray:
    """Every position's rows given what the T-token call over `ids` returned (`out`): as is, or, from a runner that
    returns the last position only, the earlier rows added one token at a time (`rows_before_last`). Call it after
    anything that must read the cache as that call left it."""
    ids = list(ids)
    if len(out) == len(ids):
        return out
    if getattr(runner, "last_position_only", False):
        return np.concatenate([rows_before_last(runner, ids, start_pos), out[-1:]], 0)
    raise ValueError(f"{type(runner).__name__} returned {len(out)} rows of logits for {len(ids)} tokens "
                     f"without saying it returns the last position only")


def rows_before_last(runner: Runner, ids: list[int], start_pos: int) -> np.ndarray:
    """Logits [T - 1, vocab] at positions start_pos .. start_pos + T - 2, one token at a time. Each call rewrites its
    own cache slot and attends only to the slots below it, so after a T-token call over the same ids the cache is
    as that call left it (the values equal up to rounding)."""
    return np.concatenate([runner.forward([t], start_pos + i)[-1:] for i, t in enumerate(list(ids)[:-1])]
                          or [np.zeros((0, runner.vocab_size), np.float32)], 0)


class EagerRunner:
    def __init__(self, model):
        self.model = model
        self.max_seq_len = model.max_seq_len
        self.vocab_size = model.args.vocab_size

    @property
    def last_position_only(self) -> bool:
        return bool(getattr(self.model, "last_logits_only", False))

    def reset(self):
        self.model.reset_cache()

    @torch.no_grad()
    def forward(self, ids, start_pos):
        check_tokens(ids, start_pos, self.max_seq_len, self.vocab_size)
        tokens = torch.tensor([list(ids)], dtype=torch.long)
        return self.model(tokens, torch.tensor([start_pos], dtype=torch.long))[0].float().numpy()


class GraphRunner(EagerRunner):
    """Runs a PT2E-converted graph module (its cache buffers inside) like the eager model."""

    def __init__(self, gm, max_seq_len, vocab_size, last_position_only: bool = False):
        self.model, self.max_seq_len, self.vocab_size = gm, max_seq_len, vocab_size
        self._last_only = last_position_only

    @property
    def last_position_only(self) -> bool:
        return self._last_only

    def reset(self):
        for name, b in self.model.named_buffers():
            if "cache" in name:
                b.zero_()


@dataclass
class GenerationResult:
    prompt_ids: list[int]
    new_ids: list[int]
    prefill_s: float
    decode_s: float

    @property
    def decode_tokens_per_s(self) -> float:
        n = len(self.new_ids) - 1  # the first new token comes from prefill
        return n / self.decode_s if n > 0 and self.decode_s > 0 else float("nan")

    @property
    def prefill_tokens_per_s(self) -> float:
        return len(self.prompt_ids) / self.prefill_s if self.prefill_s > 0 else float("nan")


def check_sampling(max_new_tokens: int, temperature: float, top_k: int | None) -> None:
    """The sampling settings every entry shares (generate, the CLI, benchmarks)."""
    if max_new_tokens < 1:
        raise UserError(f"--max-new-tokens must be >= 1, got {max_new_tokens}")
    if not np.isfinite(temperature) or temperature < 0:
        raise UserError(f"--temperature must be a finite number >= 0 (0 = greedy), got {temperature}")
    if top_k is not None and top_k < 1:
        raise UserError(f"--top-k must be >= 1 (or left out: no top-k), got {top_k}")


def generate(runner: Runner, prompt_ids: list[int], max_new_tokens: int, temperature: float = 0.0,
             top_k: int | None = None, seed: int = 0, eos_id=None, on_token=None) -> GenerationResult:
    """Greedy (temperature 0) or sampled decoding through the runner's KV cache; stops at `eos_id`
    (one id or a collection of ids: R1's tokenizer ends a turn with any of three)."""
    check_sampling(max_new_tokens, temperature, top_k)
    eos = set() if eos_id is None else {eos_id} if isinstance(eos_id, int) else set(eos_id)
    check_tokens(prompt_ids, 0, runner.max_seq_len, runner.vocab_size)
    if len(prompt_ids) + max_new_tokens > runner.max_seq_len:
        raise UserError(f"prompt ({len(prompt_ids)} tokens) + {max_new_tokens} new tokens exceed the maximum "
                        f"sequence length {runner.max_seq_len}")
    rng = np.random.default_rng(seed)
    runner.reset()
    t0 = time.perf_counter()
    logits = runner.forward(prompt_ids, 0)[-1]
    t1 = time.perf_counter()
    new: list[int] = []
    pos = len(prompt_ids)
    while True:
        tok = _pick(logits, temperature, top_k, rng)
        new.append(tok)
        if on_token:
            on_token(tok)
        if len(new) == max_new_tokens or tok in eos:
            break
        logits = runner.forward([tok], pos)[-1]
        pos += 1
    return GenerationResult(list(prompt_ids), new, t1 - t0, time.perf_counter() - t1)


def _pick(logits: np.ndarray, temperature: float, top_k: int | None, rng) -> int:
    if temperature <= 0:
        return int(np.argmax(logits))
    z = logits.astype(np.float64) / temperature
    if top_k:
        top_k = min(top_k, len(z))
        kth = np.partition(z, -top_k)[-top_k]
        z = np.where(z < kth, -np.inf, z)
    p = np.exp(z - z.max())
    return int(rng.choice(len(p), p=p / p.sum()))
