"""Giving freed memory back to the operating system between the steps of an export.

CPython and glibc keep freed heap pages for reuse: after a step frees a few GB (a quantized copy, a
protobuf), the process's resident size stays at its high-water mark and the next step's peak stacks on
top of it. `return_memory()` collects garbage and asks glibc to release its free pages (malloc_trim);
elsewhere it only collects."""
from __future__ import annotations

import copy
import ctypes
import gc
import sys


def return_memory() -> None:
    gc.collect()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc (musl): nothing to ask
            pass


# (module, function): device lookups cached per module (functools.cache) by the PT2E quantizers
DEVICE_CACHES = (("torchao.utils", "_assert_and_get_unique_device"),
                 ("torch.ao.quantization.fx.utils", "assert_and_get_unique_device"))


def forget_quantized_modules() -> None:
    """torchao's and torch.ao's `assert_and_get_unique_device(module)` are `functools.cache`s keyed by the module:
    every model PT2E prepares (and the graph module it was exported to) stays referenced by them for the life of
    the process, weights and observers included: an fp32 copy of the model that nothing can free. Cleared once
    quantization is done."""
    import importlib
    for mod, name in DEVICE_CACHES:
        try:
            cached = getattr(importlib.import_module(mod), name)
        except (ImportError, AttributeError):
            continue
        if hasattr(cached, "cache_clear"):
            cached.cache_clear()


def sharing_copy(module):
    """A deep copy of `module`'s modules and buffers that shares its parameters: a copy to restructure (other caches,
    added biases, swapped-in quantized weights) without a second set of fp32 weights."""
    return copy.deepcopy(module, memo={id(p): p for p in module.parameters()})
