"""`model.save_to_preset(directory, format=...)`.

format="keras": config.json + metadata.json + model.weights.h5 with exactly the tree Keras
writes, so the real `keras_hub.models.Backbone.from_preset(directory)` loads it (see
keras_format.save). format="safetensors": roberta_torch's native export (native_format).
format="transformers": config.json + model.safetensors (sharded above `max_shard_size`) as
transformers' save_pretrained writes them (transformers_format.save).

Everything is written into a staging directory that replaces `directory` in one rename
(files.staged_directory): an interrupted save leaves nothing half-written, and a non-empty
`directory` is replaced only with `overwrite=True`. Nothing is written through a link.
"""

from __future__ import annotations

import logging
import pathlib

from . import files, keras_format, native_format, transformers_format

logger = logging.getLogger(__name__)

WRITERS = {"keras": keras_format.save, "safetensors": native_format.save, "transformers": transformers_format.save}
SAVE_FORMATS = tuple(WRITERS)
# Keyword options a format's writer takes (None values mean "the writer's default").
WRITER_OPTIONS = {"transformers": ("max_shard_size",)}


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


def check_options(format: str, options: dict) -> dict:
    """The writer options that are set, refusing those `format` does not take."""
    given = {k: v for k, v in options.items() if v is not None}
    allowed = WRITER_OPTIONS.get(format, ())
    for name in given:
        if name not in allowed:
            raise TypeError(
                f"`{name}` applies to format={', '.join(repr(f) for f, o in WRITER_OPTIONS.items() if name in o)} "
                f"only; got format={format!r}."
            )
    return given


def write_backbone(model, directory: pathlib.Path, format: str = "keras", **options) -> None:
    """Write `model`'s files into an existing (staging) directory."""
    WRITERS[check_format(format)](model, directory, **check_options(format, options))


def save_preset(model, directory, format: str = "keras", *, overwrite: bool = False, **options) -> pathlib.Path:
    """Write `model` as a preset into `directory`; returns the directory. `options`: the
    format's writer options (format="transformers": max_shard_size)."""
    check_format(format)
    options = check_options(format, options)
    check_savable(model)
    if format == "transformers" and "max_shard_size" in options:
        transformers_format.parse_shard_size(options["max_shard_size"])  # before touching the disk
    with files.staged_directory(directory, overwrite=overwrite) as staging:
        write_backbone(model, staging, format, **options)
    logger.info("Saved %s to %s (%s format).", type(model).__name__, directory, format)
    return pathlib.Path(directory)
