"""Find a preset's tokenizer files and build the right tokenizer class.

The one place that knows the file layouts:

Keras preset (what keras_hub's `save_to_preset` writes)
    tokenizer.json                      {"class_name": "RobertaTokenizer" | "XLMRobertaTokenizer", "config": {...}}
    assets/tokenizer/vocabulary.json + merges.txt   (RoBERTa)
    assets/tokenizer/vocabulary.spm                 (XLM-R)
transformers repository
    config.json                         {"model_type": "roberta" | "xlm-roberta", ...}
    vocab.json + merges.txt, or tokenizer.json       (RoBERTa)
    sentencepiece.bpe.model, or tokenizer.json       (XLM-R)

The kind is read, in order, from a Keras tokenizer.json, then config.json (Keras
backbone class or transformers model_type), then from which files exist.
"""

from __future__ import annotations

import json
import logging
import pathlib

from .base import Tokenizer
from .roberta_tokenizer import RobertaTokenizer
from .xlm_roberta_tokenizer import XLMRobertaTokenizer

logger = logging.getLogger(__name__)

TOKENIZER_CLASSES: dict[str, type[Tokenizer]] = {
    "RobertaTokenizer": RobertaTokenizer,
    "XLMRobertaTokenizer": XLMRobertaTokenizer,
}
# Keras backbone class names and transformers model types -> tokenizer class name.
_BACKBONE_TOKENIZERS = {"RobertaBackbone": "RobertaTokenizer", "XLMRobertaBackbone": "XLMRobertaTokenizer"}
_MODEL_TYPE_TOKENIZERS = {"roberta": "RobertaTokenizer", "xlm-roberta": "XLMRobertaTokenizer"}
# Keras tokenizer config keys that our constructors take.
_KERAS_CONFIG_KEYS = {
    "RobertaTokenizer": ("sequence_length", "add_prefix_space", "unsplittable_tokens"),
    "XLMRobertaTokenizer": ("sequence_length",),
}

KERAS_ASSETS = pathlib.PurePosixPath("assets", "tokenizer")
ROBERTA_FILE_PAIRS = (
    (KERAS_ASSETS / "vocabulary.json", KERAS_ASSETS / "merges.txt"),
    ("vocab.json", "merges.txt"),
)
SENTENCEPIECE_FILES = (KERAS_ASSETS / "vocabulary.spm", "sentencepiece.bpe.model")


