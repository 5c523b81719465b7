"""`model.save_to_preset(directory, format=...)`.

format="keras": config.json + metadata.json + model.weights.h5 with exactly the tree Keras
writes, so the real `keras_hub.models.Backbone.from_preset(directory)` loads it (see
keras_format.save). format="safetensors": roberta_torch's native export (native_format).

Everything is written into a staging directory that replaces `directory` in one rename
(files.staged_directory): an interrupted save leaves nothing half-written, and a non-empty
`directory` is replaced only with `overwrite=True`. Nothing is written through a link.
"""

from __future__ import annotations

import logging
import pathlib

from . import files, keras_format, native_format

logger = logging.getLogger(__name__)

WRITERS = {"keras": keras_format.save, "safetensors": native_format.save}
SAVE_FORMATS = tuple(WRITERS)


def check_savable(model) -> None:
    """A backbone whose parameters hold data (duck-typed: presets import no model class)."""
    if not all(hasattr(model, name) for name in ("keras_class_name", "get_config", "state_dict", "num_layers")):
        raise TypeError(
            f"`model` must be a roberta_torch RobertaBackbone or XLMRobertaBackbone; got {type(model).__name__}."
        )
    meta = [n for n, p in model.named_parameters() if p.is_meta]
    if meta:
        raise ValueError(
            f"`model` has parameters on the meta device ({meta[0]}, ...): load or initialize them first."
        )


def check_format(format: str) -> str:
    if format not in WRITERS:
        raise ValueError(f"`format`={format!r} is not supported; use one of {', '.join(SAVE_FORMATS)}.")
    return format


def write_backbone(model, directory: pathlib.Path, format: str = "keras") -> None:
    """Write `model`'s files into an existing (staging) directory."""
    WRITERS[check_format(format)](model, directory)


def save_preset(model, directory, format: str = "keras", *, overwrite: bool = False) -> pathlib.Path:
    """Write `model` as a preset into `directory`; returns the directory."""
    check_format(format)
    check_savable(model)
    with files.staged_directory(directory, overwrite=overwrite) as staging:
        write_backbone(model, staging, format)
    logger.info("Saved %s to %s (%s format).", type(model).__name__, directory, format)
    return pathlib.Path(directory)
