"""Attention with torch's scaled_dot_product_attention (SDPA), for padded and packed batches.

The dispatcher (attention.py) sends here every call the Triton kernel does not take (CPU,
float32, other head dims). Plain torch ops only, so autograd and dropout are SDPA's own
(autograd keeps the mask for the backward).

Packed (varlen) batches, q, k, v of shape (total_tokens, heads, head_dim), run one of two ways:

* `per_sequence_attention`: one SDPA call per run of equal-length sequences.
* `repadded_attention`: scatter the tokens into (batch, longest), one key-masked SDPA call,
  gather back: spends the padding's share of the attention work, saves a call per sequence.

Both need the lengths on the host (eager mode, or inside the custom op of varlen_sdpa.py
that traced graphs run). Which one runs is the decision point "packed_sdpa" (attention.py).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from .padding import sequences_and_positions


def padded_attention(q, k, v, key_mask, row_has_key, dropout_p: float) -> torch.Tensor:
    """q, k, v (batch, seq, heads, head_dim) -> (batch, seq, heads, head_dim).

    key_mask: (batch, 1, 1, seq) bool, True = attend, or None. row_has_key: (batch, 1, 1, 1)
    bool or None; rows without a valid key are zeroed (CPU SDPA already returns zeros there).
    """
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=key_mask, dropout_p=dropout_p
    )  # (B, N, T, D)
    if row_has_key is not None:
        out = torch.where(row_has_key, out, out.new_zeros(()))
    return out.transpose(1, 2)  # (B, T, N, D)


def per_sequence_attention(q, k, v, seqlens: list, dropout_p: float) -> torch.Tensor:
    """(total, N, D) packed q, k, v -> (total, N, D), one SDPA call per run of equal-length
    sequences (a dense batch is one call; empty sequences are skipped)."""
    outputs = []
    start = 0
    for length, count in _runs(seqlens):
        end = start + length * count
        if length:
            # (count * L, N, D) -> (count, N, L, D)
            qi, ki, vi = (t[start:end].unflatten(0, (count, length)).transpose(1, 2) for t in (q, k, v))
            out = F.scaled_dot_product_attention(qi, ki, vi, dropout_p=dropout_p)
            outputs.append(out.transpose(1, 2).flatten(0, 1))
        start = end
    if not outputs:
        return q.new_zeros(q.shape)
    return outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=0)  # (total, N, D)


def _runs(seqlens):
    """[(length, how many consecutive sequences have it), ...]"""
    runs = []
    for length in seqlens:
        if runs and runs[-1][0] == length:
            runs[-1][1] += 1
        else:
            runs.append([length, 1])
    return runs


@dataclasses.dataclass(frozen=True)
class Repadding:
    """Where packed tokens go in a (batch, longest) grid, computed once per forward.

    slots:    (total,) int64 index of each token in the flattened (batch * longest) grid.
    key_mask: (batch, 1, 1, longest) bool, True at the slots that hold a token.
    """

    slots: torch.Tensor
    key_mask: torch.Tensor
    batch: int
    longest: int


def repadding(cu_seqlens: torch.Tensor, total_tokens: int, longest: int) -> Repadding:
    """The grid of sequences [cu_seqlens[b], cu_seqlens[b + 1]) padded to `longest` (>= every
    length), by device ops (no host sync)."""
    sequence, position = sequences_and_positions(cu_seqlens, total_tokens)
    slots = sequence * longest + position
    lengths = cu_seqlens[1:] - cu_seqlens[:-1]
    key_mask = torch.arange(longest, device=cu_seqlens.device)[None, :] < lengths[:, None]  # (B, L)
    return Repadding(slots, key_mask[:, None, None, :], cu_seqlens.shape[0] - 1, longest)


def repadded_attention(q, k, v, grid: Repadding, dropout_p: float) -> torch.Tensor:
    """(total, N, D) packed q, k, v -> (total, N, D) by one key-masked SDPA call over the
    sequences re-padded into `grid` (see `repadding`)."""
    _, heads, dim = q.shape
    # Each (B * L, N, D) with zeros at the padding -> (B, N, L, D).
    padded = [
        t.new_zeros(grid.batch * grid.longest, heads, dim)
        .index_copy(0, grid.slots, t)
        .view(grid.batch, grid.longest, heads, dim)
        .transpose(1, 2)
        for t in (q, k, v)
    ]
    out = F.scaled_dot_product_attention(*padded, attn_mask=grid.key_mask, dropout_p=dropout_p)
    return out.transpose(1, 2).reshape(grid.batch * grid.longest, heads, dim).index_select(0, grid.slots)
