"""FlashAttention public functional API: validated entries over the custom ops.

Semantics shared by the entries (self-attention, no causal mask):

* Padded keys are masked: keys `j >= length` of a sequence (`key_lengths`, packed
  sequences), or keys where `key_padding_mask` is False.
* Padding query rows (the same positions) are NOT computed: their output is zero and
  they contribute nothing to any gradient (their incoming gradient is ignored and their
  dq is zero). This differs from SDPA with a key-padding mask, which computes those
  rows; they are padding and downstream code must ignore them anyway.
* A sequence with no valid token therefore gives all-zero output and zero gradients
  (Keras also returns zero attention for fully masked rows).

The pieces live in their own modules: `validation` (what the kernels accept, typed errors
before any launch), `ops` (the torch.library custom ops and their autograd),
`flash_attn_triton` (the Triton kernels and launchers, imported on the first launch) and
`reference` (the pure-torch ground truth and the dropout-mask rebuild, for tests).
"""

import math

import torch

from .ops import flash_attn_forward_op
from .ops import key_mask_bounds as _key_mask_bounds
from .validation import (
    check_backend_usable,
    check_index_tensor,
    check_key_padding_mask,
    check_qkv,
    check_scalars,
    should_check_values,
)


def draw_dropout_seed(device):
    """A fresh int64 Philox seed (1,) on `device`, drawn from torch's generator there, so
    `torch.manual_seed` makes dropout reproducible and no host sync is needed."""
    return torch.randint(0, 2**63 - 1, (1,), dtype=torch.int64, device=device)


def _resolve_scale(softmax_scale, head_dim):
    return 1.0 / math.sqrt(head_dim) if softmax_scale is None else float(softmax_scale)


def flash_attention(q, k, v, key_lengths=None, dropout_p=0.0, softmax_scale=None, *,
                    validate_lengths=True, key_padding_mask=None, key_mask_bounds=None):
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
        key_padding_mask: bool (batch, seq) on q's device, True = valid token, any pattern
            (left, right or scattered padding); instead of `key_lengths`. Keys where it is
            False are masked and those query rows give zeros. Loop bounds are derived on
            the device: no host sync, traceable by torch.compile.
        key_mask_bounds: `roberta_torch.kernels.ops.key_mask_bounds(key_padding_mask)`,
            precomputed to share across layers; computed here when None.
    Returns:
        (batch, seq, heads, head_dim) in q's dtype.
    """
    name = "flash_attention"
    check_qkv(name, q, k, v, 4, "(batch, seq, heads, head_dim)")
    batch, seqlen, heads, head_dim = q.shape
    check_scalars(name, dropout_p, softmax_scale, seqlen)
    sequence_bounds = None
    if key_padding_mask is not None:
        check_key_padding_mask(name, key_padding_mask, batch, seqlen, q.device, key_lengths)
        if key_mask_bounds is None:
            key_mask_bounds = _key_mask_bounds(key_padding_mask)
        else:
            check_index_tensor(name, "key_mask_bounds", key_mask_bounds, q.device, (batch, 3), int32_only=True)
        sequence_bounds = key_mask_bounds
    elif key_mask_bounds is not None:
        raise ValueError(f"{name}: `key_mask_bounds` comes with `key_padding_mask`; pass the mask too.")
    elif key_lengths is not None:
        check_index_tensor(name, "key_lengths", key_lengths, q.device, (batch,), int32_only=False)
        if should_check_values(validate_lengths) and batch > 0:
            low, high = int(key_lengths.min()), int(key_lengths.max())
            if low < 0 or high > seqlen:
                raise ValueError(f"{name}: `key_lengths` must lie in [0, {seqlen}] (the sequence length), "
                                 f"got values in [{low}, {high}].")
        sequence_bounds = key_lengths.to(torch.int32)
    check_backend_usable(name, q.device)
    dropout_seed = draw_dropout_seed(q.device) if dropout_p > 0.0 else None
    packed = [x.reshape(batch * seqlen, heads, head_dim) for x in (q, k, v)]
    out, _ = flash_attn_forward_op(*packed, sequence_bounds, key_padding_mask, False, seqlen,
                                   _resolve_scale(softmax_scale, head_dim), float(dropout_p), dropout_seed)
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
    check_qkv(name, q, k, v, 3, "(total_tokens, heads, head_dim)")
    total_tokens, heads, head_dim = q.shape
    if not torch.is_tensor(cu_seqlens) or cu_seqlens.dim() != 1 or cu_seqlens.shape[0] < 2:
        shape = tuple(cu_seqlens.shape) if torch.is_tensor(cu_seqlens) else type(cu_seqlens).__name__
        raise ValueError(f"{name}: `cu_seqlens` must be a 1-D int32 tensor (batch + 1,) with batch >= 1, "
                         f"got {shape}.")
    check_index_tensor(name, "cu_seqlens", cu_seqlens, q.device, tuple(cu_seqlens.shape), int32_only=True)
    if isinstance(max_seqlen, bool) or not isinstance(max_seqlen, (int, torch.SymInt)):
        raise TypeError(f"{name}: `max_seqlen` must be a python int (the longest sequence), got "
                        f"{type(max_seqlen).__name__}; pass int(lengths.max()).")
    if max_seqlen < 0:
        raise ValueError(f"{name}: `max_seqlen` must be >= 0, got {max_seqlen}.")
    check_scalars(name, dropout_p, softmax_scale, max_seqlen)
    if should_check_values(validate_lengths):
        lengths = cu_seqlens[1:] - cu_seqlens[:-1]
        first, last = int(cu_seqlens[0]), int(cu_seqlens[-1])
        if first != 0 or last != total_tokens or bool((lengths < 0).any()):
            raise ValueError(f"{name}: `cu_seqlens` must start at 0, never decrease and end at total_tokens "
                             f"({total_tokens}); got {cu_seqlens.tolist()}.")
        longest = int(lengths.max())
        if longest > max_seqlen:
            raise ValueError(f"{name}: `max_seqlen` ({max_seqlen}) is smaller than the longest sequence "
                             f"({longest}); pass max_seqlen >= {longest}.")
    check_backend_usable(name, q.device)
    dropout_seed = draw_dropout_seed(q.device) if dropout_p > 0.0 else None
    out, _ = flash_attn_forward_op(q, k, v, cu_seqlens, None, True, max_seqlen, _resolve_scale(softmax_scale, head_dim),
                                   float(dropout_p), dropout_seed)
    return out
