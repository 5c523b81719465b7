"""Conversion tables as data, and the strict assembler both checkpoint formats share.

A table is a list of `Row`s, one per (source tensor, model tensor) pair: which source key
fills which model tensor, through which reversible `Transform`. Reading applies
`Transform.to_model`; writing walks the same rows and applies `Transform.to_source`, so the
inverse is never written twice.

`assemble_state_dict` is strict: every model tensor filled, every source tensor used or on
the format's named ignore list, every shape checked before any data is read. It collects
every problem and raises one error that lists each offending key with both shapes and the
file it is in. Weights that hold NaN or infinite values load, with one warning per load
naming them and their files (fill_tensors).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping

import torch

logger = logging.getLogger(__name__)

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
    """source_key fills model_key with transform.to_model(source). `add=True` adds instead
    of filling (a source folded into a tensor another row fills)."""

    source_key: str
    model_key: str
    transform: Transform = COPY
    add: bool = False


def table_rows(table, source_prefix: str = "", model_prefix: str = "") -> list[Row]:
    """Rows from a format's literal table.

    Each entry is (source key, model key, transform) or (..., transform, add). The
    prefixes place a per-layer table at one layer (e.g. "encoder.layer.3.", "layers.3.").
    """
    rows = []
    for source_key, model_key, transform, *add in table:
        rows.append(Row(source_prefix + source_key, model_prefix + model_key, transform, add=bool(add and add[0])))
    return rows


@dataclasses.dataclass(frozen=True)
class SourceTensor:
    """A tensor in a checkpoint file, read only when needed: shape, dtype name, file, loader.

    `read_into(target) -> bool`, where a format offers it, reads the data straight into a
    contiguous CPU tensor of the same shape and dtype (no intermediate copy) and returns
    whether it could.
    """

    shape: Shape
    dtype: str
    file: str
    load: Callable[[], torch.Tensor]
    read_into: Callable[[torch.Tensor], bool] | None = None


_FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")


MAX_LISTED_PROBLEMS = 20


def describe_problems(problems: list[str], limit: int = MAX_LISTED_PROBLEMS) -> str:
    """The first `limit` problems, one per line, and how many more there are."""
    lines = "\n  - ".join(problems[:limit])
    more = f"\n  ... and {len(problems) - limit} more" if len(problems) > limit else ""
    return f"\n  - {lines}{more}"


def check_rows(
    rows: list[Row],
    source: Mapping[str, SourceTensor],
    model_tensors: Mapping[str, torch.Tensor],
    dims: Mapping,
    *,
    ignored_prefixes: tuple[str, ...] = (),
    leftover_prefixes: tuple[str, ...] = (),
) -> tuple[list[str], list[str]]:
    """(problems, leftovers): every missing, unused, mis-shaped or non-float tensor, from
    headers only; leftovers are unused source keys under `leftover_prefixes` (tensors that
    belong to something else, e.g. a task head, reported rather than refused)."""
    problems, leftovers = [], []
    used = set()
    filled: dict[str, int] = {}
    for row in rows:
        if row.model_key not in model_tensors:
            problems.append(f"{row.model_key}: the model has no such tensor (conversion table bug)")
            continue
        if not row.add:
            filled[row.model_key] = filled.get(row.model_key, 0) + 1
        model_shape = tuple(model_tensors[row.model_key].shape)
        expected = tuple(row.transform.source_shape(model_shape, dims))
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
        elif filled[model_key] > 1:
            problems.append(f"{model_key}: {filled[model_key]} source tensors fill it (conversion table bug)")
    for key in sorted(set(source) - used):
        if key.startswith(ignored_prefixes):
            continue
        if key.startswith(leftover_prefixes):
            leftovers.append(key)
            continue
        problems.append(f"{key} (in {source[key].file}): shape {tuple(source[key].shape)}, not used by the model")
    return problems, leftovers


def _take_whole(key_rows: list[Row], source, targets: dict, model_key: str) -> bool:
    """A target filled by one source tensor as it is: read straight into the target (.h5),
    or take the loaded tensor itself when it already has the target's dtype and layout
    (memory-mapped safetensors then stay mapped: no copy, no resident memory until used)."""
    if len(key_rows) != 1 or key_rows[0].add or key_rows[0].transform is not COPY:
        return False
    tensor, target = source[key_rows[0].source_key], targets[model_key]
    if tensor.read_into is not None and tensor.read_into(target):
        return True
    value = tensor.load()
    same = value.dtype == target.dtype and value.device == target.device and value.shape == target.shape
    if same and value.is_contiguous():
        targets[model_key] = value
        return True
    with torch.no_grad():
        target.copy_(value)
    return True


def fill_tensors(
    rows: list[Row], source: Mapping[str, SourceTensor], targets: dict[str, torch.Tensor], dims: Mapping
) -> None:
    """Copy every row's source tensor into its (preallocated) target, one tensor at a time:
    the peak memory is the targets plus one source tensor (a target taken whole may be
    replaced in `targets` by the source tensor itself, see _take_whole). A tensor that sums several sources
    (`add` rows) is summed in float32 and rounded once. Rows must have passed check_rows."""
    by_key: dict[str, list[Row]] = {}
    for row in rows:
        by_key.setdefault(row.model_key, []).append(row)
    with torch.no_grad():
        for model_key, key_rows in by_key.items():
            target = targets[model_key]
            if _take_whole(key_rows, source, targets, model_key):
                continue
            summed = any(row.add for row in key_rows)
            work = torch.empty(target.shape, dtype=torch.float32, device=target.device) if summed else target
            for row in sorted(key_rows, key=lambda r: r.add):  # fills before additions
                value = row.transform.to_model(source[row.source_key].load(), dims)
                expected = torch.broadcast_shapes(value.shape, work.shape) if row.add else value.shape
                if tuple(expected) != tuple(work.shape):  # a table whose transforms disagree
                    raise ValueError(
                        f"{model_key}: conversion produced {tuple(value.shape)}, expected {tuple(work.shape)}"
                    )
                if row.add:
                    work.add_(value.to(torch.float32))
                else:
                    work.copy_(value)
                del value
            if summed:
                target.copy_(work)
    warn_non_finite(by_key, source, targets)


def _finite(tensor: torch.Tensor) -> bool:
    """Whether every value is finite. A sum is non-finite whenever any value is (NaN and inf
    propagate) and is several times faster than isfinite(...).all(), which then only runs
    to tell an overflowing sum of finite values from a non-finite value."""
    total = tensor.sum(dtype=torch.float64 if tensor.dtype == torch.float64 else torch.float32)
    return bool(torch.isfinite(total)) or bool(torch.isfinite(tensor).all())


def _non_finite_rows(key_rows: list[Row], source: Mapping[str, SourceTensor], tensor: torch.Tensor) -> list[Row]:
    """The rows whose source holds the non-finite values of a target several rows fill (the
    fused QKV: its block; a folded row: its source, read again on this rare path)."""
    if len(key_rows) == 1:
        return key_rows
    found = []
    for row in key_rows:
        if row.add:
            value = source[row.source_key].load()
        else:
            value = tensor.chunk(row.parts, dim=0)[row.part] if row.parts > 1 else tensor
        if value.is_floating_point() and not _finite(value):
            found.append(row)
    return found or key_rows


def warn_non_finite(by_key: Mapping[str, list[Row]], source: Mapping[str, SourceTensor], targets) -> None:
    """One warning naming every loaded tensor that holds NaN or infinite values (with the
    source tensors and files it came from): a checkpoint like that loads, but its outputs
    are NaN or inf, so say so at load time."""
    bad = []
    with torch.no_grad():
        for model_key, key_rows in by_key.items():
            tensor = targets[model_key]
            if tensor.is_floating_point() and not _finite(tensor):
                rows = _non_finite_rows(key_rows, source, tensor)
                origins = ", ".join(f"{row.source_key} in {source[row.source_key].file}" for row in rows)
                bad.append(f"{model_key} (from {origins})")
    if bad:
        logger.warning(
            "%d loaded tensor(s) hold NaN or infinite values; the model's outputs will not be finite:%s",
            len(bad), describe_problems(bad),
        )


def check_rows_or_raise(
    rows: list[Row],
    source: Mapping[str, SourceTensor],
    model_tensors: Mapping[str, torch.Tensor],
    dims: Mapping,
    *,
    ignored_prefixes: tuple[str, ...] = (),
    leftover_prefixes: tuple[str, ...] = (),
    description: str,
) -> list[str]:
    """check_rows, raising one ValueError that lists the problems (the first
    MAX_LISTED_PROBLEMS, and how many more); returns the leftover keys."""
    problems, leftovers = check_rows(
        rows, source, model_tensors, dims, ignored_prefixes=ignored_prefixes, leftover_prefixes=leftover_prefixes
    )
    if problems:
        ignored = f" (ignored: {', '.join(p + '*' for p in ignored_prefixes)})" if ignored_prefixes else ""
        raise ValueError(
            f"Cannot load {description}: {len(problems)} problem(s){ignored}:" + describe_problems(problems)
        )
    return leftovers


def allocate_like(model_tensors: Mapping[str, torch.Tensor], device=None) -> dict[str, torch.Tensor]:
    """Uninitialized tensors with the model's shapes and dtypes (meta tensors are fine)."""
    return {key: torch.empty(tuple(t.shape), dtype=t.dtype, device=device or "cpu") for key, t in model_tensors.items()}


