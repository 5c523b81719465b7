"""This CPU's model name and the instruction-set flags that decide which kernels run.

Read from /proc/cpuinfo (empty or `platform`'s answer elsewhere). Used to key measured
choices (cpu_choice.py) and recorded with every benchmark result (benchmarks/cpu_info.py).
"""

from __future__ import annotations

import functools
import platform

# The /proc/cpuinfo flags that change which GEMM / int8 / bfloat16 kernels run.
KERNEL_FLAGS = (
    "avx2", "fma", "avx_vnni", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16",
    "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8",
)


def _cpuinfo_field(name: str) -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(name):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


@functools.lru_cache(maxsize=1)
def _present_flags() -> frozenset:
    return frozenset((_cpuinfo_field("flags") or "").split())


def cpu_flags() -> list[str]:
    """The KERNEL_FLAGS this CPU reports (empty where /proc/cpuinfo is unreadable)."""
    present = _present_flags()
    return [flag for flag in KERNEL_FLAGS if flag in present]
