"""Access to the committed keras_hub fixtures (tests/fixtures/, see its README)."""

from __future__ import annotations

import pathlib

import numpy as np

from .paths import KERAS_OUTPUTS as OUTPUTS
from .paths import KERAS_PRESETS as PRESETS

FLOAT32_CASES = ["roberta_1layer", "roberta_3layer_oddhead", "xlm_roberta_2layer", "roberta_dropout0", "roberta_sharded"]
LOW_PRECISION_POLICIES = ["bfloat16", "float16", "mixed_bfloat16"]


def preset_dir(case: str) -> pathlib.Path:
    return PRESETS / case


def batches(name: str):
    """Yield (token_ids, padding_mask, keras_output) numpy arrays of a fixture file."""
    data = np.load(OUTPUTS / f"{name}.npz")
    k = 0
    while f"token_ids_{k}" in data:
        yield data[f"token_ids_{k}"], data[f"padding_mask_{k}"], data[f"output_{k}"]
        k += 1


def max_relative_error(actual: np.ndarray, expected: np.ndarray, mask: np.ndarray) -> float:
    """max |actual - expected| / max |expected| over the valid positions (mask == 1)."""
    valid = mask.astype(bool)
    if not valid.any():
        return 0.0
    diff = np.abs(actual[valid].astype(np.float64) - expected[valid].astype(np.float64)).max()
    return float(diff / np.abs(expected[valid]).max())


def worst_error(model, case: str) -> float:
    """The model's worst relative error against keras_hub's recorded outputs of `case`."""
    import torch

    worst = 0.0
    with torch.no_grad():
        for token_ids, padding_mask, expected in batches(case):
            out = model({"token_ids": token_ids, "padding_mask": padding_mask}).float().numpy()
            worst = max(worst, max_relative_error(out, expected, padding_mask))
    return worst
