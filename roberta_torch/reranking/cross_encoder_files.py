"""What a cross-encoder adds to a sequence-classification preset, read in ONE function.

A reranker is a `*ForSequenceClassification` checkpoint (or our own text-classifier task
preset) plus how sentence-transformers' `CrossEncoder` turns its logits into scores:

    config_sentence_transformers.json   activation_fn (sentence-transformers >= 6), prompts,
                                        default_prompt_name
    config.json                         sentence_transformers.activation_fn (v4 / v5) or
                                        sbert_ce_default_activation_function (< v4);
                                        max_position_embeddings (the max-length cap)
    modules.json                        one Transformer module (its path holds the model)
    sentence_bert_config.json           max_seq_length, when saved there
    tokenizer_config.json               model_max_length (where CrossEncoder(max_length=)
                                        is stored)
    preprocessor.json                   sequence_length (our / keras_hub's task presets)

Precedence is sentence-transformers 6's: an explicit argument, then
config_sentence_transformers.json, then config.json's entries, then the default (Sigmoid for
one label, Identity otherwise). Like sentence-transformers, an activation path outside
`torch.` is not trusted: it is logged and the default is used.
"""

from __future__ import annotations

import dataclasses
import logging

from ..presets import names

logger = logging.getLogger(__name__)

ST_CONFIG_FILE = "config_sentence_transformers.json"
ST_TRANSFORMER_CONFIG_FILE = "sentence_bert_config.json"
# sentence-transformers' activation classes (torch paths as `fullname` writes them, and the
# short forms people write) -> our names.
ACTIVATION_PATHS = {
    "torch.nn.modules.activation.Sigmoid": "sigmoid",
    "torch.nn.modules.linear.Identity": "identity",
    "torch.nn.modules.activation.Tanh": "tanh",
    "torch.nn.modules.activation.Softmax": "softmax",
    "torch.nn.Sigmoid": "sigmoid",
    "torch.nn.Identity": "identity",
    "torch.nn.Tanh": "tanh",
    "torch.nn.Softmax": "softmax",
}
# Above any real model's context: tokenizers without a limit store int(1e30) here.
_NO_LIMIT = 10**9


@dataclasses.dataclass
class CrossEncoderConfig:
    """How a sequence classifier's logits become cross-encoder scores."""

    activation: str | None = None  # None: the default for the number of labels
    max_length: int | None = None  # None: the backbone's max_sequence_length (capped at it anyway)
    prompts: dict = dataclasses.field(default_factory=dict)
    default_prompt_name: str | None = None
    model_subfolder: str = ""  # where modules.json puts the Transformer ("" = the preset itself)


def _activation_name(path, where: str) -> str | None:
    if path is None:
        return None
    if not isinstance(path, str) or not path.startswith("torch."):
        logger.warning(
            "Activation %r in %s is not a torch class; using the default activation, as sentence-transformers "
            "does without trust_remote_code. Pass activation_fn= to choose one.", path, where,
        )
        return None
    if path not in ACTIVATION_PATHS:
        raise ValueError(
            f"Activation {path!r} in {where} is not supported; roberta_torch implements "
            f"{sorted(set(ACTIVATION_PATHS.values()))}. Pass activation_fn= (a name or a callable) to choose one."
        )
    return ACTIVATION_PATHS[path]


def _check_length(value, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 2:
        raise ValueError(f"The max length {value!r} read from {where} must be an int >= 2.")
    return int(value)


def read_cross_encoder_config(preset) -> CrossEncoderConfig:
    """The cross-encoder settings of an opened preset (`presets.preset.Preset`)."""
    config = CrossEncoderConfig()
    modules = preset.json(names.ST_MODULES_FILE, expect=None)
    if modules is not None:
        where = f"{names.ST_MODULES_FILE} of {preset.handle}"
        if not isinstance(modules, list) or not all(isinstance(m, dict) and "type" in m for m in modules):
            raise ValueError(f"{where!r} must be a list of {{'type', 'path', ...}} objects.")
        kinds = [str(m["type"]).rsplit(".", 1)[-1] for m in modules]
        if kinds != ["Transformer"]:
            raise ValueError(
                f"{where!r} lists the modules {kinds}; roberta_torch's CrossEncoder reads a single Transformer "
                "module (a RoBERTa / XLM-R sequence classifier), as sentence-transformers saves rerankers."
            )
        subfolder = str(modules[0].get("path") or "")
        if subfolder and (".." in subfolder.split("/") or subfolder.startswith("/")):
            raise ValueError(f"{where!r}: the Transformer path {subfolder!r} must stay inside the preset.")
        config.model_subfolder = subfolder

    st_config = preset.json(ST_CONFIG_FILE) or {}
    where = f"{ST_CONFIG_FILE} of {preset.handle}"
    config.activation = _activation_name(st_config.get("activation_fn"), where)
    raw = preset.raw_config if preset.format is not None else {}
    if config.activation is None:
        nested = raw.get("sentence_transformers")
        legacy = nested.get("activation_fn") if isinstance(nested, dict) else None
        legacy = legacy if legacy is not None else raw.get("sbert_ce_default_activation_function")
        config.activation = _activation_name(legacy, f"{names.CONFIG_FILE} of {preset.handle}")
    prompts = st_config.get("prompts") or {}
    if not isinstance(prompts, dict) or not all(isinstance(v, str) for v in prompts.values()):
        raise ValueError(f"`prompts` in {where!r} must map names to strings; got {prompts!r}.")
    config.prompts = dict(prompts)
    config.default_prompt_name = st_config.get("default_prompt_name")
    if config.default_prompt_name is not None and config.default_prompt_name not in prompts:
        raise ValueError(f"default_prompt_name {config.default_prompt_name!r} in {where!r} is not one of {sorted(prompts)}.")

    # sentence-transformers' order: the module's max_seq_length, else the tokenizer's
    # model_max_length capped at max_position_embeddings; keras presets: the preprocessor's.
    prefix = f"{config.model_subfolder}/" if config.model_subfolder else ""
    settings = preset.json(prefix + ST_TRANSFORMER_CONFIG_FILE) or {}
    length = _check_length(settings.get("max_seq_length"), prefix + ST_TRANSFORMER_CONFIG_FILE)
    if length is None:
        model_max_length = (preset.json(prefix + names.HF_TOKENIZER_CONFIG) or {}).get("model_max_length")
        if isinstance(model_max_length, (int, float)) and model_max_length >= _NO_LIMIT:
            model_max_length = None
        length = _check_length(model_max_length, prefix + names.HF_TOKENIZER_CONFIG)
    if length is None:
        saved = (preset.json(names.KERAS_PREPROCESSOR_FILE) or {}).get("config")
        if isinstance(saved, dict):
            length = _check_length(saved.get("sequence_length"), names.KERAS_PREPROCESSOR_FILE)
    config.max_length = length
    return config
