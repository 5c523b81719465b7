"""`roberta-torch convert PRESET OUT_DIR --to keras|safetensors|transformers`: any preset
form in; a Keras preset, roberta_torch's safetensors export or a transformers checkpoint
out, with the preset's tokenizer (or preprocessor)."""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)

HELP = "convert a preset to a Keras preset, transformers or safetensors"


def add_arguments(parser) -> None:
    parser.add_argument("preset", help="builtin name, kaggle://..., hf://... or a directory")
    parser.add_argument("out_dir", help="directory to write")
    parser.add_argument("--to", choices=("keras", "safetensors", "transformers"), required=True, help="output format")
    parser.add_argument(
        "--max-shard-size",
        help="--to transformers: shard the weights above this size (bytes, or e.g. 5GB; default 50GB)",
    )
    parser.add_argument("--dtype", help="dtype policy of the written weights (default: the preset's)")
    parser.add_argument("--allow-pickle", action="store_true", help="allow transformers' pytorch_model.bin")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace OUT_DIR if it is not empty (atomically, as a whole)"
    )


def _source_preprocessor_or_tokenizer(preset):
    """The preset's preprocessor (when it saved one) or tokenizer, or None if it has neither."""
    from ..preprocessor import Preprocessor
    from ..presets import names
    from ..tokenizers import Tokenizer

    try:
        if preset.file(names.KERAS_PREPROCESSOR_FILE) is not None:
            return Preprocessor.from_preset(preset)
        return Tokenizer.from_preset(preset)
    except FileNotFoundError as error:
        if any(preset.file(name) for name in names.TOKENIZER_FILES):
            logger.warning("The preset's tokenizer files are incomplete; no tokenizer written: %s", error)
        return None


def _shard_size_argument(text: str):
    """--max-shard-size: bytes as digits, or a size with a unit ("5GB")."""
    return int(text) if text.strip().isdigit() else text


def run(args) -> int:
    from ..backbone import Backbone
    from ..presets import files, saving
    from ..presets.preset import open_preset

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
                    from ..tokenizers.hf_files import save_hf_files

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
