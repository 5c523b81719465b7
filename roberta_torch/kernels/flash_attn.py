"""FlashAttention functional API: reference, custom ops, autograd, input validation.

Layers:

* `attention_reference` / `attention_reference_varlen`: pure-torch attention with the
  same semantics as the kernels (the tests' ground truth).
* `dropout_keep_mask`: pure-torch Philox that rebuilds the kernels' dropout mask.
* `torch.ops.roberta_torch.flash_attn_forward` / `flash_attn_backward`: the raw Triton
  launches as `torch.library` custom ops with fake (meta) impls and registered autograd,
  so `torch.compile(fullgraph=True)` traces them as opaque nodes.
* `flash_attention` / `flash_attention_varlen`: validated functional entries.

Semantics shared by all of them (self-attention, no causal mask):

* Keys `j >= length` of a sequence are masked.
* Query rows `i >= length` (padded positions) are NOT computed: their output is zero and
  they contribute nothing to any gradient (their incoming gradient is ignored and their
  dq is zero). This differs from SDPA with a key-padding mask, which computes those
  rows; they are padding and downstream code must ignore them anyway.
* A sequence of length 0 therefore gives all-zero output and zero gradients (Keras also
  returns zero attention for fully masked rows).

Triton is imported lazily inside the custom op implementations, so this module (and
`import roberta_torch`) works without it.
"""

import importlib.util
import math
import os
import sys
from typing import Optional

import torch

SUPPORTED_HEAD_DIMS = (32, 64, 80, 96, 128)
SUPPORTED_DTYPES = (torch.float16, torch.bfloat16)
# float32 runs only under the Triton interpreter (CPU tensors), for tight tests; on a GPU
# `tl.dot` would silently use TF32, so float32 CUDA inputs are rejected.
INTERPRETER_DTYPES = SUPPORTED_DTYPES + (torch.float32,)
# Dropout runs inside the kernels (Philox), bit-reproducible from the seed, with the same
# mask in forward and backward; `dropout_keep_mask` rebuilds it in torch.
SUPPORTS_DROPOUT = True
# The Philox counter packs (query, key) into 32 bits: query * max_seqlen + key.
MAX_DROPOUT_SEQLEN = 65536


# ---------------------------------------------------------------------------------------
# Availability
# ---------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------
# Pure-torch reference
# ---------------------------------------------------------------------------------------

def attention_reference(q, k, v, key_lengths=None, dropout_p=0.0, softmax_scale=None,
                        dropout_keep=None, upcast=True):
    """Padded attention with the kernels' semantics, in plain torch (differentiable).

    Args:
        q, k, v: (batch, seq, heads, head_dim).
        key_lengths: int (batch,) or None; keys and query rows `>= length` are padding.
        dropout_keep: bool (batch, heads, seq, seq) keep mask (see `dropout_keep_mask`),
            applied with scale 1 / (1 - dropout_p); None means no dropout.
        upcast: compute and return float32 (the ground truth); otherwise compute in the
            inputs' dtype (PyTorch's own low-precision error, the tests' yardstick).
    Returns:
        (batch, seq, heads, head_dim), float32 if `upcast` else q's dtype.
    """
    if upcast:
        q, k, v = q.float(), k.float(), v.float()
    batch, seqlen, _, head_dim = q.shape
    scale = 1.0 / math.sqrt(head_dim) if softmax_scale is None else softmax_scale
    scores = torch.einsum("bihd,bjhd->bhij", q * scale, k)
    if key_lengths is None:
        key_lengths = torch.full((batch,), seqlen, device=q.device)
    valid = torch.arange(seqlen, device=q.device)[None, :] < key_lengths.to(q.device)[:, None]
    # A finite fill keeps the softmax (and its gradient) NaN-free for length-0 rows,
    # which are zeroed below anyway.
    scores = scores.masked_fill(~valid[:, None, None, :], torch.finfo(scores.dtype).min)
    probs = torch.softmax(scores, dim=-1)
    if dropout_keep is not None:
        probs = probs.masked_fill(~dropout_keep, 0.0) / (1.0 - dropout_p)
    out = torch.einsum("bhij,bjhd->bihd", probs.to(v.dtype), v)
    return out.masked_fill(~valid[:, :, None, None], 0.0)


