"""Strict loading, shared by every format loader: the config checked against the weights'
structure before anything is built, then a streaming fill of a model built on meta.

Nothing is half-built and nothing is initialized only to be overwritten: the caller creates
the model on the meta device (no memory, no random init); `fill_model` checks every tensor's
presence, shape and dtype from the file headers, allocates the final tensors once and fills
them one source tensor at a time (the peak memory is the parameters plus one tensor), and
only then assigns them (`load_state_dict(strict=True, assign=True)`).

What writing a model back to its format needs beyond the state dict (transformers' position
and token-type tables and pooler, `transformers_format.TransformersSource`) is returned by
the loader (`source_record`) and stored by `attach_source_record` as the backbone's
documented `transformers_source` attribute, on every path that loads weights.

This module imports no model class: the callers pick the class and hand the model in.
"""

from __future__ import annotations

import logging

from .mapping import allocate_like, check_rows_or_raise, fill_tensors

logger = logging.getLogger(__name__)

SOURCE_RECORD_ATTRIBUTE = "transformers_source"


def check_structure(loader, config: dict, source: dict) -> None:
    """Compare the config's sizes with the weight files' structure before building anything.

    A config claiming 20,000 layers next to 2 layers of weights is refused here, in
    milliseconds, with a short message, instead of first building a model of that size.
    """
    layers = loader.layer_indices(source)
    num_layers = config.get("num_layers")
    held = max(layers) + 1 if layers else 0
    # A config with fewer layers than the weights is cheap to build and gets the full per-key
    # report; one claiming more layers than the weights hold is refused before building.
    if isinstance(num_layers, int) and not isinstance(num_layers, bool) and num_layers > held:
        raise ValueError(
            f"Cannot load {loader.preset.handle!r}: its config has num_layers={num_layers} but the weights "
            f"({loader.preset.source.describe()}) hold {len(layers)} encoder layer(s); the config and weights "
            "do not belong together (nothing was built)."
        )


def attach_source_record(backbone, record) -> None:
    """Store what writing `backbone` back to its source format needs (None for formats that
    need nothing) as its `transformers_source` attribute: the one place that sets it."""
    setattr(backbone, SOURCE_RECORD_ATTRIBUTE, record)


def fill_model(model, rows, source: dict, dims: dict, *, description: str, ignored_prefixes=(),
               leftover_prefixes=(), device=None) -> list[str]:
    """Fill `model` (built on meta) from `source` through `rows`, strictly; returns the
    unused source keys under `leftover_prefixes` (reported by the caller)."""
    model_tensors = dict(model.state_dict())
    leftovers = check_rows_or_raise(
        rows, source, model_tensors, dims, ignored_prefixes=tuple(ignored_prefixes),
        leftover_prefixes=tuple(leftover_prefixes), description=description,
    )
    targets = allocate_like(model_tensors, device)
    fill_tensors(rows, source, targets, dims)
    model.load_state_dict(targets, strict=True, assign=True)
    leftover_meta = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if leftover_meta:  # a tensor outside the state dict: the model class needs a non-meta init
        raise RuntimeError(f"{type(model).__name__} kept meta tensors after loading: {leftover_meta}")
    return leftovers


def load_backbone_weights(loader, model, config: dict, dims: dict, source: dict, description: str, *, device=None):
    """Fill a backbone built on meta from its preset's weights, then attach its source record."""
    record = loader.source_record(source, dims)
    kept = tuple(getattr(record, "source_keys", ()) or ())
    leftovers = fill_model(
        model, loader.conversion_rows(config, model.state_dict()), source, dims, description=description,
        # Buffers that hold no weights, and tensors the source record keeps for writing back.
        ignored_prefixes=loader.IGNORED_PREFIXES + kept,
        # Task heads (transformers' lm_head, classifier, qa_outputs): a backbone leaves them.
        leftover_prefixes=loader.HEAD_PREFIXES, device=device,
    )
    if leftovers:
        shown = ", ".join(leftovers[:8]) + (f" and {len(leftovers) - 8} more" if len(leftovers) > 8 else "")
        logger.info(
            "%s holds task-head tensors a backbone does not use; left them: %s. Load it with the matching "
            "task class to keep them.", loader.preset.handle, shown
        )
    attach_source_record(model, record)
    logger.info("Loaded %s from %s (%s format).", type(model).__name__, loader.preset.handle, loader.NAME)
