"""Which BLAS ExecuTorch's LLM ops call in a Python process.

`llama::custom_sdpa` (and its int8 variant) compute q@k and p@v as BLAS calls (`sgemm_`, 18 per
block for the 125M shape). The ExecuTorch wheel ships a BLAS for them (Eigen's, exported by
`lib/libexecutorch_kernels_optimized.so`) but leaves the symbol to the dynamic linker, and in a process
that imported torch first (every mobilellm process) it binds to the MKL inside `libtorch_cpu.so`
(seen with `LD_DEBUG=bindings`), which opens an OpenMP region for every call: 50-53% of a 125M decode
step at position 128 was attention, mostly thread hand-offs (`perf`: scheduler 18%, libgomp 13% of the
samples). A runtime without torch, and a phone's (Eigen on Android, Accelerate on Apple), calls its own.

`bind()` makes the wheel's BLAS the one the ops bind, as in those runtimes: it must run before the ops'
library is loaded, and after torch is (whose own calls then keep torch's BLAS).
`MOBILELLM_EXECUTORCH_BLAS=torch` keeps torch's, to compare (any other value: ExecuTorch's)."""
from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

OPS_LIBRARY = "libcustom_ops_aot_lib.so"
BLAS_LIBRARY = "libexecutorch_kernels_optimized.so"
_BOUND: list[str] = []  # what bind() decided, once per process


def _ops_loaded() -> bool:
    try:
        return OPS_LIBRARY in Path("/proc/self/maps").read_text()
    except OSError:
        return False


def bind() -> str:
    """Bind ExecuTorch's LLM ops to the wheel's own BLAS where this process still can; returns which BLAS
    they call, for the benchmark records."""
    if _BOUND:
        return _BOUND[0]
    import torch  # noqa: F401  loaded first, so torch's own BLAS calls bind torch's BLAS whatever comes after
    if os.environ.get("MOBILELLM_EXECUTORCH_BLAS", "executorch") == "torch":
        why = "torch's (MKL on x86): MOBILELLM_EXECUTORCH_BLAS=torch"
    elif not sys.platform.startswith("linux"):
        why = "the platform's default (the binding order matters only on Linux)"
    elif os.environ.get("TORCH_USE_RTLD_GLOBAL"):
        why = "torch's (MKL on x86): TORCH_USE_RTLD_GLOBAL puts torch's symbols first"
    elif _ops_loaded():
        why = "torch's (MKL on x86): ExecuTorch's LLM ops were loaded before in this process"
    else:
        import executorch
        lib = Path(list(executorch.__path__)[0]) / "lib" / BLAS_LIBRARY
        if not lib.is_file():
            why = f"torch's (MKL on x86): this executorch has no {BLAS_LIBRARY}"
        else:
            ctypes.CDLL(str(lib), mode=os.RTLD_GLOBAL)  # global scope: found before torch's when the ops load
            why = f"executorch's (Eigen, {BLAS_LIBRARY})"
    _BOUND.append(why)
    return why


def load_llm_kernels() -> str:
    """Register the kernels an LLM `.pte` calls besides XNNPACK's, as a runner app links them: the int8 embedding
    (`quantized_decomposed::embedding_byte`) and ExecuTorch's LLM ops (`llama::*`), the latter bound to the BLAS
    `bind()` chooses (so this is the one place that orders the two). Returns which BLAS they call."""
    blas = bind()
    import executorch.kernels.quantized  # noqa: F401  int8 embedding kernels
    from executorch.extension.llm.custom_ops import custom_ops  # noqa: F401  llama::* kernels
    return blas
