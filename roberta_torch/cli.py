"""Command line: `python -m roberta_torch` or the `roberta-torch` console script.

    roberta-torch presets                              table of builtin presets
    roberta-torch info PRESET                          class, format, config, parameters, files
    roberta-torch convert PRESET OUT_DIR --to keras    any preset form in; a Keras preset or
                                                       (--to safetensors) roberta_torch's export out

PRESET is any form `from_preset` accepts (builtin name, kaggle://, hf://, local directory).
Downloads show the hub clients' own progress bars. Errors print one message and exit 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from .presets import registry

logger = logging.getLogger(__name__)


def _format_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cmd_presets(args) -> int:
    rows = []
    for name in registry.builtin_preset_names():
        meta = registry.preset_metadata(name)
        params = f"{meta['params']:,}" if meta["params"] is not None else "?"
        rows.append([name, meta["class_name"], params, meta["handle"]])
    print(_format_table(["preset", "class", "parameters", "handle"], rows))
    return 0


def _cmd_info(args) -> int:
    from .backbone import Backbone
    from .presets.loading import check_backbone_class, inspect_directory
    from .presets.resolve import resolve_preset

    directory = resolve_preset(args.preset, allow_pickle=args.allow_pickle)
    info = inspect_directory(directory)
    check_backbone_class(Backbone, info.class_name, args.preset)
    files = sorted(p for p in directory.rglob("*") if p.is_file())
    report = {
        "preset": args.preset,
        "directory": str(directory),
        "format": info.format,
        "class_name": info.class_name,
        "config": info.config,
        "parameters": registry.count_parameters(info.config),
        "files": {str(p.relative_to(directory)): p.stat().st_size for p in files},
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
    for key, value in info.config.items():
        print(f"  {key}: {value!r}")
    print("files:")
    for name, size in report["files"].items():
        print(f"  {name}  ({size:,} bytes)")
    return 0


def _cmd_convert(args) -> int:
    from .backbone import Backbone
    from .presets.loading import backbone_from_preset, inspect_directory
    from .presets.resolve import resolve_preset
    from .presets.saving import copy_tokenizer_files, save_preset

    directory = resolve_preset(args.preset, allow_pickle=args.allow_pickle)
    overrides = {"dtype": args.dtype} if args.dtype else {}
    model = backbone_from_preset(Backbone, str(directory), allow_pickle=args.allow_pickle, **overrides)
    out = save_preset(model, args.out_dir, format=args.to)
    copied = copy_tokenizer_files(directory, out) if inspect_directory(directory).format == "keras" else []
    extra = f" (+ tokenizer: {', '.join(copied)})" if copied else ""
    print(
        f"Wrote {type(model).__name__} ({model.num_parameters():,} parameters) as a {args.to} preset to {out}{extra}"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="roberta-torch", description="RoBERTa / XLM-RoBERTa presets for roberta_torch."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("presets", help="list the builtin presets").set_defaults(run=_cmd_presets)

    info = sub.add_parser("info", help="describe a preset (downloads it if needed)")
    info.add_argument("preset", help="builtin name, kaggle://..., hf://... or a directory")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.add_argument("--allow-pickle", action="store_true", help="allow transformers' pytorch_model.bin")
    info.set_defaults(run=_cmd_info)

    convert = sub.add_parser("convert", help="convert a preset to a Keras preset or safetensors")
    convert.add_argument("preset", help="builtin name, kaggle://..., hf://... or a directory")
    convert.add_argument("out_dir", help="directory to write")
    convert.add_argument("--to", choices=("keras", "safetensors"), required=True, help="output format")
    convert.add_argument("--dtype", help="dtype policy of the written weights (default: the preset's)")
    convert.add_argument("--allow-pickle", action="store_true", help="allow transformers' pytorch_model.bin")
    convert.set_defaults(run=_cmd_convert)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return args.run(args)
    except (ValueError, TypeError, OSError, ImportError) as error:  # OSError: files, network
        print(f"roberta-torch {args.command}: error: {error}", file=sys.stderr)
        return 1
