"""Command line: `python -m roberta_torch` or the `roberta-torch` console script.

    roberta-torch presets                              table of builtin presets
    roberta-torch info PRESET                          class, format, config, parameters, files
    roberta-torch convert PRESET OUT_DIR --to keras    any preset form in; a Keras preset,
                                                       (--to transformers) a transformers
                                                       checkpoint or (--to safetensors)
                                                       roberta_torch's export out, with the
                                                       preset's tokenizer
    roberta-torch serve PRESET [--reranker PRESET]     an HTTP server (serving/cli.py)

PRESET is any form `from_preset` accepts (builtin name, kaggle://, hf://, local directory).
Downloads show the hub clients' own progress bars. Errors print one message and exit 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from .embedding.embed_cli import add_embed_parser
from .presets import registry
from .serving import cli as serve_cli

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
    from .presets.preset import open_preset

    preset = open_preset(args.preset, allow_pickle=args.allow_pickle)
    Backbone.class_for_preset(preset.class_name, preset)
    # The stored config, whichever dropout a load would choose: a transformers config with two
    # different dropout rates asks a loader for `dropout=`, not `info`.
    _, config, _ = preset.parse({"dropout": None})
    files = sorted(p for p in preset.directory.rglob("*") if p.is_file())
    report = {
        "preset": args.preset,
        "directory": str(preset.directory),
        "format": preset.format_name,
        "class_name": preset.class_name,
        "config": config,
        "parameters": registry.count_parameters(config),
        "files": {str(p.relative_to(preset.directory)): p.stat().st_size for p in files},
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


def _source_preprocessor_or_tokenizer(preset):
    """The preset's preprocessor (when it saved one) or tokenizer, or None if it has neither."""
    from .preprocessor import Preprocessor
    from .presets import files
    from .tokenizers import Tokenizer

    try:
        if preset.file(files.KERAS_PREPROCESSOR_FILE) is not None:
            return Preprocessor.from_preset(preset)
        return Tokenizer.from_preset(preset)
    except FileNotFoundError as error:
        if any(preset.file(name) for name in files.TOKENIZER_FILES + (files.HF_TOKENIZER_FILE,)):
            logger.warning("The preset's tokenizer files are incomplete; no tokenizer written: %s", error)
        return None


def _shard_size_argument(text: str):
    """--max-shard-size: bytes as digits, or a size with a unit ("5GB")."""
    return int(text) if text.strip().isdigit() else text


def _cmd_convert(args) -> int:
    from .backbone import Backbone
    from .presets import files, saving
    from .presets.preset import open_preset

    preset = open_preset(args.preset, allow_pickle=args.allow_pickle)
    overrides = {"dtype": args.dtype} if args.dtype else {}
    options = {}
    if args.max_shard_size is not None:
        if args.to != "transformers":
            raise ValueError("--max-shard-size applies to --to transformers only.")
        options["max_shard_size"] = _shard_size_argument(args.max_shard_size)
        saving.transformers_format.parse_shard_size(options["max_shard_size"])  # before loading anything
    model = Backbone.from_preset(preset, **overrides)
    text = _source_preprocessor_or_tokenizer(preset)
    note = ""
    with files.staged_directory(args.out_dir, overwrite=args.overwrite, argument="OUT_DIR") as staging:
        saving.write_backbone(model, staging, args.to, **options)
        if text is not None:
            try:
                if args.to == "transformers":  # transformers reads tokenizer files only
                    from .tokenizers.hf_files import save_hf_files

                    text = getattr(text, "tokenizer", text)
                    save_hf_files(text, staging, model_max_length=model.max_sequence_length)
                else:
                    text.save_to_preset(staging)
                note = f" (+ {type(text).__name__})"
            except ValueError as error:  # e.g. an XLM-R tokenizer without its sentencepiece model
                logger.warning("The tokenizer was not written: %s", error)
    print(
        f"Wrote {type(model).__name__} ({model.num_parameters():,} parameters) as a {args.to} preset to "
        f"{args.out_dir}{note}"
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

    convert = sub.add_parser("convert", help="convert a preset to a Keras preset, transformers or safetensors")
    convert.add_argument("preset", help="builtin name, kaggle://..., hf://... or a directory")
    convert.add_argument("out_dir", help="directory to write")
    convert.add_argument(
        "--to", choices=("keras", "safetensors", "transformers"), required=True, help="output format"
    )
    convert.add_argument(
        "--max-shard-size",
        help="--to transformers: shard the weights above this size (bytes, or e.g. 5GB; default 50GB)",
    )
    convert.add_argument("--dtype", help="dtype policy of the written weights (default: the preset's)")
    convert.add_argument("--allow-pickle", action="store_true", help="allow transformers' pytorch_model.bin")
    convert.add_argument(
        "--overwrite", action="store_true", help="replace OUT_DIR if it is not empty (atomically, as a whole)"
    )
    convert.set_defaults(run=_cmd_convert)
    add_embed_parser(sub)
    serve = sub.add_parser("serve", help=serve_cli.HELP)
    serve_cli.add_arguments(serve)
    serve.set_defaults(run=serve_cli.run)
    return parser


def _is_user_error(error: BaseException) -> bool:
    """Errors that come from the input, the files or the environment, not from a bug here."""
    if isinstance(error, (ValueError, TypeError, OSError, ImportError, RecursionError, MemoryError)):
        return True
    # safetensors and h5py raise their own types for unreadable or unwritable files.
    return type(error).__name__ in ("SafetensorError", "HDF5ExtError")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return args.run(args)
    except Exception as error:
        if not _is_user_error(error):
            raise  # a bug in roberta_torch: keep the traceback
        message = str(error) or type(error).__name__
        if isinstance(error, RecursionError):
            message = "the input is nested too deeply to be a preset file"
        message = " ".join(line.strip() for line in message.splitlines() if line.strip())  # one line
        print(f"roberta-torch {args.command}: error: {message}", file=sys.stderr)
        return 1
