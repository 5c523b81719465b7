"""The checkpoint formats a preset directory can hold, and the one function that tells them
apart from config.json.

Every format module (`keras_format`, `transformers_format`, `native_format`) provides the
same small protocol:

    NAME                      "keras" | "transformers" | "roberta_torch"
    is_config(raw) -> bool    whether config.json is in this format
    parse_config(raw, path, overrides) -> (class name, constructor config, table dims)
    class_name(raw, path) -> the backbone class name the config describes
    max_sequence_length(raw) -> the backbone's max_sequence_length, or None if not stated
    hub_weight_candidates(allow_pickle) -> file names; the first one a hub repository has
                              is fetched (an index also pulls the shards it names)
    read_tensors(directory, allow_pickle=, root=) -> ({key: SourceTensor}, description)
    conversion_rows(config, model_keys) -> [Row]   (the table; its inverse writes)
    table_dims(config, parsed_dims) -> dims the table's reshapes need
    IGNORED_PREFIXES          source keys that are not weights (buffers)
    LAYER_KEY_PATTERN         regex whose group 1 is a source key's encoder layer index
    HEAD_PREFIXES (optional)  source keys of task heads that a backbone leaves, with a log line

Optional: `remember_source(model, source, dims)`, called after a load, keeps on the model
what writing back to the format needs to be exact (transformers_format.TransformersSource).
"""

from __future__ import annotations

from . import keras_format, native_format, transformers_format

# Checked in this order: transformers configs have "model_type", the native export
# "format", Keras presets "class_name" + "config".
FORMATS = (transformers_format, native_format, keras_format)
PROTOCOL = (
    "NAME",
    "is_config",
    "parse_config",
    "class_name",
    "max_sequence_length",
    "hub_weight_candidates",
    "read_tensors",
    "conversion_rows",
    "table_dims",
    "IGNORED_PREFIXES",
    "LAYER_KEY_PATTERN",
)


def detect_format(raw: dict, path):
    """The format module whose config.json this is; ValueError naming the file otherwise."""
    for module in FORMATS:
        if module.is_config(raw):
            return module
    raise ValueError(
        f"{path} is neither a Keras preset config ('class_name', 'config'), a transformers config "
        "('model_type') nor a roberta_torch export ('format': 'roberta_torch')."
    )


def by_name(name: str):
    for module in FORMATS:
        if module.NAME == name:
            return module
    raise ValueError(f"Unknown preset format {name!r}; known: {', '.join(m.NAME for m in FORMATS)}.")
