"""Third-party backends and schemes: modules named in $MOBILELLM_PLUGINS (comma-separated) or
registered under the `mobilellm.plugins` entry-point group. Importing one registers what it
defines (`export.base.register`, `quant.schemes.register`); every backend list, the CLI's help
and `run` then see it, in this process and in the worker and benchmark processes it starts."""
from __future__ import annotations

import importlib
import os

from mobilellm.errors import UserError

_LOADED: set[str] = set()


def configured() -> list[str]:
    names = [n.strip() for n in os.environ.get("MOBILELLM_PLUGINS", "").split(",") if n.strip()]
    try:
        from importlib.metadata import entry_points
        names += [ep.value for ep in entry_points(group="mobilellm.plugins")]
    except Exception:  # noqa: BLE001  broken metadata of an unrelated package must not stop mobilellm
        pass
    return names


def load() -> None:
    for name in configured():
        if name in _LOADED:
            continue
        _LOADED.add(name)
        try:
            importlib.import_module(name)
        except ImportError as e:
            _LOADED.discard(name)
            raise UserError(f"plugin {name!r} (from MOBILELLM_PLUGINS or the mobilellm.plugins entry points) "
                            f"cannot be imported: {e}") from None
