"""Unpad once before the encoder layers, pad once after them.

A padded batch `(batch, seq, ...)` with a padding mask is packed into `(total_tokens, ...)`
holding only the valid tokens, row after row, plus `cu_seqlens` (int32, `(batch + 1,)`, the
cumulative sequence lengths) that tell where each row starts. Dense layers (projections,
MLP, LayerNorm) then only see real tokens; attention runs per sequence.

In eager mode the layout is read to the host once per forward (the lengths as a python
list). Inside torch.compile nothing may leave the device: the number of valid tokens is a
data-dependent size, produced by the custom op `roberta_torch::valid_token_indices` whose fake
implementation allocates an unbacked symbolic size, and `max_seqlen` is the padded length (a
static upper bound), so one graph serves every mask of a padded shape.
"""

from __future__ import annotations

import dataclasses
import torch

@dataclasses.dataclass(frozen=True)
class PackedLayout:
    """Where the valid tokens of a batch are.

    indices:     (total_tokens,) int64 positions into the flattened `(batch * seq)` axis, or
                 None for inputs that arrived packed (nothing to pad back).
    cu_seqlens:  (batch + 1,) int32 cumulative lengths; row b is [cu[b], cu[b+1]).
    seqlens:     python list of the batch's lengths (read once per forward, one host sync),
                 or None inside torch.compile.
    max_seqlen:  python int (or symbolic int under compile) >= the longest row: the longest
                 row in eager mode, an upper bound (the padded length) under compile.
    batch, seq:  the padded shape to restore (seq is None for packed inputs).
    """

    indices: torch.Tensor | None
    cu_seqlens: torch.Tensor
    seqlens: list | None
    max_seqlen: int
    batch: int
    seq: int | None


@torch.library.custom_op(
    "roberta_torch::valid_token_indices", mutates_args=(), schema="(Tensor mask) -> Tensor"
)
def valid_token_indices(mask: torch.Tensor) -> torch.Tensor:
    """(batch, seq) bool -> (total_tokens,) int64 flat positions of the True entries."""
    return torch.nonzero(mask.reshape(-1), as_tuple=False).flatten()


@valid_token_indices.register_fake
def _valid_token_indices_fake(mask):
    total = _new_dynamic_size(torch.library.get_ctx(), mask.numel())
    return mask.new_empty((total,), dtype=torch.int64)


def _new_dynamic_size(ctx, upper_bound):
    """An unbacked symbolic size in [0, upper_bound]: known only at run time.

    `ctx.new_dynamic_size()` refuses outside `fullgraph=True` unless the global
    `torch._dynamo.config.capture_dynamic_output_shape_ops` is set, and dynamo would break
    the graph there. The count of valid tokens is always a valid size, so (as torch's own
    device-mesh ops do) we create the unbacked size on the shape environment directly.
    """
    if not isinstance(upper_bound, int):
        upper_bound = None  # a symbolic bound (dynamic shapes) cannot be a range limit
    try:
        total = ctx.new_dynamic_size(min=0, max=upper_bound)
    except Exception:  # DynamicOutputShapeException (no public name); see docstring
        shape_env = getattr(ctx, "_shape_env", None)
        if shape_env is None:
            raise
        from torch.fx.experimental.symbolic_shapes import _constrain_range_for_size

        total = shape_env.create_unbacked_symint()
        _constrain_range_for_size(total, min=0, max=upper_bound)
    return total


def cumulative_lengths(lengths: torch.Tensor) -> torch.Tensor:
    """(batch,) lengths -> (batch + 1,) int32 `cu_seqlens` starting at 0."""
    cumulative = torch.cumsum(lengths, dim=0, dtype=torch.int32)
    return torch.cat([cumulative.new_zeros(1), cumulative])


def packed_layout(padding_mask: torch.Tensor, eager: bool = True) -> PackedLayout:
    """Build the packing of a `(batch, seq)` bool mask (True = valid token).

    Valid tokens need not form a prefix: any 0/1 pattern is packed in order, which is exactly
    key-masked attention for the valid queries. `eager=False` (inside torch.compile) takes no
    host sync: the token count stays symbolic and `max_seqlen` is `seq`.
    """
    batch, seq = padding_mask.shape
    cu_seqlens = cumulative_lengths(padding_mask.sum(dim=1, dtype=torch.int32))
    if not eager:
        indices = torch.ops.roberta_torch.valid_token_indices(padding_mask)
        return PackedLayout(indices, cu_seqlens, None, seq, batch, seq)
    indices = torch.nonzero(padding_mask.reshape(-1), as_tuple=False).flatten()  # (total,)
    seqlens = (cu_seqlens[1:] - cu_seqlens[:-1]).tolist()
    return PackedLayout(
        indices=indices,
        cu_seqlens=cu_seqlens,
        seqlens=seqlens,
        max_seqlen=max(seqlens) if seqlens else 0,
        batch=batch,
        seq=seq,
    )


def layout_of_packed_input(
    cu_seqlens: torch.Tensor, max_seqlen: int | None, upper_bound: int, eager: bool = True
) -> PackedLayout:
    """The layout of inputs that arrived packed (validated cu_seqlens, nothing to pad back).

    In eager mode the lengths are read once; under compile `max_seqlen` (or, without one,
    `upper_bound`, the model's max_sequence_length) bounds the rows without a host sync.
    """
    batch = cu_seqlens.shape[0] - 1
    if not eager:
        bound = max_seqlen if max_seqlen is not None else upper_bound
        return PackedLayout(None, cu_seqlens, None, bound, batch, None)
    seqlens = (cu_seqlens[1:] - cu_seqlens[:-1]).tolist()
    longest = max(seqlens) if seqlens else 0
    bound = max_seqlen if max_seqlen is not None else longest
    return PackedLayout(None, cu_seqlens, seqlens, bound, batch, None)


def packed_positions(cu_seqlens: torch.Tensor, total_tokens: int) -> torch.Tensor:
    """(total_tokens,) int64 position of each packed token inside its own sequence (0, 1, ...)."""
    return sequences_and_positions(cu_seqlens, total_tokens)[1]


def sequences_and_positions(cu_seqlens: torch.Tensor, total_tokens) -> tuple:
    """((total_tokens,), (total_tokens,)) int64: the sequence each packed token belongs to,
    and its position inside it. Device ops only (`total_tokens` may be symbolic).

    Token t belongs to the last sequence b with cu_seqlens[b] <= t (empty sequences share a
    start with the next one, and `right=True` skips past them).
    """
    cu = cu_seqlens.long()
    tokens = torch.arange(total_tokens, device=cu_seqlens.device, dtype=torch.int64)
    sequence = torch.searchsorted(cu, tokens, right=True) - 1
    return sequence, tokens - cu[sequence]


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
