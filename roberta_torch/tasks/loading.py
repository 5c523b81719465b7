"""`Task.from_preset`: every preset file a task reads, in one module.

Starting from the preset reader (`open_preset`: resolved once, config.json classified once),
it reads what the preset says about the task:

  * keras_hub task preset: task.json (class + head config) and task.weights.h5 (the head;
    `optimizer/*` scalars are keras's compile state and not used), the backbone in
    config.json + model.weights.h5 (or its shards);
  * transformers checkpoint: config.json `architectures` ("RobertaForSequenceClassification",
    ...), `num_labels` / `id2label` / `label2id` / `problem_type`, `classifier_dropout`;
    weights in model.safetensors (single or sharded, or a pickle with allow_pickle=True).

A task preset of the requested kind loads backbone and head in one strict pass: every
tensor of the file used, every model tensor filled, every shape checked (presets/mapping.py).
A backbone preset, or a masked-LM (pretraining) checkpoint for another task, gets a fresh
head from the kwargs, as keras_hub does; what is left of the checkpoint is logged.
"""

from __future__ import annotations

import dataclasses
import logging

import torch

from ..backbone import Backbone
from ..presets import keras_format, transformers_format
from ..presets.files import KERAS_TASK_FILE as TASK_CONFIG_FILE
from ..presets.files import KERAS_TASK_WEIGHTS_FILE as TASK_WEIGHTS_FILE
from ..presets.mapping import Row, assemble_state_dict, table_rows
from ..presets.preset import open_preset
from .heads import TRANSFORMERS_MASKED_LM_TIED

logger = logging.getLogger(__name__)

# Backbone constructor extras (not Keras config) that `from_preset` forwards to the backbone.
BACKBONE_KWARGS = ("dtype", "padding_free", "attention_backend", "gradient_checkpointing", "device")
# Keras task.json entries that are not head constructor arguments.
_KERAS_NON_HEAD_KEYS = ("backbone", "preprocessor", "name", "trainable", "dtype")
# The source-key namespace of task.weights.h5 tensors (its paths could repeat the backbone's).
TASK_SOURCE_PREFIX = TASK_WEIGHTS_FILE + ":"
BACKBONE_PREFIX = "backbone."
# transformers architecture suffix -> task kind.
_TRANSFORMERS_KINDS = {
    "ForSequenceClassification": "text_classifier",
    "ForMaskedLM": "masked_lm",
    "ForTokenClassification": "token_classifier",
    "ForQuestionAnswering": "question_answerer",
}
# Task kinds whose constructor needs num_classes.
_NEEDS_NUM_CLASSES = ("text_classifier", "token_classifier")


@dataclasses.dataclass
class StoredTask:
    """What a preset directory stores beyond its backbone."""

    task_cls: type | None  # None: a backbone preset
    head_config: dict  # the stored head's constructor arguments
    description: str  # for messages: "task.json (RobertaTextClassifier)", ...


def with_model_prefix(rows: list[Row], prefix: str) -> list[Row]:
    """Backbone table rows placed under a task's backbone attribute ("backbone.")."""
    return [dataclasses.replace(row, model_key=prefix + row.model_key) for row in rows]


def _task_class(kind: str, backbone_class_name: str, classes) -> type:
    for task_cls in classes:
        if task_cls.task_kind == kind and task_cls.backbone_cls.keras_class_name == backbone_class_name:
            return task_cls
    raise ValueError(f"No {kind} task for a {backbone_class_name}.")


def read_stored_task(preset, classes) -> StoredTask:
    fmt, backbone_class_name = preset.format_name, preset.class_name
    if fmt == "keras":
        raw = preset.json(TASK_CONFIG_FILE)
        path = preset.directory / TASK_CONFIG_FILE
        if raw is None:
            return StoredTask(None, {}, "a backbone preset")
        class_name, config = raw.get("class_name"), raw.get("config")
        if not isinstance(class_name, str) or not isinstance(config, dict):
            raise ValueError(f"{path}: a Keras task config needs string 'class_name' and object 'config' entries.")
        by_name = {c.keras_class_name: c for c in classes if c.keras_class_name}
        if class_name not in by_name:
            raise ValueError(
                f"{path} holds a {class_name}, which roberta_torch does not implement "
                f"(supported Keras tasks: {', '.join(by_name)})."
            )
        head_config = {k: v for k, v in config.items() if k not in _KERAS_NON_HEAD_KEYS}
        return StoredTask(by_name[class_name], head_config, f"{TASK_CONFIG_FILE} ({class_name})")
    if fmt == "transformers":
        path, raw = preset.config_path, preset.raw_config
        architectures = raw.get("architectures") or []
        for architecture in architectures if isinstance(architectures, list) else []:
            for suffix, kind in _TRANSFORMERS_KINDS.items():
                if isinstance(architecture, str) and architecture.endswith(suffix):
                    task_cls = _task_class(kind, backbone_class_name, classes)
                    return StoredTask(task_cls, _transformers_head_config(kind, raw), f"{path.name} ({architecture})")
        return StoredTask(None, {}, "a backbone checkpoint")
    return StoredTask(None, {}, "a backbone export")


