"""Training: the text split is by document and stable, training is deterministic, and an
interrupted run resumed from its last save ends with exactly the weights of an uninterrupted one."""
import dataclasses
import json

import pytest
from safetensors.torch import load_file

from mobilellm.errors import UserError
from mobilellm.models.config import trained_checkpoint
from mobilellm.train.config import TrainConfig
from mobilellm.train.data import corpus, is_held_out, split
from mobilellm.train.loop import train

# Small enough for seconds: the 2-layer test preset, pydoc's topics only, a few steps.
SMALL = TrainConfig(model="tiny-random", vocab_size=512, seq_len=32, batch_size=4, steps=6, save_every=2,
                    eval_every=3, eval_windows=4, sources=("topics",), heldout_chars=2000)


def test_held_out_documents_are_never_trained_on():
    train_docs, held = split(corpus())
    names = {d.name for d in train_docs}
    assert held and not names & {d.name for d in held}
    assert 0.05 < len(held) / (len(held) + len(train_docs)) < 0.2
    assert all(is_held_out(d.name) for d in held)  # decided by the name alone, not by position
    assert any(d.name.startswith("stdlib/") for d in train_docs) and any(d.name.startswith("topics/") for d in train_docs)


def test_resumed_run_equals_uninterrupted(tmp_path):
    log = []
    whole = train(SMALL, tmp_path / "whole", log=log.append)
    stopped = train(SMALL, tmp_path / "resumed", stop_after=3, log=log.append)
    assert stopped == {"stopped_at": 3} and (tmp_path / "resumed" / "train_state.pt").is_file()
    assert not (tmp_path / "resumed" / "model.safetensors").exists()  # nothing that looks finished
    resumed = train(SMALL, tmp_path / "resumed", log=log.append)
    assert any("resuming from step 2 " in m for m in log)  # the last save before the "crash" (every 2)
    a, b = load_file(tmp_path / "whole" / "model.safetensors"), load_file(tmp_path / "resumed" / "model.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    assert whole["curve"] == resumed["curve"]
    assert not (tmp_path / "resumed" / "train_state.pt").exists()
    cfg = json.loads((tmp_path / "whole" / "config.json").read_text())
    assert cfg["vocab_size"] == 512 and cfg["layer_repeat"] == 1 and cfg["max_position_embeddings"] == 32


def test_other_settings_do_not_resume(tmp_path):
    train(SMALL, tmp_path / "o", stop_after=2)
    with pytest.raises(UserError, match="other settings"):
        train(dataclasses.replace(SMALL, lr=1e-3), tmp_path / "o")


def test_trained_checkpoint_loads_and_generates(tmp_path, cli):
    out = tmp_path / "ls"
    train(dataclasses.replace(SMALL, repeat=2), out)
    p = cli("generate", "--checkpoint", out, "--prompt", "def ", "--max-new-tokens", 5)
    assert "def " in p.stdout
    info = cli("info", "--checkpoint", out).stdout
    assert "2x2 shared" in info


@pytest.mark.parametrize("flags,msg", [
    (["--model", "nope"], "unknown model 'nope'; valid: 125M"),
    (["--steps", "0"], "steps must be >= 1"),
    (["--vocab-size", "100"], "vocab_size must be >= 300"),
    (["--sources", "web"], "unknown text source(s) ['web']; valid: stdlib, topics"),
    (["--model", "tiny-random", "--seq-len", "4096"], "exceeds the tiny-random context of 256"),
])
def test_bad_training_input(tmp_path, cli_here, flags, msg):
    p = cli_here("train", "--out", tmp_path / "x", *flags, check_rc=2)
    assert msg in p.stderr and "Traceback" not in p.stderr


def test_shipped_presets_load_and_generate_readable_text(cli):
    """`generate` defaults to the trained `tiny`; its greedy continuation of code is code-like text."""
    p = cli("generate", "--prompt", "import os\nimport sys\n\n\ndef main(", "--max-new-tokens", "40")
    text = p.stdout
    assert "checkpoint" in p.stderr and "models/trained/tiny" in p.stderr
    words = [w for w in text.replace("(", " ").replace(")", " ").split() if w.isidentifier()]
    assert len(words) >= 8  # identifiers, not byte soup
    for name in ("tiny", "tiny-LS"):
        info = cli("info", name).stdout
        assert "trained" in info or "checkpoint" in info
        d = trained_checkpoint(name)
        assert sum(f.stat().st_size for f in d.iterdir()) < 6e6  # a few MB in git
        report = json.loads((d / "training.json").read_text())
        assert report["train_seconds"] < 30 * 60 and report["final_heldout_loss"] < report["curve"][0][1]
