"""Builtin presets: offline architectures with keras-hub's exact parameter counts, and
`presets` listings per class. Parametrized from the registry."""

import pytest
import torch

import roberta_torch
from roberta_torch import RobertaBackbone, XLMRobertaBackbone
from roberta_torch.config import BackboneConfig
from roberta_torch.presets import registry
from roberta_torch.presets.preset import open_preset

# keras-hub 0.32's published counts (roberta_presets.py / xlm_roberta_presets.py).
KERAS_HUB_PARAMS = {
    "roberta_base_en": 124_052_736,
    "roberta_large_en": 354_307_072,
    "xlm_roberta_base_multi": 277_450_752,
    "xlm_roberta_large_multi": 558_837_760,
    "bge_m3": 566_702_080,
    "multilingual_e5_base": 277_450_752,
    "multilingual_e5_large": 558_837_760,
}
TINY = "roberta_tiny_random"
TINY_DIR = registry.package_preset_dir(registry.BUILTIN_PRESETS[TINY]["handle"])


def test_registry_matches_keras_hub_counts_and_handles():
    for name, params in KERAS_HUB_PARAMS.items():
        row = registry.BUILTIN_PRESETS[name]
        assert row["params"] == params
        assert BackboneConfig(**row["config"]).num_parameters() == params  # built on meta
        assert row["handle"].startswith("kaggle://keras/")
    assert (
        registry.BUILTIN_PRESETS["roberta_base_en"]["handle"]
        == "kaggle://keras/roberta/keras/roberta_base_en/3"
    )
    assert (
        registry.BUILTIN_PRESETS["xlm_roberta_large_multi"]["handle"]
        == "kaggle://keras/xlm_roberta/keras/xlm_roberta_large_multi/3"
    )


@pytest.mark.parametrize("name", sorted(KERAS_HUB_PARAMS))
def test_builtin_builds_offline_with_exact_parameter_count(name, monkeypatch):
    # Any attempt to resolve (download) would fail the test.
    monkeypatch.setattr("roberta_torch.presets.resolve.resolve_preset", _no_network)
    with torch.device("meta"):  # the architecture only: no memory, no random init
        model = roberta_torch.Backbone.from_preset(name, load_weights=False)
    expected_cls = registry.BUILTIN_PRESETS[name]["class_name"]
    assert type(model).__name__ == expected_cls
    assert sum(p.numel() for p in model.parameters()) == KERAS_HUB_PARAMS[name]
    assert (
        model.get_config()["max_sequence_length"]
        == registry.BUILTIN_PRESETS[name]["config"]["max_sequence_length"]
    )


def test_builtin_without_weights_takes_overrides(monkeypatch):
    monkeypatch.setattr("roberta_torch.presets.resolve.resolve_preset", _no_network)
    with torch.device("meta"):
        model = RobertaBackbone.from_preset(
            "roberta_base_en", load_weights=False, dtype="bfloat16", dropout=0.0
        )
    assert model.num_parameters() == KERAS_HUB_PARAMS["roberta_base_en"]
    assert model.token_embedding.weight.dtype == torch.bfloat16
    assert model.get_config()["dropout"] == 0.0
    assert not model.training  # from_preset returns eval mode, as keras_hub/transformers


def _no_network(*args, **kwargs):
    raise AssertionError("from_preset(load_weights=False) of a builtin must not resolve the preset")


def test_presets_lists_subclass_presets():
    roberta = RobertaBackbone.presets
    xlm = XLMRobertaBackbone.presets
    xlm_names = {n for n, r in registry.BUILTIN_PRESETS.items() if r["class_name"] == "XLMRobertaBackbone"}
    assert set(xlm) == xlm_names
    assert set(roberta) == set(registry.BUILTIN_PRESETS)  # its own + XLM-R's
    assert set(roberta_torch.Backbone.presets) == set(registry.BUILTIN_PRESETS)
    assert "roberta_base_en" not in xlm
    meta = roberta["xlm_roberta_base_multi"]
    assert meta["params"] == 277_450_752
    assert meta["class_name"] == "XLMRobertaBackbone"
    assert meta["handle"] == "kaggle://keras/xlm_roberta/keras/xlm_roberta_base_multi/3"
    assert "CommonCrawl" in meta["description"]
    # Metadata is a copy: mutating it cannot corrupt the registry.
    meta["config"]["num_layers"] = 1
    assert registry.BUILTIN_PRESETS["xlm_roberta_base_multi"]["config"]["num_layers"] == 12


@pytest.mark.skipif(
    not (TINY_DIR / "model.weights.h5").is_file(), reason="shipped tiny preset not written yet"
)
def test_shipped_tiny_preset_without_weights_is_randomly_initialized_on_cpu():
    loaded = roberta_torch.Backbone.from_preset(TINY)
    fresh = roberta_torch.Backbone.from_preset(TINY, load_weights=False)
    assert type(fresh) is RobertaBackbone and fresh.get_config() == loaded.get_config()
    weight = fresh.token_embedding.weight
    assert weight.device.type == "cpu" and not torch.equal(weight, loaded.token_embedding.weight)
    assert 0.01 < weight.std().item() < 0.03  # TruncatedNormal(0.02), not the preset's weights


@pytest.mark.skipif(
    not (TINY_DIR / "model.weights.h5").is_file(), reason="shipped tiny preset not written yet"
)
def test_shipped_tiny_preset_loads_by_name():
    model = roberta_torch.Backbone.from_preset(TINY)
    meta = RobertaBackbone.presets[TINY]
    assert type(model) is RobertaBackbone
    assert model.num_parameters() == meta["params"]
    with torch.no_grad():
        out = model(
            {"token_ids": torch.tensor([[0, 5, 6, 2]]), "padding_mask": torch.ones(1, 4, dtype=torch.int32)}
        )
    assert out.shape == (1, 4, model.hidden_dim) and torch.isfinite(out).all()


def test_shipped_tiny_preset_row_equals_its_files():
    preset = open_preset(TINY)
    _, config, _ = preset.parse()
    row = registry.BUILTIN_PRESETS[TINY]
    assert {k: config[k] for k in row["config"]} == row["config"] and preset.class_name == row["class_name"]
    assert row["params"] == preset.json("metadata.json")["parameter_count"] == BackboneConfig.from_dict(config).num_parameters()
