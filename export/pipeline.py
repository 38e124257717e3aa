"""Export orchestration shared by every backend: name, refuse to clobber, lower into a temporary
path, verify through the artifact's own runtime, then publish atomically with its manifest.

A verification miss keeps the artifact as `<name>.failed` with its report, never under the
name a runtime would pick up."""
from __future__ import annotations

import copy
import dataclasses
import errno
import os
import time
from pathlib import Path

from mobilellm import failures
from mobilellm.errors import UserError, VerificationError
from mobilellm.export.base import Backend, ExportConfig, ExportResult, all_backends
from mobilellm.export import verify as V
from mobilellm.io import artifact_lock, library_temp_beside, publish, remove_path, sha256, size_bytes, staging_path
from mobilellm.memory import return_memory, sharing_copy
from mobilellm.manifest import code_hash, manifest_path, model_section, settings_hash, tool_versions, write_manifest
from mobilellm.progress import Steps, peak_rss_mb


def artifact_name(model, backend: Backend, cfg: ExportConfig) -> str:
    emb = "-emb8" if cfg.quantize_embedding else ""
    ext = "-ptd" if cfg.external_weights else ""
    kv = "-kv8" if cfg.kv_cache == "int8" else ""
    fl = "-fl" if cfg.full_logits else ""
    return f"{model.args.name}_{cfg.quant}{emb}{kv}{fl}{ext}_{backend.name}{backend.suffix}"


def export_settings(model, weights: str, backend: Backend, cfg: ExportConfig) -> dict:
    """Everything an artifact depends on: model, weights, backend, config, tool versions and the
    code of mobilellm itself (a lowering fix invalidates artifacts made before it)."""
    return {"model": dataclasses.asdict(model.args), "weights": weights, "backend": backend.name,
            "config": dataclasses.asdict(cfg), "tools": tool_versions(), "code": code_hash()}


def check_output(path: Path, force: bool) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create output directory {path.parent}: {e.strerror}") from None
    if not os.access(path.parent, os.W_OK):
        raise UserError(f"output directory {path.parent} is not writable")
    if path.exists() and not force:
        raise UserError(f"{path} already exists; pass --force to overwrite it")


def export_artifact(model, weights: str, backend: Backend, cfg: ExportConfig, out_dir: Path, *,
                    name: str | None = None, force: bool = False, verify: bool = True, quiet: bool = False,
                    consume: bool = False) -> tuple[Path, dict]:
    """Export `model` to `backend`, verify and publish. `consume=True` hands the model itself to the
    backend, which may quantize it in place or drop its weights (the caller must not use it again):
    one fp32 copy fewer at the export's peak. Otherwise the backend works on a copy."""
    scheme = backend.check_scheme(cfg.quant)
    args = model.args
    if cfg.max_seq_len > args.context_len:
        raise UserError(f"--max-seq-len {cfg.max_seq_len} exceeds the model's context of {args.context_len} tokens")
    if cfg.max_seq_len < V.PROMPT_LEN + V.DECODE_STEPS:
        raise UserError(f"--max-seq-len must be at least {V.PROMPT_LEN + V.DECODE_STEPS}, got {cfg.max_seq_len}")
    if cfg.external_weights and not backend.external_weights:
        raise UserError(f"--external-weights (weights in a data file beside the program) is not offered by {backend.name}; "
                        f"backends that offer it: {', '.join(b.name for b in all_backends() if b.external_weights)}")
    if cfg.quantize_embedding and backend.embedding_refused(scheme):
        raise UserError(backend.embedding_refused(scheme))
    if cfg.kv_cache not in backend.kv_caches:
        raise UserError(f"--kv-cache {cfg.kv_cache} is not offered by {backend.name} (it builds: "
                        f"{', '.join(backend.kv_caches)}); backends with an int8 cache: "
                        f"{', '.join(b.name for b in all_backends() if cfg.kv_cache in b.kv_caches)}")
    check_full_logits(backend, cfg)
    out = Path(out_dir) / (name or artifact_name(model, backend, cfg))
    check_output(out, force)
    steps = Steps(out.name, quiet)
    manifest = {
        "artifact": out.name, "backend": backend.name, "backend_summary": backend.summary,
        "quant": {"scheme": scheme, "definition": cfg.scheme.definition(), "quantizer": backend.schemes[scheme],
                  "quantize_embedding": cfg.quantize_embedding, "kv_cache": cfg.kv_cache},
        "model": model_section(args, weights), "max_seq_len": cfg.max_seq_len,
        "tokenizer": str(Path(cfg.tokenizer).resolve()) if cfg.tokenizer else None,
        "settings_hash": settings_hash(export_settings(model, weights, backend, cfg)),
    }
    try:
        with artifact_lock(out):
            return _export_locked(model, backend, cfg, out, manifest, steps, verify, consume)
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        import shutil
        need = estimate_bytes(args, cfg, backend)
        raise UserError(f"no space left on the device writing {e.filename or out.parent} while exporting {out.name}: "
                        f"it needs about {need / 1e6:,.0f} MB; {shutil.disk_usage(out.parent).free / 1e6:,.0f} MB are "
                        f"free there (nothing half-written was left)") from None