def assemble_state_dict(
    rows: list[Row],
    source: Mapping[str, SourceTensor],
    model_tensors: Mapping[str, torch.Tensor],
    dims: Mapping,
    *,
    ignored_prefixes: tuple[str, ...] = (),
    description: str,
    device=None,
) -> dict[str, torch.Tensor]:
    """Build the full model state dict from `source`, or raise one ValueError listing the
    missing, unused, mis-shaped or non-float tensors.

    model_tensors: the model's state dict (meta tensors are fine): shapes and dtypes.
    description: what is being read (a file or a directory), for the error message.
    Returns model key -> tensor with the model tensor's shape and dtype, on `device` (CPU by
    default), filled tensor by tensor (see fill_tensors).
    """
    check_rows_or_raise(rows, source, model_tensors, dims, ignored_prefixes=ignored_prefixes, description=description)
    targets = allocate_like(model_tensors, device)
    fill_tensors(rows, source, targets, dims)
    return targets


def source_tensors_from_state_dict(
    rows: list[Row], state_dict: Mapping[str, torch.Tensor], dims: Mapping
) -> dict[str, torch.Tensor]:
    """The inverse of assemble_state_dict: source key -> tensor.

    A folded (`add`) row's inverse gets the summed model tensor and returns what the source
    should hold so that reading sums back to it (the token-type row: zeros, the positions
    keep the sum); a transform that cannot say raises."""
    out = {}
    for row in rows:
        out[row.source_key] = row.transform.to_source(state_dict[row.model_key], dims).contiguous()
    return out
