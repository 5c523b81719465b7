"""Which tokenizer a preset holds, and where its files are (no tokenizer class imported).

Layouts:

Keras preset (keras_hub's `save_to_preset`)
    tokenizer.json                      {"class_name": "RobertaTokenizer" | "XLMRobertaTokenizer", "config": {...}}
    assets/tokenizer/vocabulary.json + merges.txt   (RoBERTa)
    assets/tokenizer/vocabulary.spm                 (XLM-R)
transformers repository
    config.json                         {"model_type": "roberta" | "xlm-roberta", ...}
    vocab.json + merges.txt, or tokenizer.json       (RoBERTa)
    sentencepiece.bpe.model, or tokenizer.json       (XLM-R)

The kind is read, in order, from a Keras tokenizer.json, then the backbone class the
preset's loader names, then from which files exist. Every file is read through the `Preset`
(`Preset.file`), which fetches it on demand and refuses links out of the preset.
"""

from __future__ import annotations

import dataclasses
import pathlib

from . import names

TOKENIZER_CLASS_NAMES = ("RobertaTokenizer", "XLMRobertaTokenizer")
BACKBONE_TOKENIZERS = {"RobertaBackbone": "RobertaTokenizer", "XLMRobertaBackbone": "XLMRobertaTokenizer"}
# Keras tokenizer config keys that our constructors take.
_KERAS_CONFIG_KEYS = {
    "RobertaTokenizer": ("sequence_length", "add_prefix_space", "unsplittable_tokens"),
    "XLMRobertaTokenizer": ("sequence_length",),
}
ROBERTA_FILE_PAIRS = ((names.KERAS_VOCABULARY_JSON, names.KERAS_MERGES), (names.HF_VOCAB_JSON, names.HF_MERGES))
SENTENCEPIECE_FILES = (names.KERAS_VOCABULARY_SPM, names.HF_SENTENCEPIECE)


@dataclasses.dataclass(frozen=True)
class TokenizerSpec:
    """What a tokenizer class needs to build itself from a preset.

    class_name:  "RobertaTokenizer" or "XLMRobertaTokenizer".
    config:      constructor arguments saved in a Keras tokenizer.json ({} otherwise).
    vocabulary, merges: RoBERTa's files (Keras assets or vocab.json + merges.txt), or None.
    proto:       XLM-R's sentencepiece model file, or None.
    hf_tokenizer_json: a transformers tokenizer.json, used when the files above are absent.
    source:      the preset's handle, for messages.
    """

    class_name: str
    config: dict
    vocabulary: pathlib.Path | None = None
    merges: pathlib.Path | None = None
    proto: pathlib.Path | None = None
    hf_tokenizer_json: pathlib.Path | None = None
    source: str = ""


def _is_keras_spec(spec) -> bool:
    return isinstance(spec, dict) and "class_name" in spec


def _is_hf_spec(spec) -> bool:
    return isinstance(spec, dict) and isinstance(spec.get("model"), dict)


def tokenizer_class_name(preset, default_class: str | None = None) -> str:
    """The tokenizer class name of a `Preset` (`default_class`: what its backbone implies)."""
    spec = preset.json(names.KERAS_TOKENIZER_FILE)
    if _is_keras_spec(spec):
        name = spec["class_name"]
        if name not in TOKENIZER_CLASS_NAMES:
            raise ValueError(
                f"Preset {str(preset.handle)!r} has a {name} tokenizer; roberta_torch reads only "
                f"{', '.join(TOKENIZER_CLASS_NAMES)}."
            )
        return name
    if default_class is not None:
        return default_class
    if any(preset.file(name) for name in SENTENCEPIECE_FILES):
        return "XLMRobertaTokenizer"
    if any(preset.file(vocabulary) for vocabulary, _ in ROBERTA_FILE_PAIRS):
        return "RobertaTokenizer"
    if _is_hf_spec(spec):
        model_type = spec["model"].get("type")
        if model_type == "BPE":
            return "RobertaTokenizer"
        if model_type == "Unigram":
            return "XLMRobertaTokenizer"
    raise FileNotFoundError(
        f"No RoBERTa / XLM-R tokenizer found in {preset.source.describe()!r}: expected a Keras "
        "tokenizer.json with assets/tokenizer/, or vocab.json + merges.txt, "
        "sentencepiece.bpe.model or a transformers tokenizer.json."
    )


