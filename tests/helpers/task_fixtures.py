"""The committed task-model fixtures (tests/fixtures/tasks/, made by make_task_fixtures.py)."""

from __future__ import annotations

import numpy as np
import torch

from .paths import FIXTURES

TASK_FIXTURES = FIXTURES / "tasks"
TRANSFORMERS_CASES = [
    f"{family}_{kind}"
    for family in ("roberta", "xlm_roberta")
    for kind in ("sequenceclassification", "maskedlm", "tokenclassification", "questionanswering")
]
KERAS_CASES = ["roberta_text_classifier", "roberta_masked_lm", "xlm_roberta_text_classifier", "xlm_roberta_masked_lm"]


def case_dir(source: str, case: str):
    return TASK_FIXTURES / source / case


def case_data(source: str, case: str) -> dict:
    return dict(np.load(TASK_FIXTURES / source / f"{case}.npz"))


def model_inputs(data: dict, with_mask_positions: bool = True) -> dict:
    inputs = {"token_ids": data["token_ids"], "padding_mask": data["padding_mask"]}
    if with_mask_positions and "mask_positions" in data:
        inputs["mask_positions"] = data["mask_positions"]
    return inputs


def relative_error(actual, expected, valid=None) -> float:
    """max |actual - expected| / max |expected|, over rows where `valid` (batch, seq) is True."""
    actual = actual.detach().float().numpy() if isinstance(actual, torch.Tensor) else np.asarray(actual)
    expected = np.asarray(expected, dtype=np.float64)
    if valid is not None:
        actual, expected = actual[valid], expected[valid]
    return float(np.abs(actual - expected).max() / np.abs(expected).max())
