"""XNNPACK runtime options the Python bindings do not expose, set through ExecuTorch's C API.

`weight_cache_enabled` makes XNNPACK pack each weight once, by name, and share it between call
sites. Without it a block that runs twice (immediate layer sharing) is packed twice at
`load_method`, and the LS model's resident memory grows by the packed blocks (125M: 716 vs 611 MB).
The phone apps set the same option through `executorch::runtime::set_option` in C++.

The option is process-wide and read when a delegate initialises, so it must be set before
`load_method`. It goes through `executorch::runtime::set_option("XnnpackBackend", Span<BackendOption>)`
(exported by the wheel's libexecutorch.so) with ctypes; BackendOption is `char key[64]` +
`std::variant<bool, int, std::array<char, 256>>` (256-byte storage, then a 1-byte index), and
the value is read back with `get_option` so a layout change in a later ExecuTorch is caught."""
from __future__ import annotations

import ctypes
import os
from pathlib import Path

_SPAN_FN = "_ZN10executorch7runtime10{}EPKcNS0_4SpanINS0_13BackendOptionEEE"
_BOOL = 0  # index of bool in the variant


class _BackendOption(ctypes.Structure):
    _fields_ = [("key", ctypes.c_char * 64), ("storage", ctypes.c_ubyte * 256), ("index", ctypes.c_ubyte),
                ("_pad", ctypes.c_ubyte * 3)]


def _functions():
    from executorch.extension.pybindings import portable_lib  # loads libexecutorch.so, registers XnnpackBackend
    path = (Path(portable_lib.__file__).parent / ".." / ".." / "lib" / "libexecutorch.so").resolve()
    lib = ctypes.CDLL(str(path), mode=os.RTLD_NOLOAD | os.RTLD_GLOBAL)  # the instance already loaded, never a 2nd
    fns = []
    for name in ("set_option", "get_option"):
        f = getattr(lib, _SPAN_FN.format(name))
        f.argtypes, f.restype = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t], ctypes.c_uint32
        fns.append(f)
    return fns


def set_weight_cache(enabled: bool = True) -> str | None:
    """Switch XNNPACK's weight cache for every method loaded after this; None on success, else why not."""
    try:
        set_option, get_option = _functions()
        opt = _BackendOption(key=b"weight_cache_enabled", index=_BOOL)
        opt.storage[0] = int(enabled)
        if set_option(b"XnnpackBackend", ctypes.addressof(opt), 1):
            return "set_option refused weight_cache_enabled"
        back = _BackendOption(key=b"weight_cache_enabled", index=255)
        if get_option(b"XnnpackBackend", ctypes.addressof(back), 1) or back.index != _BOOL \
                or bool(back.storage[0]) != enabled:
            return "weight_cache_enabled did not read back as set (BackendOption layout changed?)"
    except (OSError, AttributeError, ImportError) as e:
        return f"ExecuTorch's set_option is not reachable: {e}"
    return None