def check_full_logits(backend: Backend, cfg: ExportConfig) -> None:
    """--full-logits only where the default output is the last position (before any model is built)."""
    if cfg.full_logits and not backend.last_logits:
        raise UserError(f"--full-logits changes nothing for {backend.name}: its artifacts always return every "
                        f"position's logits; backends that return the last position by default: "
                        f"{', '.join(b.name for b in all_backends() if b.last_logits)}")


def estimate_bytes(args, cfg: ExportConfig, backend: Backend) -> int:
    """Disk an export needs at its peak: the artifact (weights at the scheme's bits, the embedding at
    its own) and, while staged, its companions (ONNX's .ort) and the float intermediates of a pass."""
    bits = {"fp32": 32, "fp16": 16, "int8": 8, "int4": 4}[cfg.scheme.weights]
    table = args.vocab_size * args.dim
    body = (args.param_count() - table) * bits / 8 + table * (1 if cfg.quantize_embedding else 4) * 2
    return int(body * (3 if backend.suffix == ".onnx" else 1.2))  # ONNX stages float.onnx, model.onnx and .ort


def _export_locked(model, backend: Backend, cfg: ExportConfig, out: Path, manifest: dict, steps, verify: bool,
                   consume: bool):
    from mobilellm.models.generate import EagerRunner
    t0 = time.perf_counter()
    trained = _trained(manifest)
    ref = None
    proxy = None
    # the references are for running the artifact: where its runtime is missing (Core ML off macOS) the
    # verification is structural, and computing them would only cost time
    numeric = verify and backend.runtime_missing() is None
    if numeric:  # eager fp32's logits, recorded before lowering: the fp32 weights need not outlive the export
        with steps.step("fp32 reference"):
            model.reset_cache()
            ref = V.reference(EagerRunner(model))
        if not trained and cfg.scheme.quantized and not backend.quantized_reference:
            with steps.step("scheme noise estimate (torchao w8a8 eager)"):
                proxy = _noise_proxy(model, ref)
    with staging_path(out) as tmp, _staged_data(out, tmp) as data, library_temp_beside(out):
        res: ExportResult = backend.export(model if consume else copy.deepcopy(model), cfg, tmp, steps)
        quantized = None
        perturbed = None
        if numeric and res.quantized_reference is not None:
            with steps.step("quantized eager reference"):
                quantized = V.replay(res.quantized_reference, ref)
            if not trained and cfg.scheme.quantized:
                with steps.step("its rounding sensitivity"):
                    perturbed = V.replay_perturbed(res.quantized_reference, ref)
        res.quantized_reference = None  # the quantized eager model goes before the artifact is loaded
        return_memory()
        if res.data_file:  # weights beside the program (same stem), published with it
            manifest["data_file"] = data.final.name
        manifest["quant"].update(res.quant)
        manifest.update(res.facts)  # backend facts: delegation, sizes, io contract, ...
        if res.structural_verification is not None:
            manifest["structural_verification"] = res.structural_verification
        has_data = "data_file" in manifest
        manifest["sizes"] = {"file_bytes": size_bytes(tmp) + (size_bytes(data.staged) if has_data else 0),
                             **manifest.get("sizes", {})}
        sz = manifest["sizes"]
        if "embedding_bytes" in sz and "output_head_bytes" in sz:
            sz["blocks_and_other_bytes"] = sz["file_bytes"] - sz["embedding_bytes"] - (
                sz["output_head_bytes"] if sz.get("embedding_stored_twice") else 0)
        manifest["sha256"] = sha256(tmp)
        if has_data:
            manifest["data_file_sha256"] = sha256(data.staged)
        manifest["tools"] = tool_versions()
        manifest["verification"] = {"skipped": "--no-verify"} if not verify else None

        def cost():  # where the time and the memory went, verification included
            manifest["export_seconds"] = round(time.perf_counter() - t0, 1)
            manifest["export_step_seconds"] = {k: round(v, 1) for k, v in steps.times.items()}
            manifest["export_peak_rss_mb"] = peak_rss_mb()
            manifest["export_step_peak_rss_mb"] = dict(steps.peak_rss_mb)  # ru_maxrss as each step ended
        if verify:
            try:
                with steps.step("verify"):
                    manifest["verification"] = _verify(backend, tmp, manifest, ref, quantized, res, cfg.scheme, trained,
                                                       proxy=proxy, perturbed=perturbed)
                for comp in res.companions:
                    if comp.verify:
                        with steps.step(f"verify {comp.suffix}"):
                            comp.manifest["verification"] = _verify(backend, Path(comp.path), manifest, ref, quantized,
                                                                    res, cfg.scheme, trained, f"the {comp.suffix} file: ",
                                                                    proxy=proxy, perturbed=perturbed)
            except VerificationError as e:
                report = getattr(e, "report", {"error": str(e)})
                if manifest["verification"] is None:
                    manifest["verification"] = report
                else:  # the artifact passed, a companion did not
                    manifest["companion_verification"] = report
                cost()
                failed = out.with_name(out.name + ".failed")
                remove_path(failed)
                os.replace(tmp, failed)
                data.publish(data.final.with_name(data.final.name + ".failed"))
                write_manifest(failed, manifest)
                raise VerificationError(f"{e}; the artifact is kept as {failed} with the report in "
                                        f"{manifest_path(failed).name}") from None
        # Publish order: data file, companions, the artifact, and its manifest last. A manifest names
        # the sha256 of its artifact, and reuse checks it: a stop between the renames leaves either no
        # manifest or one whose file does not match, never a valid-looking pair of mismatched files.
        # A signal in here waits for the manifest: it would otherwise leave a finished file without one.
        cost()
        with failures.publishing():
            remove_path(manifest_path(out))
            data.publish(data.final)
            for comp in res.companions:  # verified above (or by the backend)
                _publish_companion(out.with_suffix(comp.suffix), Path(comp.path), {**manifest, **comp.manifest})
            publish(tmp, out)
            if backend.after_publish is not None:
                manifest.update(backend.after_publish(out, model.args, cfg) or {})
            write_manifest(out, manifest)
    return out, manifest


