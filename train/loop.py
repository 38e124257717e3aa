"""`mobilellm train`: a small MobileLLM-architecture model trained on Python's own text.

Deterministic and resumable: batch `s` is drawn from a generator seeded by (seed, s), and the
state saved every `save_every` steps holds the weights, the optimizer and the loss curve, so an
interrupted run resumed from its last save ends with the same weights as an uninterrupted one.
The result is a Hugging Face-format directory that `--checkpoint` loads."""
from __future__ import annotations

import dataclasses
import json
import math
import pickle
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from mobilellm.train.config import TrainConfig
from mobilellm.train.data import heldout_sample

from mobilellm.errors import UserError

STATE = "train_state.pt"
REPORT = "training.json"
HELDOUT = "heldout.txt"


def lr_at(cfg: TrainConfig, step: int) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * min(t, 1.0)))


def batch_at(stream: np.ndarray, cfg: TrainConfig, step: int) -> torch.Tensor:
    """[B, T+1] windows for step `step`, the same whenever it is asked for."""
    rng = np.random.default_rng([cfg.seed, step])
    starts = rng.integers(0, len(stream) - cfg.seq_len - 1, size=cfg.batch_size)
    return torch.from_numpy(np.stack([stream[s:s + cfg.seq_len + 1] for s in starts]).astype(np.int64))


def eval_windows(stream: np.ndarray, cfg: TrainConfig) -> torch.Tensor:
    n = min(cfg.eval_windows, (len(stream) - 1) // cfg.seq_len)
    return torch.from_numpy(np.stack([stream[i * cfg.seq_len:(i + 1) * cfg.seq_len + 1]
                                      for i in range(n)]).astype(np.int64))


def loss_of(model, batch: torch.Tensor) -> torch.Tensor:
    logits = model(batch[:, :-1], torch.tensor([0]))
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))


def build_untrained(args, seed: int):
    """Seeded init: N(0, 0.02), residual output projections scaled by 1/sqrt(2 * executed blocks)."""
    from mobilellm.models.model import MobileLLM
    torch.manual_seed(seed)
    m = MobileLLM(args, kv_kind="train")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            else:
                std = 0.02 / math.sqrt(2 * args.n_executed) if name.endswith(("o_proj.weight", "down_proj.weight")) else 0.02
                p.normal_(0.0, std, generator=g)
    return m


