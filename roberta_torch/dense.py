"""Dense layers with their epilogue (bias, GELU, residual add) fused on CPU at inference.

On CPU, `F.linear` + `F.gelu` + `+ residual` is three passes over the activations, and
torch's addmm first broadcasts the bias into the output (another pass). oneDNN, which torch
ships and Inductor uses for the same purpose, runs bias, GELU or the residual add inside the
matrix product. Its ops have no autograd formula, so they run only where no gradient is
needed; training and every other device take the plain path. Both paths compute the same
function (float32 differences are at rounding level; see tests/model/test_dense.py).

Which path a call takes is the decision point "dense_epilogue" (see roberta_torch/dispatch.py):
`auto` and `fused` take oneDNN wherever it can run, `plain` never does.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from . import dispatch
from .tracing import is_compiling

# The process default of the "dense_epilogue" point: auto|fused|plain, or the on/off
# spellings (on = "auto", off = "plain"). Read once, at import.
ONEDNN_ENV_VAR = "ROBERTA_TORCH_ONEDNN"
EPILOGUE_PATHS = ("auto", "fused", "plain")

DENSE_EPILOGUE = dispatch.declare(
    "dense_epilogue", EPILOGUE_PATHS, env_var=ONEDNN_ENV_VAR, switch=("auto", "plain")
).name


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


def set_onednn_enabled(enabled: bool) -> bool:
    """Allow (True: "auto") or forbid (False: "plain") the fused CPU path for the process;
    returns the previous setting. The same as `dispatch.set_default("dense_epilogue", ...)`;
    overrides $ROBERTA_TORCH_ONEDNN (which is read once, at import)."""
    if not isinstance(enabled, bool):
        raise TypeError(f"`enabled` must be a bool; got {enabled!r}.")
    previous = dispatch.set_default(
        DENSE_EPILOGUE, "auto" if enabled else "plain", source="set_onednn_enabled"
    )
    return previous != "plain"


def autocast_dtype(device_type: str) -> torch.dtype | None:
    """The dtype `torch.autocast` casts matrix products to on `device_type`, or None when
    autocast is off there."""
    if not torch.is_autocast_enabled(device_type):
        return None
    return torch.get_autocast_dtype(device_type)


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


def epilogue_path(
    x: torch.Tensor, weight: torch.Tensor, residual: torch.Tensor | None = None
) -> tuple:
    """("fused" or "plain", why) for this call at the "dense_epilogue" point: "fused" (or
    "auto") takes oneDNN's kernels wherever they can run, else the plain path; "plain" never."""
    requested, source = dispatch.requested(DENSE_EPILOGUE)
    if requested == "plain":
        return "plain", source
    reason = _fused_unavailable_reason(x, weight, residual)
    if reason is not None:
        return "plain", reason
    return "fused", "auto: no gradient, oneDNN has this dtype" if requested == "auto" else source


def _fused_unavailable_reason(x, weight, residual) -> str | None:
    if x.device.type != "cpu":
        return "not a CPU tensor"
    if x.dtype not in FUSED_DTYPES:
        return "this CPU's oneDNN has no kernel for this dtype"
    if x.dtype != weight.dtype or (residual is not None and residual.dtype != x.dtype):
        return "mixed dtypes"
    # Autocast casts F.linear's inputs but not oneDNN's: fuse only what it would not cast
    # (layers.Linear casts its operands to the autocast dtype itself).
    if autocast_dtype("cpu") not in (None, x.dtype):
        return "autocast to another dtype"
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        return "gradients needed (oneDNN's ops have no autograd formula)"
    if is_compiling():
        return "compiling (Inductor fuses on its own)"
    return None


def uses_fused_cpu_path(
    x: torch.Tensor, weight: torch.Tensor, residual: torch.Tensor | None = None
) -> bool:
    """True when this call takes oneDNN's fused kernels."""
    return epilogue_path(x, weight, residual)[0] == "fused"


@contextlib.contextmanager
def record_paths():
    """Within the block, every `linear` call appends ("fused" or "plain", dtype) to the
    yielded list: whether oneDNN's fused kernel ran, and in which dtype.
    `dispatch.record("dense_epilogue")` gives the same as `Decision`s, with the reason."""
    with dispatch._recording((DENSE_EPILOGUE,), lambda d: (d.choice, d.case)) as calls:
        yield calls


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
    path, why = epilogue_path(x, weight, residual)
    dispatch.note(DENSE_EPILOGUE, path, x.dtype, why)
    if path == "fused":
        if residual is not None:
            return torch.ops.mkldnn._linear_pointwise.binary(x, residual, weight, bias, "add")
        if activation == "gelu":
            return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "gelu", [], "none")
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
    return apply_epilogue(F.linear(x, weight, bias), activation, residual)


def apply_epilogue(y: torch.Tensor, activation: str | None = None, residual: torch.Tensor | None = None):
    """activation(y) [+ residual], unfused: the plain path's epilogue. The residual is added in
    y's dtype (the autocast dtype under autocast), as the fused kernels add it."""
    if activation == "gelu":
        y = F.gelu(y)
    if residual is not None:
        y = y + (residual if residual.dtype == y.dtype else residual.to(y.dtype))
    return y
