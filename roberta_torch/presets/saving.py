"""`model.save_to_preset(directory, format=...)`.

format="keras": config.json + metadata.json + model.weights.h5 with exactly the tree Keras
writes (every group, weightless ones included, with its `name` attribute), so the real
`keras_hub.models.Backbone.from_preset(directory)` loads it. The tensors come from the same
table the reader uses (keras_format.conversion_rows), applied backwards.

format="safetensors": roberta_torch's own config.json + model.safetensors.

Files are written to temporary names and renamed into place, weights first: an
interrupted save never leaves a config.json next to partial weights.
"""

from __future__ import annotations

import logging
import os
import pathlib
import shutil

from . import keras_format, safetensors_format
from .mapping import source_tensors_from_state_dict

logger = logging.getLogger(__name__)

SAVE_FORMATS = ("keras", "safetensors")
# Files of a Keras preset that belong to its tokenizer (copied by convert_preset).
KERAS_TOKENIZER_FILES = ("tokenizer.json", "assets/tokenizer")


def _check_model(model) -> None:
    from ..backbone import RobertaBackbone

    if not isinstance(model, RobertaBackbone):
        raise TypeError(
            f"`model` must be a roberta_torch RobertaBackbone or XLMRobertaBackbone; got {type(model).__name__}."
        )
    meta = [n for n, p in model.named_parameters() if p.is_meta]
    if meta:
        raise ValueError(
            f"`model` has parameters on the meta device ({meta[0]}, ...): load or initialize them first."
        )


def save_preset(model, directory, format: str = "keras") -> pathlib.Path:
    """Write `model` as a preset into `directory` (created if needed); returns the directory."""
    if format not in SAVE_FORMATS:
        raise ValueError(f"`format`={format!r} is not supported; use one of {', '.join(SAVE_FORMATS)}.")
    _check_model(model)
    directory = pathlib.Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ValueError(
            f"`directory`={str(directory)!r} is a file; pass a directory to write the preset into."
        )
    directory.mkdir(parents=True, exist_ok=True)
    state_dict = model.state_dict()
    if format == "keras":
        rows = keras_format.conversion_rows(model.num_layers)
        tensors = source_tensors_from_state_dict(rows, state_dict, {"num_heads": model.num_heads})
        groups = keras_format.tree_groups(model.num_layers, getattr(model, "name", model.keras_config_name))
        weights = directory / keras_format.WEIGHTS_FILE
        tmp = weights.with_name(weights.name + ".tmp")
        keras_format.write_weights(tmp, tensors, groups)
        os.replace(tmp, weights)
        keras_format.write_json(directory / keras_format.CONFIG_FILE, keras_format.keras_config(model))
        keras_format.write_json(directory / keras_format.METADATA_FILE, keras_format.keras_metadata(model))
    else:
        safetensors_format.write_weights(directory / safetensors_format.WEIGHTS_FILE, state_dict)
        keras_format.write_json(
            directory / safetensors_format.CONFIG_FILE, safetensors_format.native_config(model)
        )
    logger.info("Saved %s to %s (%s format).", type(model).__name__, directory, format)
    return directory


def copy_tokenizer_files(source: pathlib.Path, destination: pathlib.Path) -> list[str]:
    """Copy a Keras preset's tokenizer (tokenizer.json + assets/tokenizer/) if it has one."""
    copied = []
    for name in KERAS_TOKENIZER_FILES:
        src = source / name
        if src.is_dir():
            shutil.copytree(src, destination / name, dirs_exist_ok=True)
        elif src.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, destination / name)
        else:
            continue
        copied.append(name)
    return copied
