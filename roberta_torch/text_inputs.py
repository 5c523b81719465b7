"""Text -> the backbone's input: the one path the preprocessors and the TextEmbedder share.

    tokenize      each segment's ids, only as many as can be kept (a huge text costs what
                  its kept part costs: `Tokenizer.encode_batch(max_length=)`)
    truncate      the segments together to the room the special tokens leave:
                  "round_robin" (keras_hub's default) or "waterfall"
    add specials  one segment:   <s> a </s>
                  two segments:  <s> a </s></s> b </s>
                  n segments:    <s> a </s></s> b </s></s> ... z </s>
    pad           right-pad the rows with the pad id into `{"token_ids", "padding_mask"}`
                  (torch or numpy), to the longest row, a fixed width or a multiple

`pad_sequences` is the same padding as a `DataLoader` collate over rows tokenized earlier
(e.g. by `datasets.Dataset.map`), labels passed through.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence

import numpy as np
import torch

TRUNCATE_CHOICES = ("round_robin", "waterfall", "longest_first")
# Strategies keras_hub's MultiSegmentPacker implements (what preprocessor.json may record).
KERAS_TRUNCATE_CHOICES = ("round_robin", "waterfall")
RETURN_TENSORS_CHOICES = ("pt", "np")
# transformers' ignore index: what per-token labels hold at padded positions.
LABEL_PAD_VALUE = -100
# RoBERTa's and XLM-R's <pad> id.
PAD_TOKEN_ID = 1


# -- truncation -------------------------------------------------------------------------------


def truncate_round_robin(lengths: list[int], budget: int) -> list[int]:
    """Kept lengths: take tokens from the segments in turn (first tokens first) until `budget`.

    Equals tensorflow_text's RoundRobinTrimmer (keras_hub's "round_robin").
    """
    kept = [0] * len(lengths)
    budget = max(budget, 0)
    while budget > 0:
        progressed = False
        for index, length in enumerate(lengths):
            if budget > 0 and kept[index] < length:
                kept[index] += 1
                budget -= 1
                progressed = True
        if not progressed:
            break
    return kept


def truncate_waterfall(lengths: list[int], budget: int) -> list[int]:
    """Kept lengths: fill the segments in order; later segments are cut first."""
    kept = []
    budget = max(budget, 0)
    for length in lengths:
        take = min(length, budget)
        kept.append(take)
        budget -= take
    return kept


def truncate_longest_first(lengths: list[int], budget: int) -> list[int]:
    """Kept lengths as transformers' `truncation="longest_first"` (the Rust `tokenizers`
    LongestFirst) keeps them, for one or two segments.

    Two segments over the budget: the shorter keeps min(its length, budget // 2) tokens and
    the longer the rest (on a tie the first counts as the shorter). This is not the same as
    cutting one token at a time from the longer segment: (6, 5) in a budget of 7 keeps (4, 3).
    """
    budget = max(budget, 0)
    if len(lengths) == 1:
        return [min(lengths[0], budget)]
    if len(lengths) != 2:
        raise ValueError(
            f'truncate="longest_first" packs one or two segments, as transformers does; got {len(lengths)}. '
            'Use truncate="round_robin" or "waterfall" for more.'
        )
    first, second = lengths
    if first + second <= budget:
        return [first, second]
    swapped = first > second
    short, long = (second, first) if swapped else (first, second)
    short_kept = min(short, budget // 2)
    long_kept = min(long, budget - short_kept)
    return [long_kept, short_kept] if swapped else [short_kept, long_kept]


_TRUNCATORS = {
    "round_robin": truncate_round_robin,
    "waterfall": truncate_waterfall,
    "longest_first": truncate_longest_first,
}


def num_special_tokens(num_segments: int) -> int:
    """<s>, </s>, and </s></s> between segments."""
    return 2 + 2 * (num_segments - 1)


# -- text -> rows -----------------------------------------------------------------------------


def encode_segments(tokenizer, segments: Sequence[Sequence[str]], sequence_length: int,
                    truncate: str = "round_robin") -> list[list[int]]:
    """Segments of text (`segments[s][b]`: segment s of row b) -> one id row per b, with the
    special tokens, at most `sequence_length` ids.

    Each text is tokenized only as far as its ids can be kept: a segment keeps at most the
    room left by the special tokens, so nothing past that is tokenized (the kept ids equal
    the whole text's first ones).
    """
    if truncate not in _TRUNCATORS:
        raise ValueError(f"`truncate` must be one of {TRUNCATE_CHOICES}; got {truncate!r}.")
    special = num_special_tokens(len(segments))
    budget = sequence_length - special
    if budget < 0:
        raise ValueError(
            f"`sequence_length`={sequence_length} cannot hold the {special} special tokens of "
            f"{len(segments)} segments; use a sequence_length >= {special}."
        )
    ids = [tokenizer.encode_batch(list(texts), max_length=budget) for texts in segments]
    if truncate == "longest_first" and len(segments) == 2:
        ids = _lengths_for_longest_first(tokenizer, segments, ids, budget)
    start, end = tokenizer.start_token_id, tokenizer.end_token_id
    rows = []
    for pieces in zip(*ids):
        kept = _TRUNCATORS[truncate]([len(p) for p in pieces], budget)
        row = [start]
        for index, (piece, length) in enumerate(zip(pieces, kept)):
            row.extend(piece[:length])
            row.extend([end] if index == len(pieces) - 1 else [end, end])
        rows.append(row)
    return rows


def _lengths_for_longest_first(tokenizer, segments, ids, budget: int):
    """"longest_first" keeps budget // 2 ids of the shorter of two segments and the rest of the
    longer, so it must know which is longer. Ids cut at `budget` tell that unless both
    segments reach it: those rows are tokenized whole (only they)."""
    both_long = [b for b, (first, second) in enumerate(zip(*ids)) if len(first) >= budget and len(second) >= budget]
    if not both_long:
        return ids
    whole = [tokenizer.encode_batch([texts[b] for b in both_long]) for texts in segments]
    ids = [list(segment) for segment in ids]
    for segment, rows in zip(ids, whole):
        for b, row in zip(both_long, rows):
            segment[b] = row
    return ids


# -- rows -> tensors --------------------------------------------------------------------------


def check_return_tensors(return_tensors) -> str:
    if return_tensors not in RETURN_TENSORS_CHOICES:
        raise ValueError(
            f"`return_tensors` must be 'pt' (torch tensors) or 'np' (numpy arrays); got {return_tensors!r}."
        )
    return return_tensors


def _check_multiple(pad_to_multiple_of):
    if pad_to_multiple_of is None:
        return None
    if isinstance(pad_to_multiple_of, bool) or not isinstance(pad_to_multiple_of, numbers.Integral) \
            or pad_to_multiple_of < 1:
        raise ValueError(f"`pad_to_multiple_of` must be None or an int >= 1; got {pad_to_multiple_of!r}.")
    return int(pad_to_multiple_of)


def as_tensors(arrays: dict, return_tensors: str = "pt", device=None) -> dict:
    """numpy arrays -> torch tensors (on `device`) or left as numpy; other values untouched."""
    if return_tensors == "np":
        return arrays
    out = {}
    for key, value in arrays.items():
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(value)
            value = value.to(device) if device is not None else value
        out[key] = value
    return out


def pad_rows(rows: Sequence[Sequence[int]], pad_token_id: int, *, width: int | None = None,
             pad_to_multiple_of: int | None = None, return_tensors: str = "pt", device=None) -> dict:
    """Id rows -> `{"token_ids": (B, T) int64, "padding_mask": (B, T) bool}`, right-padded with
    `pad_token_id`; T is `width`, or the longest row (rounded up to `pad_to_multiple_of`).

    The one place that decides the padded input layout. The backbone runs such a batch
    padding-free by itself when enough of it is padding.
    """
    check_return_tensors(return_tensors)
    multiple = _check_multiple(pad_to_multiple_of)
    longest = max((len(row) for row in rows), default=0)
    if width is None:
        width = longest if multiple is None else multiple * math.ceil(longest / multiple)
    elif width < longest:
        raise ValueError(f"`width`={width} is shorter than the longest row ({longest} ids).")
    token_ids = np.full((len(rows), width), pad_token_id, dtype=np.int64)
    padding_mask = np.zeros((len(rows), width), dtype=np.bool_)
    for b, row in enumerate(rows):
        token_ids[b, : len(row)] = row
        padding_mask[b, : len(row)] = True
    return as_tensors({"token_ids": token_ids, "padding_mask": padding_mask}, return_tensors, device)


# -- the DataLoader collate -------------------------------------------------------------------


def _row_array(value, key: str, index: int) -> np.ndarray:
    """One sample's 1-D sequence (list, numpy array or tensor) as a numpy array."""
    if isinstance(value, torch.Tensor):
        array = value.detach().cpu().numpy()
    elif isinstance(value, np.ndarray):
        array = value
    elif isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        array = np.asarray(list(value))
    else:
        raise TypeError(
            f"sample {index}: '{key}' must be a list, numpy array or tensor; got {type(value).__name__}."
        )
    if array.ndim != 1:
        raise ValueError(f"sample {index}: '{key}' must be 1-D; got shape {tuple(array.shape)}.")
    return array


def _token_ids(value, index: int) -> np.ndarray:
    array = _row_array(value, "token_ids", index)
    if array.size and array.dtype.kind not in "iu":
        raise TypeError(
            f"sample {index}: 'token_ids' must hold integer token ids; got dtype {array.dtype}. "
            "Cast them to int."
        )
    return array.astype(np.int64, copy=False)


def _padding_mask(value, length: int, index: int) -> np.ndarray:
    array = _row_array(value, "padding_mask", index)
    if array.shape[0] != length:
        raise ValueError(
            f"sample {index}: 'padding_mask' has {array.shape[0]} entries but 'token_ids' has {length}."
        )
    if array.dtype != np.bool_:
        valid = np.isin(array, (0, 1)) if array.dtype.kind in "iuf" else np.zeros(array.shape, bool)
        if not valid.all():
            bad = array[~valid][0] if array.size else None
            raise ValueError(
                f"sample {index}: 'padding_mask' must hold booleans or 0/1; got {bad!r}."
            )
        array = array.astype(np.bool_)
    return array


def pad_sequences(samples, pad_token_id: int = PAD_TOKEN_ID, pad_to_multiple_of: int | None = None,
                  return_tensors: str = "pt", label_pad_value: int = LABEL_PAD_VALUE) -> dict:
    """Collate tokenized rows of different lengths into the backbone's padded input.

    `samples`: dicts with "token_ids" (a list, numpy array or 1-D tensor of ids) and
    optionally "padding_mask" (the same length; True / 1 on real tokens), e.g. the rows of a
    `datasets.Dataset.map(tokenize, batched=True)`; or plain sequences of ids. Rows are
    right-padded with `pad_token_id` to the longest real row of the batch (trailing columns
    that are padding in every row are dropped), rounded up to `pad_to_multiple_of`.

    Other entries are passed through: per-sample values (labels, weights) are stacked with
    torch's `default_collate`; per-token lists as long as the row's `token_ids` (token
    classification labels) are padded with `label_pad_value` (-100, what losses ignore).

    Use as `DataLoader(dataset, batch_size=32, collate_fn=roberta_torch.pad_sequences)`, or
    `functools.partial(pad_sequences, pad_to_multiple_of=8)`. Returns
    `{"token_ids": (B, T) int64, "padding_mask": (B, T) bool, ...}` as torch tensors
    (`return_tensors="np"`: numpy arrays).
    """
    check_return_tensors(return_tensors)
    multiple = _check_multiple(pad_to_multiple_of)
    samples = list(samples)
    if not samples:
        raise ValueError("`samples` is empty; a batch needs at least one sample.")
    as_dicts = isinstance(samples[0], Mapping)
    if as_dicts and not all(isinstance(s, Mapping) and "token_ids" in s for s in samples):
        raise ValueError("every sample must be a dict with a 'token_ids' entry (or none is).")
    if not as_dicts and any(isinstance(s, Mapping) for s in samples):
        raise ValueError("every sample must be a dict with a 'token_ids' entry (or none is).")
    ids = [_token_ids(s["token_ids"] if as_dicts else s, i) for i, s in enumerate(samples)]
    masks = []
    for index, (sample, row) in enumerate(zip(samples, ids)):
        mask = sample.get("padding_mask") if as_dicts else None
        masks.append(np.ones(row.shape, np.bool_) if mask is None else _padding_mask(mask, row.shape[0], index))
    # Each row's real extent: up to its last real token (its trailing padding is dropped).
    lengths = [int(np.flatnonzero(mask)[-1]) + 1 if mask.any() else 0 for mask in masks]
    longest = max(lengths)
    if longest == 0:
        raise ValueError("every sample is empty (no token marked real in 'padding_mask').")
    width = longest if multiple is None else multiple * math.ceil(longest / multiple)
    token_ids = np.full((len(ids), width), pad_token_id, dtype=np.int64)
    padding_mask = np.zeros((len(ids), width), dtype=np.bool_)
    for b, (row, mask, length) in enumerate(zip(ids, masks, lengths)):
        token_ids[b, :length] = row[:length]
        padding_mask[b, :length] = mask[:length]
    batch = {"token_ids": token_ids, "padding_mask": padding_mask}
    if as_dicts:
        batch.update(_collate_extras(samples, ids, lengths, width, label_pad_value, return_tensors))
    return as_tensors(batch, return_tensors)


def _is_sequence(value) -> bool:
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return value.ndim == 1
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


def _collate_extras(samples, ids, lengths, width, label_pad_value, return_tensors) -> dict:
    """Entries besides token_ids / padding_mask: per-token sequences padded like the rows,
    equal-length sequences stacked, anything else through torch's default_collate."""
    from torch.utils.data import default_collate

    out = {}
    for key in [k for k in samples[0] if k not in ("token_ids", "padding_mask")]:
        if not all(key in s for s in samples):
            raise ValueError(f"'{key}' is in some samples but not all; give every sample one or none.")
        values = [s[key] for s in samples]
        if all(_is_sequence(v) for v in values):
            arrays = [_row_array(v, key, i) for i, v in enumerate(values)]
            if all(a.shape[0] == row.shape[0] for a, row in zip(arrays, ids)):  # one value per token
                kind = np.result_type(*arrays).kind
                dtype = np.result_type(*arrays) if kind == "f" else np.int64
                padded = np.full((len(arrays), width), label_pad_value, dtype=dtype)
                for b, (array, length) in enumerate(zip(arrays, lengths)):
                    padded[b, :length] = array[:length]
                out[key] = padded
            elif len({a.shape[0] for a in arrays}) == 1:
                out[key] = np.stack(arrays)
            else:
                raise ValueError(
                    f"'{key}' holds sequences of different lengths that do not match 'token_ids' "
                    f"({[a.shape[0] for a in arrays]} against {[r.shape[0] for r in ids]}); per-token values "
                    "need one entry per token id, per-sample sequences the same length in every sample."
                )
            continue
        collated = default_collate(values)
        if return_tensors == "np" and isinstance(collated, torch.Tensor):
            collated = collated.numpy()
        out[key] = collated
    return out
