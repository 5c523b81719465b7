"""Collate helpers that build the backbone's packed input.

A packed batch is `{"token_ids": (total,) int64, "cu_seqlens": (batch + 1,) int32,
"max_seqlen": int}`: the sequences one after another with no padding, `cu_seqlens` saying
where each starts. `RobertaBackbone` returns `(total, hidden_dim)` for it, each sequence's
rows equal to what the padded model gives for that sequence (positions restart at 0).

Both helpers work as `DataLoader(..., collate_fn=...)`:

    loader = DataLoader(tokenized, batch_size=32, collate_fn=roberta_torch.pack_sequences)
    loader = DataLoader(dataset, batch_size=32, collate_fn=roberta_torch.pack_padded_batch)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import default_collate

from .inputs import _as_tensor, check_integer_dtype, check_mask_dtype, check_mask_values
from .padding import cumulative_lengths


def _ids_tensor(sequence, index: int) -> torch.Tensor:
    if isinstance(sequence, torch.Tensor):
        ids = sequence
    elif isinstance(sequence, np.ndarray):
        ids = torch.from_numpy(np.ascontiguousarray(sequence))
    elif isinstance(sequence, Sequence) and not isinstance(sequence, (str, bytes)):
        # No dtype= here: torch.as_tensor([1.7], dtype=torch.int64) truncates to 1 silently.
        ids = torch.as_tensor(list(sequence)) if len(sequence) else torch.zeros(0, dtype=torch.int64)
    else:
        raise TypeError(
            f"sequence {index} must be a list, numpy array or tensor of token ids; got "
            f"{type(sequence).__name__}."
        )
    if ids.dim() != 1:
        raise ValueError(f"sequence {index} must be 1-D (seq,); got shape {tuple(ids.shape)}.")
    check_integer_dtype(ids, f"sequences[{index}]")
    return ids.long()


def _packed(pieces: list) -> dict:
    lengths = torch.tensor([piece.shape[0] for piece in pieces], dtype=torch.int32)
    token_ids = torch.cat(pieces) if pieces else torch.zeros(0, dtype=torch.int64)
    return {
        "token_ids": token_ids,
        "cu_seqlens": cumulative_lengths(lengths),
        "max_seqlen": int(lengths.max()) if len(pieces) else 0,
    }


def pack_sequences(sequences) -> dict:
    """Pack tokenized sequences (lists, numpy arrays or 1-D tensors of ids, or dicts with a
    "token_ids" entry) into `{"token_ids", "cu_seqlens", "max_seqlen"}`.

    Dict samples may carry other entries (labels, ...): they are collated with torch's
    `default_collate` and returned alongside; pop them before calling the model.
    """
    sequences = list(sequences)
    if not sequences:
        raise ValueError("`sequences` is empty; a packed batch needs at least one sequence.")
    extras = {}
    if isinstance(sequences[0], Mapping):
        if not all(isinstance(s, Mapping) and "token_ids" in s for s in sequences):
            raise ValueError("every sample must be a dict with a 'token_ids' entry (or none is).")
        rest = [{k: v for k, v in s.items() if k != "token_ids"} for s in sequences]
        extras = default_collate(rest) if rest[0] else {}
        sequences = [s["token_ids"] for s in sequences]
    batch = _packed([_ids_tensor(s, i) for i, s in enumerate(sequences)])
    batch.update(extras)
    return batch


def pack_padded_batch(batch) -> dict:
    """Turn a padded `{"token_ids": (batch, seq), "padding_mask": (batch, seq)}` batch (or a
    list of such samples, collated first) into a packed one, keeping each row's valid tokens
    in order. Other entries are passed through.

    Packed positions count 0, 1, ... within each row, so the model's output equals the padded
    model's for right-padded rows (the usual tokenizer output); for other masks the padded
    model uses absolute positions and the two differ, as in keras_hub."""
    if not isinstance(batch, Mapping):
        batch = default_collate(list(batch))
    if "token_ids" not in batch:
        raise ValueError(f"`batch` has no 'token_ids' entry (keys: {sorted(batch)}).")
    # The backbone's checks: integer ids, a bool or 0/1 mask (0.5, -1 or NaN are refused).
    token_ids = _as_tensor(batch["token_ids"], "token_ids")
    if token_ids.dim() != 2:
        raise ValueError(f"`token_ids` must be (batch, seq); got shape {tuple(token_ids.shape)}.")
    check_integer_dtype(token_ids, "token_ids")
    mask = batch.get("padding_mask")
    if mask is None:
        mask = torch.ones_like(token_ids, dtype=torch.bool)
    else:
        mask = _as_tensor(mask, "padding_mask")
        if mask.shape != token_ids.shape:
            raise ValueError(
                f"`padding_mask` has shape {tuple(mask.shape)} but `token_ids` has shape "
                f"{tuple(token_ids.shape)}; they must match."
            )
        check_mask_dtype(mask)
        check_mask_values(mask)
        mask = mask.to(token_ids.device) != 0
    lengths = mask.sum(dim=1, dtype=torch.int32)
    packed = {
        "token_ids": token_ids[mask].long(),
        "cu_seqlens": cumulative_lengths(lengths),
        "max_seqlen": int(lengths.max()) if lengths.numel() else 0,
    }
    packed.update({k: v for k, v in batch.items() if k not in ("token_ids", "padding_mask")})
    return packed
