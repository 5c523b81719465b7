"""Unpad once before the encoder layers, pad once after them.

A padded batch `(batch, seq, ...)` with a padding mask is packed into `(total_tokens, ...)`
holding only the valid tokens, row after row, plus `cu_seqlens` (int32, `(batch + 1,)`, the
cumulative sequence lengths) that tell where each row starts. Dense layers (projections,
MLP, LayerNorm) then only see real tokens; attention runs per sequence.
"""

from __future__ import annotations

import dataclasses

import torch


@dataclasses.dataclass(frozen=True)
class PackedLayout:
    """Where the valid tokens of a padded batch went.

    indices:     (total_tokens,) int64 positions into the flattened `(batch * seq)` axis.
    cu_seqlens:  (batch + 1,) int32 cumulative lengths; row b is [cu[b], cu[b+1]).
    seqlens:     python list of the batch's lengths (read once per forward, one host sync).
    max_seqlen:  python int, the longest row.
    batch, seq:  the padded shape to restore.
    """

    indices: torch.Tensor
    cu_seqlens: torch.Tensor
    seqlens: list
    max_seqlen: int
    batch: int
    seq: int

    @property
    def total_tokens(self) -> int:
        return int(self.indices.shape[0])


def packed_layout(padding_mask: torch.Tensor) -> PackedLayout:
    """Build the packing of a `(batch, seq)` bool mask (True = valid token).

    Valid tokens need not form a prefix: any 0/1 pattern is packed in order, which is exactly
    key-masked attention for the valid queries.
    """
    batch, seq = padding_mask.shape
    seqlens_tensor = padding_mask.sum(dim=1, dtype=torch.int32)  # (B,)
    indices = torch.nonzero(padding_mask.reshape(-1), as_tuple=False).flatten()  # (total,)
    cu_seqlens = torch.zeros(batch + 1, dtype=torch.int32, device=padding_mask.device)
    torch.cumsum(seqlens_tensor, dim=0, out=cu_seqlens[1:])
    seqlens = seqlens_tensor.tolist()
    return PackedLayout(
        indices=indices,
        cu_seqlens=cu_seqlens,
        seqlens=seqlens,
        max_seqlen=max(seqlens) if seqlens else 0,
        batch=batch,
        seq=seq,
    )


def unpad(hidden: torch.Tensor, layout: PackedLayout) -> torch.Tensor:
    """(batch, seq, ...) -> (total_tokens, ...): keep the valid tokens only."""
    return hidden.reshape(layout.batch * layout.seq, *hidden.shape[2:]).index_select(
        0, layout.indices
    )


def pad(packed: torch.Tensor, layout: PackedLayout) -> torch.Tensor:
    """(total_tokens, ...) -> (batch, seq, ...), zeros at the padded positions."""
    out = packed.new_zeros(layout.batch * layout.seq, *packed.shape[1:])
    out = out.index_copy(0, layout.indices, packed)
    return out.reshape(layout.batch, layout.seq, *packed.shape[1:])
