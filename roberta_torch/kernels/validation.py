"""What the kernels accept, and the checks that say so before any launch.

Every check raises a typed error (TypeError for a wrong type or dtype, ValueError for a
wrong shape, value or device, ImportError when Triton is missing) that names the argument
and the remedy. Nothing here imports Triton.
"""

import importlib.util
import math
import os
import sys

import torch

from ..tracing import is_compiling

SUPPORTED_HEAD_DIMS = (32, 64, 80, 96, 128)
SUPPORTED_DTYPES = (torch.float16, torch.bfloat16)
# float32 runs only under the Triton interpreter (CPU tensors), for tight tests; on a GPU
# `tl.dot` would silently use TF32, so float32 CUDA inputs are rejected.
INTERPRETER_DTYPES = SUPPORTED_DTYPES + (torch.float32,)
# The Philox counter packs (query, key) into 32 bits: query * max_seqlen + key.
MAX_DROPOUT_SEQLEN = 65536


# Looked up once without importing Triton (find_spec only locates the package).
_TRITON_INSTALLED = importlib.util.find_spec("triton") is not None


def _kernels_interpreted():
    """Whether the kernels run (or, once imported, will run) under the Triton interpreter."""
    kernel_module = sys.modules.get(__package__ + ".flash_attn_triton")
    if kernel_module is not None:
        return kernel_module.KERNELS_INTERPRETED
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")


def triton_is_usable(device) -> bool:
    """True when the Triton kernels can run on `device`.

    That needs Triton importable and either a CUDA device or, for CPU tensors, the Triton
    interpreter (`TRITON_INTERPRET=1` set before the kernels are first imported).
    """
    device = torch.device(device)
    if not _TRITON_INSTALLED:
        return False
    return device.type == "cuda" or (device.type == "cpu" and _kernels_interpreted())


def check_qkv(function_name, q, k, v, expected_ndim, layout):
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not torch.is_tensor(x):
            raise TypeError(f"{function_name}: `{name}` must be a torch.Tensor {layout}, got {type(x).__name__}.")
        if x.dim() != expected_ndim:
            raise ValueError(f"{function_name}: `{name}` must be {expected_ndim}-D {layout}, got shape "
                             f"{tuple(x.shape)}.")
    if not (q.shape == k.shape == v.shape):
        raise ValueError(f"{function_name}: q, k, v must have the same shape {layout} (self-attention), "
                         f"got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}.")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"{function_name}: q, k, v must share one dtype, got {q.dtype}, {k.dtype}, {v.dtype}; "
                        f"cast them to one of {SUPPORTED_DTYPES}.")
    if not (q.device == k.device == v.device):
        raise ValueError(f"{function_name}: q, k, v must be on one device, got {q.device}, {k.device}, "
                         f"{v.device}.")
    allowed = INTERPRETER_DTYPES if q.device.type == "cpu" else SUPPORTED_DTYPES
    if q.dtype not in allowed:
        raise TypeError(f"{function_name}: dtype {q.dtype} is not supported on {q.device.type}; allowed: "
                        f"{allowed}. Cast q, k, v (e.g. .to(torch.bfloat16)) or use torch SDPA.")
    head_dim = q.shape[-1]
    if head_dim not in SUPPORTED_HEAD_DIMS:
        raise ValueError(f"{function_name}: head_dim {head_dim} is not supported; supported head dims: "
                         f"{SUPPORTED_HEAD_DIMS}. Use torch SDPA for other sizes.")


def check_backend_usable(function_name, device):
    """Last check before a launch, so that argument errors are reported on any machine."""
    if triton_is_usable(device):
        return
    if not _TRITON_INSTALLED:
        raise ImportError(f"{function_name} needs the `triton` package (pip install triton) and a CUDA "
                          "device; use torch SDPA otherwise.")
    raise ValueError(f"{function_name}: the Triton kernels cannot run on device {device} here: they need a "
                     "CUDA device, or CPU tensors with TRITON_INTERPRET=1 set before "
                     "roberta_torch.kernels.flash_attn_triton is first imported. Use torch SDPA instead.")


def check_scalars(function_name, dropout_p, softmax_scale, max_seqlen):
    if isinstance(dropout_p, bool) or not isinstance(dropout_p, (int, float)) or not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"{function_name}: `dropout_p` must be a float in [0, 1), got {dropout_p!r}.")
    if dropout_p > 0.0 and max_seqlen > MAX_DROPOUT_SEQLEN:
        raise ValueError(f"{function_name}: dropout needs sequences of at most {MAX_DROPOUT_SEQLEN} tokens "
                         f"(Philox counter width), got {max_seqlen}; use dropout_p=0 or torch SDPA.")
    if softmax_scale is not None:
        if isinstance(softmax_scale, bool) or not isinstance(softmax_scale, (int, float)) \
                or not math.isfinite(softmax_scale) or softmax_scale <= 0:
            raise ValueError(f"{function_name}: `softmax_scale` must be a positive finite float or None "
                             f"(1/sqrt(head_dim)), got {softmax_scale!r}.")


def check_index_tensor(function_name, name, tensor, device, expected_shape, int32_only):
    if not torch.is_tensor(tensor):
        raise TypeError(f"{function_name}: `{name}` must be an integer torch.Tensor of shape {expected_shape}, "
                        f"got {type(tensor).__name__}.")
    if int32_only and tensor.dtype != torch.int32:
        raise TypeError(f"{function_name}: `{name}` must be torch.int32, got {tensor.dtype}; "
                        f"pass {name}.to(torch.int32).")
    if tensor.dtype.is_floating_point or tensor.dtype.is_complex or tensor.dtype == torch.bool:
        raise TypeError(f"{function_name}: `{name}` must have an integer dtype, got {tensor.dtype}.")
    if tuple(tensor.shape) != expected_shape:
        raise ValueError(f"{function_name}: `{name}` must have shape {expected_shape}, got {tuple(tensor.shape)}.")
    if tensor.device != device:
        raise ValueError(f"{function_name}: `{name}` must be on {device} like q, got {tensor.device}.")


def should_check_values(validate_lengths):
    # Value checks read device memory (a host sync) and cannot be traced; under
    # torch.compile the kernels' own clamping keeps memory accesses in bounds.
    return validate_lengths and not is_compiling()


def check_key_padding_mask(function_name, mask, batch, seqlen, device, key_lengths):
    """A (batch, seq) bool key-padding mask on q's device, given instead of key_lengths."""
    if key_lengths is not None:
        raise ValueError(f"{function_name}: pass at most one of `key_lengths` and `key_padding_mask`, got both; "
                         "key_lengths is for right padding, key_padding_mask for any mask.")
    if not torch.is_tensor(mask):
        raise TypeError(f"{function_name}: `key_padding_mask` must be a bool torch.Tensor of shape "
                        f"{(batch, seqlen)} (True = valid token), got {type(mask).__name__}.")
    if mask.dtype != torch.bool:
        raise TypeError(f"{function_name}: `key_padding_mask` must be torch.bool (True = valid token), got "
                        f"{mask.dtype}; pass mask.bool() (or mask != 0).")
    if tuple(mask.shape) != (batch, seqlen):
        raise ValueError(f"{function_name}: `key_padding_mask` must have shape (batch, seq) = {(batch, seqlen)}, "
                         f"got {tuple(mask.shape)}.")
    if mask.device != device:
        raise ValueError(f"{function_name}: `key_padding_mask` must be on {device} like q, got {mask.device}; "
                         f"pass key_padding_mask.to({str(device)!r}).")