def attention_reference_varlen(q, k, v, cu_seqlens, dropout_p=0.0, softmax_scale=None,
                               dropout_keep=None, upcast=True):
    """Packed attention in plain torch: `attention_reference` on each sequence.

    Args:
        q, k, v: (total_tokens, heads, head_dim); cu_seqlens: int (batch + 1,).
        dropout_keep: bool (batch, heads, max_seqlen, max_seqlen) or None; sequence b
            uses `dropout_keep[b, :, :len_b, :len_b]`.
    Returns:
        (total_tokens, heads, head_dim), float32 if `upcast` else q's dtype.
    """
    bounds = cu_seqlens.tolist()
    outputs = []
    for index, (start, end) in enumerate(zip(bounds[:-1], bounds[1:])):
        keep = None
        if dropout_keep is not None:
            keep = dropout_keep[index:index + 1, :, :end - start, :end - start]
        outputs.append(attention_reference(
            q[None, start:end], k[None, start:end], v[None, start:end], dropout_p=dropout_p,
            softmax_scale=softmax_scale, dropout_keep=keep, upcast=upcast)[0])
    if not outputs:
        return q.new_zeros(q.shape, dtype=torch.float32 if upcast else q.dtype)
    return torch.cat(outputs, dim=0)


# ---------------------------------------------------------------------------------------
# Dropout RNG (bit-exact torch rebuild of the kernels' Philox mask)
# ---------------------------------------------------------------------------------------

_UINT32 = 0xFFFFFFFF
_PHILOX_KEY_A, _PHILOX_KEY_B = 0x9E3779B9, 0xBB67AE85
_PHILOX_ROUND_A, _PHILOX_ROUND_B = 0xD2511F53, 0xCD9E8D57
_PHILOX_ROUNDS = 10


def _mul_wide_uint32(constant, x):
    """(high, low) 32-bit words of constant * x for uint32 values held in int64 tensors.

    Split into 16-bit halves so no intermediate exceeds 2**34 (int64 would overflow)."""
    c_lo, c_hi = constant & 0xFFFF, constant >> 16
    x_lo, x_hi = x & 0xFFFF, x >> 16
    lo_lo, hi_lo, lo_hi, hi_hi = c_lo * x_lo, c_hi * x_lo, c_lo * x_hi, c_hi * x_hi
    cross = (lo_lo >> 16) + (hi_lo & 0xFFFF) + (lo_hi & 0xFFFF)
    high = (hi_hi + (hi_lo >> 16) + (lo_hi >> 16) + (cross >> 16)) & _UINT32
    low = ((cross & 0xFFFF) << 16) | (lo_lo & 0xFFFF)
    return high, low


def _philox_first_word(seed, c0, c1):
    """First output word of Triton's `tl.philox(seed, c0, c1, 0, 0)` (10 rounds)."""
    key0, key1 = seed & _UINT32, (seed >> 32) & _UINT32
    c2 = torch.zeros_like(c0)
    c3 = torch.zeros_like(c0)
    for _ in range(_PHILOX_ROUNDS):
        high_b, low_b = _mul_wide_uint32(_PHILOX_ROUND_B, c2)
        high_a, low_a = _mul_wide_uint32(_PHILOX_ROUND_A, c0)
        c0, c1, c2, c3 = high_b ^ c1 ^ key0, low_b, high_a ^ c3 ^ key1, low_a
        key0, key1 = (key0 + _PHILOX_KEY_A) & _UINT32, (key1 + _PHILOX_KEY_B) & _UINT32
    return c0


def dropout_keep_mask(dropout_seed, batch, heads, max_seqlen, dropout_p):
    """The kernels' dropout keep mask, rebuilt in torch (for tests and debugging).

    Args:
        dropout_seed: int64 tensor (1,) (as drawn by `draw_dropout_seed`) or an int.
        max_seqlen: the padded length (padded API) or `max_seqlen` (packed API).
    Returns:
        bool (batch, heads, max_seqlen, max_seqlen); [b, h, i, j] tells whether the
        probability of local query i attending local key j of sequence b survives.
    """
    seed = int(dropout_seed.reshape(-1)[0].item()) if torch.is_tensor(dropout_seed) else int(dropout_seed)
    seed &= (1 << 64) - 1
    positions = torch.arange(max_seqlen, dtype=torch.int64)
    counter = ((positions[:, None] * max_seqlen + positions[None, :]) & _UINT32)[None, None]
    batch_head = torch.arange(batch * heads, dtype=torch.int64).reshape(batch, heads, 1, 1)
    counter, batch_head = torch.broadcast_tensors(counter, batch_head)
    word = _philox_first_word(seed, counter, batch_head)
    # Triton's uint_to_uniform_float: reinterpret as int32, fold negatives, scale.
    signed = torch.where(word >= 2**31, word - 2**32, word)
    signed = torch.where(signed < 0, -signed - 1, signed)
    uniform = signed.to(torch.float32) * torch.tensor(4.6566127342e-10, dtype=torch.float32)
    return uniform >= torch.tensor(dropout_p, dtype=torch.float32)


