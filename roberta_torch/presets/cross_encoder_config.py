"""`CrossEncoderConfig`: how a sequence classifier's logits become cross-encoder scores, the
record `PresetLoader.cross_encoder_config()` returns, with sentence-transformers' activation
class paths.

Where a reranker keeps these settings (read by the loaders, through `Preset.file` only):

    config_sentence_transformers.json   activation_fn (sentence-transformers >= 6), prompts,
                                        default_prompt_name
    config.json                         sentence_transformers.activation_fn (v4 / v5) or
                                        sbert_ce_default_activation_function (< v4)
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

logger = logging.getLogger(__name__)

# sentence-transformers' activation classes (torch paths as `fullname` writes them, and the
# short forms people write) -> our names. The first path of each name is what we write.
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
ACTIVATION_CLASS_PATHS = {}  # our name -> the torch path sentence-transformers writes
for _path, _name in ACTIVATION_PATHS.items():
    ACTIVATION_CLASS_PATHS.setdefault(_name, _path)
# Above any real model's context: tokenizers without a limit store int(1e30) here.
NO_LENGTH_LIMIT = 10**9


@dataclasses.dataclass
class CrossEncoderConfig:
    """How a sequence classifier's logits become cross-encoder scores."""

    activation: str | None = None  # None: the default for the number of labels
    max_length: int | None = None  # None: the backbone's max_sequence_length (capped at it anyway)
    prompts: dict = dataclasses.field(default_factory=dict)
    default_prompt_name: str | None = None


def activation_name(path, where: str) -> str | None:
    """Our activation name for a stored class path, None (the default) for none or an
    untrusted path (logged); ValueError naming `where` for an unsupported torch class."""
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


def checked_length(value, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 2:
        raise ValueError(f"The max length {value!r} read from {where} must be an int >= 2.")
    return int(value)
