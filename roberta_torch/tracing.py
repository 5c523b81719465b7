"""Whether torch.compile or torch.export is tracing: the one spelling of "is compiling".

While tracing, code must not read tensor data on the host (a sync, and a graph break under
torch.compile) or branch in Python on it; value checks become `torch._assert_async` and
host-side shortcuts are skipped.
"""

from __future__ import annotations

import torch


def is_compiling() -> bool:
    """True while torch.compile, torch.export (strict or not), torch.onnx.export(dynamo=True)
    or torch.jit.trace traces (torch >= 2.13 reports every export as compiling)."""
    return torch.compiler.is_compiling() or torch.jit.is_tracing()


def is_exporting() -> bool:
    """True while torch.export, torch.onnx.export(dynamo=True) or torch.jit.trace traces: a
    static graph is recorded, so the path must not depend on this batch's data (a trace taken
    on an unpadded batch would otherwise bake in "no mask" and ignore every later mask), and
    oneDNN's fused ops (which the tracer cannot record) step aside."""
    return torch.compiler.is_exporting() or torch.jit.is_tracing()
