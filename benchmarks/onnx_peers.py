"""ONNX Runtime peers for the CPU benchmarks: what CPU users pick for speed.

A transformers `RobertaModel` exported with `torch.onnx.export(dynamo=True)` (dynamic batch
and sequence axes), run by ONNX Runtime in float32, and the same graph quantized by
`onnxruntime.quantization.quantize_dynamic` with per-channel int8 weights: how
sentence-transformers' `onnx-qint8` files and Optimum's dynamic quantization are made
(uint8 activations quantized per tensor at run time, MatMulInteger).

Sessions use `intra_op_num_threads` = torch's thread count and no spinning after a run
(`session.intra_op.allow_spinning=0`): ORT's pool spins by default, which would take the
cores from whatever runs next in an interleaved timing.
"""

from __future__ import annotations

import contextlib
import io
import logging
import pathlib
import warnings

import numpy as np
import torch


class _LastHiddenState(torch.nn.Module):
    """RobertaModel as (input_ids, attention_mask) -> last_hidden_state, for export."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def export_onnx(model, directory: pathlib.Path, name: str = "model") -> pathlib.Path:
    """Export a float32 transformers RobertaModel (in eval mode) to `directory/name.onnx`."""
    if next(model.parameters()).dtype != torch.float32:
        raise ValueError("export_onnx takes a float32 model (ONNX Runtime's CPU peers run float32 and int8).")
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.onnx"
    ids = torch.randint(3, 100, (2, 16))
    mask = torch.ones_like(ids)
    axes = {0: "batch", 1: "sequence"}
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _LastHiddenState(model.eval()), (ids, mask), str(path), dynamo=True,
            input_names=["input_ids", "attention_mask"], output_names=["last_hidden_state"],
            dynamic_shapes={"input_ids": axes, "attention_mask": axes}, external_data=False,
        )
    return path


def quantize_onnx(path: pathlib.Path) -> pathlib.Path:
    """ONNX Runtime's dynamic int8 quantization, per-channel int8 weights (ORT's defaults
    otherwise: every op type it can quantize, uint8 activations, no reduce_range)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantized = path.with_name(path.stem + "_qint8.onnx")
    logging.getLogger().setLevel(logging.ERROR)  # ORT logs a pre-processing hint on the root logger
    quantize_dynamic(str(path), str(quantized), per_channel=True, weight_type=QuantType.QInt8)
    return quantized


def session(path: pathlib.Path, threads: int | None = None):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def runner(ort_session):
    """(input_ids, attention_mask) torch tensors -> last_hidden_state as a torch tensor."""

    def run(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        feed = {"input_ids": np.ascontiguousarray(ids.numpy()).astype(np.int64),
                "attention_mask": np.ascontiguousarray(mask.numpy()).astype(np.int64)}
        return torch.from_numpy(ort_session.run(None, feed)[0])

    return run


def onnx_peers(model, directory: pathlib.Path) -> dict:
    """{"onnxruntime_fp32": run, "onnxruntime_int8": run} for a transformers RobertaModel."""
    path = export_onnx(model, directory)
    return {"onnxruntime_fp32": runner(session(path)), "onnxruntime_int8": runner(session(quantize_onnx(path)))}
