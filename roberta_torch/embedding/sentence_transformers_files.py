"""Everything an embedding model adds to a backbone preset, read from ONE resolved directory.

The one module that reads embedding-specific preset files (so a preset reader can own it):

    modules.json                         the module list: Transformer [, Pooling] [, Normalize]
    <Transformer path>/sentence_bert_config.json   max_seq_length, do_lower_case
    <Transformer path>/tokenizer_config.json       model_max_length (sentence-transformers >= 5
                                                   stores max_seq_length there)
    <Transformer path>/config.json                 max_position_embeddings (the cap)
    <Pooling path>/config.json           pooling mode(s) (new `pooling_mode` or the legacy
                                         `pooling_mode_*_tokens` booleans), include_prompt
    config_sentence_transformers.json    prompts, default_prompt_name, similarity_fn_name
    sparse_linear.pt, colbert_linear.pt  bge-m3's heads (FlagEmbedding), tensors only

Builtin presets that are Keras backbones (Kaggle's bge_m3, multilingual_e5_*) carry none of
these; their embedding settings are the models' documented ones (EMBEDDING_DEFAULTS).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import pathlib

import torch

from .pooling import LEGACY_POOLING_KEYS, check_pooling_modes

logger = logging.getLogger(__name__)

# Every file name read here, relative to the preset directory (the Transformer and Pooling
# paths come from modules.json; "" and "1_Pooling" are what sentence-transformers writes).
from ..presets import files
from ..presets.files import BGE_M3_HEAD_FILES, SENTENCE_TRANSFORMERS_FILES  # noqa: F401 (the names read)

# The builtin embedding presets (keras_hub: bge-m3 "uses CLS token pooling with L2
# normalization"; multilingual-e5 "prefix inputs with 'query: ' ... 'passage: '"; the e5 model
# cards mean-pool and normalize).
_E5 = {"pooling": ("mean",), "normalize": True, "prompts": {"query": "query: ", "passage": "passage: "}}
EMBEDDING_DEFAULTS = {
    "bge_m3": {"pooling": ("cls",), "normalize": True, "prompts": {}},
    "multilingual_e5_base": _E5,
    "multilingual_e5_large": _E5,
}

_SUPPORTED_MODULES = ("Transformer", "Pooling", "Normalize")
SIMILARITY_FUNCTIONS = ("cosine", "dot")


@dataclasses.dataclass
class EmbeddingConfig:
    """How a backbone's token vectors become text embeddings."""

    pooling: tuple[str, ...] = ("mean",)
    normalize: bool = False
    include_prompt: bool = True
    max_seq_length: int | None = None  # None: the backbone's (capped at it anyway)
    do_lower_case: bool = False
    prompts: dict = dataclasses.field(default_factory=dict)
    default_prompt_name: str | None = None
    similarity: str = "cosine"
    transformer_directory: pathlib.Path | None = None  # where the backbone + tokenizer live


def _read_json_object(path: pathlib.Path) -> dict:
    """A JSON object file of the preset, or {} when it has none."""
    return files.read_json(path, required=False) or {}


def read_embedding_config(directory: pathlib.Path, builtin_name: str | None = None) -> EmbeddingConfig:
    """The embedding settings of a resolved preset directory.

    A sentence-transformers directory (modules.json) is read exactly; a builtin embedding
    preset gets its documented settings; anything else pools the mean, unnormalized (what
    sentence-transformers does with a plain transformers checkpoint), with a log line.
    """
    directory = pathlib.Path(directory)
    if (directory / "modules.json").is_file():
        return _read_sentence_transformers(directory)
    if builtin_name in EMBEDDING_DEFAULTS:
        defaults = EMBEDDING_DEFAULTS[builtin_name]
        return EmbeddingConfig(
            pooling=defaults["pooling"],
            normalize=defaults["normalize"],
            prompts=dict(defaults["prompts"]),
            transformer_directory=directory,
        )
    logger.info("%s has no modules.json: mean pooling without normalization.", directory)
    return EmbeddingConfig(transformer_directory=directory)


def _read_sentence_transformers(directory: pathlib.Path) -> EmbeddingConfig:
    modules_path = directory / "modules.json"
    modules = files.read_json(modules_path, expect=None)
    if not isinstance(modules, list) or not all(isinstance(m, dict) and "type" in m for m in modules):
        raise ValueError(f"{str(modules_path)!r} must be a list of {{'type', 'path', ...}} objects.")
    config = EmbeddingConfig(pooling=())
    kinds = []
    for module in sorted(modules, key=lambda m: m.get("idx", 0)):
        kind = str(module["type"]).rsplit(".", 1)[-1]
        path = directory / str(module.get("path", ""))
        if kind not in _SUPPORTED_MODULES:
            raise ValueError(
                f"{str(modules_path)!r} lists a {module['type']} module; roberta_torch's TextEmbedder "
                f"reads only {', '.join(_SUPPORTED_MODULES)} modules (RoBERTa / XLM-R encoders)."
            )
        kinds.append(kind)
        if kind == "Transformer":
            _read_transformer(path, config)
        elif kind == "Pooling":
            _read_pooling(path / "config.json", config)
        else:
            config.normalize = True
    if kinds[:1] != ["Transformer"] or kinds.count("Transformer") != 1:
        raise ValueError(f"{str(modules_path)!r} must start with its one Transformer module; got {kinds}.")
    if not config.pooling:
        raise ValueError(
            f"{str(modules_path)!r} has no Pooling module: its output is token vectors, not one "
            "embedding per text. Pass pooling=... to TextEmbedder.from_preset to choose one."
        )
    _read_sentence_transformers_config(directory / "config_sentence_transformers.json", config)
    return config


