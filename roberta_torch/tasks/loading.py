"""`Task.from_preset`: which task class to build and with which head, whatever the format.

The preset's loader (presets/loader.py, one per format) says what the preset stores
(`stored_task`: a keras_hub task.json, a transformers `architectures` entry or the head
tensors a checkpoint holds) and hands over the tensors (`read_task_tensors`); this module
decides, the same way for every format:

  * a task preset of the requested kind loads backbone and head in one strict pass: the
    config checked against the weights' structure first, the model built on the meta device
    (nothing initialized), every tensor of the files used, every model tensor filled, every
    shape checked (presets/mapping.py);
  * a backbone preset, or a masked-LM (pretraining) checkpoint for another task, gets a fresh
    head from the kwargs (keras_hub's initializers), as keras_hub does; what is left of the
    checkpoint is logged;
  * a head of another kind is refused with the class that loads it.
"""

from __future__ import annotations

import logging

import torch

from ..backbone import Backbone
from ..presets import loading
from ..presets.mapping import assemble_state_dict
from ..presets.preset import open_preset

logger = logging.getLogger(__name__)

# Backbone constructor extras (not Keras config) that `from_preset` forwards to the backbone.
BACKBONE_KWARGS = ("dtype", "padding_free", "attention_backend", "gradient_checkpointing", "device")
# Task kinds whose constructor needs num_classes.
_NEEDS_NUM_CLASSES = ("text_classifier", "token_classifier")


def _task_class(kind: str, backbone_class_name: str, classes) -> type:
    for task_cls in classes:
        if task_cls.task_kind == kind and task_cls.backbone_cls.keras_class_name == backbone_class_name:
            return task_cls
    raise ValueError(f"No {kind} task for a {backbone_class_name}.")


def choose_task_class(cls, stored, backbone_class_name: str, preset, head_kwargs: dict, classes):
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


def task_from_preset(cls, preset, classes, load_weights: bool = True, *, allow_pickle: bool = False, **kwargs):
    """Build `cls` (or, for `Task`, the class the preset names, among `classes`) from `preset`."""
    if not isinstance(load_weights, bool):
        raise TypeError(f"`load_weights` must be a bool; got {type(load_weights).__name__} ({load_weights!r}).")
    loader = open_preset(preset, allow_pickle=allow_pickle).loader
    preset = loader.preset
    backbone_kwargs = {k: v for k, v in kwargs.items() if k in BACKBONE_KWARGS}
    head_kwargs = {k: v for k, v in kwargs.items() if k not in BACKBONE_KWARGS}
    spec = loader.backbone_spec(backbone_kwargs)
    stored = loader.stored_task(classes)
    task_cls, with_head = choose_task_class(cls, stored, spec.class_name, preset.handle, head_kwargs, classes)
    backbone_cls = task_cls.backbone_cls
    config = {**spec.config, **backbone_kwargs}
    head_config = {**stored.head_config, **head_kwargs} if with_head else head_kwargs
    stored_classes = stored.head_config.get("num_classes")
    requested_classes = head_kwargs.get("num_classes", stored_classes)
    if with_head and stored_classes is not None and requested_classes != stored_classes:
        raise ValueError(
            f"`num_classes`={head_kwargs['num_classes']!r}, but `preset`={str(preset.handle)!r} holds a head with "
            f"{stored_classes} classes ({stored.description}). Leave num_classes out to load that head, or put a "
            f"fresh one on its backbone: {task_cls.__name__}(Backbone.from_preset(...), num_classes=...)."
        )

    if not load_weights:
        model = task_cls(backbone_cls(**config), **head_config)
    elif not with_head:
        backbone = loader.load_backbone(backbone_cls, True, **backbone_kwargs)
        model = task_cls(backbone, **head_config)
        left = "" if stored.task_cls is None else f"; its {stored.task_cls.__name__} head was left unused"
        logger.info("Built %s with a fresh head on the backbone of %s%s.", task_cls.__name__, preset.handle, left)
    else:
        model = _load_task_weights(loader, task_cls, config, spec.dims, head_config)
    model.preset_source = preset.source
    return model.eval()


def _load_task_weights(loader, task_cls, config: dict, dims: dict, head_config: dict):
    """Backbone and stored head in one strict pass, the structure checked before building."""
    device = config.pop("device", None)
    tensors = loader.read_task_tensors(task_cls)
    loading.check_structure(loader, config, tensors.source)
    model = task_cls(task_cls.backbone_cls(**config, device="meta"), **head_config)
    dims = loader.table_dims(config, dims)
    source = {k: v for k, v in tensors.source.items() if k not in tensors.tied}
    state_dict = assemble_state_dict(
        loader.task_rows(task_cls, config), source, dict(model.state_dict()), dims, ignored_prefixes=tensors.ignored_prefixes,
        description=tensors.description, device=device,
    )
    for key, model_key in tensors.tied.items():  # tied in the model: must equal what it is tied to
        if key not in tensors.source:
            continue
        tensor, tied_to = tensors.source[key], state_dict[model_key]
        if tuple(tensor.shape) != tuple(tied_to.shape) or not torch.equal(tensor.load().to(tied_to.dtype), tied_to.cpu()):
            raise ValueError(
                f"Cannot load {tensors.description}: {key} (in {tensor.file}) differs from {model_key}, to which "
                "roberta_torch ties it (an untied decoder is not supported)."
            )
    model.load_state_dict(state_dict, strict=True, assign=True)
    leftovers = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if leftovers:
        raise RuntimeError(f"{task_cls.__name__} kept meta tensors after loading: {leftovers}")
    loading.attach_source_record(model.backbone, loader.source_record(tensors.source, dims))
    logger.info("Loaded %s from %s (%s format).", task_cls.__name__, loader.preset.handle, loader.NAME)
    return model
