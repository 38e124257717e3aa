"""The console script as users run it: outputs, and one clear error (no traceback) on bad input."""
import pytest

from models.tests.test_config import TABLE  # noqa: F401  (same numbers as the shared table)


def test_info_reproduces_every_count(cli_here):
    for name, count in TABLE.items():
        out = cli_here("info", name).stdout
        assert f"parameters       {count:,}" in out, out
    assert "60 executed" in cli_here("info", "LS-125M").stdout


def test_help_on_every_subcommand(cli_here):
    from mobilellm.cli import COMMANDS
    top = cli_here("--help").stdout
    listed = " ".join(top.split())  # argparse wraps long help lines
    for name, help_ in COMMANDS.items():
        assert f"{name} {help_}" in listed, f"subcommand {name} missing from --help"
        assert help_ in " ".join(cli_here(name, "--help").stdout.split())


def test_generate_on_generated_checkpoint(cli, tiny_ckpt):
    p = cli("generate", "--checkpoint", tiny_ckpt, "--prompt", "def f(x):", "--max-new-tokens", "8")
    assert p.stdout.startswith("def f(x):")
    assert "tokens/s" in p.stderr and "Traceback" not in p.stderr


@pytest.mark.parametrize("argv,msg", [
    (["info", "999M"], "unknown model '999M'; valid: 125M"),
    (["info", "--model", "125M", "--repeat", "0"], "--repeat must be >= 1"),
    (["generate", "--model", "tiny-random", "--prompt-ids", "1,9999"], "outside the vocabulary"),
    (["generate", "--model", "tiny-random", "--prompt-ids", "1,2", "--max-seq-len", "4", "--max-new-tokens", "8"],
     "exceed the maximum sequence length 4"),
    (["generate", "--model", "tiny-random", "--max-seq-len", "100000"], "exceeds the model's context"),
    (["generate", "--model", "tiny-random"], "no tokenizer"),
    (["generate", "--checkpoint", "/nonexistent"], "is not a directory"),
])
def test_bad_input_one_clear_error(cli_here, argv, msg):
    p = cli_here(*argv, check_rc=2)
    assert msg in p.stderr, p.stderr
    assert "Traceback" not in p.stderr
