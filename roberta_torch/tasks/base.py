"""`Task`: a backbone plus a head, with keras_hub's config / preset API.

Every task is a `torch.nn.Module` with `.backbone` (a RobertaBackbone or XLMRobertaBackbone)
and its head modules. The class attributes below describe the task to the preset code
(tasks/loading.py, tasks/saving.py): its Keras and transformers names and its head tables
(tasks/heads.py). XLM-R classes are thin subclasses that only change the names, as in keras_hub.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping

import torch
from torch import nn

from ..backbone import Backbone, RobertaBackbone
from .. import quantization
from ..checkpointing import DelegatedCheckpointing
from ..inputs import _as_tensor, is_packed_input, merge_call_arguments, prepare_inputs, prepare_packed_inputs
from ..transformers_calls import check_output_hidden_states, check_unsupported_arguments, rename_transformers_inputs
from ..presets import transformers_format
from ..transformers_config import TransformersConfig
from . import loading, saving
from .outputs import TaskOutput


def _metadata_shape(backbone_inputs) -> tuple[int, tuple] | None:
    try:
        token_ids = _as_tensor(backbone_inputs.get("token_ids"), "token_ids")
        if is_packed_input(backbone_inputs):
            cu_seqlens = _as_tensor(backbone_inputs["cu_seqlens"], "cu_seqlens")
            if token_ids.dim() == 1 and cu_seqlens.dim() == 1 and cu_seqlens.shape[0] >= 2:
                return cu_seqlens.shape[0] - 1, tuple(token_ids.shape)
        elif token_ids.dim() == 2:
            return token_ids.shape[0], tuple(token_ids.shape)
    except (TypeError, ValueError):
        pass
    return None


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


class Task(DelegatedCheckpointing, nn.Module):
    """Base class of the task models. `Task.from_preset(preset)` returns the class a task
    preset names (keras_hub's task.json, or transformers' `architectures`).

    Calling a task: the inputs as one dict or as keywords (`token_ids`, `padding_mask`,
    `position_ids`, or a packed batch's `cu_seqlens` / `max_seqlen`), never both; `labels`
    (QA: also transformers' `start_positions` / `end_positions`) may ride in the dict or come
    as a keyword next to it. Without labels the output is keras_hub's; with labels a
    `TaskOutput` {"loss", "logits"} (tasks/outputs.py) that HF Trainer reads as it is.
    `return_dict=True` (per call, or `model.return_dict = True` for every call, e.g. for
    `Trainer.predict` on data without labels) gives a TaskOutput without labels too.
    transformers' spellings (`input_ids`, `attention_mask`, `token_type_ids` zeros,
    `inputs_embeds=None`, `output_attentions` / `output_hidden_states` None or False; see
    roberta_torch/transformers_calls.py) are accepted, and a call using them returns a
    TaskOutput, as transformers' models do: what PEFT's PeftModelFor* wrappers and a
    tokenizer's columns in HF Trainer need. `model.config` describes the task in
    transformers' terms (roberta_torch/transformers_config.py).
    `gradient_checkpointing_enable()` and friends act on the backbone.
    """

    return_dict: bool = False  # the default of forward's return_dict=None

    task_kind: str | None = None  # "text_classifier", "masked_lm", ...
    backbone_cls: type = RobertaBackbone
    # keras_hub's names; None where keras_hub has no such task (token classifier, QA).
    keras_class_name: str | None = None
    keras_module: str | None = None
    keras_config_name: str | None = None
    keras_preprocessor: tuple[str, str] | None = None  # (module, class name)
    keras_head_table: tuple = ()
    keras_head_groups: tuple = ()
    # transformers' architecture name ("RobertaFor...") and head table; tensors transformers
    # ties to others (source key -> model key), checked equal when a file stores them.
    transformers_architecture: str | None = None
    transformers_head_table: tuple = ()
    transformers_tied: dict = {}
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
        # Where from_preset read the task's files (a presets.sources object: plain data, so the
        # model pickles and deep-copies): a Keras save writes that preset's tokenizer with it.
        self.preset_source = None

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
    def from_preset(cls, preset, load_weights: bool = True, *, quantize: str | None = None, **kwargs) -> "Task":
        """Build the task from a preset: a builtin name, `kaggle://`, `hf://` or a directory.

        A task preset (keras_hub's task.json + task.weights.h5, or a transformers
        `RobertaFor*` checkpoint) loads with its head; a backbone preset (or a masked-LM
        pretraining checkpoint, for the other tasks) gets a fresh head built from `kwargs`
        (e.g. `num_classes=3`), as in keras_hub. Backbone extras (dtype, padding_free,
        attention_backend, gradient_checkpointing, device) and `allow_pickle` go to the
        backbone; every other kwarg to the task's constructor. Returns the model in eval mode.
        `quantize="int8"` calls `quantize("int8")` on the loaded task (checked before loading).
        """
        quantization.check_preset_quantize(quantize, kwargs.get("device"))
        task = loading.task_from_preset(cls, preset, Task._classes, load_weights=load_weights, **kwargs)
        return quantization.quantize_loaded(task, quantize)

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

    def split_call(
        self, inputs, *, extra=(), targets=None, return_dict=None,
        inputs_embeds=None, output_attentions=None, output_hidden_states=None, **keywords,
    ) -> tuple[dict, dict, dict, bool]:
        """(backbone inputs, the task's extra inputs, targets, return_dict) of one call.

        The inputs (`keywords`: token_ids, padding_mask, ..., and the task's `extra` names
        such as mask_positions) come as one dict or as keywords, never both
        (inputs.merge_call_arguments); transformers' spellings (input_ids, attention_mask,
        token_type_ids, ...) are aliases (transformers_calls.py). `targets` ({name: keyword
        value}, e.g. labels) may be entries of the dict or keywords next to it; the same
        target twice is a TypeError. `return_dict` None becomes `self.return_dict`, or True
        for a call in transformers' spellings (transformers' models return dicts)."""
        check_unsupported_arguments(inputs_embeds, output_attentions)
        check_output_hidden_states(output_hidden_states, type(self).__name__)
        merged = merge_call_arguments(inputs, **keywords)
        if not isinstance(merged, Mapping):
            raise TypeError(
                f"`inputs` must be a dict {{'token_ids': ..., 'padding_mask': ...}}; got {type(merged).__name__}."
            )
        merged, transformers_style = rename_transformers_inputs(merged)
        if return_dict is None:
            return_dict = self.return_dict or transformers_style
        if not isinstance(return_dict, bool):
            raise TypeError(f"`return_dict` must be None or a bool; got {return_dict!r}.")
        targets = dict(targets or {})
        for name in targets:
            if name in merged:
                if targets[name] is not None:
                    raise TypeError(f"`{name}` was given twice: as an entry of `inputs` and as {name}=. Pass it once.")
                targets[name] = merged.pop(name)
        backbone = {k: v for k, v in merged.items() if k not in extra}
        return backbone, {k: merged[k] for k in extra if k in merged}, targets, return_dict

    def call_shape(self, backbone_inputs) -> tuple[int, tuple]:
        """(batch size, per-token shape: (B, T), or (total,) for a packed batch) from the
        inputs' metadata, so that labels are checked before the model runs. Malformed inputs
        get the backbone's own error."""
        shape = _metadata_shape(backbone_inputs)
        if shape is None:
            prepare = prepare_packed_inputs if is_packed_input(backbone_inputs) else prepare_inputs
            backbone = self.backbone
            prepare(backbone_inputs, backbone.vocabulary_size, backbone.max_sequence_length, self.device)
            raise ValueError("`token_ids` must be (batch, seq), or (total,) with `cu_seqlens` for a packed batch.")
        return shape

    @staticmethod
    def task_output(return_dict: bool, keras_output, loss=None, **named) -> "torch.Tensor | tuple | TaskOutput":
        """keras_hub's output, or a TaskOutput ({"loss"} when there is one, then `named`)
        when there is a loss or a dict was asked for (`return_dict` as split_call resolved it)."""
        if loss is None and not return_dict:
            return keras_output
        return TaskOutput(**({} if loss is None else {"loss": loss}), **named)

    @property
    def config(self) -> TransformersConfig:
        """The task in transformers' terms (what PEFT and HF Trainer read): the config.json
        fields of its `RobertaFor*` class; see roberta_torch/transformers_config.py."""
        fields = transformers_format.transformers_config(self.backbone)
        fields.update(architectures=[self.transformers_architecture], **saving.label_fields(self))
        if "id2label" in fields:
            fields["num_labels"] = len(fields["id2label"])
        return TransformersConfig.of(self, fields)

    @property
    def device(self) -> torch.device:
        return self.backbone.token_embedding.weight.device

    @staticmethod
    def valid_tokens(backbone_inputs, device) -> torch.Tensor | None:
        """The (B, T) bool mask of a padded call's valid tokens (the backbone has checked it),
        or None when every token is valid (no mask, or a packed batch)."""
        mask = backbone_inputs.get("padding_mask")
        if mask is None or is_packed_input(backbone_inputs):
            return None
        return _as_tensor(mask, "padding_mask").to(device) != 0

    @staticmethod
    def packed_lengths(backbone_inputs, device) -> torch.Tensor | None:
        """The (B,) sequence lengths of a packed call (the backbone has checked cu_seqlens),
        or None for a padded one."""
        if not is_packed_input(backbone_inputs):
            return None
        cu_seqlens = _as_tensor(backbone_inputs["cu_seqlens"], "cu_seqlens").to(device).long()
        return cu_seqlens[1:] - cu_seqlens[:-1]

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.head_config().items())
