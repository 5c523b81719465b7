"""Dense layers with their epilogue (bias, GELU, residual add) fused on CPU at inference.

On CPU, `F.linear` + `F.gelu` + `+ residual` is three passes over the activations, and
torch's addmm first broadcasts the bias into the output (another pass). oneDNN, which torch
ships and Inductor uses for the same purpose, runs bias, GELU or the residual add inside the
matrix product. Its ops have no autograd formula, so they run only where no gradient is
needed; training and every other device take the plain path. Both paths compute the same
function (float32 differences are at rounding level; see tests/test_dense.py).
"""

from __future__ import annotations

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


def _cpu_autocast_enabled() -> bool:
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # torch < 2.4
        return torch.is_autocast_cpu_enabled()


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
        # Autocast casts F.linear's inputs but not oneDNN's: let it do its job.
        and not _cpu_autocast_enabled()
        and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
        and not is_compiling()  # Inductor fuses on its own
    )


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
    if uses_fused_cpu_path(x, weight, residual):
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
