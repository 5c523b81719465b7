"""Map every preset form to a source of its files (sources.py): the one place that parses
handles. No file is fetched here: `Preset.file` fetches each one when a loader asks for it.

Accepted forms:
  * a builtin name (`roberta_base_en`, ... see registry.py), mapped to its handle;
  * `kaggle://<owner>/<model>/<framework>/<variation>[/<version>]`, through kagglehub;
  * `hf://<owner>/<name>`, through huggingface_hub (Keras-preset or transformers repos);
  * a local directory.

Network timeouts and offline behaviour are the hub clients' own (see sources.py).
"""

from __future__ import annotations

import difflib
import logging
import os
import pathlib
import re

from . import files, registry
from .sources import HuggingFaceSource, KaggleSource, LocalSource

logger = logging.getLogger(__name__)

KAGGLE_SCHEME = "kaggle://"
HF_SCHEME = "hf://"

MAX_HANDLE_ECHO = 200  # characters of a bad handle quoted in an error message

KAGGLE_HANDLE_FORM = "kaggle://<owner>/<model>/<framework>/<variation>[/<version>]"
HF_HANDLE_FORM = "hf://<owner>/<name>"
_HUB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

def accepted_forms() -> str:
    names = ", ".join(registry.builtin_preset_names())
    return (
        "Accepted preset forms:\n"
        f"  1) a builtin name: {names}\n"
        f"  2) a Kaggle handle {KAGGLE_HANDLE_FORM}, "
        "e.g. 'kaggle://keras/roberta/keras/roberta_base_en/3'\n"
        f"  3) a Hugging Face handle {HF_HANDLE_FORM}, e.g. 'hf://FacebookAI/roberta-base'\n"
        "  4) a local preset directory, e.g. './my_preset'"
    )


def _echo(value) -> str:
    """A handle quoted in an error message, cut to a readable length."""
    text = repr(value)
    return text if len(text) <= MAX_HANDLE_ECHO else text[:MAX_HANDLE_ECHO] + f"... ({len(text):,} characters)"


def resolve_preset(preset):
    """The source of `preset`'s files (a LocalSource, HuggingFaceSource or KaggleSource); typed
    errors for malformed handles and missing directories. Nothing is downloaded yet."""
    return _resolve(preset)


def _resolve(preset):
    if isinstance(preset, os.PathLike):
        return _local(os.fspath(preset))
    if not isinstance(preset, str):
        raise TypeError(
            f"`preset` must be a str or a path; got {type(preset).__name__} ({_echo(preset)}).\n"
            + accepted_forms()
        )
    if preset in registry.BUILTIN_PRESETS:
        if os.path.isdir(preset):
            logger.warning(
                "Preset %r is a builtin name and also a local directory; using the builtin. "
                "Pass './%s' for the directory.", preset, preset
            )
        source = _resolve(registry.BUILTIN_PRESETS[preset]["handle"])
        source.handle = preset
        return source
    if preset.startswith(registry.PACKAGE_HANDLE_PREFIX):
        directory = registry.package_preset_dir(preset)
        if not directory.is_dir():
            raise FileNotFoundError(
                f"The shipped preset {_echo(preset)} is missing from this installation: no directory "
                f"{directory}. Reinstall roberta_torch."
            )
        return LocalSource(preset, directory)
    if preset.startswith(KAGGLE_SCHEME):
        segments, version = parse_kaggle_handle(preset)
        return KaggleSource(preset, tuple(segments), version)
    if preset.startswith(HF_SCHEME):
        return HuggingFaceSource(preset, parse_hf_handle(preset))
    if "://" in preset:
        scheme = preset.split("://", 1)[0][:40]
        raise ValueError(f"Unknown preset scheme '{scheme}://' in preset={_echo(preset)}.\n{accepted_forms()}")
    if len(preset) < 4096 and (os.path.exists(os.path.expanduser(preset)) or _looks_like_path(preset)):
        return _local(preset)
    suggestion = difflib.get_close_matches(preset[:100], registry.builtin_preset_names(), n=1, cutoff=0.5)
    hint = f" Did you mean '{suggestion[0]}'?" if suggestion else ""
    raise ValueError(
        f"Unknown preset {_echo(preset)}: not a builtin name, handle or directory.{hint}\n{accepted_forms()}"
    )


def _looks_like_path(preset: str) -> bool:
    return preset.startswith((".", "~")) or "/" in preset or os.sep in preset


def _local(path: str) -> LocalSource:
    directory = pathlib.Path(path).expanduser()
    if not directory.exists() and not files.restore_moved_aside(directory):
        raise FileNotFoundError(f"Preset directory {_echo(str(directory))} does not exist.\n{accepted_forms()}")
    if not directory.is_dir():
        raise ValueError(
            f"preset={_echo(path)} is a file; a local preset is the directory holding config.json "
            f"and the weights (e.g. {str(directory.parent)!r})."
        )
    return LocalSource(path, directory.resolve())


# -- handles ------------------------------------------------------------------------------------


def parse_kaggle_handle(preset: str) -> tuple[list[str], int | None]:
    """'kaggle://o/m/f/v[/n]' -> ([o, m, f, v], n or None); ValueError with the form."""
    segments = preset[len(KAGGLE_SCHEME) :].split("/")
    version = None
    if len(segments) == 5:
        if not segments[4].isdigit():
            raise ValueError(
                f"Malformed Kaggle handle {preset!r}: the version must be a number. "
                f"Expected {KAGGLE_HANDLE_FORM}, e.g. 'kaggle://keras/roberta/keras/roberta_base_en/3'."
            )
        version = int(segments.pop())
    if len(segments) != 4 or not all(_HUB_NAME.match(s) for s in segments):
        raise ValueError(
            f"Malformed Kaggle handle {preset!r}. Expected {KAGGLE_HANDLE_FORM}, "
            "e.g. 'kaggle://keras/roberta/keras/roberta_base_en/3'."
        )
    return segments, version


def parse_hf_handle(preset: str) -> str:
    """'hf://owner/name' -> 'owner/name'; ValueError with the expected form."""
    segments = preset[len(HF_SCHEME) :].split("/")
    if len(segments) != 2 or not all(_HUB_NAME.match(s) for s in segments):
        raise ValueError(
            f"Malformed Hugging Face handle {preset!r}. Expected {HF_HANDLE_FORM}, "
            "e.g. 'hf://FacebookAI/roberta-base'."
        )
    return "/".join(segments)
