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

Writing (`save`, format="transformers") walks the same table backwards: reserved position
rows and the token types become zeros (the positions carry the sum), except for a model
loaded from a transformers checkpoint, whose originals the loader kept
(`TransformersSource`), so that writing it back is tensor-for-tensor identical. Task models
add head rows and config fields through `TaskExport`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import pathlib

import torch

from . import files
from .files import PICKLE_FILE, PICKLE_INDEX, SAFETENSORS_FILE, SAFETENSORS_INDEX
from .mapping import COPY, Row, SourceTensor, Transform, source_tensors_from_state_dict, table_rows

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


def _token_types_adding_nothing(positions, dims):
    # The positions already hold the folded sum, so the token types written add zero.
    return positions.new_zeros(dims["type_vocab_size"], positions.shape[1])


# Row 0 (the only token type Keras inputs use) added to every position row; the inverse
# writes zeros (an exact split: transformers adds 0 and the positions carry the sum).
TOKEN_TYPE_ZERO = Transform(
    "token_type_zero",
    lambda t, d: t[0],
    _token_types_adding_nothing,
    lambda s, d: (d["type_vocab_size"], s[1]),
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


# -- what a transformers checkpoint held beyond the model --------------------------------------


@dataclasses.dataclass(frozen=True)
class TransformersSource:
    """The checkpoint tensors a loaded model cannot hold itself, kept so that writing it back
    is tensor-for-tensor identical (set by the loader as `model.transformers_source`; not in
    the state dict, not moved by `.to()`, lost when only the state dict is saved).

    positions:   the full position table (reserved rows included), as in the file.
    token_types: the full token-type table, as in the file.
    pooler:      `pooler.dense.weight` / `.bias` when the checkpoint had them, else {}.

    Why the positions themselves and not just the token-type row: reading folds token type 0
    into every position row in float32 and rounds once, and (a + b) - b is not always a in
    floating point. Writing recomputes that fold from these originals and, wherever the
    model's value still equals it, writes the original; elements changed since (training)
    are split as value - token type 0.
    """

    positions: torch.Tensor
    token_types: torch.Tensor
    pooler: dict


SOURCE_ATTRIBUTE = "transformers_source"
POOLER_KEYS = ("pooler.dense.weight", "pooler.dense.bias")


def remember_source(model, source: dict, dims: dict) -> None:
    """Keep (on CPU) the checkpoint tensors writing needs to reproduce it exactly."""
    pooler = {k: source[k].load().detach().cpu().clone() for k in POOLER_KEYS if k in source}
    if len(pooler) != len(POOLER_KEYS):
        pooler = {}
    setattr(
        model,
        SOURCE_ATTRIBUTE,
        TransformersSource(
            positions=source["embeddings.position_embeddings.weight"].load().detach().cpu().clone(),
            token_types=source["embeddings.token_type_embeddings.weight"].load().detach().cpu().clone(),
            pooler=pooler,
        ),
    )


# -- writing ----------------------------------------------------------------------------------

ARCHITECTURES = {"RobertaBackbone": ("roberta", "RobertaModel"), "XLMRobertaBackbone": ("xlm-roberta", "XLMRobertaModel")}
DEFAULT_MAX_SHARD_SIZE = "50GB"  # transformers 5's save_pretrained default
SHARD_NAME = "model-{index:05d}-of-{count:05d}.safetensors"
PAD_TOKEN_ID, BOS_TOKEN_ID, EOS_TOKEN_ID = 1, 0, 2
_SIZE_UNITS = (("GIB", 2**30), ("MIB", 2**20), ("KIB", 2**10), ("GB", 10**9), ("MB", 10**6), ("KB", 10**3))


@dataclasses.dataclass(frozen=True)
class TaskExport:
    """How a task model adds itself to the transformers files (the hook task models use).

    architecture: transformers' class, e.g. "RobertaForSequenceClassification".
    rows:         head rows (transformers key -> key in `state_dict`), the same `Row`s the
                  task's reader uses; their inverse writes the head.
    state_dict:   the task model's state dict the rows read from.
    config:       extra config.json fields (num_labels, id2label, label2id, problem_type, ...).
    pooler:       whether transformers' class has a pooler (RobertaModel does; the task
                  classes do not).
    A task model provides it as `model.transformers_task_export()` and passes its backbone
    (`model.backbone`) to the writer; backbone tensors are then prefixed "roberta.".
    """

    architecture: str
    rows: tuple
    state_dict: dict
    config: dict
    pooler: bool = False


def parse_shard_size(max_shard_size) -> int:
    """transformers' `max_shard_size`: an int (bytes) or "5GB" / "500MB" / "10GiB" / "1KB"
    (decimal units, *iB binary; a lowercase trailing "b" means bits, as in transformers)."""
    if isinstance(max_shard_size, bool) or not isinstance(max_shard_size, (int, str)):
        raise TypeError(
            f"`max_shard_size` must be an int (bytes) or a str like '5GB'; got {type(max_shard_size).__name__}."
        )
    if isinstance(max_shard_size, int):
        size = max_shard_size
    else:
        text = max_shard_size.strip()
        for unit, factor in _SIZE_UNITS:
            number = text[: -len(unit)].strip()
            if text.upper().endswith(unit) and number.isdigit():
                size = int(number) * factor
                if not unit.endswith("IB") and text.endswith("b"):
                    size //= 8  # "5Gb": gigabits, as transformers reads it
                break
        else:
            raise ValueError(
                f"`max_shard_size`={max_shard_size!r} is not a size; use an int (bytes) or a number with a unit "
                "(e.g. '5GB', '500MB', '10GiB')."
            )
    if size < 1:
        raise ValueError(f"`max_shard_size` must be positive; got {max_shard_size!r}.")
    return size


def _model_dtype(model) -> torch.dtype:
    return model.token_embedding.weight.dtype


def _folded_positions(model, dims: dict, dtype: torch.dtype):
    """(position table, token-type table) for transformers, see TransformersSource."""
    current = model.position_embedding.weight.detach().cpu()
    kept = getattr(model, SOURCE_ATTRIBUTE, None)
    offset = dims["position_offset"]
    if not isinstance(kept, TransformersSource) or (
        tuple(kept.positions.shape) != (current.shape[0] + offset, current.shape[1])
        or kept.token_types.ndim != 2
        or kept.token_types.shape[1] != current.shape[1]
    ):
        reserved = current.new_zeros(offset, current.shape[1])
        return torch.cat([reserved, current]).to(dtype), current.new_zeros(1, current.shape[1]).to(dtype)
    original = kept.positions[offset:]
    type_zero = kept.token_types[0].to(torch.float32)
    # Exactly what reading computed (mapping.fill_tensors: a float32 sum rounded once).
    folded = (original.to(torch.float32) + type_zero).to(current.dtype)
    changed = (current.to(torch.float32) - type_zero).to(dtype)
    body = torch.where(folded == current, original.to(dtype), changed)
    return torch.cat([kept.positions[:offset].to(dtype), body]), kept.token_types.to(dtype)


def backbone_tensors(model, *, pooler: bool = True) -> dict[str, torch.Tensor]:
    """The transformers state dict of a backbone (RobertaModel's keys and order), in the
    model's dtype: the inverse of the reading table, plus the positions and token types
    (see _folded_positions) and, with `pooler`, the checkpoint's pooler or zeros
    (roberta_torch has no pooler, as keras_hub; zeros make pooler_output 0 rather than
    leaving transformers to initialize it randomly)."""
    dtype = _model_dtype(model)
    config = model.get_config()
    dims = {"num_heads": model.num_heads, "position_offset": PAD_TOKEN_ID + 1, "type_vocab_size": 1}
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    rows = conversion_rows(config, state)
    out = source_tensors_from_state_dict(rows, state, dims)
    positions, token_types = _folded_positions(model, dims, dtype)
    out["embeddings.position_embeddings.weight"] = positions
    out["embeddings.token_type_embeddings.weight"] = token_types
    if pooler:
        kept = getattr(model, SOURCE_ATTRIBUTE, None)
        hidden = model.hidden_dim
        if isinstance(kept, TransformersSource) and kept.pooler and tuple(kept.pooler[POOLER_KEYS[0]].shape) == (hidden, hidden):
            out.update({k: v.to(dtype) for k, v in kept.pooler.items()})
        else:
            out[POOLER_KEYS[0]] = torch.zeros(hidden, hidden, dtype=dtype)
            out[POOLER_KEYS[1]] = torch.zeros(hidden, dtype=dtype)
    # Own storage per tensor (the Q, K, V parts are views of one fused tensor): safetensors
    # and the shard sizes then count each tensor once.
    return {k: v.to(dtype).clone(memory_format=torch.contiguous_format) for k, v in out.items()}


def transformers_config(model, *, type_vocab_size: int = 1, task: TaskExport | None = None) -> dict:
    """config.json as transformers 5 writes it for RobertaModel / XLMRobertaModel."""
    model_type, architecture = ARCHITECTURES[model.keras_class_name]
    config = {
        "add_cross_attention": False,
        "architectures": [task.architecture if task else architecture],
        "attention_probs_dropout_prob": model.dropout,
        "bos_token_id": BOS_TOKEN_ID,
        "classifier_dropout": None,
        "dtype": str(_model_dtype(model)).removeprefix("torch."),
        "eos_token_id": EOS_TOKEN_ID,
        "hidden_act": "gelu",
        "hidden_dropout_prob": model.dropout,
        "hidden_size": model.hidden_dim,
        "initializer_range": 0.02,
        "intermediate_size": model.intermediate_dim,
        "is_decoder": False,
        "layer_norm_eps": LAYER_NORM_EPSILON,
        "max_position_embeddings": model.max_sequence_length + PAD_TOKEN_ID + 1,
        "model_type": model_type,
        "num_attention_heads": model.num_heads,
        "num_hidden_layers": model.num_layers,
        "pad_token_id": PAD_TOKEN_ID,
        "position_embedding_type": "absolute",
        "tie_word_embeddings": True,
        "type_vocab_size": type_vocab_size,
        "use_cache": True,
        "vocab_size": model.vocabulary_size,
    }
    if task is not None:
        config.update(task.config)
    return dict(sorted(config.items()))


def export_tensors(model, task: TaskExport | None = None) -> dict[str, torch.Tensor]:
    """Every tensor to write, in transformers' order: the backbone's (prefixed "roberta."
    for a task model), then the task head's rows."""
    tensors = backbone_tensors(model, pooler=task.pooler if task else True)
    if task is None:
        return tensors
    dtype = _model_dtype(model)
    out = {"roberta." + k: v for k, v in tensors.items()}
    head = source_tensors_from_state_dict(list(task.rows), task.state_dict, {})
    out.update({k: v.detach().cpu().to(dtype).contiguous() for k, v in head.items()})
    return out


def _storage_bytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def split_shards(tensors: dict, max_shard_size: int) -> list[dict]:
    """huggingface_hub's split (what save_pretrained uses): tensors in order, a new shard when
    the next would pass the limit; a tensor larger than the limit gets a shard of its own."""
    shards, current, current_size = [], {}, 0
    for key, tensor in tensors.items():
        size = _storage_bytes(tensor)
        if size > max_shard_size:
            shards.append({key: tensor})
            continue
        if current and current_size + size > max_shard_size:
            shards.append(current)
            current, current_size = {}, 0
        current[key] = tensor
        current_size += size
    if current:
        shards.append(current)
    return shards


def write_weights(directory: pathlib.Path, tensors: dict, max_shard_size) -> list[str]:
    """model.safetensors, or shards + model.safetensors.index.json above `max_shard_size`;
    returns the file names written (the index last)."""
    limit = parse_shard_size(max_shard_size)
    save_file = files.import_safetensors().torch.save_file
    shards = split_shards(tensors, limit)
    if len(shards) <= 1:
        with files.atomic_output(directory / SAFETENSORS_FILE) as temporary:
            save_file(tensors, str(temporary), metadata={"format": "pt"})
        return [SAFETENSORS_FILE]
    weight_map, names = {}, []
    for index, shard in enumerate(shards, start=1):
        name = SHARD_NAME.format(index=index, count=len(shards))
        with files.atomic_output(directory / name) as temporary:
            save_file(shard, str(temporary), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, name))
        names.append(name)
    index = {
        "metadata": {
            "total_parameters": sum(t.numel() for t in tensors.values()),
            "total_size": sum(_storage_bytes(t) for t in tensors.values()),
        },
        "weight_map": dict(sorted(weight_map.items())),
    }
    files.write_json(directory / SAFETENSORS_INDEX, index)
    return [*names, SAFETENSORS_INDEX]


def save(model, directory: pathlib.Path, *, max_shard_size=DEFAULT_MAX_SHARD_SIZE, task: TaskExport | None = None) -> None:
    """Write `model` (a backbone; with `task`, the backbone of that task model) as a
    transformers checkpoint: weights first, config.json last, so an interrupted save
    never leaves a config next to partial weights (saving.py also stages the directory)."""
    parse_shard_size(max_shard_size)  # a bad size fails before anything is written
    tensors = export_tensors(model, task)
    write_weights(directory, tensors, max_shard_size)
    type_vocab_size = tensors[("roberta." if task else "") + "embeddings.token_type_embeddings.weight"].shape[0]
    files.write_json(directory / files.CONFIG_FILE, transformers_config(model, type_vocab_size=type_vocab_size, task=task))
