"""Pool token vectors into one vector per text, as sentence-transformers' `Pooling` does.

Inputs are right-padded: hidden `(B, T, H)`, a boolean `padding_mask` `(B, T)` whose True
entries form a prefix of each row. Every mode reads only the valid tokens (the backbone's
padding-free path leaves zeros at padded positions, its padded path finite junk: neither
may leak in). Modes and their sentence-transformers names:

    cls                   the first token (`<s>`), or with the prompt excluded the first
                          token after it (sentence-transformers takes the first unmasked one)
    mean                  the mean of the valid tokens
    max                   the element-wise max over the valid tokens
    mean_sqrt_len_tokens  the sum divided by sqrt(number of tokens)
    weightedmean          the mean weighted by position (1, 2, 3, ... from the first token)
    lasttoken             the last valid token (`</s>`)

Several modes concatenate, in order. `prompt_length` (tokens of `<s>` + prompt) removes the
prompt from pooling, as sentence-transformers' `include_prompt=False` does: one int for every
row, or a `(B,)` tensor when rows carry different prompts (a server batches such requests).
"""

from __future__ import annotations

import torch

# The mode names, sentence-transformers' legacy config keys and the argument check live with
# the format that reads them (presets/embedding_config.py); pooling computes.
from ..presets.embedding_config import LEGACY_POOLING_KEYS, POOLING_MODES, check_pooling_modes  # noqa: F401


def pool(
    hidden: torch.Tensor, padding_mask: torch.Tensor, modes: tuple[str, ...], prompt_length: int | torch.Tensor = 0
) -> torch.Tensor:
    """(B, T, H) token vectors, (B, T) bool mask -> (B, len(modes) * H) in float32."""
    hidden = hidden.float()
    mask = padding_mask.bool()
    if isinstance(prompt_length, torch.Tensor):
        # A prefix of its own length per row (right padding): drop those positions.
        columns = torch.arange(mask.shape[1], device=mask.device)
        mask = mask & (columns[None, :] >= prompt_length.to(mask.device)[:, None])
    elif prompt_length:
        # The prompt is the same prefix of every row (right padding): drop its positions.
        mask = mask.clone()
        mask[:, :prompt_length] = False
    weights = mask.unsqueeze(-1).float()  # (B, T, 1)
    lengths = mask.sum(dim=1)  # (B,)
    outputs = []
    for mode in modes:
        if mode == "cls":
            first = mask.int().argmax(dim=1)  # the first pooled position (0 without a prompt)
            outputs.append(hidden[torch.arange(hidden.shape[0], device=hidden.device), first])
        elif mode in ("mean", "mean_sqrt_len_tokens"):
            total = (hidden * weights).sum(dim=1)
            count = weights.sum(dim=1).clamp(min=1e-9)
            outputs.append(total / (count if mode == "mean" else count.sqrt()))
        elif mode == "max":
            outputs.append(hidden.masked_fill(~mask.unsqueeze(-1), float("-inf")).max(dim=1).values)
        elif mode == "weightedmean":
            positions = torch.arange(1, hidden.shape[1] + 1, device=hidden.device, dtype=torch.float32)
            position_weights = weights * positions.view(1, -1, 1)
            outputs.append((hidden * position_weights).sum(dim=1) / position_weights.sum(dim=1).clamp(min=1e-9))
        elif mode == "lasttoken":
            last = (padding_mask.sum(dim=1) - 1).clamp(min=0)  # the prompt never moves the last token
            rows = torch.arange(hidden.shape[0], device=hidden.device)
            outputs.append(hidden[rows, last] * (lengths > 0).unsqueeze(-1).float())
        else:  # check_pooling_modes rejects anything else first
            raise ValueError(f"Unknown pooling mode {mode!r}.")
    return torch.cat(outputs, dim=-1)
