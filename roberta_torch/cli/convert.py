"""`roberta-torch convert PRESET OUT_DIR --to keras|safetensors|transformers`: any preset
form in; a Keras preset, roberta_torch's safetensors export or a transformers checkpoint
out, with the preset's tokenizer (or preprocessor).

A task preset (keras_hub's task.json, a transformers `RobertaFor*` checkpoint) is written as
the same task, head, labels and config included, through the task's own writer (keras or
transformers; roberta_torch's safetensors export holds a backbone only, so that target needs
--backbone-only). OUT_DIR and the other arguments are checked before anything is loaded."""

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
    parser.add_argument(
        "--backbone-only", action="store_true", help="of a task preset, write the backbone alone (drop the head)"
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


def _writer_options(args) -> dict:
    options = {}
    if args.max_shard_size is not None:
        from ..presets import saving

        if args.to != "transformers":
            raise ValueError("--max-shard-size applies to --to transformers only.")
        options["max_shard_size"] = _shard_size_argument(args.max_shard_size)
        saving.transformers_format.parse_shard_size(options["max_shard_size"])
    return options


def _stored_task_class(preset, args):
    """The task class `preset` stores, or None (a backbone preset, or --backbone-only);
    refuses a target format that cannot hold the task before any weight is read."""
    from ..tasks import Task
    from ..tasks.saving import check_task_format

    task_cls = preset.loader.stored_task(Task._classes).task_cls
    if task_cls is None or args.backbone_only:
        return None
    if args.to == "safetensors":
        raise ValueError(
            f"{args.preset!r} is a {task_cls.__name__} preset; the safetensors export holds a backbone only. Use "
            "--to keras or --to transformers to keep its head, or --backbone-only to write the backbone alone."
        )
    check_task_format(task_cls, args.to)
    return task_cls


def _write_text_files(text, staging, args, max_sequence_length: int) -> str:
    """Write the preset's tokenizer (or preprocessor) next to the weights; returns the note."""
    try:
        if args.to == "transformers":  # transformers reads tokenizer files only
            from ..tokenizers.hf_files import save_hf_files

            text = getattr(text, "tokenizer", text)
            save_hf_files(text, staging, model_max_length=max_sequence_length)
        else:
            text.save_to_preset(staging)
    except ValueError as error:  # e.g. an XLM-R tokenizer without its sentencepiece model
        logger.warning("The tokenizer was not written: %s", error)
        return ""
    return f" (+ {type(text).__name__})"


def run(args) -> int:
    from ..backbone import Backbone
    from ..presets import files, names, saving
    from ..presets.preset import open_preset
    from ..tasks.saving import write_task

    # Everything cheap first: a refused OUT_DIR or option never costs a model load.
    files.check_staged_destination(args.out_dir, overwrite=args.overwrite, argument="OUT_DIR")
    options = _writer_options(args)
    preset = open_preset(args.preset, allow_pickle=args.allow_pickle)
    task_cls = _stored_task_class(preset, args)
    overrides = {"dtype": args.dtype} if args.dtype else {}
    if task_cls is not None:
        model = task_cls.from_preset(preset, **overrides)
        backbone = model.backbone
    else:
        model = backbone = Backbone.from_preset(preset, **overrides)
    text = _source_preprocessor_or_tokenizer(preset)
    note = ""
    with files.staged_directory(args.out_dir, overwrite=args.overwrite, argument="OUT_DIR") as staging:
        if task_cls is not None:
            write_task(model, staging, args.to, **options)  # keras: with the tokenizer and preprocessor.json
        else:
            saving.write_backbone(model, staging, args.to, **options)
        if task_cls is not None and args.to == "keras":
            if (staging / names.KERAS_TOKENIZER_FILE).is_file():
                note = " (+ tokenizer and preprocessor)"
        elif text is not None:
            note = _write_text_files(text, staging, args, backbone.max_sequence_length)
    parameters = sum(p.numel() for p in model.parameters())
    print(f"Wrote {type(model).__name__} ({parameters:,} parameters) as a {args.to} preset to {args.out_dir}{note}")
    return 0
