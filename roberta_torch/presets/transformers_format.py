"""Hugging Face transformers checkpoints (RobertaModel / XLMRobertaModel and their task
models): config.json with `model_type` "roberta" / "xlm-roberta", weights in
model.safetensors, a sharded model.safetensors.index.json, or (only with allow_pickle=True)
pytorch_model.bin loaded with `torch.load(weights_only=True)`.

Two tensors need more than a rename:
  * transformers keeps `max_position_embeddings = L + pad_token_id + 1` position rows; the
    first `pad_token_id + 1` (2 in every real checkpoint) are reserved, so our row i is
    their row i + pad_token_id + 1 (their positions count from pad_token_id + 1);
  * `token_type_embeddings` row 0 is added to every token (Keras has no token types), so
    it is folded into every position row.
"""

from __future__ import annotations

import json
import logging
import math
import pathlib

import torch

from . import files
from .files import PICKLE_FILE, PICKLE_INDEX, SAFETENSORS_FILE, SAFETENSORS_INDEX
from .mapping import COPY, Row, SourceTensor, Transform, table_rows

logger = logging.getLogger(__name__)

NAME = "transformers"
LAYER_KEY_PATTERN = r"^encoder\.layer\.(\d+)\."

MODEL_TYPES = {"roberta": "RobertaBackbone", "xlm-roberta": "XLMRobertaBackbone"}
# Close relatives whose computation differs, with the reason (for the error message).
_UNREPRESENTABLE_MODEL_TYPES = {
    "roberta-prelayernorm": "it is a pre-LayerNorm transformer",
    "xlm-roberta-xl": "it is a pre-LayerNorm transformer",
    "bert": "its positions start at 0 and it uses token types",
}
LAYER_NORM_EPSILON = 1e-5
# Buffers that hold no weights (transformers' position_ids / token_type_ids helpers).
IGNORED_PREFIXES = ("embeddings.position_ids", "embeddings.token_type_ids")
# Task heads of transformers' task models: a backbone leaves them (and logs that it did).
HEAD_PREFIXES = ("pooler.", "lm_head.", "classifier.", "qa_outputs.")

# Position rows below pad_token_id + 1 are reserved; the inverse puts zeros there.
SKIP_RESERVED_POSITIONS = Transform(
    "skip_reserved_positions",
    lambda t, d: t[d["position_offset"] :],
    lambda t, d: torch.cat([t.new_zeros(d["position_offset"], t.shape[1]), t]),
    lambda s, d: (s[0] + d["position_offset"], *s[1:]),
)


def _no_inverse(tensor, dims):
    raise ValueError("token_type_embeddings is folded into the position embeddings and has no inverse")


# Row 0 (the only token type Keras inputs use) added to every position row.
TOKEN_TYPE_ZERO = Transform(
    "token_type_zero", lambda t, d: t[0], _no_inverse, lambda s, d: (d["type_vocab_size"], s[1])
)

# (transformers key, model key, transform, part of 3 for the fused QKV or None, add)
_EMBEDDING_TABLE = (
    ("embeddings.word_embeddings.weight", "token_embedding.weight", COPY, None, False),
    (
        "embeddings.position_embeddings.weight",
        "position_embedding.weight",
        SKIP_RESERVED_POSITIONS,
        None,
        False,
    ),
    ("embeddings.token_type_embeddings.weight", "position_embedding.weight", TOKEN_TYPE_ZERO, None, True),
    ("embeddings.LayerNorm.weight", "embeddings_layer_norm.weight", COPY, None, False),
    ("embeddings.LayerNorm.bias", "embeddings_layer_norm.bias", COPY, None, False),
)
# Relative to encoder.layer.{i}. and layers.{i}. (torch Linear on both sides: no transpose).
_ENCODER_TABLE = (
    ("attention.self.query.weight", "attention.qkv.weight", COPY, 0),
    ("attention.self.query.bias", "attention.qkv.bias", COPY, 0),
    ("attention.self.key.weight", "attention.qkv.weight", COPY, 1),
    ("attention.self.key.bias", "attention.qkv.bias", COPY, 1),
    ("attention.self.value.weight", "attention.qkv.weight", COPY, 2),
    ("attention.self.value.bias", "attention.qkv.bias", COPY, 2),
    ("attention.output.dense.weight", "attention.output.weight", COPY, None),
    ("attention.output.dense.bias", "attention.output.bias", COPY, None),
    ("attention.output.LayerNorm.weight", "attention_layer_norm.weight", COPY, None),
    ("attention.output.LayerNorm.bias", "attention_layer_norm.bias", COPY, None),
    ("intermediate.dense.weight", "feedforward.intermediate.weight", COPY, None),
    ("intermediate.dense.bias", "feedforward.intermediate.bias", COPY, None),
    ("output.dense.weight", "feedforward.output.weight", COPY, None),
    ("output.dense.bias", "feedforward.output.bias", COPY, None),
    ("output.LayerNorm.weight", "feedforward_layer_norm.weight", COPY, None),
    ("output.LayerNorm.bias", "feedforward_layer_norm.bias", COPY, None),
)


