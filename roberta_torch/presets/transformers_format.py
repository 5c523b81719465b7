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
add head rows and config fields through `TaskExport`. Shards are split by huggingface_hub's
`split_torch_state_dict_into_shards` (what save_pretrained uses).

`TransformersLoader` serves every component of a transformers checkpoint: the backbone, a
task model (`architectures`, or the head tensors the file holds), and the tokenizer files.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import pathlib

import torch

from . import bge_m3_files, files, names
from .loader import BackboneSpec, PresetLoader, StoredTask, TaskTensors
from .mapping import COPY, Row, SourceTensor, Transform, source_tensors_from_state_dict, table_rows
from .names import PICKLE_FILE, PICKLE_INDEX, SAFETENSORS_FILE, SAFETENSORS_INDEX

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
# RobertaModel's pooler (dense + tanh over <s>) is no task head: the loader keeps it in the
# model's TransformersSource record and writes it back.
HEAD_PREFIXES = ("lm_head.", "classifier.", "qa_outputs.")

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

# (transformers key, model key, transform[, add])
_EMBEDDING_TABLE = (
    ("embeddings.word_embeddings.weight", "token_embedding.weight", COPY),
    ("embeddings.position_embeddings.weight", "position_embedding.weight", SKIP_RESERVED_POSITIONS),
    ("embeddings.token_type_embeddings.weight", "position_embedding.weight", TOKEN_TYPE_ZERO, True),
    ("embeddings.LayerNorm.weight", "embeddings_layer_norm.weight", COPY),
    ("embeddings.LayerNorm.bias", "embeddings_layer_norm.bias", COPY),
)
# Relative to encoder.layer.{i}. and layers.{i}. (torch Linear on both sides: no transpose).
_ENCODER_TABLE = (
    ("attention.self.query.weight", "attention.query.weight", COPY),
    ("attention.self.query.bias", "attention.query.bias", COPY),
    ("attention.self.key.weight", "attention.key.weight", COPY),
    ("attention.self.key.bias", "attention.key.bias", COPY),
    ("attention.self.value.weight", "attention.value.weight", COPY),
    ("attention.self.value.bias", "attention.value.bias", COPY),
    ("attention.output.dense.weight", "attention.output.weight", COPY),
    ("attention.output.dense.bias", "attention.output.bias", COPY),
    ("attention.output.LayerNorm.weight", "attention_layer_norm.weight", COPY),
    ("attention.output.LayerNorm.bias", "attention_layer_norm.bias", COPY),
    ("intermediate.dense.weight", "feedforward.intermediate.weight", COPY),
    ("intermediate.dense.bias", "feedforward.intermediate.bias", COPY),
    ("output.dense.weight", "feedforward.output.weight", COPY),
    ("output.dense.bias", "feedforward.output.bias", COPY),
    ("output.LayerNorm.weight", "feedforward_layer_norm.weight", COPY),
    ("output.LayerNorm.bias", "feedforward_layer_norm.bias", COPY),
)


def conversion_rows(config: dict, model_keys=None) -> list[Row]:
    rows = table_rows(_EMBEDDING_TABLE)
    for i in range(config["num_layers"]):
        rows += table_rows(_ENCODER_TABLE, f"encoder.layer.{i}.", f"layers.{i}.")
    return rows


def table_dims(config: dict, parsed_dims: dict) -> dict:
    return parsed_dims


def position_offset(raw: dict) -> int:
    """transformers' reserved position rows: pad_token_id + 1 (2 in every real checkpoint)."""
    pad = raw.get("pad_token_id", 1)
    return (pad if isinstance(pad, int) and not isinstance(pad, bool) and pad >= 0 else 1) + 1


def max_sequence_length(raw: dict) -> int | None:
    """Our max_sequence_length: the position rows after the reserved ones."""
    rows = raw.get("max_position_embeddings")
    return rows - position_offset(raw) if isinstance(rows, int) and not isinstance(rows, bool) else None


def parse_config(hf_config: dict, path, overrides: dict) -> BackboneSpec:
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
    return BackboneSpec(MODEL_TYPES[model_type], config, dims)


# -- reading ----------------------------------------------------------------------------------


