"""`roberta-torch info PRESET`: class, format, config, parameter count and files of a preset."""

from __future__ import annotations

import json

HELP = "describe a preset (downloads it if needed)"


def add_arguments(parser) -> None:
    parser.add_argument("preset", help="builtin name, kaggle://..., hf://... or a directory")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--allow-pickle", action="store_true", help="allow transformers' pytorch_model.bin")


def run(args) -> int:
    from ..backbone import Backbone
    from ..config import BackboneConfig
    from ..presets.preset import open_preset

    preset = open_preset(args.preset, allow_pickle=args.allow_pickle)
    Backbone.class_for_preset(preset.class_name, preset)
    # The stored config, whichever dropout a load would choose: a transformers config with two
    # different dropout rates asks a loader for `dropout=`, not `info`.
    _, config, _ = preset.parse({"dropout": None})
    report = {
        "preset": args.preset,
        "directory": str(preset.directory),
        "format": preset.format_name,
        "class_name": preset.class_name,
        "config": config,
        "parameters": BackboneConfig.from_dict({**config, "dropout": 0.0}).num_parameters(),
        "files": preset.local_files(),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"preset:     {report['preset']}")
    print(f"directory:  {report['directory']}")
    print(f"format:     {report['format']}")
    print(f"class:      {report['class_name']}")
    print(f"parameters: {report['parameters']:,}")
    print("config:")
    for key, value in config.items():
        print(f"  {key}: {value!r}")
    print("files:")
    for name, size in report["files"].items():
        print(f"  {name}  ({size:,} bytes)")
    return 0
