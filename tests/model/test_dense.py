"""The fused CPU epilogues (oneDNN) compute the same function as the plain torch path."""

import pytest
import torch
import torch.nn.functional as F

from roberta_torch import RobertaBackbone, dense, dispatch

pytestmark = pytest.mark.skipif(not dense.ONEDNN_AVAILABLE, reason="torch built without oneDNN")


def fused_linear_calls(run) -> int:
    """How many oneDNN fused linear kernels `run()` launched (read off torch's profiler)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        run()
    return sum(event.count for event in profile.key_averages() if "_linear_pointwise" in event.key)


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("epilogue", ["none", "gelu", "residual"])
def test_fused_linear_matches_reference(dtype, tolerance, epilogue):
    if dtype not in dense.FUSED_DTYPES:
        pytest.skip(f"this CPU's oneDNN has no {dtype} kernels")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 13, 48, generator=g)
    weight = torch.randn(40, 48, generator=g) * 0.2
    bias = torch.randn(40, generator=g)
    residual = torch.randn(2, 13, 40, generator=g)
    reference = F.linear(x.double(), weight.double(), bias.double())
    if epilogue == "gelu":
        reference = F.gelu(reference)
    if epilogue == "residual":
        reference = reference + residual.double()
    args = dict(activation="gelu" if epilogue == "gelu" else None, residual=residual.to(dtype) if epilogue == "residual" else None)
    with torch.no_grad(), dispatch.override(dense_epilogue="fused"):  # "auto" measures (test_cpu_choice.py)
        assert dense.uses_fused_cpu_path(x.to(dtype), weight.to(dtype))
        fused = dense.linear(x.to(dtype), weight.to(dtype), bias.to(dtype), **args)
    assert fused.dtype == dtype and fused.shape == (2, 13, 40)
    error = (fused.double() - reference).abs().max() / reference.abs().max()
    assert error < tolerance


def test_fused_path_is_never_used_where_gradients_are_needed():
    x = torch.randn(3, 8, requires_grad=True)
    weight = torch.randn(4, 8, requires_grad=True)
    with dispatch.override(dense_epilogue="fused"):
        assert not dense.uses_fused_cpu_path(x, weight)
        with torch.no_grad():
            assert dense.uses_fused_cpu_path(x, weight)


def test_switch_and_model_level_equality():
    model = RobertaBackbone(vocabulary_size=60, num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=24, max_sequence_length=12)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.2)
    model.eval()
    ids = torch.randint(0, 60, (3, 12), generator=g)
    mask = torch.arange(12)[None] < torch.tensor([12, 5, 1])[:, None]
    outputs = {}

    def run(name):
        with torch.no_grad(), dispatch.override(dense_epilogue="fused" if name == "fused" else None):
            outputs[name] = model({"token_ids": ids, "padding_mask": mask})

    assert fused_linear_calls(lambda: run("fused")) == 2 * 6  # 6 dense layers per encoder layer
    previous = dense.set_onednn_enabled(False)
    try:
        assert fused_linear_calls(lambda: run("plain")) == 0
    finally:
        dense.set_onednn_enabled(previous)
    fused, plain = outputs["fused"], outputs["plain"]
    assert (fused[mask] - plain[mask]).abs().max() / plain[mask].abs().max() < 1e-5
    with pytest.raises(TypeError, match="enabled"):
        dense.set_onednn_enabled("0")


def test_cpu_autocast_takes_the_plain_path():
    model = RobertaBackbone(vocabulary_size=60, num_layers=1, num_heads=2, hidden_dim=16, intermediate_dim=24, max_sequence_length=12).eval()
    ids = torch.randint(0, 60, (2, 7))
    with torch.no_grad():
        reference = model({"token_ids": ids})
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert not dense.uses_fused_cpu_path(ids.float(), ids.float())
            out = model({"token_ids": ids})
    assert torch.isfinite(out).all()
    assert (out.float() - reference).abs().max() < 0.1
