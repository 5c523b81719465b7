"""Dense layers with their epilogue (bias, GELU, residual add) fused on CPU at inference.

On CPU, `F.linear` + `F.gelu` + `+ residual` is three passes over the activations, and
torch's addmm first broadcasts the bias into the output (another pass). oneDNN, which torch
ships and Inductor uses for the same purpose, runs bias, GELU or the residual add inside the
matrix product. Its ops have no autograd formula, so they run only where no gradient is
needed; training and every other device take the plain path. Both paths compute the same
function (float32 differences are at rounding level; see tests/test_dense.py).
"""

from __future__ import annotations

import contextlib
import os

import torch
import torch.nn.functional as F

from .inputs import is_compiling

# Escape hatch for debugging and for the benchmarks' A/B runs: read once, at import.
ONEDNN_ENV_VAR = "ROBERTA_TORCH_ONEDNN"


def _onednn_ops_available() -> bool:
    try:
        return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    except (AttributeError, RuntimeError):
        return False


def _supported_dtypes() -> tuple:
    """float32, plus the half types this CPU's oneDNN implements (bfloat16 needs AVX512-BF16
    or AMX, float16 AVX512-FP16 or AMX-FP16; elsewhere oneDNN refuses to build the kernel)."""
    if not _onednn_ops_available():
        return ()
    dtypes = [torch.float32]
    probes = ((torch.bfloat16, "_is_mkldnn_bf16_supported"), (torch.float16, "_is_mkldnn_fp16_supported"))
    for dtype, probe in probes:
        try:
            if getattr(torch.ops.mkldnn, probe)():
                dtypes.append(dtype)
        except (AttributeError, RuntimeError):
            pass
    return tuple(dtypes)


FUSED_DTYPES = _supported_dtypes()
ONEDNN_AVAILABLE = bool(FUSED_DTYPES)
_enabled = os.environ.get(ONEDNN_ENV_VAR, "1") != "0"


def onednn_enabled() -> bool:
    return _enabled


def set_onednn_enabled(enabled: bool) -> bool:
    """Turn the fused CPU path on or off for the process (overrides $ROBERTA_TORCH_ONEDNN,
    which is read once, at import); returns the previous setting."""
    global _enabled
    if not isinstance(enabled, bool):
        raise TypeError(f"`enabled` must be a bool; got {enabled!r}.")
    previous, _enabled = _enabled, enabled
    return previous


def autocast_dtype(device_type: str) -> torch.dtype | None:
    """The dtype `torch.autocast` casts matrix products to on `device_type`, or None when
    autocast is off there."""
    try:
        if not torch.is_autocast_enabled(device_type):
            return None
        return torch.get_autocast_dtype(device_type)
    except (TypeError, AttributeError):  # torch < 2.4: per-device functions
        if device_type == "cpu":
            return torch.get_autocast_cpu_dtype() if torch.is_autocast_cpu_enabled() else None
        if device_type == "cuda":
            return torch.get_autocast_gpu_dtype() if torch.is_autocast_enabled() else None
        return None


def autocast_operands(x: torch.Tensor, *tensors):
    """(x, *tensors) cast to the autocast dtype of x's device when autocast is on there,
    unchanged otherwise (None entries stay None).

    This is what autocast does to `F.linear`'s inputs; doing it ourselves lets the fused
    kernels, which autocast does not know, run in the low precision too, and gives the
    attention backends bfloat16/float16 inputs. float64 is left alone, as autocast does.
    """
    dtype = autocast_dtype(x.device.type)
    if dtype is None or x.dtype == torch.float64 or not x.is_floating_point():
        return (x, *tensors)
    return tuple(t if t is None or t.dtype == dtype else t.to(dtype) for t in (x, *tensors))


def uses_fused_cpu_path(
    x: torch.Tensor, weight: torch.Tensor, residual: torch.Tensor | None = None
) -> bool:
    """True when this call can take oneDNN's fused kernels."""
    return (
        _enabled
        and x.device.type == "cpu"
        and x.dtype in FUSED_DTYPES
        and x.dtype == weight.dtype
        and (residual is None or residual.dtype == x.dtype)
        # Autocast casts F.linear's inputs but not oneDNN's: fuse only what it would not
        # cast (layers.Linear casts its operands to the autocast dtype itself).
        and autocast_dtype("cpu") in (None, x.dtype)
        and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
        and not is_compiling()  # Inductor fuses on its own
    )


# Observers of the path each `linear` call takes (see record_paths); empty in normal runs.
_path_records: list = []


@contextlib.contextmanager
def record_paths():
    """Within the block, every `linear` call appends ("fused" or "plain", dtype) to the
    yielded list: whether oneDNN's fused kernel ran, and in which dtype. For tests,
    debugging and benchmarks."""
    calls: list = []
    _path_records.append(calls)
    try:
        yield calls
    finally:
        _path_records.remove(calls)


def linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    activation: str | None = None,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """activation(x @ weight.T + bias) [+ residual].

    x: (..., in); weight: (out, in); bias: (out,); residual: (..., out) or None;
    activation: None or "gelu" (exact, erf). Not both activation and residual.
    """
    fused = uses_fused_cpu_path(x, weight, residual)
    for calls in _path_records:
        calls.append(("fused" if fused else "plain", x.dtype))
    if fused:
        if residual is not None:
            return torch.ops.mkldnn._linear_pointwise.binary(x, residual, weight, bias, "add")
        if activation == "gelu":
            return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "gelu", [], "none")
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
    y = F.linear(x, weight, bias)
    if activation == "gelu":
        y = F.gelu(y)
    if residual is not None:
        y = y + residual
    return y