def draw_dropout_seed(device):
    """A fresh int64 Philox seed (1,) on `device`, drawn from torch's generator there, so
    `torch.manual_seed` makes dropout reproducible and no host sync is needed."""
    return torch.randint(0, 2**63 - 1, (1,), dtype=torch.int64, device=device)


# ---------------------------------------------------------------------------------------
# Custom ops (raw kernel launches)
# ---------------------------------------------------------------------------------------

def _num_sequences(total_tokens, sequence_bounds, is_varlen, max_seqlen):
    if is_varlen:
        return sequence_bounds.shape[0] - 1
    return total_tokens // max_seqlen if max_seqlen > 0 else 0


def _last_dim_contiguous(x):
    return x if x.stride(-1) == 1 else x.contiguous()


@torch.library.custom_op("roberta_torch::flash_attn_forward", mutates_args=())
def flash_attn_forward_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                          sequence_bounds: Optional[torch.Tensor], is_varlen: bool, max_seqlen: int,
                          softmax_scale: float, dropout_p: float,
                          dropout_seed: Optional[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw forward on packed (total_tokens, heads, head_dim) tensors.

    `sequence_bounds` is `cu_seqlens` (int32, batch + 1) when `is_varlen`, else int32
    key lengths (batch,) or None; padded mode needs total_tokens == batch * max_seqlen.
    Returns (out (total_tokens, heads, head_dim), lse_log2 (heads, total_tokens) float32).
    """
    total_tokens, heads, head_dim = q.shape
    num_sequences = _num_sequences(total_tokens, sequence_bounds, is_varlen, max_seqlen)
    if total_tokens == 0 or num_sequences == 0 or max_seqlen == 0:
        return torch.zeros_like(q), q.new_zeros((heads, total_tokens), dtype=torch.float32)
    from . import flash_attn_triton
    q, k, v = (_last_dim_contiguous(x) for x in (q, k, v))
    return flash_attn_triton.attention_forward(q, k, v, sequence_bounds, is_varlen, num_sequences,
                                               max_seqlen, softmax_scale, dropout_p, dropout_seed)


@flash_attn_forward_op.register_fake
def _flash_attn_forward_fake(q, k, v, sequence_bounds, is_varlen, max_seqlen, softmax_scale,
                             dropout_p, dropout_seed):
    total_tokens, heads, head_dim = q.shape
    return torch.empty_like(q), q.new_empty((heads, total_tokens), dtype=torch.float32)


@torch.library.custom_op("roberta_torch::flash_attn_backward", mutates_args=())
def flash_attn_backward_op(dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                           out: torch.Tensor, lse_log2: torch.Tensor,
                           sequence_bounds: Optional[torch.Tensor], is_varlen: bool, max_seqlen: int,
                           softmax_scale: float, dropout_p: float,
                           dropout_seed: Optional[torch.Tensor]
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Raw backward: (dq, dk, dv), each (total_tokens, heads, head_dim) like q, k, v."""
    total_tokens = q.shape[0]
    num_sequences = _num_sequences(total_tokens, sequence_bounds, is_varlen, max_seqlen)
    if total_tokens == 0 or num_sequences == 0 or max_seqlen == 0:
        return torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
    from . import flash_attn_triton
    dout, q, k, v, out = (_last_dim_contiguous(x) for x in (dout, q, k, v, out))
    delta = flash_attn_triton.attention_backward_preprocess(out, dout)
    launch_args = (dout, q, k, v, lse_log2, delta, sequence_bounds, is_varlen, num_sequences,
                   max_seqlen, softmax_scale, dropout_p, dropout_seed)
    dk, dv = flash_attn_triton.attention_backward_dkdv(*launch_args)
    dq = flash_attn_triton.attention_backward_dq(*launch_args)
    return dq, dk, dv


@flash_attn_backward_op.register_fake
def _flash_attn_backward_fake(dout, q, k, v, out, lse_log2, sequence_bounds, is_varlen,
                              max_seqlen, softmax_scale, dropout_p, dropout_seed):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _forward_setup_context(ctx, inputs, output):
    q, k, v, sequence_bounds, is_varlen, max_seqlen, softmax_scale, dropout_p, dropout_seed = inputs
    out, lse_log2 = output
    ctx.save_for_backward(q, k, v, out, lse_log2, sequence_bounds, dropout_seed)
    ctx.launch_options = (is_varlen, max_seqlen, softmax_scale, dropout_p)


def _forward_backward(ctx, grad_out, grad_lse_log2):
    # lse_log2 is an internal by-product; nothing differentiates through it.
    q, k, v, out, lse_log2, sequence_bounds, dropout_seed = ctx.saved_tensors
    is_varlen, max_seqlen, softmax_scale, dropout_p = ctx.launch_options
    dq, dk, dv = flash_attn_backward_op(grad_out, q, k, v, out, lse_log2, sequence_bounds, is_varlen,
                                        max_seqlen, softmax_scale, dropout_p, dropout_seed)
    return dq, dk, dv, None, None, None, None, None, None


flash_attn_forward_op.register_autograd(_forward_backward, setup_context=_forward_setup_context)


# ---------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------

def _check_qkv(function_name, q, k, v, expected_ndim, layout):
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


def _check_backend_usable(function_name, device):
    """Last check before a launch, so that argument errors are reported on any machine."""
    if triton_is_usable(device):
        return
    if not _TRITON_INSTALLED:
        raise ImportError(f"{function_name} needs the `triton` package (pip install triton) and a CUDA "
                          "device; use torch SDPA otherwise.")
    raise ValueError(f"{function_name}: the Triton kernels cannot run on device {device} here: they need a "
                     "CUDA device, or CPU tensors with TRITON_INTERPRET=1 set before "
                     "roberta_torch.kernels.flash_attn_triton is first imported. Use torch SDPA instead.")


def _check_scalars(function_name, dropout_p, softmax_scale, max_seqlen):
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


def _check_index_tensor(function_name, name, tensor, device, expected_shape, int32_only):
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


def _should_check_values(validate_lengths):
    # Value checks read device memory (a host sync) and cannot be traced; under
    # torch.compile the kernels' own clamping keeps memory accesses in bounds.
    return validate_lengths and not torch.compiler.is_compiling()


def _resolve_scale(softmax_scale, head_dim):
    return 1.0 / math.sqrt(head_dim) if softmax_scale is None else float(softmax_scale)


# ---------------------------------------------------------------------------------------
# Functional entries
# ---------------------------------------------------------------------------------------

def flash_attention(q, k, v, key_lengths=None, dropout_p=0.0, softmax_scale=None, *,
                    validate_lengths=True):
    """FlashAttention-2 over a padded batch (Triton kernel, differentiable).

    Args:
        q, k, v: (batch, seq, heads, head_dim), float16/bfloat16 (float32 on CPU under
            the Triton interpreter), head_dim in SUPPORTED_HEAD_DIMS.
        key_lengths: int tensor (batch,) with values in [0, seq], or None (no padding).
            Keys `j >= key_lengths[b]` are masked; query rows `i >= key_lengths[b]` are
            skipped and their output is zero (see the module docstring).
        dropout_p: dropout on attention probabilities, in-kernel (Philox seed drawn from
            torch's generator on q's device); pass 0 for evaluation.
        softmax_scale: defaults to 1 / sqrt(head_dim).
        validate_lengths: check key_lengths values (costs a host sync on GPU; skipped
            automatically under torch.compile). Pass False after validating once per batch.
    Returns:
        (batch, seq, heads, head_dim) in q's dtype.
    """
    name = "flash_attention"
    _check_qkv(name, q, k, v, 4, "(batch, seq, heads, head_dim)")
    batch, seqlen, heads, head_dim = q.shape
    _check_scalars(name, dropout_p, softmax_scale, seqlen)
    sequence_bounds = None
    if key_lengths is not None:
        _check_index_tensor(name, "key_lengths", key_lengths, q.device, (batch,), int32_only=False)
        if _should_check_values(validate_lengths) and batch > 0:
            low, high = int(key_lengths.min()), int(key_lengths.max())
            if low < 0 or high > seqlen:
                raise ValueError(f"{name}: `key_lengths` must lie in [0, {seqlen}] (the sequence length), "
                                 f"got values in [{low}, {high}].")
        sequence_bounds = key_lengths.to(torch.int32)
    _check_backend_usable(name, q.device)
    dropout_seed = draw_dropout_seed(q.device) if dropout_p > 0.0 else None
    packed = [x.reshape(batch * seqlen, heads, head_dim) for x in (q, k, v)]
    out, _ = flash_attn_forward_op(*packed, sequence_bounds, False, seqlen, _resolve_scale(softmax_scale, head_dim),
                                   float(dropout_p), dropout_seed)
    return out.view(batch, seqlen, heads, head_dim)


def flash_attention_varlen(q, k, v, cu_seqlens, max_seqlen, dropout_p=0.0, softmax_scale=None, *,
                           validate_lengths=True):
    """FlashAttention-2 over packed sequences (Triton kernel, differentiable).

    Args:
        q, k, v: (total_tokens, heads, head_dim); sequence b is tokens
            `[cu_seqlens[b], cu_seqlens[b+1])`.
        cu_seqlens: int32 (batch + 1,), starts at 0, non-decreasing, ends at total_tokens.
        max_seqlen: int >= the longest sequence (sets the grid; larger only wastes
            empty programs).
        dropout_p, softmax_scale: as in `flash_attention`.
        validate_lengths: check cu_seqlens / max_seqlen values (host sync; skipped under
            torch.compile, where a wrong max_seqlen leaves rows unwritten).
    Returns:
        (total_tokens, heads, head_dim) in q's dtype.
    """
    name = "flash_attention_varlen"
    _check_qkv(name, q, k, v, 3, "(total_tokens, heads, head_dim)")
    total_tokens, heads, head_dim = q.shape
    if not torch.is_tensor(cu_seqlens) or cu_seqlens.dim() != 1 or cu_seqlens.shape[0] < 2:
        shape = tuple(cu_seqlens.shape) if torch.is_tensor(cu_seqlens) else type(cu_seqlens).__name__
        raise ValueError(f"{name}: `cu_seqlens` must be a 1-D int32 tensor (batch + 1,) with batch >= 1, "
                         f"got {shape}.")
    _check_index_tensor(name, "cu_seqlens", cu_seqlens, q.device, tuple(cu_seqlens.shape), int32_only=True)
    if isinstance(max_seqlen, bool) or not isinstance(max_seqlen, (int, torch.SymInt)):
        raise TypeError(f"{name}: `max_seqlen` must be a python int (the longest sequence), got "
                        f"{type(max_seqlen).__name__}; pass int(lengths.max()).")
    if max_seqlen < 0:
        raise ValueError(f"{name}: `max_seqlen` must be >= 0, got {max_seqlen}.")
    _check_scalars(name, dropout_p, softmax_scale, max_seqlen)
    if _should_check_values(validate_lengths):
        lengths = cu_seqlens[1:] - cu_seqlens[:-1]
        first, last = int(cu_seqlens[0]), int(cu_seqlens[-1])
        if first != 0 or last != total_tokens or bool((lengths < 0).any()):
            raise ValueError(f"{name}: `cu_seqlens` must start at 0, never decrease and end at total_tokens "
                             f"({total_tokens}); got {cu_seqlens.tolist()}.")
        longest = int(lengths.max())
        if longest > max_seqlen:
            raise ValueError(f"{name}: `max_seqlen` ({max_seqlen}) is smaller than the longest sequence "
                             f"({longest}); pass max_seqlen >= {longest}.")
    _check_backend_usable(name, q.device)
    dropout_seed = draw_dropout_seed(q.device) if dropout_p > 0.0 else None
    out, _ = flash_attn_forward_op(q, k, v, cu_seqlens, True, max_seqlen, _resolve_scale(softmax_scale, head_dim),
                                   float(dropout_p), dropout_seed)
    return out
