"""The formats a preset can hold, and the one function that tells them apart.

`loader_for(preset)` reads config.json once and picks the format's loader (loader.py):

    transformers_format.TransformersLoader   "model_type" (a transformers checkpoint); with a
                                             modules.json next to it, wrapped by
    sentence_transformers_format.SentenceTransformersLoader
    native_format.NativeLoader               "format": "roberta_torch" (our safetensors export)
    keras_format.KerasLoader                 "class_name" + "config" (a Keras preset)
    FilesOnlyLoader                          no config.json: tokenizer files only (keras_hub's
                                             tokenizer presets), or a sentence-transformers
                                             directory whose Transformer module sits in a folder
"""

from __future__ import annotations

from . import keras_format, names, native_format, transformers_format
from .loader import PresetLoader
from .sentence_transformers_format import SentenceTransformersLoader, transformer_path

# Checked in this order: transformers configs have "model_type", the native export
# "format", Keras presets "class_name" + "config".
LOADERS = (transformers_format.TransformersLoader, native_format.NativeLoader, keras_format.KerasLoader)


class FilesOnlyLoader(PresetLoader):
    """A preset without config.json: it serves tokenizers; asking it for a backbone says
    what is missing."""

    NAME = "files"

    def backbone_spec(self, overrides=None):
        raise FileNotFoundError(self.preset.missing(names.CONFIG_FILE))

    def read_backbone_tensors(self):
        raise FileNotFoundError(self.preset.missing(names.CONFIG_FILE))

    def default_tokenizer_class(self):
        return None


def _config_loader(preset, raw: dict) -> PresetLoader:
    for loader_cls in LOADERS:
        if loader_cls.is_config(raw):
            return loader_cls(preset, raw)
    raise ValueError(
        f"{preset.file(names.CONFIG_FILE)} is neither a Keras preset config ('class_name', 'config'), a transformers "
        "config ('model_type') nor a roberta_torch export ('format': 'roberta_torch')."
    )


def loader_for(preset, *, require_config: bool = True) -> PresetLoader:
    """The loader of `preset`'s format (config.json is read once, by the Preset)."""
    raw = preset.json(names.CONFIG_FILE)
    loader = None if raw is None else _config_loader(preset, raw)
    if loader is None or loader.NAME == transformers_format.NAME:
        # A sentence-transformers directory is a transformers checkpoint (or a folder holding
        # one) plus modules.json; no other format has one.
        modules = preset.json(names.ST_MODULES_FILE, expect=None)
        if modules is not None:
            path = transformer_path(modules).rstrip("/")  # an absolute path is refused by subpreset
            if path:
                encoder = preset.subpreset(path).loader
            else:
                encoder = loader if loader is not None else FilesOnlyLoader(preset, {})
            return SentenceTransformersLoader(preset, modules, encoder)
    if loader is not None:
        return loader
    if require_config:
        raise FileNotFoundError(preset.missing(names.CONFIG_FILE))
    return FilesOnlyLoader(preset, {})