def conversion_rows(config: dict, model_keys=None) -> list[Row]:
    rows = table_rows(_EMBEDDING_TABLE)
    for i in range(config["num_layers"]):
        rows += table_rows(_ENCODER_TABLE, f"encoder.layer.{i}.", f"layers.{i}.")
    return rows


def table_dims(config: dict, parsed_dims: dict) -> dict:
    return parsed_dims


def class_name(raw: dict, path) -> str:
    model_type = raw.get("model_type")
    if model_type not in MODEL_TYPES:
        return parse_config(raw, path, {})[0]  # raises the unsupported-type error
    return MODEL_TYPES[model_type]


def position_offset(raw: dict) -> int:
    """transformers' reserved position rows: pad_token_id + 1 (2 in every real checkpoint)."""
    pad = raw.get("pad_token_id", 1)
    return (pad if isinstance(pad, int) and not isinstance(pad, bool) and pad >= 0 else 1) + 1


def max_sequence_length(raw: dict) -> int | None:
    """Our max_sequence_length: the position rows after the reserved ones."""
    rows = raw.get("max_position_embeddings")
    return rows - position_offset(raw) if isinstance(rows, int) and not isinstance(rows, bool) else None


def hub_weight_candidates(allow_pickle: bool) -> tuple[str, ...]:
    return (SAFETENSORS_FILE, SAFETENSORS_INDEX) + ((PICKLE_FILE, PICKLE_INDEX) if allow_pickle else ())


def is_config(config: dict) -> bool:
    return "model_type" in config


def parse_config(hf_config: dict, path, overrides: dict) -> tuple[str, dict, dict]:
    """transformers config -> (class name, our constructor config, dims for the table).

    Raises one ValueError naming every field this architecture cannot represent.
    """
    model_type = hf_config.get("model_type")
    if model_type not in MODEL_TYPES:
        reason = _UNREPRESENTABLE_MODEL_TYPES.get(model_type, "it is not a RoBERTa encoder")
        raise ValueError(
            f"{path}: model_type={model_type!r} cannot be loaded ({reason}). Supported transformers "
            f"model types: {', '.join(MODEL_TYPES)}."
        )
    problems = []
    required = (
        "vocab_size",
        "num_hidden_layers",
        "num_attention_heads",
        "hidden_size",
        "intermediate_size",
        "max_position_embeddings",
    )
    for field in required:
        if not isinstance(hf_config.get(field), int):
            problems.append(f"{field}={hf_config.get(field)!r}: required, an int")
    activation = hf_config.get("hidden_act", "gelu")
    if activation != "gelu":
        problems.append(f"hidden_act={activation!r}: only 'gelu' (exact erf GELU, as keras_hub) is supported")
    position_type = hf_config.get("position_embedding_type", "absolute")
    if position_type != "absolute":
        problems.append(
            f"position_embedding_type={position_type!r}: only absolute position embeddings are supported"
        )
    for flag in ("is_decoder", "add_cross_attention", "is_encoder_decoder"):
        if hf_config.get(flag):
            problems.append(
                f"{flag}=True: decoders and cross-attention are not supported (bidirectional encoder only)"
            )
    eps = hf_config.get("layer_norm_eps", 1e-12)
    if not isinstance(eps, (int, float)) or not math.isclose(eps, LAYER_NORM_EPSILON, rel_tol=1e-6):
        problems.append(f"layer_norm_eps={eps!r}: the model's LayerNorm epsilon is {LAYER_NORM_EPSILON}")
    pad = hf_config.get("pad_token_id")
    if not isinstance(pad, int) or pad < 0:
        problems.append(f"pad_token_id={pad!r}: required (positions count from pad_token_id + 1)")
    hidden, heads = hf_config.get("hidden_size"), hf_config.get("num_attention_heads")
    if isinstance(hidden, int) and isinstance(heads, int) and heads > 0 and hidden % heads:
        problems.append(f"hidden_size={hidden} is not divisible by num_attention_heads={heads}")
    hidden_dropout = hf_config.get("hidden_dropout_prob", 0.1)
    attention_dropout = hf_config.get("attention_probs_dropout_prob", hidden_dropout)
    if hidden_dropout != attention_dropout and "dropout" not in overrides:
        problems.append(
            f"hidden_dropout_prob={hidden_dropout} != attention_probs_dropout_prob={attention_dropout}: the model "
            "has one dropout rate; pass dropout=<rate> to choose it"
        )
    type_vocab_size = hf_config.get("type_vocab_size", 1)
    if not isinstance(type_vocab_size, int) or type_vocab_size < 1:
        problems.append(f"type_vocab_size={type_vocab_size!r}: expected an int >= 1")
    if not problems:
        offset = position_offset(hf_config)
        sequence_length = max_sequence_length(hf_config)
        if sequence_length < 1:
            problems.append(
                f"max_position_embeddings={hf_config['max_position_embeddings']} leaves no positions after the "
                f"{offset} reserved rows (pad_token_id={pad})"
            )
    if problems:
        raise ValueError(
            f"{path}: this transformers config cannot be represented by roberta_torch "
            f"(nothing was loaded):\n  - " + "\n  - ".join(problems)
        )
    if type_vocab_size > 1:
        logger.info(
            "type_vocab_size=%d: only token type 0 is used (folded into the positions).", type_vocab_size
        )
    config = {
        "vocabulary_size": hf_config["vocab_size"],
        "num_layers": hf_config["num_hidden_layers"],
        "num_heads": heads,
        "hidden_dim": hidden,
        "intermediate_dim": hf_config["intermediate_size"],
        "dropout": float(hidden_dropout),
        "max_sequence_length": sequence_length,
    }
    dims = {"num_heads": heads, "position_offset": offset, "type_vocab_size": type_vocab_size}
    return MODEL_TYPES[model_type], config, dims


