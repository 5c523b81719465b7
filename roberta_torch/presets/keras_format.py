"""Keras preset directories: config.json + metadata.json + model.weights.h5 (or the sharded
model.weights.json + model_NNNNN.weights.h5), read and written exactly as keras-hub 0.32 /
Keras 3 `saving_lib` do.

The weights file is a tree of groups named after each layer's snake_cased class,
de-duplicated in creation order (`transformer_encoder`, `transformer_encoder_1`, ...).
Every layer, weightless or not, has a `vars` group carrying its Keras layer name in a
`name` attribute; variables are datasets `vars/0`, `vars/1` in creation order. Keras loads
by path, so this module maps by path too (a shard's first `vars` group carries no name).

HDF5 is read defensively: soft and external links, external storage and virtual datasets
are refused, and every dataset's shape is checked before its data is read.

`KerasLoader` serves every component of a Keras preset: the backbone (config.json +
model.weights.h5), a task (task.json + task.weights.h5 next to the backbone's files), the
tokenizer (tokenizer.json + assets/tokenizer/) and the preprocessor (preprocessor.json).
"""

from __future__ import annotations

import datetime
import logging
import pathlib
from collections.abc import Mapping

import torch

from .. import optional
from . import files, names
from .names import KERAS_WEIGHTS_FILE, KERAS_WEIGHTS_INDEX
from .loader import BackboneSpec, PresetLoader, StoredTask, TaskTensors
from .mapping import COPY, TRANSPOSE, Row, SourceTensor, Transform, source_tensors_from_state_dict, table_rows

logger = logging.getLogger(__name__)

NAME = "keras"
# transformer_encoder -> layer 0, transformer_encoder_<k> -> layer k.
LAYER_KEY_PATTERN = r"^layers/transformer_encoder(?:_(\d+))?/"
# The source-key namespace of task.weights.h5 tensors (its paths could repeat the backbone's).
TASK_SOURCE_PREFIX = names.KERAS_TASK_WEIGHTS_FILE + ":"
# Keras task.json entries that are not head constructor arguments.
_KERAS_NON_HEAD_KEYS = ("backbone", "preprocessor", "name", "trainable", "dtype")
# The Keras versions whose file layout this module writes (metadata.json records them).
KERAS_VERSION = "3.15.1"
KERAS_HUB_VERSION = "0.32.0"
KERAS_TASKS = {
    "RobertaBackbone": ["MaskedLM", "TextClassifier"],
    "XLMRobertaBackbone": ["MaskedLM", "TextClassifier", "TextEmbedder"],
}
_MAX_TREE_DEPTH = 16


def _heads_in_kernel_to_model(kernel, dims):  # (H, N, D) -> (N*D, H)
    return kernel.reshape(kernel.shape[0], -1).t()


def _heads_in_kernel_to_source(weight, dims):  # (N*D, H) -> (H, N, D)
    return weight.t().reshape(weight.shape[1], dims["num_heads"], -1)


def _heads_out_kernel_to_model(kernel, dims):  # (N, D, H) -> (H, N*D)
    return kernel.reshape(-1, kernel.shape[-1]).t()


def _heads_out_kernel_to_source(weight, dims):  # (H, N*D) -> (N, D, H)
    return weight.t().reshape(dims["num_heads"], -1, weight.shape[0])


