"""The backend plugin interface: one module per target in export/backends/, registered by name.

A backend turns an eager MobileLLM into an artifact (`export`) and opens an artifact for running
(`open`), with the paper's stages separated: `load` (read the artifact into the runtime), `init`
(make it ready to run), then `forward` calls (execute)."""
from __future__ import annotations

import importlib
import pkgutil
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from mobilellm.errors import UserError
from mobilellm.models.generate import Runner


KV_CACHES = ("fp32", "int8")


@dataclass(frozen=True)
class ExportConfig:
    """What a backend needs to lower a model: every input that can change the artifact is a field
    here (and so part of the settings hash); backends read no environment variable or host fact."""

    quant: str = "w8a8"  # a scheme name from quant/schemes.py (canonical, aliases resolved)
    max_seq_len: int = 512
    group_size: int = 32
    quantize_embedding: bool = False
    calibration: Path | None = None
    tokenizer: Path | None = None  # for text calibration; recorded in the manifest
    external_weights: bool = False  # weights in <name>.ptd beside the program (Backend.external_weights)
    kv_cache: str = "fp32"  # the KV cache's storage: fp32, or int8 with per-token scales (Backend.kv_caches)
    full_logits: bool = False  # logits for every position of a call, where the default is the last (Backend.last_logits)
    threads: int = 2  # compute threads of the runtime sessions an export runs (calibration, verification)
    host_os: str = field(default_factory=platform.system)  # Core ML's w8a8-static calibrates through prediction on macOS

    def __post_init__(self):
        from mobilellm.quant import schemes
        object.__setattr__(self, "quant", schemes.canonical(self.quant))
        if self.kv_cache not in KV_CACHES:
            raise UserError(f"unknown --kv-cache {self.kv_cache!r}; valid: {', '.join(KV_CACHES)}")
        for name, lo in (("max_seq_len", 1), ("group_size", 1), ("threads", 1)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise UserError(f"--{name.replace('_', '-')} must be an integer >= {lo}, got {v!r}")

    @property
    def scheme(self):
        from mobilellm.quant import schemes
        return schemes.get(self.quant)


@dataclass
class Companion:
    """A file a backend writes beside the artifact (ONNX's .ort). `verify`: the pipeline checks it through
    the backend's own runtime like the artifact (else the backend did, and says so in `manifest`)."""

    path: Path
    suffix: str
    manifest: dict
    verify: bool = False


@dataclass
class ExportResult:
    """What a backend's `export` returns; the pipeline turns it into the manifest."""

    quant: dict  # how the scheme was implemented: quantizer, formats, calibration source
    facts: dict = field(default_factory=dict)  # manifest sections: delegation, io, sizes, runtime, ...
    data_file: bool = False  # wrote <stem>.ptd beside the program (external weights)
    quantized_reference: object = None  # a Runner of the quantized eager model the artifact was lowered from
    companions: list[Companion] = field(default_factory=list)
    structural_verification: dict | None = None  # checks done where the runtime cannot run


class Session(Runner):
    """An artifact opened in its runtime: the `Runner` contract (forward, reset) plus the paper's
    first two stages. `open_artifact` does open + load + init; timing code calls them one by one."""

    def load(self) -> None:  # read the artifact into the runtime
        raise NotImplementedError

    def init(self) -> None:  # make it ready to run (delegate init, weight packing, compile)
        raise NotImplementedError


@dataclass
class Backend:
    """One target. `schemes` is the backend's one table: scheme name -> the quantizer that implements
    it here. `closest` names, for a scheme it cannot do, the one it uses instead and why."""

    name: str
    suffix: str  # artifact suffix, e.g. ".pte"
    schemes: dict[str, str]
    summary: str
    export: Callable  # (model, ExportConfig, tmp_path, progress) -> ExportResult
    open: Callable  # (path, manifest) -> Session
    runtime_missing: Callable[[], str | None] = lambda: None  # why it cannot run here, or None
    default_scheme: str = "w8a8"
    closest: dict[str, tuple[str, str]] = field(default_factory=dict)  # scheme -> (substitute, why)
    refused: dict[str, str] = field(default_factory=dict)  # scheme -> why it cannot be done here at all
    external_weights: bool = False  # can write weights to a data file beside the program
    quantizes_embedding: bool = False  # can quantize the embedding table on its own (--quantize-embedding)
    embedding_schemes: tuple[str, ...] | None = None  # the schemes --quantize-embedding goes with (None: any)
    kv_caches: tuple[str, ...] = ("fp32",)  # KV-cache storages it can build (--kv-cache)
    # Its program returns the last position's logits unless --full-logits (ExecuTorch, as its export_llama does;
    # ONNX, as onnxruntime-genai's builder does with prune_lm_head); the others always return every position.
    last_logits: bool = False
    default_for_suffix: bool = True  # opens a bare file with this suffix (no manifest)
    # A directory artifact it opens: (directory suffix, the file that marks one), e.g. ONNX's onnxruntime-genai
    # model directory (".genai", "genai_config.json").
    opens_dir: tuple[str, str] | None = None
    apple_only: bool = False  # runs and verifies only on Apple devices
    quantized_reference: bool = True  # its export returns the quantized eager model it lowered (ONNX: no)
    rank: int = 50  # listing order (the headline backend first)
    # Peak RSS of one export, (fixed MiB, bytes per stored parameter), fitted to the README's size table;
    # `run --executor ray` declares it per task. Not measured for a backend that keeps the default.
    export_memory: tuple[float, float] = (1500.0, 20.0)
    # After the artifact is published (before its manifest): write what lives beside it and points at it
    # (ONNX: the onnxruntime-genai directory). (artifact, model args, ExportConfig) -> manifest facts.
    after_publish: Callable | None = None

    @property
    def runs_here(self) -> bool:
        return self.runtime_missing() is None

    def embedding_refused(self, scheme: str) -> str | None:
        """Why --quantize-embedding cannot go with `scheme` here, or None."""
        if not self.quantizes_embedding:
            return (f"--quantize-embedding is not offered by {self.name}; backends that offer it: "
                    f"{', '.join(b.name for b in all_backends() if b.quantizes_embedding)}")
        if self.embedding_schemes is not None and scheme not in self.embedding_schemes:
            return (f"--quantize-embedding on {self.name} goes with {', '.join(self.embedding_schemes)}, not {scheme}")
        return None

    def check_scheme(self, scheme: str) -> str:
        """The canonical name of a scheme this backend implements, or one clear error."""
        from mobilellm.quant import schemes
        try:
            name = schemes.canonical(scheme)
        except UserError:
            raise UserError(f"unknown quantization scheme {scheme!r}; valid for {self.name}: "
                            f"{', '.join(self.schemes)} (every scheme: {', '.join(schemes.names())})") from None
        if name in self.schemes:
            return name
        why = self.refused.get(name) or (self.closest[name][1] if name in self.closest else None)
        hint = f"; its closest to {name} is {self.closest[name][0]!r}" if name in self.closest else ""
        raise UserError(f"backend {self.name!r} cannot do quantization scheme {name!r}"
                        + (f": {why}" if why else "") + f"{hint}; valid for {self.name}: {', '.join(self.schemes)}")

    def resolve_scheme(self, scheme: str) -> tuple[str | None, str]:
        """(the scheme this backend runs for the requested one, note). The requested scheme itself if
        implemented; else its declared closest with the reason; else (None, why not)."""
        from mobilellm.quant import schemes
        name = schemes.canonical(scheme)
        if name in self.schemes:
            return name, ""
        if name in self.closest:
            sub, why = self.closest[name]
            return sub, f"{sub} instead of {name}: {why}"
        return None, f"{self.name} cannot do {name} (its schemes: {', '.join(self.schemes)})"


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
    """The plugins in export/backends/, then third-party ones (`mobilellm.plugins`)."""
    from mobilellm import plugins
    from mobilellm.export import backends
    for mod in pkgutil.iter_modules(backends.__path__):
        importlib.import_module(f"{backends.__name__}.{mod.name}")
    plugins.load()


def backend_names() -> list[str]:
    """Registered names without importing the plugins (module backends/foo_bar.py registers foo-bar):
    help texts stay fast; `get_backend` imports them."""
    from mobilellm import plugins
    from mobilellm.export import backends
    if plugins.configured():  # third-party backends register themselves: import them to know their names
        _discover()
        return sorted(_REGISTRY)
    return sorted(m.name.replace("_", "-") for m in pkgutil.iter_modules(backends.__path__))


def all_backends() -> list[Backend]:
    _discover()
    return sorted(_REGISTRY.values(), key=lambda b: (b.rank, b.name))


def default_backends() -> tuple[str, ...]:
    """What `run` builds by default: every backend, less the Apple-only ones off macOS (they can
    neither run nor be checked numerically there; `--backends all` adds them)."""
    on_mac = platform.system() == "Darwin"
    return tuple(b.name for b in all_backends() if on_mac or not b.apple_only)


def open_artifact(path: Path, manifest: dict | None = None) -> Session:
    """An artifact opened in its own runtime, loaded and initialised: ready to `forward`."""
    from mobilellm.manifest import read_manifest
    manifest = manifest if manifest is not None else read_manifest(Path(path), required=False)
    backend = backend_for_artifact(Path(path))
    why = backend.runtime_missing()
    if why:
        raise UserError(f"cannot run {path} here: {why}")
    session = backend.open(Path(path), manifest)
    session.load()
    session.init()
    return session


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
    if Path(path).is_dir():
        for b in _REGISTRY.values():
            if b.opens_dir and (name.endswith(b.opens_dir[0]) or (Path(path) / b.opens_dir[1]).is_file()):
                return b
    for b in _REGISTRY.values():
        if name.endswith(b.suffix) and b.default_for_suffix:
            return b
    raise UserError(f"cannot tell which runtime opens {path}: no manifest beside it and an unknown suffix; "
                    f"known suffixes: {', '.join(sorted({b.suffix for b in _REGISTRY.values()}))}")
