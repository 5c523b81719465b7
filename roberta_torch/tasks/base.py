"""`Task`: a backbone plus a head, with keras_hub's config / preset API.

Every task is a `torch.nn.Module` with `.backbone` (a RobertaBackbone or XLMRobertaBackbone)
and its head modules. The class attributes below describe the task to the preset code
(tasks/loading.py, tasks/saving.py): its Keras and transformers names and its head tables
(tasks/heads.py). XLM-R classes are thin subclasses that only change the names, as in keras_hub.
"""

from __future__ import annotations

import numbers

from torch import nn

from ..backbone import Backbone, RobertaBackbone
from .. import quantization
from ..inputs import merge_call_arguments
from . import loading, saving


def check_num_classes(num_classes, argument: str = "num_classes") -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral):
        raise TypeError(f"`{argument}` must be an int >= 1; got {type(num_classes).__name__} ({num_classes!r}).")
    if num_classes < 1:
        raise ValueError(f"`{argument}` must be an int >= 1; got {num_classes}.")
    return int(num_classes)


def check_dropout(dropout, argument: str = "dropout") -> float:
    if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real) or not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"`{argument}` must be a float in [0, 1); got {dropout!r}.")
    return float(dropout)


def labels_config(task) -> dict:
    """The label entries of a classifier's config: id2label / label2id / problem_type when set."""
    config = {}
    if task.id2label is not None:
        config.update(id2label=task.id2label, label2id=task.label2id)
    if task.problem_type is not None:
        config["problem_type"] = task.problem_type
    return config


def check_labels(num_classes: int, id2label, label2id) -> tuple[dict | None, dict | None]:
    """transformers' label names: id2label {int: str} with one entry per class, label2id its inverse."""
    if id2label is not None:
        if not isinstance(id2label, dict):
            raise TypeError(f"`id2label` must be a dict {{int: str}}; got {type(id2label).__name__}.")
        id2label = {int(k): str(v) for k, v in id2label.items()}
        if sorted(id2label) != list(range(num_classes)):
            raise ValueError(
                f"`id2label` must name every class 0..{num_classes - 1} exactly once; got ids {sorted(id2label)}."
            )
        if label2id is None:
            label2id = {v: k for k, v in id2label.items()}
    if label2id is not None:
        if not isinstance(label2id, dict):
            raise TypeError(f"`label2id` must be a dict {{str: int}}; got {type(label2id).__name__}.")
        label2id = {str(k): int(v) for k, v in label2id.items()}
    return id2label, label2id


