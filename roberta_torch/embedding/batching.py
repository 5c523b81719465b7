"""The one batch loop of TextEmbedder and CrossEncoder: length-sorted batches under a token
budget, padded by text_inputs.pad_rows, run under inference mode.

Rows are sorted longest first (an out-of-memory batch shows up at the start, not after an
hour), cut into batches of at most `batch_size` rows and, with `max_tokens_per_batch`, at
most that many tokens counted as padded (rows x longest row, an upper bound of what a
packed batch holds); `run_batches` yields each batch's input indices with the model's
output, so the caller puts every result back in input order.
"""

from __future__ import annotations

import numbers
from typing import Callable, Iterator

import torch

from .. import text_inputs
from ..backbone import PADDING_FREE_MIN_PADDING_FRACTION

# Show a progress bar by default from this many rows on.
PROGRESS_BAR_MIN_ROWS = 1024
# On CPU, one masked SDPA call over a batch costs about a third of the per-sequence calls of the
# padding-free path (measured: benchmarks/README.md), while the dense layers gain little from
# skipping a few percent of padding. So CPU batches are cut where more than this fraction would
# be padding: below the backbone's padding-free threshold, they take the padded path.
CPU_MAX_PADDING_FRACTION = 0.8 * PADDING_FREE_MIN_PADDING_FRACTION


def check_positive_int(value, argument: str, allow_none: bool = False):
    """`value` as an int >= 1 (or None when allowed); TypeError / ValueError naming `argument`."""
    if value is None and allow_none:
        return None
    kind = "None or a positive int" if allow_none else "a positive int"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{argument}` must be {kind}; got {type(value).__name__} ({value!r}).")
    if value < 1:
        raise ValueError(f"`{argument}` must be {kind}; got {value}.")
    return int(value)


def resolve_max_padding_fraction(value, device, cpu_default: float) -> float | None:
    """`max_padding_fraction` as length_sorted_batches takes it: "auto" -> `cpu_default` on CPU
    and None elsewhere; None or a fraction in [0, 1) as given; ValueError otherwise."""
    if isinstance(value, str) and value == "auto":
        return cpu_default if torch.device(device).type == "cpu" else None
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
        raise ValueError(f"`max_padding_fraction` must be 'auto', None or a fraction in [0, 1); got {value!r}.")
    return float(value)


def length_sorted_batches(
    lengths: list[int], batch_size: int, max_tokens_per_batch: int | None = None,
    max_padding_fraction: float | None = None,
) -> list[list[int]]:
    """Indices into `lengths`, grouped: longest first, <= batch_size rows and <= the budget.

    A single row longer than the budget gets a batch of its own (it cannot be split).
    `max_padding_fraction` also starts a new batch where the next row would make more than
    that fraction of the padded batch padding.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])  # stable: ties keep input order
    batches, current, current_tokens = [], [], 0
    for index in order:
        longest = lengths[current[0]] if current else lengths[index]
        rows = len(current) + 1
        too_many_rows = rows > batch_size
        over_budget = max_tokens_per_batch is not None and rows * longest > max_tokens_per_batch
        too_much_padding = (
            max_padding_fraction is not None
            and 1 - (current_tokens + lengths[index]) / (rows * longest) > max_padding_fraction
        )
        if current and (too_many_rows or over_budget or too_much_padding):
            batches.append(current)
            current, current_tokens = [], 0
        current.append(index)
        current_tokens += lengths[index]
    if current:
        batches.append(current)
    return batches


def run_batches(
    rows: list[list[int]], run_fn: Callable, *, pad_token_id: int, device, batch_size: int = 32,
    max_tokens_per_batch: int | None = None, max_padding_fraction="auto", show_progress_bar: bool | None = False,
    description: str = "Running", unit: str = "row",
) -> Iterator[tuple[list[int], dict, object]]:
    """Yield `(indices, inputs, run_fn(inputs))` per length-sorted batch of token-id `rows`.

    `indices` are the batch's positions in `rows`, `inputs` the padded batch (token_ids,
    padding_mask) on `device`. `run_fn` runs under inference mode. Arguments are checked
    before anything runs (TypeError / ValueError naming them); `max_padding_fraction` as
    `resolve_max_padding_fraction` takes it; `show_progress_bar` None shows a tqdm bar from
    PROGRESS_BAR_MIN_ROWS rows on."""
    batch_size = check_positive_int(batch_size, "batch_size")
    max_tokens_per_batch = check_positive_int(max_tokens_per_batch, "max_tokens_per_batch", allow_none=True)
    max_padding = resolve_max_padding_fraction(max_padding_fraction, device, CPU_MAX_PADDING_FRACTION)
    groups = length_sorted_batches([len(r) for r in rows], batch_size, max_tokens_per_batch, max_padding)
    return _run_groups(rows, groups, run_fn, pad_token_id, device, show_progress_bar, description, unit)


def _run_groups(rows, groups, run_fn, pad_token_id, device, show_progress_bar, description, unit):
    if show_progress_bar is None:
        show_progress_bar = len(rows) >= PROGRESS_BAR_MIN_ROWS
    progress = None
    if show_progress_bar:
        from tqdm.auto import tqdm

        progress = tqdm(total=len(rows), desc=description, unit=unit)
    try:
        with torch.inference_mode():
            for indices in groups:
                inputs = text_inputs.pad_rows([rows[i] for i in indices], pad_token_id, device=device)
                yield indices, inputs, run_fn(inputs)
                if progress is not None:
                    progress.update(len(indices))
    finally:
        if progress is not None:
            progress.close()
