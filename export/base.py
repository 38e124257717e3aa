"""The backend plugin interface: one module per target in export/backends/, registered by name.

A backend turns an eager MobileLLM into an artifact (`export`) and opens an artifact for running
(`open`), with the paper's stages separated: `load` (read the artifact into the runtime), `init`
(make it ready to run), then `forward` calls (execute)."""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from mobilellm.errors import UserError

# Quantization schemes every backend names the same way (each implements them with its own quantizer).
SCHEME_HELP = {
    "fp32": "no quantization",
    "fp16": "16-bit float weights and compute",
    "w8a8": "int8 per-channel symmetric weights, int8 per-token dynamic activations (the paper's W8A8)",
    "w8a8-static": "int8 per-channel weights, int8 per-tensor static activations calibrated on text",
    "w8a8-dynamic": "int8 weights, int8 dynamic activations (onnxruntime quantize_dynamic)",
    "8da4w": "int4 grouped weights, int8 dynamic activations",
    "w8": "int8 per-channel weights only (activations in float)",
}


@dataclass(frozen=True)
class ExportConfig:
    """What a backend needs to lower a model; nothing else reaches it."""

    quant: str = "w8a8"
    max_seq_len: int = 512
    group_size: int = 32
    quantize_embedding: bool = False
    calibration: Path | None = None
    tokenizer: Path | None = None  # for text calibration; recorded in the manifest
    external_weights: bool = False  # weights in <name>.ptd beside the program (backends with extra["external_weights"])


class Session:
    """An artifact opened in its runtime. Subclasses implement the three stages."""

    max_seq_len: int
    vocab_size: int

    def load(self) -> None:  # read the artifact into the runtime
        raise NotImplementedError

    def init(self) -> None:  # make it ready to run (delegate init, weight packing, compile)
        raise NotImplementedError

    def forward(self, ids: list[int], start_pos: int) -> np.ndarray:  # logits [T, vocab] float32
        raise NotImplementedError

    def reset(self) -> None:  # forget the cache
        raise NotImplementedError


@dataclass
class Backend:
    name: str
    suffix: str  # artifact suffix, e.g. ".pte"
    schemes: tuple[str, ...]
    summary: str
    export: Callable  # (model, ExportConfig, tmp_path, progress) -> dict of manifest fields
    open: Callable  # (path, manifest) -> Session
    runtime_missing: Callable[[], str | None] = lambda: None  # why it cannot run here, or None
    default_scheme: str = "w8a8"
    extra: dict = field(default_factory=dict)

    def check_scheme(self, scheme: str) -> None:
        if scheme not in self.schemes:
            raise UserError(f"backend {self.name!r} cannot do quantization scheme {scheme!r}; "
                            f"valid for {self.name}: {', '.join(self.schemes)}")


_REGISTRY: dict[str, Backend] = {}
# Names users will try that no plugin can serve here, with the reason.
UNAVAILABLE = {
    "mps": "the ExecuTorch MPS backend is not in the executorch 1.5.1 wheel (it is built only from source "
           "on macOS); for Apple GPUs/ANE use 'executorch-coreml' or 'coreml'",
}


def register(backend: Backend) -> Backend:
    _REGISTRY[backend.name] = backend
    return backend


def _discover() -> None:
    from mobilellm.export import backends
    for mod in pkgutil.iter_modules(backends.__path__):
        importlib.import_module(f"{backends.__name__}.{mod.name}")


def backend_names() -> list[str]:
    """Registered names without importing the plugins (module backends/foo_bar.py registers foo-bar):
    help texts stay fast; `get_backend` imports them."""
    from mobilellm.export import backends
    return sorted(m.name.replace("_", "-") for m in pkgutil.iter_modules(backends.__path__))


def get_backend(name: str) -> Backend:
    _discover()
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name in UNAVAILABLE:
        raise UserError(f"backend {name!r} is not available: {UNAVAILABLE[name]}; valid: {', '.join(sorted(_REGISTRY))}")
    raise UserError(f"unknown backend {name!r}; valid: {', '.join(sorted(_REGISTRY))} "
                    f"({'; '.join(f'{k} absent: {v}' for k, v in UNAVAILABLE.items())})")


def backend_for_artifact(path: Path) -> Backend:
    _discover()
    from mobilellm.manifest import read_manifest
    m = read_manifest(Path(path), required=False)
    if m and m.get("backend") in _REGISTRY:
        return _REGISTRY[m["backend"]]
    name = Path(path).name
    for b in _REGISTRY.values():
        if name.endswith(b.suffix) and not b.extra.get("not_default_for_suffix"):
            return b
    raise UserError(f"cannot tell which runtime opens {path}: no manifest beside it and an unknown suffix; "
                    f"known suffixes: {', '.join(sorted({b.suffix for b in _REGISTRY.values()}))}")
