"""`task.save_to_preset(directory, format=...)`: every file a task writes, in one module.

format="keras": the backbone's files (config.json, metadata.json, model.weights.h5), then
task.json and task.weights.h5 with exactly the tree keras-hub 0.32 writes
(keras_format.write_task: every `vars` group with its layer name, keras's compile state
`optimizer/vars/{0,1}`), so
`keras_hub.models.TextClassifier.from_preset(dir)` / `MaskedLM.from_preset(dir)` load it.
When the task came from a preset with a tokenizer, the tokenizer saves itself next to it and
a matching preprocessor.json is written (keras_hub then runs the saved task on raw text).

format="transformers": the matching `RobertaFor*` checkpoint through the backbone's
transformers writer (presets/transformers_format.save with a TaskExport): config.json with
num_labels / id2label / label2id / problem_type, model.safetensors (sharded above
`max_shard_size`).

The head tensors come from the same tables the loader uses (tasks/heads.py), applied
backwards. Everything is written into a staging directory renamed into place.
"""

from __future__ import annotations

import logging
import pathlib

from ..presets import files, keras_format, names, saving, tokenizer_files, transformers_format
from ..presets.mapping import table_rows
from ..presets.preset import open_preset
from ..tokenizers import Tokenizer

logger = logging.getLogger(__name__)

SAVE_FORMATS = ("keras", "transformers")


def check_task_format(task_cls, format: str | None) -> str:
    """The format to save a `task_cls` task in (None: keras where keras_hub has the task),
    refusing one that cannot hold it; needs the class only, so it runs before any loading."""
    if format is None:
        format = "keras" if task_cls.keras_class_name else "transformers"
    if format not in SAVE_FORMATS:
        raise ValueError(f"`format`={format!r} is not supported; use one of {', '.join(SAVE_FORMATS)}.")
    if format == "keras" and not task_cls.keras_class_name:
        raise ValueError(
            f"keras_hub has no {task_cls.__name__}; save it with format='transformers' "
            "(a transformers checkpoint that this package and transformers both load)."
        )
    return format


def save_task(task, directory, format: str | None = None, *, overwrite: bool = False, **options) -> pathlib.Path:
    format = check_task_format(type(task), format)
    if options and format != "transformers":
        raise TypeError(f"{sorted(options)} apply to format='transformers' only.")
    unknown = set(options) - {"max_shard_size"}
    if unknown:
        raise TypeError(f"save_to_preset got unexpected keyword arguments {sorted(unknown)}.")
    meta = [n for n, p in task.named_parameters() if p.is_meta]
    if meta:
        raise ValueError(
            f"The task has parameters on the meta device ({meta[0]}, ...): load or initialize them first."
        )
    if format == "transformers":
        transformers_config_fields(task)  # refuse a head transformers cannot represent, before writing
    with files.staged_directory(directory, overwrite=overwrite) as staging:
        write_task(task, staging, format, **options)
    logger.info("Saved %s to %s (%s format).", type(task).__name__, directory, format)
    return pathlib.Path(directory)


def write_task(task, directory: pathlib.Path, format: str, **options) -> None:
    """Write `task`'s files into an existing (staging) directory; format="keras" includes the
    source preset's tokenizer and a preprocessor.json when the task has them."""
    if format == "keras":
        _save_keras(task, directory)
    else:
        transformers_format.save(task.backbone, directory, task=transformers_task_export(task), **options)


# -- keras ------------------------------------------------------------------------------------


def _keras_head_config(task) -> dict:
    config = task.head_config()
    if task.task_kind == "text_classifier":
        for key in ("id2label", "label2id", "problem_type"):  # not keras_hub arguments
            if config.pop(key, None) is not None:
                logger.info("%s is not part of a Keras task preset; save with format='transformers' to keep it.", key)
    return config


def _save_keras(task, directory: pathlib.Path) -> None:
    saving.write_backbone(task.backbone, directory, "keras")
    preprocessor = _save_keras_preprocessor(task, directory)
    keras_format.write_task(task, directory, _keras_head_config(task), preprocessor)


def _source_preset(task):
    """The preset the task was loaded from, opened again from its source, or None."""
    source = getattr(task, "preset_source", None)
    return None if source is None else open_preset(source, require_config=False)


def _source_tokenizer(preset):
    """The tokenizer of `preset`, or None (no preset, or none that can be saved as keras_hub's)."""
    if preset is None:
        return None
    try:
        return Tokenizer.from_preset(preset)
    except FileNotFoundError:
        return None


def _save_keras_preprocessor(task, directory: pathlib.Path) -> dict | None:
    """Save the source preset's tokenizer (the tokenizer writes its own files) and this task's
    preprocessor.json; returns the preprocessor config (embedded in task.json), or None."""
    preset = _source_preset(task)
    tokenizer = _source_tokenizer(preset)
    if tokenizer is None:
        return None
    try:
        tokenizer.save_to_preset(directory)
    except ValueError as error:  # e.g. an XLM-R tokenizer without its sentencepiece model
        logger.warning("The tokenizer was not written with the task: %s", error)
        return None
    sequence_length = min(512, task.backbone.max_sequence_length)
    saved = preset.loader.preprocessor_config()
    if isinstance(saved, dict) and isinstance(saved.get("sequence_length"), int):
        sequence_length = saved["sequence_length"]
    module, class_name = task.keras_preprocessor
    name = task.keras_config_name.replace("_text_classifier", "_text_classifier_preprocessor").replace(
        "_masked_lm", "_masked_lm_preprocessor"
    )
    settings = {"sequence_length": sequence_length, "truncate": "round_robin"}
    if task.task_kind == "masked_lm":
        settings.update(mask_selection_rate=0.15, mask_selection_length=96, mask_token_rate=0.8, random_token_rate=0.1)
    preprocessor = tokenizer_files.keras_preprocessor_config(tokenizer, module, class_name, name, settings)
    files.write_json(directory / names.KERAS_PREPROCESSOR_FILE, preprocessor)
    return preprocessor


# -- transformers -----------------------------------------------------------------------------


def label_fields(task) -> dict:
    """The config.json fields a classifier adds to its backbone's (labels, problem type, ...);
    none for the other tasks."""
    config = {}
    if task.task_kind in ("text_classifier", "token_classifier"):
        id2label = task.id2label or {i: f"LABEL_{i}" for i in range(task.num_classes)}
        config["id2label"] = {str(k): v for k, v in id2label.items()}
        config["label2id"] = task.label2id or {v: k for k, v in id2label.items()}
        config["classifier_dropout"] = task.dropout
        if task.problem_type is not None:
            config["problem_type"] = task.problem_type
    return config


def transformers_config_fields(task) -> dict:
    """The config.json fields a task adds to its backbone's; a ValueError for a classifier head
    transformers cannot represent."""
    backbone = task.backbone
    config = label_fields(task)
    if task.task_kind in ("text_classifier", "token_classifier"):
        not_transformers = task.task_kind == "text_classifier" and (
            task.hidden_dim != backbone.hidden_dim or task.activation != "linear"
        )
        if not_transformers:
            raise ValueError(
                f"transformers' classification head has hidden_dim = hidden_size and no output activation; this "
                f"classifier has hidden_dim={task.hidden_dim}, activation={task.activation!r}. Save it with "
                "format='keras'."
            )
    return config


def transformers_task_export(task) -> transformers_format.TaskExport:
    return transformers_format.TaskExport(
        architecture=task.transformers_architecture,
        rows=tuple(table_rows(task.transformers_head_table)),
        state_dict=task.state_dict(),
        config=transformers_config_fields(task),
        pooler=False,
    )
