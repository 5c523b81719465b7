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


from . import files, keras_format, names
from .loader import BackboneSpec, PresetLoader
from .mapping import Row

NAME = "roberta_torch"
FORMAT_VERSION = 1
LAYER_KEY_PATTERN = r"^layers\.(\d+)\."


def parse_config(config: dict, path, overrides: dict) -> BackboneSpec:
    version = config.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{path}: format_version={version!r} is not supported by this roberta_torch (reads version "
            f"{FORMAT_VERSION}); upgrade roberta_torch."
        )
    if not isinstance(config.get("class_name"), str) or not isinstance(config.get("config"), dict):
        raise ValueError(f"{path}: expected string 'class_name' and object 'config' entries.")
    return BackboneSpec(config["class_name"], dict(config["config"]), {})


def conversion_rows(config: dict, model_keys) -> list[Row]:
    """The identity table over the model's own keys."""
    return [Row(key, key) for key in model_keys]


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
    with files.atomic_output(directory / names.NATIVE_WEIGHTS_FILE) as temporary:
        save_file(tensors, str(temporary), metadata={"format": "pt"})
    files.write_json(directory / names.CONFIG_FILE, native_config(model))


class NativeLoader(PresetLoader):
    """roberta_torch's own export: the backbone only (the same {"class_name", "config"}
    layout as a Keras config.json, the model's own keys in model.safetensors)."""

    NAME = NAME
    LAYER_KEY_PATTERN = LAYER_KEY_PATTERN

    @classmethod
    def is_config(cls, raw: dict) -> bool:
        return raw.get("format") == NAME

    def parse_config(self, overrides: dict) -> BackboneSpec:
        return parse_config(self.raw_config, self.preset.file(names.CONFIG_FILE), overrides)

    def max_sequence_length(self) -> int | None:
        return keras_format.max_sequence_length(self.raw_config)

    def read_backbone_tensors(self):
        path = self.preset.file(names.NATIVE_WEIGHTS_FILE)
        if path is None:
            raise FileNotFoundError(self.preset.missing(names.NATIVE_WEIGHTS_FILE))
        return files.read_safetensors(path), str(path)

    def conversion_rows(self, config: dict, model_keys) -> list[Row]:
        return conversion_rows(config, model_keys)

    def table_dims(self, config: dict, dims: dict) -> dict:
        return {}