def read_pickle(path: pathlib.Path) -> dict[str, SourceTensor]:
    """pytorch_model.bin through torch.load(weights_only=True): tensors only, no code."""
    state_dict = files.read_pickle(path)
    if not isinstance(state_dict, dict):
        raise ValueError(f"{path} holds a {type(state_dict).__name__}, not a state dict.")
    out = {}
    for key, tensor in state_dict.items():
        if not isinstance(tensor, torch.Tensor):
            raise ValueError(f"{path}: entry {key!r} is a {type(tensor).__name__}, not a tensor.")
        dtype = str(tensor.dtype).removeprefix("torch.")
        out[key] = SourceTensor(tuple(tensor.shape), dtype, path.name, lambda tensor=tensor: tensor)
    return out


def _read_index(preset, index: pathlib.Path, read_file) -> dict[str, SourceTensor]:
    weight_map = files.read_weight_map(index)
    out: dict[str, SourceTensor] = {}
    for name in sorted({shard for shards in weight_map.values() for shard in shards}):
        shard = preset.file(name)
        if shard is None:
            raise FileNotFoundError(preset.missing(f"Shard {name} named by {index.name}"))
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


def read_tensors(preset) -> tuple[dict[str, SourceTensor], str]:
    """All tensors of a transformers checkpoint, with keys normalized: the `roberta.` prefix
    of task models removed, legacy LayerNorm `gamma`/`beta` renamed. Pickles are read only
    with the preset's allow_pickle opt-in. Returns (tensors, description of the files read)."""
    for name, index in ((SAFETENSORS_FILE, False), (SAFETENSORS_INDEX, True)):
        path = preset.file(name)
        if path is not None:
            raw = _read_index(preset, path, files.read_safetensors) if index else files.read_safetensors(path)
            return _normalize_keys(raw, str(path)), str(path)
    if preset.allow_pickle:
        for name, index in ((PICKLE_FILE, False), (PICKLE_INDEX, True)):
            path = preset.file(name)
            if path is not None:
                raw = _read_index(preset, path, read_pickle) if index else read_pickle(path)
                return _normalize_keys(raw, str(path)), str(path)
    elif not preset.source.remote:  # a local pickle is found without downloading it
        for name in (PICKLE_FILE, PICKLE_INDEX):
            if preset.file(name) is not None:
                raise ValueError(
                    f"{preset.source.describe()} holds only {name} (a pickle), which is not loaded by default. Pass "
                    "allow_pickle=True to load it with torch.load(weights_only=True), or convert it to "
                    "safetensors first."
                )
    if not preset.source.remote:
        raise FileNotFoundError(
            f"No transformers weights in directory {str(preset.directory)!r}: expected {SAFETENSORS_FILE}, "
            f"{SAFETENSORS_INDEX} (or {PICKLE_FILE} with allow_pickle=True)."
        )
    tried = f"{SAFETENSORS_FILE}, {SAFETENSORS_INDEX}" + (f", {PICKLE_FILE}, {PICKLE_INDEX}" if preset.allow_pickle else "")
    hint = "" if preset.allow_pickle else " A repository with only pytorch_model.bin needs allow_pickle=True."
    raise FileNotFoundError(preset.missing(f"No weights file (tried {tried})") + hint)


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

    @property
    def source_keys(self) -> tuple[str, ...]:
        """Checkpoint keys kept here that no model tensor holds (the pooler)."""
        return tuple(self.pooler)


POOLER_KEYS = ("pooler.dense.weight", "pooler.dense.bias")


def source_record(source: dict, dims: dict) -> TransformersSource:
    """The checkpoint tensors writing needs to reproduce it exactly (copied to CPU)."""
    pooler = {k: source[k].load().detach().cpu().clone() for k in POOLER_KEYS if k in source}
    hidden = source["embeddings.word_embeddings.weight"].shape[1] if "embeddings.word_embeddings.weight" in source else None
    shapes_fit = len(pooler) == len(POOLER_KEYS) and tuple(pooler[POOLER_KEYS[0]].shape) == (hidden, hidden) and tuple(
        pooler[POOLER_KEYS[1]].shape
    ) == (hidden,)
    if pooler and shapes_fit:
        logger.info(
            "Kept transformers' pooler (pooler.dense.*: a dense layer + tanh over <s>, which keras_hub's backbone "
            "does not have) to write it back with the model."
        )
    return TransformersSource(
        positions=source["embeddings.position_embeddings.weight"].load().detach().cpu().clone(),
        token_types=source["embeddings.token_type_embeddings.weight"].load().detach().cpu().clone(),
        pooler=pooler if shapes_fit else {},
    )


# -- writing ----------------------------------------------------------------------------------

