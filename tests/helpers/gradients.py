"""Comparing two runs' parameter gradients, knowing which ones are zero in exact arithmetic.

Attention's key bias adds q . b_k to every score of a query's row, and softmax ignores a
constant added to a row: its gradient is exactly zero, and what a run computes there is
rounding noise (about 1e-7), different in every run. Those gradients are checked to be
noise-sized next to the model's largest gradient; every other one to a relative error.
"""

from __future__ import annotations

ZERO_GRADIENT_SUFFIXES = ("attention.key.bias",)


def _relative_error(actual, expected) -> float:
    return float((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-30))


def assert_gradients_close(actual: dict, expected: dict, rtol: float = 1e-5) -> None:
    """actual, expected: parameter name -> gradient."""
    largest = max(float(g.abs().max()) for g in expected.values())
    for name, grad in expected.items():
        if name.endswith(ZERO_GRADIENT_SUFFIXES):
            assert float(actual[name].abs().max()) <= 1e-4 * largest, name
            assert float(grad.abs().max()) <= 1e-4 * largest, name
        elif grad.abs().max() > 0:
            assert _relative_error(actual[name], grad) < rtol, name
