"""Quantization schemes as data: one frozen value per scheme, one meaning on every backend.

A scheme says what is quantized and how (bits, granularity, dynamic or calibrated activations),
never which backend does it: each backend maps the schemes it implements to its own quantizer in
one table in its own module (`Backend.schemes`). Names follow the field where it has one
(optimum-executorch / torchao: `8da4w` = 8-bit dynamic activations, 4-bit weights; `8w` = 8-bit
weights only); `w8a8` is the paper's scheme (int8 per-channel weights, int8 per-token dynamic
activations, "per-token min-max") and means exactly that wherever it is offered.

Adding a scheme: one value here, plus one line in the table of each backend that implements it."""
from __future__ import annotations

from dataclasses import dataclass, field

from mobilellm.errors import UserError


@dataclass(frozen=True)
class Thresholds:
    min_top1: float  # fraction of positions whose argmax agrees with the reference
    min_cosine: float  # worst per-position cosine similarity of the logit vectors


@dataclass(frozen=True)
class Scheme:
    name: str
    weights: str  # "fp32", "fp16", "int8", "int4"
    weight_granularity: str | None = None  # "per-channel" | "per-group" (None: float)
    group_size: int | None = None  # per-group: input channels per scale (default; --group-size overrides)
    activations: str = "float"  # "float" | "dynamic" (quantized per call) | "static" (calibrated ahead)
    activation_granularity: str | None = None  # "per-token" | "per-tensor" | "per-block"
    activation_bits: int | None = None
    compute: str = "fp32"  # float precision of what is not integer
    embedding_bits: int | None = None  # None: the embedding table stays in `compute` unless asked
    vs_fp32: Thresholds = Thresholds(1.0, 0.9999)  # the scheme's own error bound against eager fp32
    aliases: tuple[str, ...] = field(default=())
    paper: bool = False  # the paper's W8A8

    @property
    def quantized(self) -> bool:
        return self.weights not in ("fp32", "fp16")

    @property
    def calibrated(self) -> bool:
        return self.activations == "static"

    def definition(self) -> str:
        """One sentence a report footnote can print."""
        if not self.quantized:
            return f"{self.weights} weights and compute, no quantization"
        w = f"{self.weights} {self.weight_granularity} symmetric weights" + (
            f" (groups of {self.group_size})" if self.group_size else "")
        if self.activations == "float":
            a = f"{self.compute} activations"
        else:
            how = "quantized per call" if self.activations == "dynamic" else "calibrated ahead of time on text"
            gran = ("per-token per-block (the weights' groups)" if self.activation_granularity == "per-block"
                    else self.activation_granularity)
            a = f"int{self.activation_bits} {gran} {self.activations} activations ({how})"
        return f"{w}, {a}" + (" — the paper's W8A8" if self.paper else "")


SCHEMES: dict[str, Scheme] = {s.name: s for s in (
    Scheme("fp32", "fp32"),
    Scheme("fp16", "fp16", compute="fp16", vs_fp32=Thresholds(0.95, 0.999)),
    Scheme("w8a8", "int8", "per-channel", activations="dynamic", activation_granularity="per-token",
           activation_bits=8, vs_fp32=Thresholds(0.8, 0.98), aliases=("8da8w",), paper=True),
    Scheme("w8a8-dynamic-per-tensor", "int8", "per-channel", activations="dynamic",
           activation_granularity="per-tensor", activation_bits=8, vs_fp32=Thresholds(0.8, 0.98),
           aliases=("w8a8-dynamic",)),
    Scheme("w8a8-static", "int8", "per-channel", activations="static", activation_granularity="per-tensor",
           activation_bits=8, vs_fp32=Thresholds(0.7, 0.95)),
    Scheme("8da4w", "int4", "per-group", group_size=32, activations="dynamic", activation_granularity="per-token",
           activation_bits=8, vs_fp32=Thresholds(0.6, 0.9)),
    Scheme("8w", "int8", "per-channel", compute="fp16", vs_fp32=Thresholds(0.9, 0.995), aliases=("w8",)),
    # onnxruntime-genai's int8 / int4 (MatMulNBits, accuracy level 4): weights in blocks of 32 along the input
    # dimension, activations quantized per call to int8 per token and per block of the same 32 inputs
    Scheme("w8a8-block", "int8", "per-group", group_size=32, activations="dynamic", activation_granularity="per-block",
           activation_bits=8, vs_fp32=Thresholds(0.8, 0.98)),
    Scheme("w4a8-block", "int4", "per-group", group_size=32, activations="dynamic", activation_granularity="per-block",
           activation_bits=8, vs_fp32=Thresholds(0.6, 0.9)),
)}
ALIASES = {a: s.name for s in SCHEMES.values() for a in s.aliases}

# An artifact against the quantized eager model it was lowered from: lowering must add (almost) no
# error, whatever the scheme. This is the gate that catches a broken lowering.
LOWERING = Thresholds(min_top1=0.95, min_cosine=0.999)


def names() -> list[str]:
    return list(SCHEMES)


def register(scheme: Scheme) -> Scheme:
    """Add a scheme (a plugin's); its name and aliases must be new."""
    taken = [n for n in (scheme.name, *scheme.aliases) if n in SCHEMES or n in ALIASES]
    if taken:
        raise UserError(f"scheme name(s) {taken} are taken")
    SCHEMES[scheme.name] = scheme
    ALIASES.update({a: scheme.name for a in scheme.aliases})
    return scheme


def get(name: str) -> Scheme:
    """A scheme by name or alias (`8da8w` is `w8a8`); unknown names list the valid ones."""
    key = ALIASES.get(name, name)
    if key not in SCHEMES:
        from mobilellm import plugins
        plugins.load()  # a plugin may define it
        key = ALIASES.get(name, name)
    if key not in SCHEMES:
        raise UserError(f"unknown quantization scheme {name!r}; valid: {', '.join(SCHEMES)} "
                        f"(aliases: {', '.join(f'{a}={n}' for a, n in ALIASES.items())})")
    return SCHEMES[key]


def canonical(name: str) -> str:
    return get(name).name


def help_text() -> str:
    return "; ".join(f"{s.name}: {s.definition()}" for s in SCHEMES.values())


# Manifests written before schemes were values (manifest version 1) named some schemes by backend:
# ONNX's "w8a8" was its static QDQ graph, Core ML's "w8" is `8w`, ONNX's "w8a8-dynamic" per-tensor.
LEGACY = {("onnx", "w8a8"): "w8a8-static", ("onnx", "w8a8-dynamic"): "w8a8-dynamic-per-tensor",
          ("coreml", "w8"): "8w", ("executorch-coreml", "w8"): "8w"}


def from_manifest(backend: str, name: str, version: int) -> tuple[Scheme, str | None]:
    """(scheme, note) for a manifest's recorded scheme; older manifests are mapped with a note."""
    if version < 2 and (backend, name) in LEGACY:
        new = LEGACY[(backend, name)]
        return SCHEMES[new], f"manifest v{version} named this scheme {name!r}; it is {new!r}"
    try:
        return get(name), None
    except UserError:
        raise UserError(f"the manifest names quantization scheme {name!r}, which this mobilellm does not know; "
                        f"valid: {', '.join(SCHEMES)}") from None
