"""Presets: where files come from (registry, resolve), one reader per preset (preset.Preset,
made by preset.open_preset), the formats a directory can hold (formats: keras_format,
transformers_format, native_format, one small protocol), the tokenizer files
(tokenizer_files), shared file helpers (files: names, JSON, shard index, safetensors,
link-safe atomic writes), and loading/saving of backbone weights.

Nothing here imports a model or tokenizer class (the classes pick themselves by the names a
preset records), so there are no import cycles; hub clients are imported lazily.
"""