def _optimizer(model, cfg):
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    other = [p for n, p in model.named_parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": other, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95), eps=1e-8)


def prepare_data(cfg: TrainConfig, out: Path, log=print):
    """Tokenizer (trained once, on training documents only) and the two token streams."""
    from mobilellm.models.tokenizer import Tokenizer
    from mobilellm.train.data import corpus, split, token_stream, train_tokenizer
    docs = corpus(cfg.sources)
    train_docs, held_docs = split(docs)
    tok_path = out / "tokenizer.model"
    if not tok_path.is_file():
        t0 = time.perf_counter()
        train_tokenizer(train_docs, tok_path, cfg.vocab_size)
        log(f"tokenizer: {cfg.vocab_size} pieces trained on {len(train_docs)} documents in {time.perf_counter() - t0:.1f} s")
    tok = Tokenizer(tok_path)
    if tok.vocab_size != cfg.vocab_size:
        raise UserError(f"{tok_path} has {tok.vocab_size} pieces, the config asks for {cfg.vocab_size}; "
                        f"use a fresh --out or --force")
    train_stream, held_stream = token_stream(train_docs, tok), token_stream(held_docs, tok)
    log(f"text: {len(train_docs)} training documents ({len(train_stream):,} tokens), "
        f"{len(held_docs)} held-out documents ({len(held_stream):,} tokens)")
    return tok, train_docs, held_docs, train_stream, held_stream


def train(cfg: TrainConfig, out: Path, force: bool = False, stop_after: int | None = None, log=print) -> dict:
    """Train (or resume) into `out`. `stop_after` ends the run after that many steps without
    saving them, as a crash would (tests). Returns the training report."""
    from mobilellm.models.checkpoint import save_checkpoint

    from mobilellm.io import atomic_path, remove_path
    out = Path(out)
    args = cfg.model_args()
    if force:
        for name in (STATE, REPORT, "tokenizer.model", "config.json", "model.safetensors"):
            remove_path(out / name)
    if (out / REPORT).is_file() and not (out / STATE).is_file():
        try:
            done = json.loads((out / REPORT).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise UserError(f"{out / REPORT} is not a training report ({e}); pass --force to start over") from None
        if done.get("settings_hash") == cfg.settings_hash():
            log(f"{out} already holds this training run (same settings); --force retrains")
            return done
        raise UserError(f"{out} holds a finished training run with other settings; pass --force or another --out")
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.threads)
    _, train_docs, held_docs, train_stream, held_stream = prepare_data(cfg, out, log)
    if len(train_stream) < cfg.seq_len + 2 or len(held_stream) < cfg.seq_len + 2:
        raise UserError("not enough text for one training window")
    model = build_untrained(args, cfg.seed)
    opt = _optimizer(model, cfg)
    step, curve, elapsed = 0, [], 0.0
    if (out / STATE).is_file():
        try:
            state = torch.load(out / STATE, map_location="cpu", weights_only=True)
        except (RuntimeError, EOFError, pickle.UnpicklingError) as e:
            raise UserError(f"{out / STATE} is not a readable training state ({str(e).splitlines()[0]}); "
                            f"pass --force to start over") from None
        if not isinstance(state, dict) or state.get("settings_hash") != cfg.settings_hash():
            raise UserError(f"{out / STATE} was saved by a run with other settings; pass --force to start over")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optim"])
        step, curve, elapsed = int(state["step"]), [list(r) for r in state["curve"]], float(state["elapsed_s"])
        log(f"resuming from step {step} of {cfg.steps}")
    held = eval_windows(held_stream, cfg)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model: {args.variant}, dim {args.dim}, {n_params:,} parameters; {cfg.steps} steps of "
        f"{cfg.batch_size}x{cfg.seq_len} tokens on {cfg.threads} threads")

    def save_state():
        with atomic_path(out / STATE) as tmp:
            torch.save({"settings_hash": cfg.settings_hash(), "model": model.state_dict(), "optim": opt.state_dict(),
                        "step": step, "curve": curve, "elapsed_s": elapsed}, tmp)

    from tqdm import tqdm
    bar = tqdm(total=cfg.steps, initial=step, desc="train", unit="step", file=sys.stderr, dynamic_ncols=True)
    model.train()
    t_start = time.perf_counter() - elapsed
    try:
        while step < cfg.steps:
            if stop_after is not None and step >= stop_after:  # as if killed: no save of this step
                bar.close()
                log(f"stopped after step {step}; run again with the same settings to resume from the last save")
                return {"stopped_at": step}
            for g in opt.param_groups:
                g["lr"] = lr_at(cfg, step)
            loss = loss_of(model, batch_at(train_stream, cfg, step))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            step += 1
            row = [step, loss.item()]
            if step % cfg.eval_every == 0 or step == cfg.steps:
                model.eval()
                with torch.no_grad():
                    row.append(float(loss_of(model, held)))
                model.train()
            curve.append(row)
            bar.set_postfix(loss=f"{row[1]:.3f}", **({"heldout": f"{row[2]:.3f}"} if len(row) > 2 else {}))
            bar.update(1)
            elapsed = time.perf_counter() - t_start
            if step % cfg.save_every == 0 and step < cfg.steps:
                save_state()
    except KeyboardInterrupt:  # a step is atomic: save where we are, then stop
        bar.close()
        save_state()
        log(f"interrupted after step {step}; saved, run again with the same settings to resume")
        raise
    bar.close()
    model.eval().requires_grad_(False)
    save_checkpoint(model, out, dtype=torch.float16)
    held_text = heldout_sample(held_docs, cfg.heldout_chars)
    with atomic_path(out / HELDOUT) as tmp:
        Path(tmp).write_text(held_text)
    final_held = [r[2] for r in curve if len(r) > 2][-1]
    report = {
        "settings_hash": cfg.settings_hash(), "config": dataclasses.asdict(cfg),
        "command": " ".join(["mobilellm train", "--out", str(out), *config_flags(cfg)]),
        "parameters": n_params, "tokens_seen": cfg.steps * cfg.batch_size * cfg.seq_len,
        "train_documents": len(train_docs), "heldout_documents": [d.name for d in held_docs],
        "train_tokens": len(train_stream), "heldout_tokens": len(held_stream),
        "final_train_loss": curve[-1][1], "final_heldout_loss": final_held,
        "final_heldout_perplexity": math.exp(final_held), "train_seconds": round(elapsed, 1),
        "python": sys.version.split()[0], "torch": torch.__version__, "curve": curve,
    }
    with atomic_path(out / REPORT) as tmp:
        Path(tmp).write_text(json.dumps(report, indent=1))
    _plot(curve, out / "loss.png", args.variant)
    remove_path(out / STATE)
    log(f"done in {elapsed / 60:.1f} min: train loss {curve[-1][1]:.3f}, held-out loss {final_held:.3f} "
        f"(perplexity {math.exp(final_held):.1f}); wrote {out}")
    return report


def config_flags(cfg: TrainConfig) -> list[str]:
    """The CLI flags that reproduce `cfg` (one flag per field, defaults left out)."""
    default = TrainConfig()
    flags = []
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if v != getattr(default, f.name):
            flags += [f"--{f.name.replace('_', '-')}", ",".join(v) if isinstance(v, tuple) else str(v)]
    return flags


def _plot(curve, path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mobilellm.io import atomic_path
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([r[0] for r in curve], [r[1] for r in curve], lw=0.8, label="train")
    held = [r for r in curve if len(r) > 2]
    ax.plot([r[0] for r in held], [r[2] for r in held], "o-", ms=3, label="held-out")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(f"mobilellm train: {title}")
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
