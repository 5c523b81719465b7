"""What CPU a benchmark ran on: model, the instruction-set flags that decide which kernels
run (AVX2 / AVX-512 / AMX / VNNI), and the ISA torch and oneDNN were allowed to use.

Every result JSON records `cpu_record()`; README tables name the CPU kind from it. The
ISA-capping environment variables (see ISA_CAPS) are recorded too, so a run that emulated an
AVX2-only machine on a newer CPU says so.
"""

from __future__ import annotations

import os
import platform

import torch

from roberta_torch.cpu_features import KERNEL_FLAGS, cpu_flags, cpu_model  # noqa: F401 (re-exported)

# Environment variables that cap the instruction set each library uses. With these set to
# AVX2 on an AVX-512/AMX machine, every kernel library in torch's CPU wheel (oneDNN, MKL,
# fbgemm, ATen's vectorized kernels) runs its AVX2 code; the core, caches and memory stay
# those of the host CPU (see benchmarks/README.md, "What the AVX2 emulation captures").
# ONNX Runtime (MLAS) has no such cap: it keeps using the host's VNNI/AMX kernels.
ISA_CAPS = {
    "avx2": {
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "MKL_ENABLE_INSTRUCTIONS": "AVX2",
        "ATEN_CPU_CAPABILITY": "avx2",
        "FBGEMM_ENABLE_INSTRUCTIONS": "AVX2",
    },
    "native": {},
}


def cpu_kind(flags: list[str] | None = None, isa_cap: str | None = None) -> str:
    """A short label for README tables: "AMX", "AVX-512", "AVX2" or "AVX2 (emulated)"."""
    if isa_cap == "avx2":
        return "AVX2 (emulated: ISA capped on this CPU)"
    flags = cpu_flags() if flags is None else flags
    if "amx_tile" in flags:
        return "AVX-512 + AMX"
    if "avx512f" in flags:
        return "AVX-512"
    if "avx2" in flags:
        return "AVX2"
    return "pre-AVX2"


def active_isa_cap() -> str | None:
    """"avx2" when this process runs under the AVX2 caps of ISA_CAPS, else None."""
    caps = ISA_CAPS["avx2"]
    if all(os.environ.get(name) == value for name, value in caps.items()):
        return "avx2"
    return None


def cpu_record() -> dict:
    """The CPU facts every result JSON carries."""
    flags = cpu_flags()
    isa_cap = active_isa_cap()
    try:
        bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        bf16 = False
    return {
        "cpu_model": cpu_model(),
        "cpu_flags": flags,
        "cpu_kind": cpu_kind(flags, isa_cap),
        "isa_cap": isa_cap,
        "isa_env": {name: os.environ[name] for name in ISA_CAPS["avx2"] if name in os.environ},
        "aten_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "onednn_bf16": bf16,
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def describe(record: dict) -> str:
    """One line for the top of a printed table."""
    return (
        f"{record['cpu_model']} [{record['cpu_kind']}; flags: {' '.join(record['cpu_flags']) or 'unknown'}; "
        f"ATen {record['aten_cpu_capability']}], {record['torch_threads']} threads, torch {record['torch']}"
    )