class Task(nn.Module):
    """Base class of the task models. `Task.from_preset(preset)` returns the class a task
    preset names (keras_hub's task.json, or transformers' `architectures`)."""

    task_kind: str | None = None  # "text_classifier", "masked_lm", ...
    backbone_cls: type = RobertaBackbone
    # keras_hub's names; None where keras_hub has no such task (token classifier, QA).
    keras_class_name: str | None = None
    keras_module: str | None = None
    keras_config_name: str | None = None
    keras_preprocessor: tuple[str, str] | None = None  # (module, class name)
    keras_head_table: tuple = ()
    keras_head_groups: tuple = ()
    # transformers' architecture name ("RobertaFor...") and head table.
    transformers_architecture: str | None = None
    transformers_head_table: tuple = ()
    _classes: list = []  # every concrete task class, in definition order (RoBERTa, then XLM-R)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("task_kind") or cls.__dict__.get("backbone_cls"):
            Task._classes.append(cls)

    def __init__(self, backbone):
        super().__init__()
        if not isinstance(backbone, self.backbone_cls):
            raise TypeError(
                f"`backbone` must be a roberta_torch {self.backbone_cls.__name__}; got {type(backbone).__name__}. "
                f"Build one with {self.backbone_cls.__name__}.from_preset(preset)."
            )
        self.backbone = backbone
        self.preset = None  # the Preset from_preset read (its tokenizer is saved with the task)

    # -- config -----------------------------------------------------------------------------

    def head_config(self) -> dict:
        raise NotImplementedError

    def get_config(self) -> dict:
        return {
            "backbone": {"class_name": self.backbone.keras_class_name, "config": self.backbone.get_config()},
            **self.head_config(),
        }

    @classmethod
    def from_config(cls, config: dict) -> "Task":
        config = dict(config)
        spec = config.pop("backbone", None)
        if not isinstance(spec, dict) or spec.get("class_name") not in Backbone._classes:
            raise ValueError(
                "`config['backbone']` must be {'class_name': 'RobertaBackbone' | 'XLMRobertaBackbone', "
                f"'config': {{...}}}}; got {spec!r}."
            )
        backbone = Backbone._classes[spec["class_name"]].from_config(spec["config"])
        task_cls = cls.for_backbone(spec["class_name"]) if cls.task_kind else cls
        for key in ("name", "trainable", "preprocessor"):
            config.pop(key, None)
        return task_cls(backbone, **config)

    @classmethod
    def for_backbone(cls, backbone_class_name: str) -> type:
        """The class of this task kind for a backbone class (RoBERTa or XLM-R)."""
        for task_cls in Task._classes:
            if task_cls.task_kind == cls.task_kind and task_cls.backbone_cls.keras_class_name == backbone_class_name:
                return task_cls
        raise ValueError(f"No {cls.task_kind} task for a {backbone_class_name}.")

    # -- presets ----------------------------------------------------------------------------

    @classmethod
    def from_preset(cls, preset, load_weights: bool = True, **kwargs) -> "Task":
        """Build the task from a preset: a builtin name, `kaggle://`, `hf://` or a directory.

        A task preset (keras_hub's task.json + task.weights.h5, or a transformers
        `RobertaFor*` checkpoint) loads with its head; a backbone preset (or a masked-LM
        pretraining checkpoint, for the other tasks) gets a fresh head built from `kwargs`
        (e.g. `num_classes=3`), as in keras_hub. Backbone extras (dtype, padding_free,
        attention_backend, gradient_checkpointing, device) and `allow_pickle` go to the
        backbone; every other kwarg to the task's constructor. Returns the model in eval mode.
        """
        return loading.task_from_preset(cls, preset, Task._classes, load_weights=load_weights, **kwargs)

    def save_to_preset(self, directory, format: str | None = None, *, overwrite: bool = False, **options) -> None:
        """Write the task as a preset: `format="keras"` (keras_hub's task preset: backbone files +
        task.json + task.weights.h5 + the source preset's tokenizer and preprocessor.json; the
        default where keras_hub has this task) or `"transformers"` (config.json +
        model.safetensors of the matching `RobertaFor*`; `max_shard_size=` as transformers).
        Staged and renamed into place like the backbone's; `overwrite=True` replaces a
        non-empty directory. An int8-quantized task refuses (see `quantize`)."""
        quantization.refuse_if_quantized(self, f"{type(self).__name__}.save_to_preset")
        saving.save_task(self, directory, format=format, overwrite=overwrite, **options)

    def quantize(self, mode: str, *, kernel: str = "auto") -> "Task":
        """keras' `quantize(mode)`: `mode="int8"` turns every dense layer of the backbone and
        the head into int8 for CPU inference, in place (the masked-LM output projection, tied
        to the token embedding, stays float). Eval mode, frozen; returns the task. See
        `RobertaBackbone.quantize`."""
        return quantization.quantize_(self, mode, kernel=kernel)

    # -- helpers ----------------------------------------------------------------------------

    @staticmethod
    def backbone_inputs(inputs, token_ids, padding_mask, extra=()) -> tuple[dict, dict]:
        """(backbone inputs, the task's extra inputs) from a dict or keyword tensors."""
        inputs = merge_call_arguments(inputs, token_ids=token_ids, padding_mask=padding_mask)
        if not isinstance(inputs, dict):
            raise TypeError(
                f"`inputs` must be a dict {{'token_ids': ..., 'padding_mask': ...}}; got {type(inputs).__name__}."
            )
        backbone = {k: v for k, v in inputs.items() if k not in extra}
        return backbone, {k: inputs[k] for k in extra if k in inputs}

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.head_config().items())