def _read_transformer(path: pathlib.Path, config: EmbeddingConfig) -> None:
    config.transformer_directory = path
    settings = _read_json_object(path / "sentence_bert_config.json")
    max_length = settings.get("max_seq_length")
    if max_length is None:
        # sentence-transformers >= 5 keeps it as the tokenizer's model_max_length, capped by
        # the model's max_position_embeddings (huge "no limit" sentinels included).
        max_length = _read_json_object(path / "tokenizer_config.json").get("model_max_length")
        positions = _read_json_object(path / "config.json").get("max_position_embeddings")
        if positions is not None:
            max_length = positions if max_length is None else min(max_length, positions, key=_length_key(path))
    if max_length is not None:
        config.max_seq_length = _length_key(path)(max_length)
    config.do_lower_case = bool(settings.get("do_lower_case", False))


def _length_key(path: pathlib.Path):
    """A length read from `path`'s JSON files as an int; ValueError for anything else
    (a bool, a string, NaN, Infinity, < 2)."""

    def check(value) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 2:
            raise ValueError(f"max_seq_length {value!r} read from {str(path)!r} must be an int >= 2.")
        return int(value)

    return check


def _read_pooling(path: pathlib.Path, config: EmbeddingConfig) -> None:
    settings = _read_json_object(path)
    if not settings:
        raise FileNotFoundError(f"The Pooling module's config {str(path)!r} is missing or empty.")
    if "pooling_mode" in settings:
        modes = settings["pooling_mode"]
    else:
        modes = tuple(mode for key, mode in LEGACY_POOLING_KEYS.items() if settings.get(key))
        modes = modes or ("mean",)
    config.pooling = check_pooling_modes(modes, f"pooling_mode in {str(path)!r}")
    config.include_prompt = bool(settings.get("include_prompt", True))


def _read_sentence_transformers_config(path: pathlib.Path, config: EmbeddingConfig) -> None:
    settings = _read_json_object(path)
    prompts = settings.get("prompts") or {}
    if not isinstance(prompts, dict) or not all(isinstance(v, str) for v in prompts.values()):
        raise ValueError(f"`prompts` in {str(path)!r} must map names to strings; got {prompts!r}.")
    config.prompts = dict(prompts)
    config.default_prompt_name = settings.get("default_prompt_name")
    if config.default_prompt_name is not None and config.default_prompt_name not in prompts:
        raise ValueError(
            f"default_prompt_name {config.default_prompt_name!r} in {str(path)!r} is not one of its "
            f"prompts {sorted(prompts)}."
        )
    similarity = settings.get("similarity_fn_name") or "cosine"
    if similarity not in SIMILARITY_FUNCTIONS:
        raise ValueError(
            f"similarity_fn_name {similarity!r} in {str(path)!r} is not supported; roberta_torch "
            f"computes {', '.join(SIMILARITY_FUNCTIONS)}."
        )
    config.similarity = similarity


# -- bge-m3 heads -------------------------------------------------------------------------------


def load_bge_m3_heads(directory: pathlib.Path, hidden_dim: int) -> dict[str, dict[str, torch.Tensor]] | None:
    """{"sparse_linear": {"weight", "bias"}, "colbert_linear": {...}} when both files exist.

    Loaded with `torch.load(weights_only=True)`; a file must hold exactly a `weight` (out,
    hidden_dim) and a `bias` (out,) tensor (sparse: out = 1).
    """
    paths = [pathlib.Path(directory) / name for name in BGE_M3_HEAD_FILES]
    present = [p.is_file() for p in paths]
    if not any(present):
        return None
    if not all(present):
        missing = [p.name for p, ok in zip(paths, present) if not ok]
        raise FileNotFoundError(f"bge-m3 heads in {str(directory)!r} are incomplete: {missing} missing.")
    heads = {}
    for path in paths:
        heads[path.stem] = _load_linear_state(path, hidden_dim, out_features=1 if path.stem == "sparse_linear" else None)
    return heads


def _load_linear_state(path: pathlib.Path, hidden_dim: int, out_features: int | None) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # weights_only refuses anything but tensors and plain containers
        raise ValueError(
            f"{str(path)!r} could not be loaded as tensors only (torch.load(weights_only=True)): {error}"
        ) from error
    if not isinstance(state, dict) or set(state) != {"weight", "bias"}:
        found = sorted(map(str, state)) if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{str(path)!r} must hold exactly the tensors 'weight' and 'bias'; found {found}.")
    for key, value in state.items():
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            raise ValueError(f"{str(path)!r}: {key!r} must be a floating-point tensor; got {type(value).__name__}.")
    weight, bias = state["weight"], state["bias"]
    out = weight.shape[0] if weight.ndim == 2 else -1
    expected_weight = (out_features or max(out, 1), hidden_dim)
    if tuple(weight.shape) != expected_weight or tuple(bias.shape) != (expected_weight[0],):
        raise ValueError(
            f"{str(path)!r}: 'weight' {tuple(weight.shape)} / 'bias' {tuple(bias.shape)} do not fit a "
            f"Linear({hidden_dim}, {expected_weight[0]}): expected {expected_weight} / ({expected_weight[0]},)."
        )
    return {"weight": weight.float(), "bias": bias.float()}
