"""Conversion tables as data, and the strict assembler both checkpoint formats share.

A table is a list of `Row`s, one per source tensor: which source key fills which model
tensor (or which rows of it: the fused QKV projection takes three sources), through which
reversible `Transform`. Reading applies `Transform.to_model`; writing walks the same rows
and applies `Transform.to_source`, so the inverse is never written twice.

`assemble_state_dict` is strict: every model tensor filled, every source tensor used or on
the format's named ignore list, every shape checked before any data is read. It collects
every problem and raises one error that lists each offending key with both shapes and the
file it is in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import torch

Shape = tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Transform:
    """A reversible map between a source tensor and (a row block of) a model tensor.

    to_model(source, dims) -> model block; to_source(block, dims) -> source tensor;
    source_shape(block_shape, dims) -> the source shape that yields a block of that shape.
    `dims` holds the sizes a reshape needs (num_heads, ...).
    """

    name: str
    to_model: Callable[[torch.Tensor, Mapping], torch.Tensor]
    to_source: Callable[[torch.Tensor, Mapping], torch.Tensor]
    source_shape: Callable[[Shape, Mapping], Shape]


COPY = Transform("copy", lambda t, d: t, lambda t, d: t, lambda s, d: tuple(s))
# Keras Dense kernels are (in, out); torch Linear weights are (out, in).
TRANSPOSE = Transform("transpose", lambda t, d: t.t(), lambda t, d: t.t(), lambda s, d: (s[1], s[0]))


@dataclasses.dataclass(frozen=True)
class Row:
    """source_key fills model_key (rows [part*n/parts, (part+1)*n/parts) of it when
    `parts` > 1) with transform.to_model(source). `add=True` adds instead of filling
    (a source folded into a tensor another row fills)."""

    source_key: str
    model_key: str
    transform: Transform = COPY
    part: int = 0
    parts: int = 1
    add: bool = False

    def block_shape(self, model_shape: Shape) -> Shape:
        return (model_shape[0] // self.parts, *model_shape[1:])


def table_rows(table, source_prefix: str = "", model_prefix: str = "") -> list[Row]:
    """Rows from a format's literal table.

    Each entry is (source key, model key, transform, part) or (..., part, add), where `part`
    is the third (0, 1, 2) of the fused QKV a source fills, or None for a whole tensor. The
    prefixes place a per-layer table at one layer (e.g. "encoder.layer.3.", "layers.3.").
    """
    rows = []
    for source_key, model_key, transform, part, *add in table:
        rows.append(
            Row(
                source_prefix + source_key,
                model_prefix + model_key,
                transform,
                part=part or 0,
                parts=1 if part is None else 3,
                add=bool(add and add[0]),
            )
        )
    return rows


@dataclasses.dataclass(frozen=True)
class SourceTensor:
    """A tensor in a checkpoint file, read only when needed: shape, dtype name, file, loader."""

    shape: Shape
    dtype: str
    file: str
    load: Callable[[], torch.Tensor]


_FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")


def assemble_state_dict(
    rows: list[Row],
    source: Mapping[str, SourceTensor],
    model_tensors: Mapping[str, torch.Tensor],
    dims: Mapping,
    *,
    ignored_prefixes: tuple[str, ...] = (),
    description: str,
) -> dict[str, torch.Tensor]:
    """Build the full model state dict from `source`, or raise one ValueError listing every
    missing, unused, mis-shaped or non-float tensor.

    model_tensors: the model's state dict (meta tensors are fine): shapes and dtypes.
    description: what is being read (a file or a directory), for the error message.
    Returns model key -> tensor with the model tensor's shape and dtype, on the CPU.
    """
    problems = []
    used = set()
    filled: dict[str, int] = {}
    for row in rows:
        if row.model_key not in model_tensors:
            problems.append(f"{row.model_key}: the model has no such tensor (conversion table bug)")
            continue
        if not row.add:
            filled[row.model_key] = filled.get(row.model_key, 0) + 1
        model_shape = tuple(model_tensors[row.model_key].shape)
        expected = tuple(row.transform.source_shape(row.block_shape(model_shape), dims))
        tensor = source.get(row.source_key)
        if tensor is None:
            problems.append(
                f"{row.source_key}: missing (expected shape {expected}, for model tensor {row.model_key})"
            )
            continue
        used.add(row.source_key)
        if tuple(tensor.shape) != expected:
            problems.append(
                f"{row.source_key} (in {tensor.file}): shape {tuple(tensor.shape)} in the file, "
                f"expected {expected} (model tensor {row.model_key} {model_shape})"
            )
        elif tensor.dtype not in _FLOAT_DTYPES:
            problems.append(
                f"{row.source_key} (in {tensor.file}): dtype {tensor.dtype}, expected a float dtype"
            )
    for model_key in model_tensors:
        if model_key not in filled:
            problems.append(f"{model_key}: no source tensor fills this model tensor")
    for key in sorted(set(source) - used):
        if not key.startswith(ignored_prefixes):
            problems.append(
                f"{key} (in {source[key].file}): shape {tuple(source[key].shape)}, not used by the model"
            )
    if problems:
        ignored = f" (ignored: {', '.join(p + '*' for p in ignored_prefixes)})" if ignored_prefixes else ""
        raise ValueError(
            f"Cannot load {description}: {len(problems)} problem(s){ignored}:\n  - " + "\n  - ".join(problems)
        )

    blocks: dict[str, list] = {}
    additions: dict[str, list] = {}
    for row in rows:
        block = row.transform.to_model(source[row.source_key].load().float(), dims)
        if row.add:
            additions.setdefault(row.model_key, []).append(block)
        else:
            blocks.setdefault(row.model_key, []).append((row.part, block))
    state_dict = {}
    for model_key, target in model_tensors.items():
        parts = [block for _, block in sorted(blocks[model_key], key=lambda item: item[0])]
        tensor = parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)
        for addition in additions.get(model_key, []):
            tensor = tensor + addition
        if tuple(tensor.shape) != tuple(target.shape):  # a table whose transforms disagree
            raise ValueError(
                f"{model_key}: conversion produced {tuple(tensor.shape)}, expected {tuple(target.shape)}"
            )
        state_dict[model_key] = tensor.to(target.dtype).contiguous()
    return state_dict


def source_tensors_from_state_dict(
    rows: list[Row], state_dict: Mapping[str, torch.Tensor], dims: Mapping
) -> dict[str, torch.Tensor]:
    """The inverse of assemble_state_dict for tables without `add` rows: source key -> tensor."""
    out = {}
    for row in rows:
        if row.add:
            raise ValueError(f"{row.source_key}: a folded ('add') row has no inverse")
        tensor = state_dict[row.model_key]
        block = tensor.chunk(row.parts, dim=0)[row.part] if row.parts > 1 else tensor
        out[row.source_key] = row.transform.to_source(block, dims).contiguous()
    return out


def check_shard_name(name, index_file: str) -> str:
    """A shard named by an index file must be a plain file name next to it."""
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name:
        raise ValueError(
            f"{index_file} names shard {name!r}; shards must be plain file names in the same directory."
        )
    return name
