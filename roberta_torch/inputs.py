"""Checking and converting the backbone's inputs before any kernel runs.

Shape and dtype checks are plain Python on tensor metadata, so torch.compile traces them as
guards. Value checks (ids in range, mask in {0, 1}) need the data: in eager mode they raise a
ValueError before anything runs; while compiling they become `torch._assert_async`, which
keeps the graph whole (a Python `if` on tensor data would break it).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from .tracing import is_compiling, is_exporting  # noqa: F401 (is_exporting: re-exported for callers)

_INTEGER_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)
_MASK_DTYPES = (torch.bool, *_INTEGER_DTYPES, torch.float16, torch.bfloat16, torch.float32, torch.float64)


INPUT_KEYS = ("token_ids", "padding_mask", "position_ids")


def merge_call_arguments(inputs, **keywords):
    """The inputs of a call, given either as one dict or as keyword arguments, never both
    (a keyword next to a dict would otherwise be ignored or silently win)."""
    given = {name: value for name, value in keywords.items() if value is not None}
    if inputs is None:
        return given
    if given:
        raise TypeError(
            f"Pass the inputs either as a dict or as keyword arguments, not both: got a "
            f"{type(inputs).__name__} and {', '.join(sorted(given))}=. E.g. model({{'token_ids': ids, "
            "'padding_mask': mask}) or model(token_ids=ids, padding_mask=mask)."
        )
    return inputs


def check_integer_dtype(tensor: torch.Tensor, argument: str) -> None:
    """Ids and positions must be integers: a float would be truncated without a word."""
    if tensor.dtype not in _INTEGER_DTYPES:
        raise TypeError(f"`{argument}` must hold integers; got dtype {tensor.dtype}. Cast with .long().")


def check_mask_dtype(mask: torch.Tensor, argument: str = "padding_mask") -> None:
    if mask.dtype not in _MASK_DTYPES:
        raise TypeError(f"`{argument}` must be bool or 0/1 numbers; got dtype {mask.dtype}.")


def check_mask_values(mask: torch.Tensor, argument: str = "padding_mask") -> None:
    """Eager check that a numeric mask holds only 0 and 1 (0.5, -1 or NaN are not "valid")."""
    if mask.dtype == torch.bool:
        return
    is_binary = (mask == 0) | (mask == 1)
    if not bool(is_binary.all()):
        bad_values = torch.unique(mask[~is_binary])[:5].tolist()
        raise ValueError(f"`{argument}` values must be 0 or 1 (or bool); found {bad_values}.")


def _as_tensor(value, argument: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        if value.is_meta:
            raise ValueError(f"`{argument}` is on the meta device (no data); pass a tensor that holds values.")
        return value
    if isinstance(value, np.ndarray):
        if value.dtype == np.object_:
            raise TypeError(f"`{argument}` is a numpy array of objects; pass numbers.")
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, (list, tuple)):
        try:
            array = np.asarray(value)
        except ValueError as error:  # numpy's "inhomogeneous shape" message names no argument
            raise ValueError(
                f"`{argument}` is a ragged list (rows of different lengths); pad the rows to one length "
                "and pass a padding_mask, or use the preprocessor."
            ) from error
        if array.dtype == np.object_ or array.dtype.kind in "USO":
            raise TypeError(f"`{argument}` must hold numbers; got a list of {array.dtype.kind!r} values.")
        return torch.as_tensor(array)
    raise TypeError(
        f"`{argument}` must be a torch.Tensor or numpy array of shape (batch, seq); "
        f"got {type(value).__name__}."
    )


def _companion_tensor(value, argument: str, token_ids: torch.Tensor) -> torch.Tensor:
    """A per-token input (mask, positions) as a tensor of token_ids' shape."""
    tensor = _as_tensor(value, argument)
    _check_rank2(tensor, argument)
    if tensor.shape != token_ids.shape:
        raise ValueError(
            f"`{argument}` has shape {tuple(tensor.shape)} but `token_ids` has shape "
            f"{tuple(token_ids.shape)}; they must match."
        )
    return tensor


