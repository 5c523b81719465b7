"""roberta_torch's native preset: config.json + model.safetensors holding the model's own
state dict under its own keys (the conversion table is the identity). Written by
`save_to_preset(..., format="safetensors")`; not "any safetensors file" (transformers
checkpoints are `transformers_format`).

config.json:
    {"format": "roberta_torch", "format_version": 2, "class_name": "RobertaBackbone",
     "config": {<get_config()>}, "parameter_count": <int>}

Version 2 holds each attention projection under its own key (`layers.{i}.attention.query`,
`.key`, `.value`). Version 1 (written before) held one fused `layers.{i}.attention.qkv`
whose rows are [query; key; value]; it still loads, through `V1_ROWS`: each v2 projection
reads its third of the v1 tensor, checked as strictly as every other row.
"""

from __future__ import annotations

import pathlib
import re

from . import files, keras_format, names
from .loader import BackboneSpec, PresetLoader
from .mapping import Row, Transform

NAME = "roberta_torch"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
LAYER_KEY_PATTERN = r"^layers\.(\d+)\."


def parse_config(config: dict, path, overrides: dict) -> BackboneSpec:
    version = config.get("format_version")
    if version not in READABLE_VERSIONS:
        raise ValueError(
            f"{path}: format_version={version!r} is not supported by this roberta_torch (reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}); upgrade roberta_torch."
        )
    if not isinstance(config.get("class_name"), str) or not isinstance(config.get("config"), dict):
        raise ValueError(f"{path}: expected string 'class_name' and object 'config' entries.")
    return BackboneSpec(config["class_name"], dict(config["config"]), {})


def _third_of_rows(index: int) -> Transform:
    """Rows [index*n, (index+1)*n) of a (3n, ...) tensor: one projection of a v1 fused qkv.
    Reading only: version 1 is never written, so the inverse (which needs all three
    projections) is not defined."""

    def to_source(block, dims):
        raise ValueError("native format version 1 is read, never written")

    return Transform(
        f"qkv_part_{index}",
        lambda t, d: t.chunk(3, dim=0)[index],
        to_source,
        lambda s, d: (3 * s[0], *s[1:]),
    )


# Version 1 -> version 2, relative to layers.{i}.: (v1 key, v2 key, transform).
V1_ROWS = tuple(
    (f"attention.qkv.{kind}", f"attention.{name}.{kind}", _third_of_rows(index))
    for index, name in enumerate(("query", "key", "value"))
    for kind in ("weight", "bias")
)
_V1_LAYER_KEY = re.compile(r"^(layers\.\d+\.)(.*)$")


def conversion_rows(config: dict, model_keys, version: int = FORMAT_VERSION) -> list[Row]:
    """The identity table over the model's own keys; for a version 1 file, the attention
    projections come from the fused qkv (V1_ROWS)."""
    v1_sources = {v2: (v1, transform) for v1, v2, transform in V1_ROWS}
    rows = []
    for key in model_keys:
        match = _V1_LAYER_KEY.match(key) if version == 1 else None
        if match and match.group(2) in v1_sources:
            v1_key, transform = v1_sources[match.group(2)]
            rows.append(Row(match.group(1) + v1_key, key, transform))
        else:
            rows.append(Row(key, key))
    return rows


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
        return conversion_rows(config, model_keys, self.raw_config.get("format_version"))

    def table_dims(self, config: dict, dims: dict) -> dict:
        return {}
