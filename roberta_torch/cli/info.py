"""`roberta-torch info PRESET`: class, format, config, parameter count and files of a preset.
A task preset reports its task class (RobertaTextClassifier, ...), its head's settings
(num_classes, labels, ...) and the parameters of backbone and head together."""

from __future__ import annotations

import json


HELP = "describe a preset (downloads it if needed)"


def add_arguments(parser) -> None:
    parser.add_argument("preset", help="builtin name, kaggle://..., hf://... or a directory")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--allow-pickle", action="store_true", help="allow transformers' pytorch_model.bin")


def _task_parameters(task_cls, config: dict, head_config: dict) -> int:
    """Backbone and head parameters, counted on the meta device (nothing allocated)."""
    backbone = task_cls.backbone_cls(**{**config, "dropout": 0.0}, device="meta")
    return sum(p.numel() for p in task_cls(backbone, **head_config).parameters())


def _labels(head_config: dict) -> list | None:
    id2label = head_config.get("id2label")
    if not isinstance(id2label, dict):
        return None
    return [id2label[key] for key in sorted(id2label, key=lambda key: int(key))]


def run(args) -> int:
    from ..backbone import Backbone
    from ..config import BackboneConfig
    from ..presets.preset import open_preset
    from ..tasks import Task

    preset = open_preset(args.preset, allow_pickle=args.allow_pickle)
    Backbone.class_for_preset(preset.class_name, preset)
    # The stored config, whichever dropout a load would choose: a transformers config with two
    # different dropout rates asks a loader for `dropout=`, not `info`.
    _, config, _ = preset.parse({"dropout": None})
    stored = preset.loader.stored_task(Task._classes)
    task_cls = stored.task_cls
    report = {
        "preset": args.preset,
        "directory": str(preset.directory),
        "format": preset.format_name,
        "class_name": task_cls.__name__ if task_cls else preset.class_name,
        "backbone_class_name": preset.class_name,
        "task": None if task_cls is None else {**stored.head_config, "labels": _labels(stored.head_config)},
        "config": config,
        "parameters": (
            _task_parameters(task_cls, config, stored.head_config) if task_cls
            else BackboneConfig.from_dict({**config, "dropout": 0.0}).num_parameters()
        ),
        "files": preset.local_files(),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"preset:     {report['preset']}")
    print(f"directory:  {report['directory']}")
    print(f"format:     {report['format']}")
    print(f"class:      {report['class_name']}")
    if task_cls is not None:
        print(f"backbone:   {report['backbone_class_name']}")
    print(f"parameters: {report['parameters']:,}")
    if task_cls is not None:
        print(f"task:       {stored.description}")
        for key, value in report["task"].items():
            if value is not None and key not in ("id2label", "label2id"):
                print(f"  {key}: {value!r}")
    print("config:")
    for key, value in config.items():
        print(f"  {key}: {value!r}")
    print("files:")
    for name, size in report["files"].items():
        print(f"  {name}  ({size:,} bytes)")
    return 0