def tokenizer_spec(preset, default_class: str | None = None) -> TokenizerSpec:
    """Everything needed to build the tokenizer of `preset` (files checked to exist; called
    by the preset's loader, `PresetLoader.tokenizer_spec`)."""
    class_name = tokenizer_class_name(preset, default_class)
    spec = preset.json(names.KERAS_TOKENIZER_FILE)
    config = {}
    if _is_keras_spec(spec):
        saved = spec.get("config") or {}
        config = {key: saved[key] for key in _KERAS_CONFIG_KEYS[class_name] if saved.get(key) is not None}
    hf_json = preset.file(names.HF_TOKENIZER_FILE) if _is_hf_spec(spec) else None
    common = dict(class_name=class_name, config=config, hf_tokenizer_json=hf_json, source=str(preset.handle))
    if class_name == "RobertaTokenizer":
        for vocabulary_name, merges_name in ROBERTA_FILE_PAIRS:
            vocabulary, merges = preset.file(vocabulary_name), preset.file(merges_name)
            if vocabulary and merges:
                return TokenizerSpec(vocabulary=vocabulary, merges=merges, **common)
        if hf_json is None:
            tried = ", ".join(f"{v} + {m}" for v, m in ROBERTA_FILE_PAIRS)
            raise FileNotFoundError(
                f"No RoBERTa vocabulary in {preset.source.describe()!r}: tried {tried} and a transformers tokenizer.json."
            )
        return TokenizerSpec(**common)
    for name in SENTENCEPIECE_FILES:
        proto = preset.file(name)
        if proto:
            return TokenizerSpec(proto=proto, **common)
    if hf_json is None:
        raise FileNotFoundError(
            f"No XLM-R sentencepiece model in {preset.source.describe()!r}: tried "
            f"{', '.join(SENTENCEPIECE_FILES)} and a transformers tokenizer.json."
        )
    return TokenizerSpec(**common)


def _keras_layer(
    module: str, class_name: str, name: str, dtype: str, config_file: str, settings: dict, nested: dict | None = None
) -> dict:
    """A keras_hub layer config as its save_to_preset writes it (tokenizer, preprocessor), keys
    in keras_hub's order: `nested` layers (a preprocessor's tokenizer) come before config_file."""
    config = {
        "name": name,
        "trainable": True,
        "dtype": {"module": "keras", "class_name": "DTypePolicy", "config": {"name": dtype}, "registered_name": None},
        **(nested or {}),
        "config_file": config_file,
        **settings,
    }
    return {"module": module, "class_name": class_name, "config": config, "registered_name": f"keras_hub>{class_name}"}


def keras_tokenizer_config(tokenizer) -> dict:
    """The tokenizer.json keras_hub writes for `tokenizer` (its `keras_*` attributes and
    `keras_extra_config()`)."""
    return _keras_layer(
        tokenizer.keras_module,
        tokenizer.keras_class_name,
        tokenizer.keras_config_name,
        "int32",
        names.KERAS_TOKENIZER_FILE,
        tokenizer.keras_extra_config(),
    )


def keras_preprocessor_config(tokenizer, module: str, class_name: str, name: str, settings: dict) -> dict:
    """The preprocessor.json keras_hub writes: its class, the tokenizer's config nested, then
    `settings` (sequence_length, truncate, masking rates, ...)."""
    nested = {"tokenizer": keras_tokenizer_config(tokenizer)}
    return _keras_layer(module, class_name, name, "float32", names.KERAS_PREPROCESSOR_FILE, settings, nested)
