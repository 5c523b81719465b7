"""Refuse, before allocating, a model larger than this machine's memory (a hostile or
mistyped config must not ask the allocator for terabytes)."""

from __future__ import annotations

import os

import torch


def available_memory_bytes() -> int | None:
    """Physical memory of this machine (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_fits_in_memory(num_parameters: int, dtype: torch.dtype, device) -> None:
    """ValueError when `num_parameters` of `dtype` on a CPU `device` exceed the machine's memory."""
    target = torch.device(device) if device is not None else torch.get_default_device()
    if target.type != "cpu":
        return  # meta costs nothing; accelerators report their own out-of-memory quickly
    limit = available_memory_bytes()
    needed = num_parameters * torch.empty((), dtype=dtype).element_size()
    if limit is not None and needed > limit:
        raise ValueError(
            f"This configuration has {num_parameters:,} parameters "
            f"({needed / 2**30:,.1f} GiB in {dtype}), more than this machine's memory "
            f"({limit / 2**30:,.1f} GiB). Check num_layers, hidden_dim, intermediate_dim, vocabulary_size "
            "and max_sequence_length, or build it on device='meta'."
        )
