"""Keras's TruncatedNormal(0.02), drawn fast: the distribution (bounds, std, shape) equals
torch's inverse-CDF sampler's, and models built with weights to load initialize nothing."""

import math

import pytest
import torch

import roberta_torch
from roberta_torch import tasks
from roberta_torch.initializers import truncated_normal_

STD = 0.02
# The standard deviation of N(0, s) truncated at +-2s: s * sqrt(1 - 2 * 2 * phi(2) / (2 Phi(2) - 1)).
PHI_2 = math.exp(-2) / math.sqrt(2 * math.pi)
TRUNCATED_STD = STD * math.sqrt(1 - 4 * PHI_2 / math.erf(2 / math.sqrt(2)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_bounds_std_and_shape_of_the_distribution(dtype):
    generator = torch.Generator().manual_seed(0)
    values = truncated_normal_(torch.empty(1000, 1000, dtype=dtype), generator=generator).double().flatten()
    assert values.abs().max() <= torch.tensor(2 * STD, dtype=dtype).double()  # the bound in the tensor's dtype
    assert abs(values.std().item() - TRUNCATED_STD) < 0.005 * TRUNCATED_STD
    assert abs(values.mean().item()) < 1e-4
    # Redrawn, not clamped: no point mass at the bounds, and the density near them is the normal's.
    assert (values.abs() == 2 * STD).float().mean() < 1e-4 or dtype == torch.bfloat16
    edge = ((values.abs() > 1.9 * STD)).double().mean().item()
    expected_edge = (math.erf(2 / math.sqrt(2)) - math.erf(1.9 / math.sqrt(2))) / math.erf(2 / math.sqrt(2))
    assert abs(edge - expected_edge) < 0.1 * expected_edge


def test_same_distribution_as_torchs_sampler():
    generator = torch.Generator().manual_seed(1)
    ours = truncated_normal_(torch.empty(200_000), generator=generator).sort().values
    theirs = torch.nn.init.trunc_normal_(torch.empty(200_000), std=STD, a=-2 * STD, b=2 * STD).sort().values
    quantiles = torch.linspace(0.01, 0.99, 99)
    difference = (ours[(quantiles * (len(ours) - 1)).long()] - theirs[(quantiles * (len(theirs) - 1)).long()]).abs()
    assert difference.max() < 0.02 * STD  # every percentile agrees


def test_generator_and_meta():
    a = truncated_normal_(torch.empty(100), generator=torch.Generator().manual_seed(3))
    b = truncated_normal_(torch.empty(100), generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    meta = torch.empty(10, device="meta")
    assert truncated_normal_(meta) is meta


def test_fresh_models_get_keras_initializers():
    backbone = roberta_torch.RobertaBackbone(vocabulary_size=5000, num_layers=2, num_heads=2, hidden_dim=64,
                                             intermediate_dim=128)
    for name, tensor in [("token", backbone.token_embedding.weight), ("position", backbone.position_embedding.weight),
                         ("query", backbone.layers[0].attention.query.weight)]:
        assert tensor.abs().max() <= 2 * STD and abs(tensor.std().item() - TRUNCATED_STD) < 0.05 * TRUNCATED_STD, name
    assert not backbone.layers[0].attention.query.bias.any()


def test_models_loaded_from_presets_initialize_nothing(monkeypatch):
    calls = []
    original = truncated_normal_

    def spy(tensor, *args, **kwargs):
        if not tensor.is_meta:
            calls.append(tuple(tensor.shape))
        return original(tensor, *args, **kwargs)

    monkeypatch.setattr("roberta_torch.layers.truncated_normal_", spy)
    for name in ("normal_", "xavier_uniform_", "trunc_normal_", "uniform_", "kaiming_uniform_"):
        monkeypatch.setattr(torch.nn.init, name, lambda t, *a, name=name, **k: None if t.is_meta else calls.append(name))
    roberta_torch.Backbone.from_preset("roberta_tiny_random")
    from helpers.task_fixtures import case_dir

    tasks.Task.from_preset(str(case_dir("keras", "roberta_masked_lm")))
    tasks.Task.from_preset(str(case_dir("transformers", "roberta_sequenceclassification")))
    assert calls == []
