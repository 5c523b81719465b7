"""Presets: where files come from (registry, resolve, sources), one reader per preset
(preset.Preset, made by preset.open_preset: `Preset.file` fetches each file on demand and is
the only way preset files are read), one loader per format serving every component
(loader.PresetLoader; formats.loader_for picks keras_format, transformers_format,
native_format or sentence_transformers_format), strict loading (mapping, loading), writing
(saving and each format's writer), and the file helpers (names: file names; files: I/O).

Nothing here imports a model or tokenizer class (the callers hand their classes to the
loaders), so there are no import cycles; hub clients are imported lazily.
"""