ARCHITECTURES = {"RobertaBackbone": ("roberta", "RobertaModel"), "XLMRobertaBackbone": ("xlm-roberta", "XLMRobertaModel")}
DEFAULT_MAX_SHARD_SIZE = "50GB"  # transformers 5's save_pretrained default
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
    kept = getattr(model, "transformers_source", None)
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
        kept = getattr(model, "transformers_source", None)
        hidden = model.hidden_dim
        if isinstance(kept, TransformersSource) and kept.pooler and tuple(kept.pooler[POOLER_KEYS[0]].shape) == (hidden, hidden):
            out.update({k: v.to(dtype) for k, v in kept.pooler.items()})
        else:
            out[POOLER_KEYS[0]] = torch.zeros(hidden, hidden, dtype=dtype)
            out[POOLER_KEYS[1]] = torch.zeros(hidden, dtype=dtype)
    # Own storage per tensor (a converted tensor may be a view of a larger one): safetensors
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


def write_weights(directory: pathlib.Path, tensors: dict, max_shard_size) -> list[str]:
    """model.safetensors, or shards + model.safetensors.index.json above `max_shard_size`
    (split by huggingface_hub, as save_pretrained does); returns the file names written (the
    index last)."""
    from huggingface_hub import split_torch_state_dict_into_shards

    limit = parse_shard_size(max_shard_size)
    save_file = files.import_safetensors().torch.save_file
    split = split_torch_state_dict_into_shards(tensors, max_shard_size=limit, filename_pattern="model{suffix}.safetensors")
    if not split.is_sharded:
        with files.atomic_output(directory / SAFETENSORS_FILE) as temporary:
            save_file(tensors, str(temporary), metadata={"format": "pt"})
        return [SAFETENSORS_FILE]
    names_written = []
    for name, keys in split.filename_to_tensors.items():
        with files.atomic_output(directory / files.check_shard_name(name, SAFETENSORS_INDEX)) as temporary:
            save_file({key: tensors[key] for key in keys}, str(temporary), metadata={"format": "pt"})
        names_written.append(name)
    index = {
        "metadata": {
            "total_parameters": sum(t.numel() for t in tensors.values()),
            "total_size": sum(_storage_bytes(t) for t in tensors.values()),
        },
        "weight_map": dict(sorted(split.tensor_to_filename.items())),
    }
    files.write_json(directory / SAFETENSORS_INDEX, index)
    return [*names_written, SAFETENSORS_INDEX]


def save(model, directory: pathlib.Path, *, max_shard_size=DEFAULT_MAX_SHARD_SIZE, task: TaskExport | None = None) -> None:
    """Write `model` (a backbone; with `task`, the backbone of that task model) as a
    transformers checkpoint: weights first, config.json last, so an interrupted save
    never leaves a config next to partial weights (saving.py also stages the directory)."""
    parse_shard_size(max_shard_size)  # a bad size fails before anything is written
    tensors = export_tensors(model, task)
    write_weights(directory, tensors, max_shard_size)
    type_vocab_size = tensors[("roberta." if task else "") + "embeddings.token_type_embeddings.weight"].shape[0]
    files.write_json(directory / names.CONFIG_FILE, transformers_config(model, type_vocab_size=type_vocab_size, task=task))


# -- the loader ---------------------------------------------------------------------------------

# transformers architecture suffix -> task kind.
TASK_KINDS = {
    "ForSequenceClassification": "text_classifier",
    "ForMaskedLM": "masked_lm",
    "ForTokenClassification": "token_classifier",
    "ForQuestionAnswering": "question_answerer",
}
# The tensors that show which head a checkpoint holds when its `architectures` does not say
# (first match wins; the classifier's are told apart by their names).
_HEAD_TENSORS = (
    ("classifier.out_proj.weight", "text_classifier"),
    ("classifier.weight", "token_classifier"),
    ("qa_outputs.weight", "question_answerer"),
    ("lm_head.dense.weight", "masked_lm"),
)


def _task_class(kind: str, backbone_class_name: str, classes) -> type:
    for task_cls in classes:
        if task_cls.task_kind == kind and task_cls.backbone_cls.keras_class_name == backbone_class_name:
            return task_cls
    raise ValueError(f"No {kind} task for a {backbone_class_name}.")