def read_json(path: pathlib.Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        with open(path, encoding="utf-8") as file:
            value = json.load(file)
    except json.JSONDecodeError as error:
        raise ValueError(f"{str(path)!r} is not valid JSON: {error}") from error
    return value if isinstance(value, dict) else None


def _is_keras_config(spec: dict | None) -> bool:
    return isinstance(spec, dict) and "class_name" in spec


def _is_hf_tokenizer(spec: dict | None) -> bool:
    return isinstance(spec, dict) and isinstance(spec.get("model"), dict)


def detect_tokenizer_class(directory: pathlib.Path) -> str:
    """The tokenizer class name ("RobertaTokenizer" / "XLMRobertaTokenizer") of a preset."""
    tokenizer_spec = read_json(directory / "tokenizer.json")
    if _is_keras_config(tokenizer_spec):
        name = tokenizer_spec["class_name"]
        if name not in TOKENIZER_CLASSES:
            raise ValueError(
                f"Preset {str(directory)!r} has a {name} tokenizer; roberta_torch reads only "
                f"{', '.join(TOKENIZER_CLASSES)}."
            )
        return name
    config = read_json(directory / "config.json") or {}
    if config.get("class_name") in _BACKBONE_TOKENIZERS:
        return _BACKBONE_TOKENIZERS[config["class_name"]]
    if config.get("model_type") in _MODEL_TYPE_TOKENIZERS:
        return _MODEL_TYPE_TOKENIZERS[config["model_type"]]
    if any((directory / name).is_file() for name in SENTENCEPIECE_FILES):
        return "XLMRobertaTokenizer"
    if any((directory / vocab).is_file() for vocab, _ in ROBERTA_FILE_PAIRS):
        return "RobertaTokenizer"
    if _is_hf_tokenizer(tokenizer_spec):
        model_type = tokenizer_spec["model"].get("type")
        if model_type == "BPE":
            return "RobertaTokenizer"
        if model_type == "Unigram":
            return "XLMRobertaTokenizer"
    raise FileNotFoundError(
        f"No RoBERTa / XLM-R tokenizer found in {str(directory)!r}: expected a Keras "
        "tokenizer.json with assets/tokenizer/, or vocab.json + merges.txt, "
        "sentencepiece.bpe.model or a transformers tokenizer.json."
    )


def keras_tokenizer_config(directory: pathlib.Path, class_name: str) -> dict:
    """Constructor arguments saved in a Keras tokenizer.json (empty for other presets)."""
    spec = read_json(directory / "tokenizer.json")
    if not _is_keras_config(spec):
        return {}
    config = spec.get("config") or {}
    return {key: config[key] for key in _KERAS_CONFIG_KEYS[class_name] if config.get(key) is not None}


def load_roberta_tokenizer(directory: pathlib.Path, **kwargs) -> RobertaTokenizer:
    for vocabulary_name, merges_name in ROBERTA_FILE_PAIRS:
        vocabulary, merges = directory / vocabulary_name, directory / merges_name
        if vocabulary.is_file() and merges.is_file():
            logger.debug("RoBERTa tokenizer from %s + %s", vocabulary, merges)
            return RobertaTokenizer(vocabulary, merges, **kwargs)
    if _is_hf_tokenizer(read_json(directory / "tokenizer.json")):
        return RobertaTokenizer.from_hf_tokenizer_file(directory / "tokenizer.json", **kwargs)
    tried = ", ".join(f"{v} + {m}" for v, m in ROBERTA_FILE_PAIRS)
    raise FileNotFoundError(
        f"No RoBERTa vocabulary in {str(directory)!r}: tried {tried} and a transformers tokenizer.json."
    )


def load_xlm_roberta_tokenizer(directory: pathlib.Path, **kwargs) -> XLMRobertaTokenizer:
    for name in SENTENCEPIECE_FILES:
        path = directory / name
        if path.is_file():
            logger.debug("XLM-R tokenizer from %s", path)
            return XLMRobertaTokenizer(path, **kwargs)
    if _is_hf_tokenizer(read_json(directory / "tokenizer.json")):
        logger.info("No sentencepiece model in %s; using its tokenizer.json", directory)
        return XLMRobertaTokenizer.from_hf_tokenizer_file(directory / "tokenizer.json", **kwargs)
    raise FileNotFoundError(
        f"No XLM-R sentencepiece model in {str(directory)!r}: tried "
        f"{', '.join(str(n) for n in SENTENCEPIECE_FILES)} and a transformers tokenizer.json."
    )


_LOADERS = {"RobertaTokenizer": load_roberta_tokenizer, "XLMRobertaTokenizer": load_xlm_roberta_tokenizer}


def resolve_directory(preset) -> pathlib.Path:
    from ..presets.resolve import resolve_preset

    return pathlib.Path(resolve_preset(preset))


def tokenizer_from_preset(cls: type[Tokenizer], preset, **kwargs) -> Tokenizer:
    """Build the tokenizer of `preset`; `cls` is the class `from_preset` was called on."""
    directory = resolve_directory(preset)
    class_name = detect_tokenizer_class(directory)
    target = TOKENIZER_CLASSES[class_name]
    if not issubclass(target, cls):
        raise ValueError(
            f"Preset {preset!r} holds a {class_name}, not a {cls.__name__}. Use "
            f"{class_name}.from_preset(...) or Tokenizer.from_preset(...)."
        )
    arguments = {**keras_tokenizer_config(directory, class_name), **kwargs}
    return _LOADERS[class_name](directory, **arguments)


def preset_max_sequence_length(preset) -> int | None:
    """The backbone's max_sequence_length read from a preset's config.json, if known."""
    directory = resolve_directory(preset)
    return config_max_sequence_length(directory)


def config_max_sequence_length(directory: pathlib.Path) -> int | None:
    config = read_json(directory / "config.json") or {}
    if isinstance(config.get("config"), dict) and "max_sequence_length" in config["config"]:
        return int(config["config"]["max_sequence_length"])
    if "max_position_embeddings" in config:
        # transformers keeps 2 extra rows (padding_idx + 1 offset) for RoBERTa positions.
        return int(config["max_position_embeddings"]) - 2
    return None
