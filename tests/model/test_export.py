"""torch.export with dynamic batch and sequence length, and ONNX (dynamo exporter) run by
onnxruntime, both equal to eager in float32; the exported graph takes the padded path."""

import numpy as np
import pytest
import torch

import roberta_torch
from helpers.random_weights import randomize_
from roberta_torch import RobertaBackbone

CONFIG = dict(vocabulary_size=61, num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=24, max_sequence_length=32)


def small(**kwargs):
    config = {**CONFIG, "padding_free": False, **kwargs}
    return randomize_(RobertaBackbone(**config), seed=0).eval()


def batch(size, seq, seed=0, left=False):
    generator = torch.Generator().manual_seed(seed)
    token_ids = torch.randint(0, 61, (size, seq), generator=generator)
    lengths = torch.randint(1, seq + 1, (size,), generator=generator)
    lengths[0] = seq
    columns = torch.arange(seq)[None, :]
    mask = (columns >= seq - lengths[:, None]) if left else (columns < lengths[:, None])
    return {"token_ids": token_ids, "padding_mask": mask.long()}


def dynamic(inputs):
    size, seq = torch.export.Dim("batch"), torch.export.Dim("seq", max=CONFIG["max_sequence_length"])
    return {name: {0: size, 1: seq} for name in inputs}


def test_torch_export_with_dynamic_batch_and_sequence_length():
    model = small()  # eager reference on the padded path
    example = batch(2, 7)
    # Even a model that asks for padding-free execution exports the padded path (no host
    # sync, no data-dependent shapes): Keras's values at padded positions, not zeros.
    program = torch.export.export(small(padding_free=True), (example,), dynamic_shapes=(dynamic(example),))
    exported = program.module()
    for size, seq in [(2, 7), (1, 1), (5, 32), (3, 12)]:
        inputs = batch(size, seq, seed=size * seq)
        with torch.no_grad():
            expected = model(inputs)
            out = exported(inputs)
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    # The value checks became runtime asserts in the graph.
    bad = batch(2, 5)
    bad["token_ids"][0, 0] = 61
    with pytest.raises(RuntimeError, match="vocabulary_size"):
        exported(bad)


def test_torch_export_with_positions_and_hidden_states():
    model = small()
    example = batch(2, 7, left=True)
    example["position_ids"] = roberta_torch.transformers_position_ids(example["padding_mask"])
    program = torch.export.export(
        model,
        (example,),
        kwargs={"output_hidden_states": True},
        dynamic_shapes={"inputs": dynamic(example), "output_hidden_states": None},
    )
    inputs = batch(3, 11, seed=1, left=True)
    inputs["position_ids"] = roberta_torch.transformers_position_ids(inputs["padding_mask"])
    with torch.no_grad():
        expected = model(inputs, output_hidden_states=True)
        out = program.module()(inputs, output_hidden_states=True)
    assert isinstance(out, roberta_torch.BackboneOutput)
    assert len(out.hidden_states) == CONFIG["num_layers"] + 1
    for a, b in zip(out.hidden_states, expected.hidden_states):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.filterwarnings("ignore:.*axis name:UserWarning", "ignore:.*LeafSpec:FutureWarning")
def test_onnx_export_runs_in_onnxruntime():
    pytest.importorskip("onnxscript")
    onnxruntime = pytest.importorskip("onnxruntime")
    model = small(num_layers=1)
    example = batch(2, 7)
    # A dict as the last positional argument is taken as keyword arguments by
    # torch.onnx.export; passing `kwargs` says so and names the graph inputs.
    program = torch.onnx.export(model, (), kwargs=example, dynamo=True, dynamic_shapes=dynamic(example), verbose=False)
    session = onnxruntime.InferenceSession(program.model_proto.SerializeToString(), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["token_ids", "padding_mask"]
    for size, seq in [(2, 7), (3, 19), (1, 1)]:
        inputs = batch(size, seq, seed=seq)
        (out,) = session.run(None, {k: v.numpy() for k, v in inputs.items()})
        with torch.no_grad():
            expected = model(inputs).numpy()
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