def head_config(kind: str, raw: dict, num_classes: int | None = None) -> dict:
    """The head's constructor arguments from a transformers config.json (`num_classes`: the
    head tensors' count, when they say)."""
    if kind == "masked_lm":
        return {}
    if kind == "question_answerer":
        return {"dropout": 0.0}  # RobertaForQuestionAnswering has no dropout before qa_outputs
    classifier_dropout = raw.get("classifier_dropout")
    dropout = classifier_dropout if classifier_dropout is not None else raw.get("hidden_dropout_prob", 0.1)
    id2label = raw.get("id2label")
    stated = len(id2label) if isinstance(id2label, dict) and id2label else raw.get("num_labels", 2)
    config = {"num_classes": num_classes if num_classes is not None else stated, "dropout": dropout}
    if isinstance(id2label, dict) and id2label and len(id2label) == config["num_classes"]:
        config["id2label"] = id2label
        config["label2id"] = raw.get("label2id")
    if raw.get("problem_type") is not None:
        config["problem_type"] = raw["problem_type"]
    return config


class TransformersLoader(PresetLoader):
    """A transformers checkpoint (RobertaModel, XLMRobertaModel or one of their task models)."""

    NAME = NAME
    IGNORED_PREFIXES = IGNORED_PREFIXES
    HEAD_PREFIXES = HEAD_PREFIXES
    LAYER_KEY_PATTERN = LAYER_KEY_PATTERN

    def __init__(self, preset, raw_config: dict):
        super().__init__(preset, raw_config)
        self._tensors = None

    @classmethod
    def is_config(cls, raw: dict) -> bool:
        return "model_type" in raw

    def parse_config(self, overrides: dict) -> BackboneSpec:
        return parse_config(self.raw_config, self.preset.file(names.CONFIG_FILE), overrides)

    def backbone_class_name(self) -> str:
        # The model type says it; the other fields need not be complete for this (a
        # tokenizer next to a partial config).
        model_type = self.raw_config.get("model_type")
        return MODEL_TYPES[model_type] if model_type in MODEL_TYPES else self.backbone_spec().class_name

    def max_sequence_length(self) -> int | None:
        return max_sequence_length(self.raw_config)

    def read_backbone_tensors(self):
        if self._tensors is None:  # headers only; read once for the task check and the load
            self._tensors = read_tensors(self.preset)
        return self._tensors

    def conversion_rows(self, config: dict, model_keys=None) -> list[Row]:
        return conversion_rows(config, model_keys)

    def table_dims(self, config: dict, dims: dict) -> dict:
        return table_dims(config, dims)

    def source_record(self, source: dict, dims: dict) -> TransformersSource:
        return source_record(source, dims)

    # -- task -----------------------------------------------------------------------------------

    def stored_task(self, classes) -> StoredTask:
        """The head `architectures` names ("RobertaForSequenceClassification", ...); when it names
        none (missing, "RobertaModel", a custom class), the head the file's tensors hold, so a
        trained head is never replaced by a fresh one."""
        backbone = self.backbone_class_name()
        architectures = self.raw_config.get("architectures")
        for architecture in architectures if isinstance(architectures, list) else []:
            for suffix, kind in TASK_KINDS.items():
                if isinstance(architecture, str) and architecture.endswith(suffix):
                    task_cls = _task_class(kind, backbone, classes)
                    return StoredTask(task_cls, head_config(kind, self.raw_config), f"config.json ({architecture})")
        source, _ = self.read_backbone_tensors()
        for key, kind in _HEAD_TENSORS:
            if key in source:
                count = source[key].shape[0] if kind in ("text_classifier", "token_classifier") else None
                return StoredTask(
                    _task_class(kind, backbone, classes),
                    head_config(kind, self.raw_config, count),
                    f"a checkpoint holding {key.rsplit('.', 1)[0]}.* (architectures={architectures!r})",
                )
        return StoredTask(None, {}, "a backbone checkpoint")

    def read_task_tensors(self, task_cls) -> TaskTensors:
        source, description = self.read_backbone_tensors()
        ignored = tuple(p for p in IGNORED_PREFIXES if p.startswith("embeddings."))
        return TaskTensors(dict(source), description, ignored, dict(task_cls.transformers_tied))

    def task_rows(self, task_cls, backbone_config: dict) -> list[Row]:
        rows = [
            Row(row.source_key, "backbone." + row.model_key, row.transform, add=row.add)
            for row in conversion_rows(backbone_config)
        ]
        return rows + table_rows(task_cls.transformers_head_table)

    # -- embedder -------------------------------------------------------------------------------

    def bge_m3_heads(self, hidden_dim: int):
        return bge_m3_files.read_heads(self.preset, hidden_dim)
