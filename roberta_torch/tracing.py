"""Whether torch.compile or torch.export is tracing: the one spelling of "is compiling".

While tracing, code must not read tensor data on the host (a sync, and a graph break under
torch.compile) or branch in Python on it; value checks become `torch._assert_async` and
host-side shortcuts are skipped.
"""

from __future__ import annotations

import torch


def is_compiling() -> bool:
    """True while torch.compile, torch.export (strict or not) or torch.onnx.export(dynamo=True)
    traces (torch >= 2.13 reports every export as compiling)."""
    return torch.compiler.is_compiling()


def is_exporting() -> bool:
    """True while torch.export (or torch.onnx.export(dynamo=True)) traces: shapes stay static."""
    return torch.compiler.is_exporting()
