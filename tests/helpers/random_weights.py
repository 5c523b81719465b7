"""One randomizer for every test model: every parameter gets fresh random values, biases and
LayerNorm parameters included (LayerNorm weights around 1, so activations stay O(1))."""

from __future__ import annotations

import torch


def randomize_(model: torch.nn.Module, seed: int = 0, scale: float = 0.3, norm_scale: float = 0.1):
    """Fill every parameter of `model` in place and return it.

    Weights and biases ~ N(0, scale^2); LayerNorm parameters ~ N(0, norm_scale^2), their
    weights shifted by +1. Deterministic in `seed`, independent of the global RNG.
    """
    generator = torch.Generator().manual_seed(seed)
    norm_parameters = {
        id(p) for m in model.modules() if isinstance(m, torch.nn.LayerNorm) for p in m.parameters(recurse=False)
    }
    norm_weights = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.LayerNorm)}
    with torch.no_grad():
        for param in model.parameters():
            std = norm_scale if id(param) in norm_parameters else scale
            values = torch.randn(param.shape, generator=generator) * std
            if id(param) in norm_weights:
                values += 1.0
            param.copy_(values.to(param.dtype))
    return model