def _split_heads(size, dims):
    return (dims["num_heads"], size // dims["num_heads"])


# Query/key/value kernels (H, N, D) and biases (N, D).
HEADS_IN_KERNEL = Transform(
    "heads_in_kernel",
    _heads_in_kernel_to_model,
    _heads_in_kernel_to_source,
    lambda s, d: (s[1], *_split_heads(s[0], d)),
)
HEADS_BIAS = Transform(
    "heads_bias",
    lambda t, d: t.reshape(-1),
    lambda t, d: t.reshape(d["num_heads"], -1),
    lambda s, d: _split_heads(s[0], d),
)
# The attention output kernel (N, D, H).
HEADS_OUT_KERNEL = Transform(
    "heads_out_kernel",
    _heads_out_kernel_to_model,
    _heads_out_kernel_to_source,
    lambda s, d: (*_split_heads(s[1], d), s[0]),
)

# (dataset path, model key, transform)
_EMBEDDING_TABLE = (
    ("layers/token_and_position_embedding/token_embedding/vars/0", "token_embedding.weight", COPY),
    ("layers/token_and_position_embedding/position_embedding/vars/0", "position_embedding.weight", COPY),
    ("layers/layer_normalization/vars/0", "embeddings_layer_norm.weight", COPY),
    ("layers/layer_normalization/vars/1", "embeddings_layer_norm.bias", COPY),
)
# Relative to layers/<encoder group>/ and layers.{i}.
_ENCODER_TABLE = (
    ("_self_attention_layer/query_dense/vars/0", "attention.query.weight", HEADS_IN_KERNEL),
    ("_self_attention_layer/query_dense/vars/1", "attention.query.bias", HEADS_BIAS),
    ("_self_attention_layer/key_dense/vars/0", "attention.key.weight", HEADS_IN_KERNEL),
    ("_self_attention_layer/key_dense/vars/1", "attention.key.bias", HEADS_BIAS),
    ("_self_attention_layer/value_dense/vars/0", "attention.value.weight", HEADS_IN_KERNEL),
    ("_self_attention_layer/value_dense/vars/1", "attention.value.bias", HEADS_BIAS),
    ("_self_attention_layer/output_dense/vars/0", "attention.output.weight", HEADS_OUT_KERNEL),
    ("_self_attention_layer/output_dense/vars/1", "attention.output.bias", COPY),
    ("_self_attention_layer_norm/vars/0", "attention_layer_norm.weight", COPY),
    ("_self_attention_layer_norm/vars/1", "attention_layer_norm.bias", COPY),
    ("_feedforward_intermediate_dense/vars/0", "feedforward.intermediate.weight", TRANSPOSE),
    ("_feedforward_intermediate_dense/vars/1", "feedforward.intermediate.bias", COPY),
    ("_feedforward_output_dense/vars/0", "feedforward.output.weight", TRANSPOSE),
    ("_feedforward_output_dense/vars/1", "feedforward.output.bias", COPY),
    ("_feedforward_layer_norm/vars/0", "feedforward_layer_norm.weight", COPY),
    ("_feedforward_layer_norm/vars/1", "feedforward_layer_norm.bias", COPY),
)

# Every group of the tree (weightless ones included) with its Keras layer name, as
# keras_hub's RobertaBackbone creates them in a fresh session.
_BACKBONE_GROUPS = (
    ("layers/input_layer", "token_ids"),
    ("layers/input_layer_1", "padding_mask"),
    ("layers/token_and_position_embedding", "embeddings"),
    ("layers/token_and_position_embedding/token_embedding", "token_embedding"),
    ("layers/token_and_position_embedding/position_embedding", "position_embedding"),
    ("layers/layer_normalization", "embeddings_layer_norm"),
    ("layers/dropout", "embeddings_dropout"),
)
# Relative to layers/<encoder group>; `{suffix}` is Keras's auto-name counter ("", "_1", ...).
_ENCODER_GROUPS = (
    ("", "transformer_layer_{i}"),
    ("_self_attention_layer", "self_attention_layer"),
    ("_self_attention_layer/query_dense", "query"),
    ("_self_attention_layer/key_dense", "key"),
    ("_self_attention_layer/value_dense", "value"),
    ("_self_attention_layer/_softmax", "softmax{suffix}"),
    ("_self_attention_layer/_dropout_layer", "dropout{suffix}"),
    ("_self_attention_layer/output_dense", "attention_output"),
    ("_self_attention_layer_norm", "self_attention_layer_norm"),
    ("_self_attention_dropout", "self_attention_dropout"),
    ("_feedforward_intermediate_dense", "feedforward_intermediate_dense"),
    ("_feedforward_output_dense", "feedforward_output_dense"),
    ("_feedforward_layer_norm", "feedforward_layer_norm"),
    ("_feedforward_dropout", "feedforward_dropout"),
)


def encoder_group(index: int) -> str:
    """Keras's de-duplicated group name of the index-th TransformerEncoder."""
    return "transformer_encoder" if index == 0 else f"transformer_encoder_{index}"


def conversion_rows(config: dict, model_keys=None) -> list[Row]:
    """The Keras <-> model table for a backbone with `config["num_layers"]` layers."""
    rows = table_rows(_EMBEDDING_TABLE)
    for i in range(config["num_layers"]):
        rows += table_rows(_ENCODER_TABLE, f"layers/{encoder_group(i)}/", f"layers.{i}.")
    return rows


def tree_groups(num_layers: int, model_name: str) -> list[tuple[str, str]]:
    """(group path, Keras layer name) of every `vars` group the file holds."""
    groups = [("", model_name), *_BACKBONE_GROUPS]
    for i in range(num_layers):
        suffix = "" if i == 0 else f"_{i}"
        for path, name in _ENCODER_GROUPS:
            full = f"layers/{encoder_group(i)}" + (f"/{path}" if path else "")
            groups.append((full, name.format(i=i, suffix=suffix)))
    return groups


def table_dims(config: dict, parsed_dims: dict) -> dict:
    return {"num_heads": config["num_heads"]}


# -- config -----------------------------------------------------------------------------------


def parse_config(raw: dict, path, overrides: dict) -> BackboneSpec:
    """Keras config.json -> (class name, constructor config, table dims).

    As in keras_hub, the stored dtype policy is not used (the model is float32 unless
    `dtype=` is passed), but a policy we cannot represent is still refused.
    """
    from ..dtype_policy import get_dtype_policy

    class_name, config = raw.get("class_name"), raw.get("config")
    if not isinstance(class_name, str) or not isinstance(config, dict):
        raise ValueError(
            f"{path}: a Keras preset config needs string 'class_name' and object 'config' entries."
        )
    config = dict(config)
    stored = config.pop("dtype", None)
    if stored is not None:
        get_dtype_policy(stored)
    return BackboneSpec(class_name, config, {})


def max_sequence_length(raw: dict) -> int | None:
    config = raw.get("config")
    value = config.get("max_sequence_length") if isinstance(config, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def keras_config(model) -> dict:
    """The config.json Keras writes for `model`."""
    config = model.get_config()
    policy = config.pop("dtype")
    from ..dtype_policy import get_dtype_policy

    trainable = any(p.requires_grad for p in model.parameters())
    return {
        "module": model.keras_module,
        "class_name": model.keras_class_name,
        "config": {
            "name": getattr(model, "name", model.keras_config_name),
            "trainable": trainable,
            "dtype": get_dtype_policy(policy).to_keras_config(),
            **config,
        },
        "registered_name": f"keras_hub>{model.keras_class_name}",
    }


def keras_metadata(model) -> dict:
    return {
        "keras_version": KERAS_VERSION,
        "keras_hub_version": KERAS_HUB_VERSION,
        "parameter_count": sum(p.numel() for p in model.parameters()),
        "date_saved": datetime.datetime.now().strftime("%Y-%m-%d@%H:%M:%S"),
        "tasks": KERAS_TASKS.get(model.keras_class_name, []),
    }


# -- reading ----------------------------------------------------------------------------------


def _import_h5py():
    return optional.require("h5py", "Reading or writing Keras presets")


def weight_files(preset) -> list[pathlib.Path]:
    """The .h5 files holding a preset's weights: model.weights.h5, or the shards that
    model.weights.json names. FileNotFoundError names the missing file and the preset."""
    single = preset.file(KERAS_WEIGHTS_FILE)
    if single is not None:
        return [single]
    index = preset.file(KERAS_WEIGHTS_INDEX)
    if index is None:
        raise FileNotFoundError(
            preset.missing(f"Keras weights (neither {KERAS_WEIGHTS_FILE} nor {KERAS_WEIGHTS_INDEX})")
        )
    shards = []
    for name in files.shard_names(index):
        path = preset.file(name)
        if path is None:
            raise FileNotFoundError(preset.missing(f"Shard {name} named by {KERAS_WEIGHTS_INDEX}"))
        shards.append(path)
    return shards


def describe_files(weights: list[pathlib.Path]) -> str:
    return ", ".join(str(f) for f in weights) if len(weights) < 3 else f"{weights[0].parent} ({len(weights)} shards)"


def _dataset_dtype(dataset) -> str:
    if dataset.attrs.get("dtype") == "bfloat16" and dataset.dtype.itemsize == 2:
        return "bfloat16"
    return dataset.dtype.name if dataset.dtype.kind == "f" else f"{dataset.dtype} (not a float)"


def _dataset_loader(path: pathlib.Path, name: str, dtype: str):
    def load() -> torch.Tensor:
        h5py = _import_h5py()
        import numpy as np

        try:
            with h5py.File(path, "r") as f:
                array = f[name][()]
        except (OSError, RuntimeError, KeyError) as error:
            raise ValueError(
                f"Cannot read {name} from {path}: the file is corrupt or truncated ({error})."
            ) from error
        if dtype == "bfloat16":
            return torch.from_numpy(np.ascontiguousarray(array).view(np.int16)).view(torch.bfloat16)
        return torch.from_numpy(np.ascontiguousarray(array))

    return load


def _dataset_reader(path: pathlib.Path, name: str, dtype: str):
    """read_into for one dataset: HDF5 copies the data straight into the target's memory
    (this is what keeps the peak of loading an .h5 preset at the parameters' size)."""

    def read_into(target: torch.Tensor) -> bool:
        if dtype == "bfloat16" or str(target.dtype).removeprefix("torch.") != dtype:
            return False
        if target.device.type != "cpu" or not target.is_contiguous():
            return False
        h5py = _import_h5py()
        try:
            with h5py.File(path, "r") as f:
                f[name].read_direct(target.numpy())
        except (OSError, RuntimeError, KeyError, TypeError) as error:
            raise ValueError(f"Cannot read {name} from {path}: the file is corrupt or truncated ({error}).") from error
        return True

    return read_into


def _walk(group, prefix: str, path: pathlib.Path, depth: int, out: dict) -> None:
    h5py = _import_h5py()
    if depth > _MAX_TREE_DEPTH:
        raise ValueError(
            f"Refusing {path}: groups nested deeper than {_MAX_TREE_DEPTH} levels at {prefix!r}."
        )
    for key in group:
        name = f"{prefix}/{key}" if prefix else key
        link = group.get(key, getlink=True)
        if isinstance(link, (h5py.SoftLink, h5py.ExternalLink)):
            raise ValueError(f"Refusing unsafe HDF5 file {path}: {type(link).__name__} at {name!r}.")
        item = group[key]
        if isinstance(item, h5py.Group):
            _walk(item, name, path, depth + 1, out)
        elif isinstance(item, h5py.Dataset):
            if item.is_virtual:
                raise ValueError(f"Refusing unsafe HDF5 file {path}: virtual dataset at {name!r}.")
            if item.external:
                raise ValueError(
                    f"Refusing unsafe HDF5 file {path}: dataset {name!r} stores its data in external files."
                )
            if name in out:
                raise ValueError(f"Dataset {name!r} appears in both {out[name].file} and {path.name}.")
            dtype = _dataset_dtype(item)
            declared = item.size * item.dtype.itemsize
            if item.compression is None and declared > path.stat().st_size:
                # Checked before any allocation: a forged header must not cost gigabytes.
                raise ValueError(
                    f"Refusing {path}: dataset {name!r} declares {declared:,} bytes of data, more than "
                    f"the whole file ({path.stat().st_size:,} bytes); the file is corrupt or truncated."
                )
            out[name] = SourceTensor(
                tuple(item.shape), dtype, path.name, _dataset_loader(path, name, dtype), _dataset_reader(path, name, dtype)
            )
        else:
            raise ValueError(
                f"Refusing HDF5 file {path}: unexpected object {type(item).__name__} at {name!r}."
            )


def read_source_tensors(paths: list[pathlib.Path]) -> dict[str, SourceTensor]:
    """Every dataset of the weight file(s): path -> SourceTensor (data not read yet)."""
    h5py = _import_h5py()
    out: dict[str, SourceTensor] = {}
    for path in paths:
        try:
            with h5py.File(path, "r") as f:
                _walk(f, "", path, 0, out)
        except OSError as error:
            raise ValueError(
                f"Cannot read Keras weights file {path}: not a valid HDF5 file, corrupt or truncated ({error})."
            ) from error
    return out


# -- writing ----------------------------------------------------------------------------------


def _to_numpy(tensor: torch.Tensor):
    """(array, is_bfloat16): bfloat16 goes to HDF5 as 2-byte opaque data, like Keras does."""
    tensor = tensor.detach().cpu().contiguous()
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().view("V2"), True
    return tensor.numpy(), False


def write_weights(
    path: pathlib.Path, source_tensors: Mapping[str, torch.Tensor], groups: list[tuple[str, str]]
) -> None:
    """Write the full Keras tree: every `vars` group with its `name`, then the datasets
    (through a fresh temporary file renamed into place)."""
    h5py = _import_h5py()
    with files.atomic_output(path) as temporary, h5py.File(temporary, "w") as f:
        for group_path, layer_name in groups:
            vars_group = f.require_group(f"{group_path}/vars" if group_path else "vars")
            vars_group.attrs["name"] = layer_name
        for name, tensor in source_tensors.items():
            array, is_bfloat16 = _to_numpy(tensor)
            dataset = f.create_dataset(name, data=array)
            if is_bfloat16:
                dataset.attrs["dtype"] = "bfloat16"


def save(model, directory: pathlib.Path) -> None:
    """config.json + metadata.json + model.weights.h5, exactly as keras_hub writes them; the
    tensors come from the reader's table applied backwards. Weights first, configs last."""
    config = model.get_config()
    rows = conversion_rows(config)
    tensors = source_tensors_from_state_dict(rows, model.state_dict(), table_dims(config, {}))
    groups = tree_groups(model.num_layers, getattr(model, "name", model.keras_config_name))
    write_weights(directory / KERAS_WEIGHTS_FILE, tensors, groups)
    files.write_json(directory / names.CONFIG_FILE, keras_config(model))
    files.write_json(directory / names.KERAS_METADATA_FILE, keras_metadata(model))


# keras_hub compiles every task with Adam(5e-5); task.weights.h5 carries its two scalars.
_KERAS_OPTIMIZER = {"optimizer/vars/0": (0, torch.int32), "optimizer/vars/1": (5e-5, torch.float32)}


def write_task(task, directory: pathlib.Path, head_config: dict, preprocessor: dict | None) -> None:
    """task.weights.h5 and task.json of a task model, exactly as keras-hub 0.32 writes them
    (the backbone's files are written by `save`; `preprocessor`: the preprocessor config
    saved beside it, or None). The head tensors come from the task's keras_head_table, the
    table its loader reads, applied backwards."""
    rows = table_rows(task.keras_head_table)
    tensors = source_tensors_from_state_dict(rows, task.state_dict(), {})
    tensors.update({key: torch.tensor(value, dtype=dtype) for key, (value, dtype) in _KERAS_OPTIMIZER.items()})
    groups = [("", task.keras_config_name), *task.keras_head_groups, ("optimizer", "adam")]
    if preprocessor is not None:
        groups += [
            ("preprocessor", preprocessor["config"]["name"]),
            ("preprocessor/tokenizer", preprocessor["config"]["tokenizer"]["config"]["name"]),
        ]
    write_weights(directory / names.KERAS_TASK_WEIGHTS_FILE, tensors, groups)
    task_config = {
        "module": task.keras_module,
        "class_name": task.keras_class_name,
        "config": {
            "backbone": keras_config(task.backbone),
            "preprocessor": preprocessor,
            "name": task.keras_config_name,
            **head_config,
        },
        "registered_name": f"keras_hub>{task.keras_class_name}",
    }
    files.write_json(directory / names.KERAS_TASK_FILE, task_config)


# -- the loader ---------------------------------------------------------------------------------


class KerasLoader(PresetLoader):
    """A Keras preset: config.json {"class_name", "config"}, model.weights.h5 (or shards),
    and optionally task.json + task.weights.h5, tokenizer.json + assets, preprocessor.json."""

    NAME = NAME
    LAYER_KEY_PATTERN = LAYER_KEY_PATTERN

    @classmethod
    def is_config(cls, raw: dict) -> bool:
        return "class_name" in raw and "config" in raw

    def parse_config(self, overrides: dict) -> BackboneSpec:
        return parse_config(self.raw_config, self.preset.file(names.CONFIG_FILE), overrides)

    def max_sequence_length(self) -> int | None:
        return max_sequence_length(self.raw_config)

    def read_backbone_tensors(self):
        weights = weight_files(self.preset)
        return read_source_tensors(weights), describe_files(weights)

    def conversion_rows(self, config: dict, model_keys=None) -> list[Row]:
        return conversion_rows(config, model_keys)

    def table_dims(self, config: dict, dims: dict) -> dict:
        return table_dims(config, dims)

    # -- task: task.json + task.weights.h5 ------------------------------------------------------

    def stored_task(self, classes) -> StoredTask:
        raw = self.preset.json(names.KERAS_TASK_FILE)
        if raw is None:
            return StoredTask(None, {}, "a backbone preset")
        path = self.preset.file(names.KERAS_TASK_FILE)
        class_name, config = raw.get("class_name"), raw.get("config")
        if not isinstance(class_name, str) or not isinstance(config, dict):
            raise ValueError(f"{path}: a Keras task config needs string 'class_name' and object 'config' entries.")
        by_name = {c.keras_class_name: c for c in classes if c.keras_class_name}
        if class_name not in by_name:
            raise ValueError(
                f"{path} holds a {class_name}, which roberta_torch does not implement "
                f"(supported Keras tasks: {', '.join(by_name)})."
            )
        head_config = {k: v for k, v in config.items() if k not in _KERAS_NON_HEAD_KEYS}
        return StoredTask(by_name[class_name], head_config, f"{names.KERAS_TASK_FILE} ({class_name})")

    def read_task_tensors(self, task_cls) -> TaskTensors:
        weights = weight_files(self.preset)
        task_file = self.preset.file(names.KERAS_TASK_WEIGHTS_FILE)
        if task_file is None:
            raise FileNotFoundError(
                self.preset.missing(f"{names.KERAS_TASK_WEIGHTS_FILE} ({names.KERAS_TASK_FILE} names a "
                                    f"{task_cls.keras_class_name})")
            )
        source = dict(read_source_tensors(weights))
        for key, tensor in read_source_tensors([task_file]).items():
            source[TASK_SOURCE_PREFIX + key] = tensor
        return TaskTensors(
            source, ", ".join(str(f) for f in [*weights[:2], task_file]),
            ignored_prefixes=(TASK_SOURCE_PREFIX + "optimizer/",),  # keras's compile state
        )

    def task_rows(self, task_cls, backbone_config: dict) -> list[Row]:
        rows = [
            Row(row.source_key, "backbone." + row.model_key, row.transform, add=row.add)
            for row in conversion_rows(backbone_config)
        ]
        return rows + table_rows(task_cls.keras_head_table, source_prefix=TASK_SOURCE_PREFIX)