# -- reading ----------------------------------------------------------------------------------


def read_pickle(path: pathlib.Path) -> dict[str, SourceTensor]:
    """pytorch_model.bin through torch.load(weights_only=True): tensors only, no code."""
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"Cannot read {path} with torch.load(weights_only=True): {error}") from error
    if not isinstance(state_dict, dict):
        raise ValueError(f"{path} holds a {type(state_dict).__name__}, not a state dict.")
    out = {}
    for key, tensor in state_dict.items():
        if not isinstance(tensor, torch.Tensor):
            raise ValueError(f"{path}: entry {key!r} is a {type(tensor).__name__}, not a tensor.")
        dtype = str(tensor.dtype).removeprefix("torch.")
        out[key] = SourceTensor(tuple(tensor.shape), dtype, path.name, lambda tensor=tensor: tensor)
    return out


def _read_index(directory: pathlib.Path, index_name: str, read_file, root) -> dict[str, SourceTensor]:
    index = directory / index_name
    weight_map = files.read_weight_map(index)
    out: dict[str, SourceTensor] = {}
    for name in sorted({shard for shards in weight_map.values() for shard in shards}):
        shard = files.preset_file(directory, name, root)
        if shard is None:
            raise FileNotFoundError(
                f"Shard {name} named by {index_name} is missing from directory {str(directory)!r}."
            )
        for key, tensor in read_file(shard).items():
            if key in out:
                raise ValueError(f"Tensor {key!r} appears in both {out[key].file} and {shard.name}.")
            out[key] = tensor
    listed_missing = sorted(k for k, f in weight_map.items() if k not in out or out[k].file not in f)
    if listed_missing:
        raise ValueError(
            f"{index}: tensors not found in the shard the index names: {', '.join(listed_missing[:20])}"
            + (f" and {len(listed_missing) - 20} more." if len(listed_missing) > 20 else ".")
        )
    return out


def read_tensors(
    directory: pathlib.Path, *, allow_pickle: bool = False, root=None
) -> tuple[dict[str, SourceTensor], str]:
    """All tensors of a transformers checkpoint directory, with keys normalized: the
    `roberta.` prefix of task models removed, legacy LayerNorm `gamma`/`beta` renamed.
    Returns (tensors, description of the files read)."""
    def present(name):
        return files.preset_file(directory, name, root) is not None

    if present(SAFETENSORS_FILE):
        raw, described = files.read_safetensors(directory / SAFETENSORS_FILE), str(directory / SAFETENSORS_FILE)
    elif present(SAFETENSORS_INDEX):
        raw = _read_index(directory, SAFETENSORS_INDEX, files.read_safetensors, root)
        described = str(directory / SAFETENSORS_INDEX)
    elif present(PICKLE_FILE) or present(PICKLE_INDEX):
        pickle_name = PICKLE_FILE if present(PICKLE_FILE) else PICKLE_INDEX
        if not allow_pickle:
            raise ValueError(
                f"{directory} holds only {pickle_name} (a pickle), which is not loaded by default. Pass "
                "allow_pickle=True to load it with torch.load(weights_only=True), or convert it to "
                "safetensors first."
            )
        if pickle_name == PICKLE_FILE:
            raw, described = read_pickle(directory / PICKLE_FILE), str(directory / PICKLE_FILE)
        else:
            raw, described = _read_index(directory, PICKLE_INDEX, read_pickle, root), str(directory / PICKLE_INDEX)
    else:
        raise FileNotFoundError(
            f"No transformers weights in directory {str(directory)!r}: expected {SAFETENSORS_FILE}, "
            f"{SAFETENSORS_INDEX} (or {PICKLE_FILE} with allow_pickle=True)."
        )
    return _normalize_keys(raw, described), described


def _normalize_keys(raw: dict[str, SourceTensor], described: str) -> dict[str, SourceTensor]:
    out = {}
    for key, tensor in raw.items():
        name = key.removeprefix("roberta.")
        if name.endswith("LayerNorm.gamma"):
            name = name[: -len("gamma")] + "weight"
        elif name.endswith("LayerNorm.beta"):
            name = name[: -len("beta")] + "bias"
        if name in out:
            raise ValueError(f"{described}: {key!r} and another key both map to {name!r}.")
        out[name] = tensor
    return out