def _transformers_head_config(kind: str, raw: dict) -> dict:
    """The head's constructor arguments from a transformers config.json."""
    if kind == "masked_lm":
        return {}
    if kind == "question_answerer":
        return {"dropout": 0.0}  # RobertaForQuestionAnswering has no dropout before qa_outputs
    classifier_dropout = raw.get("classifier_dropout")
    dropout = classifier_dropout if classifier_dropout is not None else raw.get("hidden_dropout_prob", 0.1)
    id2label = raw.get("id2label")
    num_classes = len(id2label) if isinstance(id2label, dict) and id2label else raw.get("num_labels", 2)
    config = {"num_classes": num_classes, "dropout": dropout}
    if isinstance(id2label, dict) and id2label:
        config["id2label"] = id2label
        config["label2id"] = raw.get("label2id")
    if raw.get("problem_type") is not None:
        config["problem_type"] = raw["problem_type"]
    return config


def choose_task_class(cls, stored: StoredTask, backbone_class_name: str, preset, head_kwargs: dict, classes):
    """(class to build, whether the stored head loads), or a ValueError naming `preset`."""
    backbone_cls = Backbone._classes.get(backbone_class_name)
    if cls.task_kind is None:  # Task.from_preset: the class the preset names
        if stored.task_cls is None:
            raise ValueError(
                f"`preset`={str(preset)!r} is {stored.description} with no task head; Task.from_preset needs a "
                "task preset. Use a task class to add a fresh head, e.g. "
                "RobertaTextClassifier.from_preset(preset, num_classes=2)."
            )
        if not issubclass(stored.task_cls, cls):
            raise ValueError(f"`preset`={str(preset)!r} holds a {stored.task_cls.__name__}, not a {cls.__name__}.")
        return stored.task_cls, True
    if backbone_cls is None or not issubclass(backbone_cls, cls.backbone_cls):
        raise ValueError(
            f"`preset`={str(preset)!r} holds a {backbone_class_name}, which {cls.__name__}.from_preset cannot "
            f"load; use the {backbone_class_name.replace('Backbone', '')} task classes."
        )
    task_cls = _task_class(cls.task_kind, backbone_class_name, classes)
    if stored.task_cls is not None and stored.task_cls.task_kind == cls.task_kind:
        return task_cls, True
    if stored.task_cls is not None and stored.task_cls.task_kind != "masked_lm":
        raise ValueError(
            f"`preset`={str(preset)!r} holds a {stored.task_cls.__name__} ({stored.description}), not a "
            f"{cls.task_kind.replace('_', ' ')}; load it with {stored.task_cls.__name__}.from_preset, or put a new "
            f"head on its backbone: {task_cls.__name__}(Backbone.from_preset(...), ...)."
        )
    if task_cls.task_kind in _NEEDS_NUM_CLASSES and "num_classes" not in head_kwargs:
        raise ValueError(
            f"`num_classes` is required: `preset`={str(preset)!r} is {stored.description} without a "
            f"{task_cls.task_kind.replace('_', ' ')} head, so {task_cls.__name__}.from_preset builds a fresh one; "
            "pass num_classes=<number of labels>."
        )
    return task_cls, False


def _split_kwargs(kwargs: dict) -> tuple[dict, dict]:
    backbone = {k: kwargs.pop(k) for k in list(kwargs) if k in BACKBONE_KWARGS}
    return backbone, kwargs


