"""`model.config`: the model described in transformers' terms, for the tools that read it.

PEFT (`model_type` picks its default LoRA targets, `to_dict()`, `return_dict`), HF Trainer
(`problem_type`, `keys_to_ignore_at_inference`, writes `use_cache`) and experiment trackers
(`to_dict()` / `to_json_string()`) read a transformers model's `config`. Our models have it as
this small view, built on each access from the model itself: the fields of the config.json
that `save_to_preset(format="transformers")` writes (model_type "roberta" / "xlm-roberta",
hidden_size, num_hidden_layers, ..., id2label / label2id / problem_type for classifiers),
plus what transformers' PretrainedConfig answers at run time (`return_dict`, `num_labels`...).

Those fields follow the model and are read-only (change the model instead). Any other
attribute a tool sets (Trainer's `use_cache`, PEFT's `pretraining_tp`) is kept on the model
and read back, as on a transformers config. Keras-side settings live in `get_config()` and
`backbone_config`; this object exists only to speak transformers' language.
"""

from __future__ import annotations

import json
import pathlib

# What transformers' PretrainedConfig answers beyond config.json. `return_dict` True: a call in
# transformers' spellings returns a dict (PEFT passes it on to the model). No tied output
# embedding module (the masked LM reads the token embedding's weight directly), so
# `tie_word_embeddings` is False: PEFT has nothing to re-tie.
RUNTIME_FIELDS = {
    "return_dict": True,
    "use_return_dict": True,
    "torchscript": False,
    "is_encoder_decoder": False,
    "tie_word_embeddings": False,
}
# config.json fields that describe no part of the model: tools set them (HF Trainer writes
# `use_cache`), so they start at config.json's value and are then the model's to keep.
SETTABLE_FIELDS = ("use_cache",)
# Attribute (on the model) holding the values tools set on the config.
EXTRAS_ATTRIBUTE = "_transformers_config_extras"


class TransformersConfig:
    """A read-only view of transformers' config fields over a model (see the module doc)."""

    __slots__ = ("_fields", "_extras")

    def __init__(self, fields: dict, extras: dict):
        object.__setattr__(self, "_fields", {**fields, **RUNTIME_FIELDS})
        object.__setattr__(self, "_extras", extras)

    @classmethod
    def of(cls, model, fields: dict) -> "TransformersConfig":
        """The view of `model` with `fields`; what tools set on it persists on `model`."""
        extras = model.__dict__.get(EXTRAS_ATTRIBUTE)
        if extras is None:
            extras = {}
            model.__dict__[EXTRAS_ATTRIBUTE] = extras
        fields = dict(fields)
        for name in SETTABLE_FIELDS:
            if name in fields:
                extras.setdefault(name, fields.pop(name))
        return cls(fields, extras)

    @classmethod
    def from_pretrained(cls, name_or_path) -> "TransformersConfig":
        """A transformers checkpoint's config.json (a directory, or a hub repository id through
        huggingface_hub's cache), as transformers' `PretrainedConfig.from_pretrained` reads it
        (PEFT compares the vocabulary size of an adapter's base model with it)."""
        # Through the preset reader like every preset file (link checks, hub cache, offline).
        from .presets import names
        from .presets.preset import open_preset

        handle = str(name_or_path)
        if "://" not in handle and not pathlib.Path(handle).is_dir():
            handle = f"hf://{handle}"  # a hub repository id, as transformers takes it
        return cls(open_preset(handle).json(names.CONFIG_FILE, required=True), {})

    def __getattr__(self, name: str):
        fields, extras = object.__getattribute__(self, "_fields"), object.__getattribute__(self, "_extras")
        if name in fields:
            return fields[name]
        if name in extras:
            return extras[name]
        raise AttributeError(f"The model's transformers config has no {name!r}.")

    def __setattr__(self, name: str, value) -> None:
        if name in self._fields:
            if self._fields[name] == value:
                return
            raise AttributeError(
                f"`config.{name}` follows the model ({self._fields[name]!r}) and is read-only here; change the "
                "model itself (the config is built from it on every access)."
            )
        self._extras[name] = value

    def __contains__(self, name: str) -> bool:
        return name in self._fields or name in self._extras

    def get(self, name: str, default=None):
        return getattr(self, name) if name in self else default

    def to_dict(self) -> dict:
        return {**self._extras, **self._fields}

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def __reduce__(self):  # copy / pickle: a detached copy of the values
        return (type(self), (dict(self._fields), dict(self._extras)))

    def __repr__(self) -> str:
        return f"TransformersConfig({self.to_dict()!r})"
