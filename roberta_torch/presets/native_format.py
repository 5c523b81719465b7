"""roberta_torch's native preset: config.json + model.safetensors holding the model's own
state dict under its own keys (the conversion table is the identity). Written by
`save_to_preset(..., format="safetensors")`; not "any safetensors file" (transformers
checkpoints are `transformers_format`).

config.json:
    {"format": "roberta_torch", "format_version": 1, "class_name": "RobertaBackbone",
     "config": {<get_config()>}, "parameter_count": <int>}
"""

from __future__ import annotations

import pathlib

import torch

from . import files, keras_format
from .mapping import Row

NAME = "roberta_torch"
FORMAT_VERSION = 1
IGNORED_PREFIXES: tuple[str, ...] = ()
LAYER_KEY_PATTERN = r"^layers\.(\d+)\."


def is_config(config: dict) -> bool:
    return config.get("format") == NAME


def parse_config(config: dict, path, overrides: dict) -> tuple[str, dict, dict]:
    version = config.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{path}: format_version={version!r} is not supported by this roberta_torch (reads version "
            f"{FORMAT_VERSION}); upgrade roberta_torch."
        )
    if not isinstance(config.get("class_name"), str) or not isinstance(config.get("config"), dict):
        raise ValueError(f"{path}: expected string 'class_name' and object 'config' entries.")
    return config["class_name"], dict(config["config"]), {}


def class_name(raw: dict, path) -> str:
    return parse_config(raw, path, {})[0]


# The same {"class_name", "config": {...}} layout as a Keras config.json.
max_sequence_length = keras_format.max_sequence_length


def hub_weight_candidates(allow_pickle: bool) -> tuple[str, ...]:
    return (files.NATIVE_WEIGHTS_FILE,)


def read_tensors(directory: pathlib.Path, *, allow_pickle: bool = False, root=None):
    path = files.preset_file(directory, files.NATIVE_WEIGHTS_FILE, root)
    if path is None:
        raise FileNotFoundError(
            f"{files.NATIVE_WEIGHTS_FILE} is missing from preset directory {str(directory)!r}."
        )
    return files.read_safetensors(path), str(path)


def conversion_rows(config: dict, model_keys) -> list[Row]:
    """The identity table over the model's own keys."""
    return [Row(key, key) for key in model_keys]


def table_dims(config: dict, parsed_dims: dict) -> dict:
    return {}


def native_config(model) -> dict:
    return {
        "format": NAME,
        "format_version": FORMAT_VERSION,
        "class_name": model.keras_class_name,
        "config": model.get_config(),
        "parameter_count": sum(p.numel() for p in model.parameters()),
    }


def save(model, directory: pathlib.Path) -> None:
    """Weights first, config last: an interrupted save leaves no config next to partial weights."""
    save_file = files.import_safetensors().torch.save_file
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with files.atomic_output(directory / files.NATIVE_WEIGHTS_FILE) as temporary:
        save_file(tensors, str(temporary), metadata={"format": "pt"})
    files.write_json(directory / files.CONFIG_FILE, native_config(model))