def _check_rank2(tensor: torch.Tensor, argument: str) -> None:
    if tensor.dim() != 2:
        hint = " Add a batch dimension, e.g. x[None]." if tensor.dim() == 1 else ""
        raise ValueError(
            f"`{argument}` must have rank 2 (batch, seq); got shape {tuple(tensor.shape)}.{hint}"
        )


def prepare_inputs(
    inputs,
    vocabulary_size: int,
    max_sequence_length: int,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Validate `{"token_ids", "padding_mask"}` and move them to `device`.

    Returns token_ids (batch, seq) integer and padding_mask (batch, seq) bool (True = valid),
    or None for the mask when none was given (every token is valid).
    """
    if not isinstance(inputs, Mapping):
        raise TypeError(
            "The backbone takes a dict {'token_ids': (batch, seq) ints, 'padding_mask': "
            f"(batch, seq) 0/1}}; got {type(inputs).__name__}."
        )
    if "token_ids" not in inputs:
        raise ValueError(
            f"`inputs` has no 'token_ids' key (keys: {sorted(inputs)}); pass "
            "{'token_ids': ..., 'padding_mask': ...}."
        )
    unknown = set(inputs) - set(INPUT_KEYS)
    if unknown:
        raise ValueError(
            f"`inputs` has unknown keys {sorted(unknown)}; allowed: "
            f"{', '.join(repr(k) for k in INPUT_KEYS)}."
        )

    token_ids = _as_tensor(inputs["token_ids"], "token_ids")
    _check_rank2(token_ids, "token_ids")
    check_integer_dtype(token_ids, "token_ids")
    batch, seq = token_ids.shape
    if seq < 1:
        raise ValueError(f"`token_ids` has sequence length {seq}; it must be at least 1.")
    if seq > max_sequence_length:
        raise ValueError(
            f"`token_ids` has sequence length {seq} > max_sequence_length="
            f"{max_sequence_length}; truncate the input or build the model with a larger "
            "max_sequence_length."
        )

    padding_mask = inputs.get("padding_mask")
    if padding_mask is not None:
        padding_mask = _companion_tensor(padding_mask, "padding_mask", token_ids)
        check_mask_dtype(padding_mask)

    token_ids = token_ids.to(device, non_blocking=True)
    if token_ids.dtype == torch.uint8 or token_ids.dtype == torch.int8 or token_ids.dtype == torch.int16:
        token_ids = token_ids.long()
    if padding_mask is not None:
        padding_mask = padding_mask.to(device, non_blocking=True)

    _check_values(token_ids, padding_mask, vocabulary_size)
    if padding_mask is not None and padding_mask.dtype != torch.bool:
        padding_mask = padding_mask != 0
    return token_ids, padding_mask


def _check_values(token_ids, padding_mask, vocabulary_size: int) -> None:
    ids_in_range = (token_ids >= 0) & (token_ids < vocabulary_size)
    mask_is_binary = None
    if padding_mask is not None and padding_mask.dtype != torch.bool:
        mask_is_binary = (padding_mask == 0) | (padding_mask == 1)

    if is_compiling():
        torch._assert_async(
            ids_in_range.all(), f"token_ids must lie in [0, vocabulary_size={vocabulary_size})"
        )
        if mask_is_binary is not None:
            torch._assert_async(mask_is_binary.all(), "padding_mask values must be 0 or 1")
        return

    if not bool(ids_in_range.all()):
        bad = token_ids[~ids_in_range]
        raise ValueError(
            f"`token_ids` must lie in [0, vocabulary_size={vocabulary_size}); found "
            f"{bad.numel()} id(s) outside it (min {int(token_ids.min())}, max "
            f"{int(token_ids.max())}). Check the tokenizer matches this model."
        )
    if mask_is_binary is not None:
        check_mask_values(padding_mask)


def prepare_position_ids(inputs, token_ids: torch.Tensor, max_sequence_length: int) -> torch.Tensor | None:
    """Validate the optional `inputs["position_ids"]` against the prepared `token_ids`.

    Returns (batch, seq) integer positions on token_ids' device, or None (Keras's column
    positions). Checked like token_ids: same shape, integers, values in
    [0, max_sequence_length) (a ValueError in eager mode, a runtime assert under compile).
    """
    position_ids = inputs.get("position_ids")
    if position_ids is None:
        return None
    if token_ids.dim() == 1:  # a packed batch: one position per token
        position_ids = _as_tensor(position_ids, "position_ids")
        if position_ids.shape != token_ids.shape:
            raise ValueError(
                f"`position_ids` of a packed batch has shape {tuple(position_ids.shape)} but `token_ids` "
                f"has shape {tuple(token_ids.shape)}; they must match."
            )
    else:
        position_ids = _companion_tensor(position_ids, "position_ids", token_ids)
    check_integer_dtype(position_ids, "position_ids")
    position_ids = position_ids.to(token_ids.device, non_blocking=True)
    if position_ids.dtype in (torch.uint8, torch.int8, torch.int16):
        position_ids = position_ids.long()
    in_range = (position_ids >= 0) & (position_ids < max_sequence_length)
    message = f"position_ids must lie in [0, max_sequence_length={max_sequence_length})"
    if is_compiling():
        torch._assert_async(in_range.all(), message)
    elif not bool(in_range.all()):
        raise ValueError(
            f"`position_ids` must lie in [0, max_sequence_length={max_sequence_length}); found "
            f"min {int(position_ids.min())}, max {int(position_ids.max())}. For transformers' "
            "positions use roberta_torch.transformers_position_ids(padding_mask), which already "
            "subtracts transformers' offset of 2."
        )
    return position_ids


def transformers_position_ids(padding_mask) -> torch.Tensor:
    """The positions transformers' RobertaModel / XLMRobertaModel use, as rows of this
    package's position table: (batch, seq) int64.

    transformers numbers the valid tokens of each row 2, 3, 4, ... (`cumsum(mask) * mask +
    padding_idx`, padding_idx = 1) and keeps two reserved rows in front of its table; a
    converted checkpoint drops them (our row i = transformers' row i + 2). So the valid
    tokens get `cumsum(mask) - 1` = 0, 1, 2, ...; padded tokens get 0 (their output is
    not used). For right-padded rows this equals the default column positions; for
    left-padded rows it gives transformers' outputs. transformers derives its mask from
    `input_ids != pad_token_id`; pass that mask if the two differ.
    """
    mask = _as_tensor(padding_mask, "padding_mask")
    _check_rank2(mask, "padding_mask")
    mask = mask != 0
    return ((mask.cumsum(dim=1) - 1) * mask).long()


# -- packed inputs ---------------------------------------------------------------------------

_PACKED_KEYS = ("token_ids", "cu_seqlens", "max_seqlen", "position_ids")


def is_packed_input(inputs) -> bool:
    """Whether `inputs` is the packed form {"token_ids": (total,), "cu_seqlens": ...}."""
    return isinstance(inputs, Mapping) and "cu_seqlens" in inputs


def prepare_packed_inputs(
    inputs,
    vocabulary_size: int,
    max_sequence_length: int,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor, int | None]:
    """Validate `{"token_ids": (total,), "cu_seqlens": (batch + 1,) int32, "max_seqlen": int}`
    and move the tensors to `device`.

    Returns token_ids (total,) int, cu_seqlens (batch + 1,) int32 and max_seqlen (an int, or
    None when not given). Sequence b is tokens [cu_seqlens[b], cu_seqlens[b + 1]).
    """
    unknown = set(inputs) - set(_PACKED_KEYS)
    if unknown:
        raise ValueError(
            f"packed `inputs` has unknown keys {sorted(unknown)}; allowed: {list(_PACKED_KEYS)} "
            "(a packed batch has no padding_mask: cu_seqlens says where each sequence is)."
        )
    if "token_ids" not in inputs:
        raise ValueError("packed `inputs` has no 'token_ids' key; pass the (total,) token ids.")

    token_ids = _as_tensor(inputs["token_ids"], "token_ids")
    if token_ids.dim() != 1:
        raise ValueError(
            f"`token_ids` of a packed batch must have rank 1 (total_tokens,); got shape "
            f"{tuple(token_ids.shape)}. Use roberta_torch.packing.pack_padded_batch for padded ones."
        )
    check_integer_dtype(token_ids, "token_ids")
    total = token_ids.shape[0]

    cu_seqlens = _as_tensor(inputs["cu_seqlens"], "cu_seqlens")
    if cu_seqlens.dim() != 1 or cu_seqlens.shape[0] < 2:
        raise ValueError(
            f"`cu_seqlens` must have rank 1 and shape (batch + 1,) with batch >= 1; got shape "
            f"{tuple(cu_seqlens.shape)}."
        )
    if cu_seqlens.dtype != torch.int32:
        raise ValueError(
            f"`cu_seqlens` must be int32 (the layout varlen attention kernels take); got "
            f"{cu_seqlens.dtype}. Cast with .int()."
        )

    max_seqlen = inputs.get("max_seqlen")
    if max_seqlen is not None:
        if isinstance(max_seqlen, torch.Tensor) and max_seqlen.numel() == 1 and not max_seqlen.is_floating_point():
            max_seqlen = int(max_seqlen)
        if isinstance(max_seqlen, bool) or not isinstance(max_seqlen, (int, torch.SymInt)):
            raise ValueError(
                f"`max_seqlen` must be a python int >= the longest sequence; got {max_seqlen!r}."
            )
        if max_seqlen < 0:
            raise ValueError(f"`max_seqlen` must be >= 0; got {max_seqlen}.")

    token_ids = token_ids.to(device, non_blocking=True)
    if token_ids.dtype in (torch.uint8, torch.int8, torch.int16):
        token_ids = token_ids.long()
    cu_seqlens = cu_seqlens.to(device, non_blocking=True)
    _check_values(token_ids, None, vocabulary_size)
    _check_packed_values(cu_seqlens, total, max_seqlen, max_sequence_length)
    return token_ids, cu_seqlens, max_seqlen


def _check_packed_values(cu_seqlens, total, max_seqlen, max_sequence_length: int) -> None:
    lengths = cu_seqlens[1:] - cu_seqlens[:-1]
    longest = lengths.max()
    checks = [
        (cu_seqlens[0] == 0, "`cu_seqlens` must start at 0"),
        ((lengths >= 0).all(), "`cu_seqlens` must never decrease"),
        (cu_seqlens[-1] == total, "`cu_seqlens` must end at the number of tokens (len(token_ids))"),
        (
            longest <= max_sequence_length,
            f"a sequence in `cu_seqlens` is longer than max_sequence_length={max_sequence_length}",
        ),
    ]
    if max_seqlen is not None:
        # No f-string of max_seqlen or total here: formatting a symbolic size specializes it.
        checks.append((longest <= max_seqlen, "`max_seqlen` is smaller than the longest sequence"))

    if is_compiling():
        for condition, message in checks:
            torch._assert_async(condition, message)
        return
    for condition, message in checks:
        if not bool(condition):
            raise ValueError(
                f"{message}; got cu_seqlens={cu_seqlens.tolist()[:12]}"
                f"{' ...' if cu_seqlens.numel() > 12 else ''} ({total} token_ids, longest "
                f"sequence {int(longest)}, max_seqlen={max_seqlen})."
            )
