"""Length-sorted batches under a token budget (the rows are padded by text_inputs.pad_rows).

Texts are sorted longest first (an out-of-memory batch shows up at the start, not after an
hour), cut into batches of at most `batch_size` texts and, with `max_tokens_per_batch`, at
most that many tokens counted as padded (rows x longest row, an upper bound of what a
packed batch holds), then every result is put back in input order.
"""

from __future__ import annotations

import numbers

import torch


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