class _staged_data:
    """A backend's data file (ExecuTorch's .ptd), written beside the temporary program under the same
    stem: published under its final name before the program, or removed if the export stops."""

    def __init__(self, out: Path, tmp: Path):
        from mobilellm.export.ptd import data_path
        self.final, self.staged = data_path(out), data_path(tmp)

    def __enter__(self):
        return self

    def publish(self, final: Path) -> None:
        if self.staged.exists():
            remove_path(final)
            os.replace(self.staged, final)

    def __exit__(self, *exc):
        remove_path(self.staged)  # a backend that stopped after writing its data leaves no trace
        return False


def _publish_companion(final: Path, staged: Path, manifest: dict) -> None:
    remove_path(manifest_path(final))
    digest, size = sha256(staged), size_bytes(staged)
    os.replace(staged, final)
    write_manifest(final, {**manifest, "artifact": final.name, "companion_of": manifest["artifact"],
                           "sha256": digest, "sizes": {**manifest["sizes"], "file_bytes": size}})


def _verify(backend: Backend, path: Path, manifest: dict, ref: V.Reference, quantized, res: ExportResult,
            scheme, trained: bool, what: str = "", proxy=None, perturbed=None) -> dict:
    why = backend.runtime_missing()
    if why:
        structural = res.structural_verification or {}
        return {"numerical": f"not possible here: {why}", "structural": structural,
                "passed": structural.get("passed", None)}
    session = backend.open(path, manifest)
    session.load()
    session.init()
    try:
        return V.verify(session, ref, scheme, quantized, trained=trained, noise_proxy=proxy, perturbed=perturbed)
    except VerificationError as e:
        if not what:
            raise
        err = VerificationError(f"{what}{e}")
        err.report = getattr(e, "report", {"error": str(e)})
        raise err from None


def _noise_proxy(model, ref: V.Reference):
    """Logits of torchao's per-token W8A8 on a copy of `model`: with random weights, an estimate of an int8
    scheme's logit noise for a backend with no quantized eager model (ONNX), so that near-ties are not gated."""
    from mobilellm.models.generate import EagerRunner
    from mobilellm.quant import executorch as Q
    from mobilellm.quant.schemes import get
    # a structural copy sharing the fp32 parameters: torchao swaps each weight for a new quantized one in the
    # copy, so the copy holds int8 weights only (no second fp32 model at 1.5B: 6 GB)
    q = sharing_copy(model).tie_output_module()
    Q.quantize_eager(q, get("w8a8"))
    out = V.replay(EagerRunner(q), ref)
    del q
    return_memory()
    return out


def _trained(manifest: dict) -> bool:
    """Real weights make every position's top-1 meaningful; random ones leave near-ties."""
    return not str(manifest["model"]["weights"]).startswith("random")
