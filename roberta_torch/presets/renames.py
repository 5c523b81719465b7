"""Directory renames that never lose a destination: Linux's renameat2 (RENAME_NOREPLACE,
RENAME_EXCHANGE) through ctypes, and a portable fallback where the OS or the file system has
no such flag (then `supported()` is False and callers use plain renames).

    rename_noreplace(source, target)   FileExistsError if `target` exists, even as an empty
                                       directory (plain rename would replace that silently)
    exchange(a, b)                     swap two existing paths in one step
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import sys

_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2
# errnos meaning "this kernel or file system has no renameat2 / no such flag": fall back.
_UNSUPPORTED = {errno.ENOSYS, errno.EINVAL, getattr(errno, "ENOTSUP", errno.EINVAL), errno.EOPNOTSUPP}


@functools.lru_cache(maxsize=1)
def _renameat2():
    """glibc's renameat2 (2.28+), or None (other C libraries, other OSes)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function = libc.renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


class Unsupported(OSError):
    """renameat2 with this flag is not available here; use the fallback."""


def _call(source, target, flags: int) -> None:
    function = _renameat2()
    if function is None:
        raise Unsupported(errno.ENOSYS, "renameat2 is not available")
    if function(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target), flags) == 0:
        return
    code = ctypes.get_errno()
    if code in _UNSUPPORTED:
        raise Unsupported(code, os.strerror(code), os.fspath(source))
    raise OSError(code, os.strerror(code), os.fspath(source), None, os.fspath(target))


def rename_noreplace(source, target) -> None:
    """Rename `source` to `target`, failing with FileExistsError if `target` exists (also an
    empty directory). Unsupported where the OS has no atomic no-replace rename."""
    _call(source, target, _RENAME_NOREPLACE)


def exchange(first, second) -> None:
    """Swap `first` and `second` (both must exist) atomically. Unsupported where the OS has
    no atomic exchange."""
    _call(first, second, _RENAME_EXCHANGE)