def task_from_preset(cls, preset, classes, load_weights: bool = True, **kwargs):
    """Build `cls` (or, for `Task`, the class the preset names, among `classes`) from `preset`."""
    allow_pickle = kwargs.pop("allow_pickle", False)
    if not isinstance(allow_pickle, bool):
        raise TypeError(f"`allow_pickle` must be a bool; got {type(allow_pickle).__name__} ({allow_pickle!r}).")
    backbone_kwargs, head_kwargs = _split_kwargs(dict(kwargs))
    preset = open_preset(preset, allow_pickle=allow_pickle)
    _, stored_config, dims = preset.parse(backbone_kwargs)
    stored = read_stored_task(preset, classes)
    task_cls, with_head = choose_task_class(cls, stored, preset.class_name, preset.handle, head_kwargs, classes)
    backbone_cls = task_cls.backbone_cls
    config = {**stored_config, **backbone_kwargs}
    head_config = {**stored.head_config, **head_kwargs} if with_head else head_kwargs
    stored_classes = stored.head_config.get("num_classes")
    requested_classes = head_kwargs.get("num_classes", stored_classes)
    if with_head and stored_classes is not None and requested_classes != stored_classes:
        raise ValueError(
            f"`num_classes`={head_kwargs['num_classes']!r}, but `preset`={str(preset)!r} holds a head with "
            f"{stored_classes} classes ({stored.description}). Leave num_classes out to load that head, or put a "
            f"fresh one on its backbone: {task_cls.__name__}(Backbone.from_preset(...), num_classes=...)."
        )

    if not load_weights:
        model = task_cls(backbone_cls(**config), **head_config)
    elif not with_head:
        backbone = backbone_cls.from_preset(preset, **backbone_kwargs)
        model = task_cls(backbone, **head_config)
        left = "" if stored.task_cls is None else f"; its {stored.task_cls.__name__} head was left unused"
        logger.info("Built %s with a fresh head on the backbone of %s%s.", task_cls.__name__, preset.handle, left)
    else:
        device = config.pop("device", None)
        model = task_cls(backbone_cls(**config, device="meta"), **head_config)
        state_dict = read_task_state_dict(model, preset, dims)
        if device is not None:
            state_dict = {k: v.to(device) for k, v in state_dict.items()}
        model.load_state_dict(state_dict, strict=True, assign=True)
        leftovers = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
        if leftovers:
            raise RuntimeError(f"{task_cls.__name__} kept meta tensors after loading: {leftovers}")
        logger.info("Loaded %s from %s (%s format).", task_cls.__name__, preset.handle, preset.format_name)
    model.preset = preset
    return model.eval()


def read_task_state_dict(model, preset, dims: dict) -> dict[str, torch.Tensor]:
    """Backbone and head tensors of a task preset, assembled and checked in one pass."""
    model_tensors = dict(model.state_dict())
    backbone_config = model.backbone.get_config()
    if preset.format_name == "keras":
        weights = keras_format.weight_files(preset.directory, preset.root)
        task_file = preset.file(TASK_WEIGHTS_FILE)
        if task_file is None:
            raise FileNotFoundError(
                f"{TASK_WEIGHTS_FILE} is missing from task preset directory {str(preset.directory)!r} "
                f"({TASK_CONFIG_FILE} names a {model.keras_class_name})."
            )
        source = dict(keras_format.read_source_tensors(weights))
        for key, tensor in keras_format.read_source_tensors([task_file]).items():
            source[TASK_SOURCE_PREFIX + key] = tensor
        rows = with_model_prefix(keras_format.conversion_rows(backbone_config), BACKBONE_PREFIX)
        rows += table_rows(model.keras_head_table, source_prefix=TASK_SOURCE_PREFIX)
        dims = {"num_heads": model.backbone.num_heads}
        ignored = (TASK_SOURCE_PREFIX + "optimizer/",)  # keras's compile state
        description = ", ".join(str(f) for f in [*weights[:2], task_file])
        return assemble_state_dict(
            rows, source, model_tensors, dims, ignored_prefixes=ignored, description=description
        )

    source, description = preset.read_tensors()
    source = dict(source)
    tied = {}
    if model.task_kind == "masked_lm":  # checked against what they are tied to, below
        tied = {k: source.pop(k) for k in TRANSFORMERS_MASKED_LM_TIED if k in source}
    rows = with_model_prefix(transformers_format.conversion_rows(backbone_config), BACKBONE_PREFIX)
    rows += table_rows(model.transformers_head_table)
    ignored = tuple(p for p in transformers_format.IGNORED_PREFIXES if p.startswith("embeddings."))
    state_dict = assemble_state_dict(
        rows, source, model_tensors, dims, ignored_prefixes=ignored, description=description
    )
    for key, tensor in tied.items():
        tied_to = state_dict[TRANSFORMERS_MASKED_LM_TIED[key]]
        if tuple(tensor.shape) != tuple(tied_to.shape) or not torch.equal(tensor.load().to(tied_to.dtype), tied_to):
            raise ValueError(
                f"Cannot load {description}: {key} (in {tensor.file}) differs from "
                f"{TRANSFORMERS_MASKED_LM_TIED[key]}, to which roberta_torch ties it (an untied decoder "
                "is not supported)."
            )
    return state_dict
