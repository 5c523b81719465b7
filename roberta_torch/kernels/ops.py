"""The raw kernel launches as `torch.library` custom ops, with fake impls and autograd.

`torch.ops.roberta_torch.flash_attn_forward` / `flash_attn_backward` take packed
`(total_tokens, heads, head_dim)` tensors and no validation: `flash_attn.py` validates.
The fake (meta) impls and the registered autograd let `torch.compile(fullgraph=True)` trace
them as opaque nodes. Triton is imported lazily inside the real impls, so importing this
module needs no Triton.

Three layouts, told apart by the arguments:

* packed (`is_varlen=True`): `sequence_bounds` is `cu_seqlens` (int32, batch + 1);
* padded, right padding (`is_varlen=False`, `key_padding_mask=None`): `sequence_bounds` is
  int32 key lengths (batch,) or None (nothing padded);
* padded, any mask (`key_padding_mask` a (batch, seq) bool tensor): `sequence_bounds` is
  `key_mask_bounds(key_padding_mask)`, computed on the device by torch ops (no host sync).

Padded layouts need total_tokens == batch * max_seqlen.
"""

from typing import Optional

import torch


def key_mask_bounds(key_padding_mask: torch.Tensor) -> torch.Tensor:
    """Per-sequence loop bounds of a (batch, seq) bool mask, on its device, no host sync.

    Returns int32 (batch, 3): [first valid index, last valid index + 1, 1 if the valid
    tokens are one contiguous run else 0]. A row with no valid token gets [seq, 0, 0]
    (an empty range). The kernels visit only the blocks in [first, last + 1); contiguous
    rows need no per-element mask reads except in their two edge blocks.
    """
    seqlen = key_padding_mask.shape[1]
    positions = torch.arange(seqlen, device=key_padding_mask.device, dtype=torch.int32)
    first = torch.where(key_padding_mask, positions, seqlen).amin(dim=1)
    end = torch.where(key_padding_mask, positions + 1, 0).amax(dim=1)
    count = key_padding_mask.sum(dim=1, dtype=torch.int32)
    contiguous = (end - first) == count
    return torch.stack([first, end, contiguous.to(torch.int32)], dim=1).to(torch.int32)


def _num_sequences(total_tokens, sequence_bounds, is_varlen, max_seqlen):
    if is_varlen:
        return sequence_bounds.shape[0] - 1
    return total_tokens // max_seqlen if max_seqlen > 0 else 0


def _last_dim_contiguous(x):
    return x if x.stride(-1) == 1 else x.contiguous()


def _mask_bytes(key_padding_mask):
    # A zero-copy uint8 view: Triton loads bytes; bool pointers are less portable across versions.
    return None if key_padding_mask is None else key_padding_mask.contiguous().view(torch.uint8)


@torch.library.custom_op("roberta_torch::flash_attn_forward", mutates_args=())
def flash_attn_forward_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                          sequence_bounds: Optional[torch.Tensor], key_padding_mask: Optional[torch.Tensor],
                          is_varlen: bool, max_seqlen: int, softmax_scale: float, dropout_p: float,
                          dropout_seed: Optional[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw forward on packed (total_tokens, heads, head_dim) tensors (layouts: module docstring).

    Returns (out (total_tokens, heads, head_dim), lse_log2 (heads, total_tokens) float32).
    """
    total_tokens, heads, head_dim = q.shape
    num_sequences = _num_sequences(total_tokens, sequence_bounds, is_varlen, max_seqlen)
    if total_tokens == 0 or num_sequences == 0 or max_seqlen == 0:
        return torch.zeros_like(q), q.new_zeros((heads, total_tokens), dtype=torch.float32)
    from . import flash_attn_triton
    q, k, v = (_last_dim_contiguous(x) for x in (q, k, v))
    return flash_attn_triton.attention_forward(q, k, v, sequence_bounds, _mask_bytes(key_padding_mask), is_varlen,
                                               num_sequences, max_seqlen, softmax_scale, dropout_p, dropout_seed)


@flash_attn_forward_op.register_fake
def _flash_attn_forward_fake(q, k, v, sequence_bounds, key_padding_mask, is_varlen, max_seqlen, softmax_scale,
                             dropout_p, dropout_seed):
    total_tokens, heads, head_dim = q.shape
    return torch.empty_like(q), q.new_empty((heads, total_tokens), dtype=torch.float32)


@torch.library.custom_op("roberta_torch::flash_attn_backward", mutates_args=())
def flash_attn_backward_op(dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                           out: torch.Tensor, lse_log2: torch.Tensor,
                           sequence_bounds: Optional[torch.Tensor], key_padding_mask: Optional[torch.Tensor],
                           is_varlen: bool, max_seqlen: int, softmax_scale: float, dropout_p: float,
                           dropout_seed: Optional[torch.Tensor]
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Raw backward: (dq, dk, dv), each (total_tokens, heads, head_dim) like q, k, v."""
    total_tokens = q.shape[0]
    num_sequences = _num_sequences(total_tokens, sequence_bounds, is_varlen, max_seqlen)
    if total_tokens == 0 or num_sequences == 0 or max_seqlen == 0:
        return torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
    from . import flash_attn_triton
    dout, q, k, v, out = (_last_dim_contiguous(x) for x in (dout, q, k, v, out))
    return flash_attn_triton.attention_backward(dout, q, k, v, out, lse_log2, sequence_bounds,
                                                _mask_bytes(key_padding_mask), is_varlen, num_sequences,
                                                max_seqlen, softmax_scale, dropout_p, dropout_seed)


@flash_attn_backward_op.register_fake
def _flash_attn_backward_fake(dout, q, k, v, out, lse_log2, sequence_bounds, key_padding_mask, is_varlen,
                              max_seqlen, softmax_scale, dropout_p, dropout_seed):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _forward_setup_context(ctx, inputs, output):
    (q, k, v, sequence_bounds, key_padding_mask, is_varlen, max_seqlen, softmax_scale, dropout_p,
     dropout_seed) = inputs
    out, lse_log2 = output
    ctx.save_for_backward(q, k, v, out, lse_log2, sequence_bounds, key_padding_mask, dropout_seed)
    ctx.launch_options = (is_varlen, max_seqlen, softmax_scale, dropout_p)


def _forward_backward(ctx, grad_out, grad_lse_log2):
    # lse_log2 is an internal by-product; nothing differentiates through it.
    q, k, v, out, lse_log2, sequence_bounds, key_padding_mask, dropout_seed = ctx.saved_tensors
    is_varlen, max_seqlen, softmax_scale, dropout_p = ctx.launch_options
    dq, dk, dv = flash_attn_backward_op(grad_out, q, k, v, out, lse_log2, sequence_bounds, key_padding_mask,
                                        is_varlen, max_seqlen, softmax_scale, dropout_p, dropout_seed)
    return dq, dk, dv, None, None, None, None, None, None, None


flash_attn_forward_op.register_autograd(_forward_backward, setup_context=_forward_setup_context)
