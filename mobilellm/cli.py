"""The `mobilellm` console script: one dispatcher, one module per subcommand in commands/."""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from mobilellm import __version__
from mobilellm.errors import UserError

# name -> one-line help; each lives in mobilellm/commands/<name>.py with add_arguments() and main()
COMMANDS = {
    "info": "print a model's architecture and parameter count",
    "generate": "generate text with the eager model or an exported artifact",
    "export": "quantize and lower a model to an ExecuTorch, ONNX or Core ML artifact",
    "bench": "measure load / init / execute latency, tokens/s, memory and size of artifacts",
    "report": "merge results files into a Markdown report with plots and a CSV",
    "run": "the pipeline: export the sharing variants to every backend, verify, benchmark, report",
    "train": "train a small MobileLLM on Python's own sources and docs (a real checkpoint for accuracy)",
    "eval": "perplexity, top-1 agreement and KL vs eager fp32 of artifacts on held-out text",
    "device": "run the benchmark on an Android phone or an iPhone and pull the results",
}


def _load(name):
    return importlib.import_module(f"mobilellm.commands.{name.replace('-', '_')}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mobilellm", description=__doc__.split("\n")[0])
    p.add_argument("--version", action="version", version=f"mobilellm {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_ in COMMANDS.items():
        mod = _load(name)
        sp = sub.add_parser(name, help=help_, description=help_)
        mod.add_arguments(sp)
        sp.set_defaults(_main=mod.main)
    return p


def main(argv=None) -> int:
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.join(os.path.expanduser("~"), ".cache", "mobilellm-inductor"))
    from mobilellm.logs import quiet
    quiet()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_main", None):
        parser.print_help()
        return 2
    from mobilellm import failures
    failures.install_signal_handlers(f"mobilellm {args.command}")
    try:
        return int(args._main(args) or 0)
    except UserError as e:
        print(f"mobilellm {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:  # signals end the process in failures._stop; this is an interrupt raised in code
        print(f"mobilellm {args.command}: interrupted; finished artifacts are kept, a rerun resumes", file=sys.stderr)
        return 130
    except OSError as e:
        known = failures.os_error_line(e)
        if known is None:
            return failures.unexpected(args.command, argv)
        print(f"mobilellm {args.command}: error: {known}", file=sys.stderr)
        return 2
    except Exception:  # a bug: one line and the log holding the traceback, never a bare traceback
        return failures.unexpected(args.command, argv)


if __name__ == "__main__":
    sys.exit(main())
