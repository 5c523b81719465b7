"""Backbone weights from a `Preset`: the config checked against the weights' structure
before anything is built, then a strict, streaming load.

Nothing is half-built: the caller creates the model on the meta device (no memory, no random
init); `load_backbone_weights` checks every tensor's presence, shape and dtype from the file
headers, allocates the final tensors once and fills them one source tensor at a time (the
peak memory is the parameters plus one tensor), and only then assigns them
(`load_state_dict(strict=True, assign=True)`).

This module imports no model class: `Backbone.from_preset` picks its class by the name the
preset records and hands the model in.
"""

from __future__ import annotations

import logging
import os

from .mapping import allocate_like, check_rows_or_raise, fill_tensors

logger = logging.getLogger(__name__)



def read_weights_header(preset, config: dict):
    """(source tensors, description) of the preset's weights, headers only, after checking
    that `config` (stored config + overrides) matches their structure."""
    source, description = preset.read_tensors()
    check_structure(preset, config, source)
    return source, description


def check_structure(preset, config: dict, source: dict) -> None:
    """Compare the config's sizes with the weight files' structure before building anything.

    A config claiming 20,000 layers next to 2 layers of weights is refused here, in
    milliseconds, with a short message, instead of first building a model of that size.
    """
    layers = preset.layer_indices(source)
    num_layers = config.get("num_layers")
    held = max(layers) + 1 if layers else 0
    # A config with fewer layers than the weights is cheap to build and gets the full per-key
    # report; one claiming more layers than the weights hold is refused before building.
    if isinstance(num_layers, int) and not isinstance(num_layers, bool) and num_layers > held:
        raise ValueError(
            f"Cannot load {preset.handle!r}: its config has num_layers={num_layers} but the weights "
            f"({preset.directory}) hold {len(layers)} encoder layer(s); the config and weights do not "
            "belong together (nothing was built)."
        )


def available_memory_bytes() -> int | None:
    """Physical memory of this machine (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def load_backbone_weights(model, preset, config: dict, dims: dict, source, description: str, *, device=None) -> None:
    """Fill `model` (built on the meta device from `config`) with `preset`'s weights
    (`source`, `description`: from read_weights_header)."""
    fmt = preset.format
    model_tensors = dict(model.state_dict())
    rows = fmt.conversion_rows(config, model_tensors)
    table_dims = fmt.table_dims(config, dims)
    leftovers = check_rows_or_raise(
        rows,
        source,
        model_tensors,
        table_dims,
        ignored_prefixes=fmt.IGNORED_PREFIXES,
        # Task heads (transformers' pooler, lm_head, classifier, qa_outputs): a backbone leaves
        # them, with a log line.
        leftover_prefixes=getattr(fmt, "HEAD_PREFIXES", ()),
        description=description,
    )
    if leftovers:
        shown = ", ".join(leftovers[:8]) + (f" and {len(leftovers) - 8} more" if len(leftovers) > 8 else "")
        logger.info(
            "%s holds task-head tensors a backbone does not use; left them: %s. Load it with the matching "
            "task class to keep them.", preset.handle, shown
        )
    targets = allocate_like(model_tensors, device)
    fill_tensors(rows, source, targets, table_dims)
    model.load_state_dict(targets, strict=True, assign=True)
    remember = getattr(fmt, "remember_source", None)
    if remember is not None:  # what writing back to this format needs to be exact
        remember(model, source, table_dims)
    leftover_meta = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if leftover_meta:  # a tensor outside the state dict: the model class needs a non-meta init
        raise RuntimeError(f"{type(model).__name__} kept meta tensors after loading: {leftover_meta}")
    logger.info("Loaded %s from %s (%s format).", type(model).__name__, preset.directory, fmt.NAME)
