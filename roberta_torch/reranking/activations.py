"""A cross-encoder's score activations by name (what sentence-transformers' files name, see
presets/cross_encoder_config.py): shared by the model and its writer. Softmax is over the
labels, as torch.nn.Softmax() picks dim 1 for (batch, labels) logits."""

from __future__ import annotations

import torch

ACTIVATIONS = {
    "sigmoid": torch.sigmoid,
    "identity": lambda x: x,
    "tanh": torch.tanh,
    "softmax": lambda x: torch.softmax(x, dim=-1),
}
