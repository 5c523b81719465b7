"""Which path a padded batch takes through the encoder: padded, or padding-free.

`plan(padding_mask, padding_free, check_left_padding)` decides from one host sync in eager
mode. A mask with no padding is dropped (unmasked attention kernels are faster, and there is
nothing to skip). With `padding_free="auto"` a batch runs padding-free when at least
PADDING_FREE_MIN_PADDING_FRACTION of it is padding: below that, the gather/scatter and
per-sequence attention cost more than they save. The threshold is fixed, not measured per
machine (cpu_choice.py): the crossover lies between 0 % (padding-free costs ~12 % on a fully
dense masked batch) and 10 % (padding-free already 1.14x padded at 10 % padding; roberta-base
bfloat16 compiled, 16x256; benchmarks/README.md), so a per-machine crossover could gain only inside that band,
while finding it means timing whole encoder forwards at several padding fractions: seconds
per batch shape, far above cpu_choice's budget. Inside torch.compile the padding fraction
is not known while tracing, so a masked batch always runs padding-free (unless
`padding_free=False`): at 10-75 % padding that is what "auto" picks anyway, and on a batch
with no padding the extra gather/scatter costs little (see benchmarks/README.md), while a
`torch.cond` over both paths would compile the encoder twice. Exported graphs (torch.export,
ONNX) keep static shapes: the padded path.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .tracing import is_compiling, is_exporting

PADDING_FREE_CHOICES = ("auto", True, False)
PADDING_FREE_MIN_PADDING_FRACTION = 0.1


class Plan(NamedTuple):
    """mask: the key mask to use (None when there is no padding); padding_free: the path;
    left_padded_rows: rows that start with padding (counted only when asked, else 0)."""

    mask: torch.Tensor | None
    padding_free: bool
    left_padded_rows: int = 0


def check_padding_free(value):
    # Identity checks: 1 == True would otherwise slip through.
    if not any(value is choice for choice in (True, False)) and value != "auto":
        raise ValueError(f"`padding_free` must be one of {PADDING_FREE_CHOICES}; got {value!r}.")
    return value


def padding_statistics(padding_mask: torch.Tensor, count_left_padded: bool) -> tuple[int, int]:
    """(valid tokens, left-padded rows) of a (B, T) bool mask, in one host sync.

    A row is left-padded when it starts with padding but has a valid token later. Counting
    those rides on the sync the execution plan needs anyway; `count_left_padded=False`
    skips it (reported as 0).
    """
    if not count_left_padded:
        return int(padding_mask.sum()), 0
    left_padded = ~padding_mask[:, 0] & padding_mask.any(dim=1)  # (B,)
    num_valid, num_left_padded = torch.stack((padding_mask.sum(), left_padded.sum())).tolist()
    return num_valid, num_left_padded


def plan(padding_mask: torch.Tensor | None, padding_free, check_left_padding: bool = False) -> Plan:
    """The path for one batch (see the module docstring); `check_left_padding` adds the
    left-padding count to the same host sync."""
    if padding_mask is None or padding_free is False:
        return Plan(padding_mask, False)
    if is_compiling():
        return Plan(padding_mask, not is_exporting())
    num_valid, num_left_padded = padding_statistics(padding_mask, check_left_padding)
    if num_valid == padding_mask.numel():
        return Plan(None, False, num_left_padded)
    if padding_free == "auto":
        padding_fraction = 1.0 - num_valid / padding_mask.numel()
        return Plan(padding_mask, padding_fraction >= PADDING_FREE_MIN_PADDING_FRACTION, num_left_padded)
    return Plan(padding_mask, True, num_left_padded)

