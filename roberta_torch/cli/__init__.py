"""Command line: `python -m roberta_torch` or the `roberta-torch` console script.

    roberta-torch presets                              table of builtin presets
    roberta-torch info PRESET                          class, format, config, parameters, files
    roberta-torch convert PRESET OUT_DIR --to keras    any preset form in; a Keras preset,
                                                       (--to transformers) a transformers
                                                       checkpoint or (--to safetensors)
                                                       roberta_torch's export out, with the
                                                       preset's tokenizer
    roberta-torch embed --preset P INPUT --out OUT     embed a file of texts (resumable,
                                                       torchrun-aware)
    roberta-torch serve PRESET [--reranker PRESET]     OpenAI-compatible embeddings and TEI-style
                                                       rerank server with dynamic batching

PRESET is any form `from_preset` accepts (builtin name, kaggle://, hf://, local directory).
Downloads show the hub clients' own progress bars. Errors print one message and exit 1.

Adding a subcommand: one module in this package and one row in `SUBCOMMANDS`. The module
exposes

    HELP: str                             the one line `roberta-torch --help` shows
    DESCRIPTION: str (optional)           the text `roberta-torch NAME --help` shows
    add_arguments(parser) -> None         its arguments, on an argparse parser
    run(args) -> int                      the exit status

Every module is imported to build the parser, so keep heavy imports inside `run`. `run`
reports a problem with the input, the files or the environment by raising ValueError,
TypeError, OSError or ImportError: `main` prints it as one line and exits 1 (any other
exception is a bug and keeps its traceback).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# name -> the module implementing it (a full dotted path, imported when the parser is built).
SUBCOMMANDS = {
    "presets": "roberta_torch.cli.presets",
    "info": "roberta_torch.cli.info",
    "convert": "roberta_torch.cli.convert",
    "embed": "roberta_torch.cli.embed",
    "serve": "roberta_torch.cli.serve",
}


def subcommand_module(name: str):
    """The module implementing subcommand `name` (see the module docstring)."""
    return importlib.import_module(SUBCOMMANDS[name])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="roberta-torch", description="RoBERTa / XLM-RoBERTa presets for roberta_torch."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMANDS:
        module = subcommand_module(name)
        description = getattr(module, "DESCRIPTION", None)
        command = sub.add_parser(
            name, help=module.HELP, description=description or module.HELP,
            formatter_class=argparse.RawDescriptionHelpFormatter if description else argparse.HelpFormatter,
        )
        module.add_arguments(command)
        command.set_defaults(run=module.run)
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
