"""The fused CPU epilogues (oneDNN) compute the same function as the plain torch path."""

import pytest
import torch
import torch.nn.functional as F

from roberta_torch import RobertaBackbone, dense

pytestmark = pytest.mark.skipif(not dense._ONEDNN_AVAILABLE, reason="torch built without oneDNN")


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("epilogue", ["none", "gelu", "residual"])
def test_fused_linear_matches_reference(dtype, tolerance, epilogue):
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
    with torch.no_grad():
        assert dense.uses_fused_cpu_path(x.to(dtype), weight.to(dtype))
        fused = dense.linear(x.to(dtype), weight.to(dtype), bias.to(dtype), **args)
    assert fused.dtype == dtype and fused.shape == (2, 13, 40)
    error = (fused.double() - reference).abs().max() / reference.abs().max()
    assert error < tolerance


def test_fused_path_is_never_used_where_gradients_are_needed():
    x = torch.randn(3, 8, requires_grad=True)
    weight = torch.randn(4, 8, requires_grad=True)
    assert not dense.uses_fused_cpu_path(x, weight)
    with torch.no_grad():
        assert dense.uses_fused_cpu_path(x, weight)


def test_environment_switch_and_model_level_equality(monkeypatch):
    model = RobertaBackbone(vocabulary_size=60, num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=24, max_sequence_length=12)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.2)
    model.eval()
    ids = torch.randint(0, 60, (3, 12), generator=g)
    mask = torch.arange(12)[None] < torch.tensor([12, 5, 1])[:, None]
    with torch.no_grad():
        fused = model({"token_ids": ids, "padding_mask": mask})
        monkeypatch.setenv(dense.ONEDNN_ENV_VAR, "0")
        plain = model({"token_ids": ids, "padding_mask": mask})
    assert (fused[mask] - plain[mask]).abs().max() / plain[mask].abs().max() < 1e-5


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
