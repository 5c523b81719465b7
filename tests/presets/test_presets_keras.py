"""Keras presets written by the real keras-hub (tests/fixtures/keras_presets) loaded from a
local directory, from kagglehub's cache and from huggingface_hub's cache (the real clients
resolve them offline), matching keras_hub's outputs on the valid positions."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import roberta_torch
from helpers.hub_caches import put_in_hf_cache, put_in_kagglehub_cache
from helpers.keras_fixtures import FLOAT32_CASES, batches, max_relative_error, preset_dir, worst_error
from helpers.subprocesses import run_python
from roberta_torch import RobertaBackbone, XLMRobertaBackbone

TOLERANCE = 1e-5


@pytest.mark.parametrize("case", FLOAT32_CASES)
def test_local_directory_matches_keras_hub(case):
    model = roberta_torch.Backbone.from_preset(str(preset_dir(case)))
    expected_cls = XLMRobertaBackbone if case.startswith("xlm") else RobertaBackbone
    assert type(model) is expected_cls
    assert not model.training
    assert worst_error(model, case) < TOLERANCE


def test_pathlib_directory_and_subclass_rules():
    xlm_dir = preset_dir("xlm_roberta_2layer")
    # RobertaBackbone accepts its subclass's presets and returns the preset's class.
    assert type(RobertaBackbone.from_preset(xlm_dir)) is XLMRobertaBackbone
    assert type(XLMRobertaBackbone.from_preset(xlm_dir)) is XLMRobertaBackbone
    with pytest.raises(
        ValueError, match=r"RobertaBackbone, which XLMRobertaBackbone.from_preset cannot load"
    ):
        XLMRobertaBackbone.from_preset(preset_dir("roberta_1layer"))


def test_unrelated_class_is_refused_by_name():
    class OtherBackbone(roberta_torch.Backbone):
        pass

    with pytest.raises(
        ValueError, match=r"holds a RobertaBackbone, which OtherBackbone.from_preset cannot load"
    ):
        OtherBackbone.from_preset(str(preset_dir("roberta_1layer")))


def test_preset_naming_an_unimplemented_class_is_refused(tmp_path):
    config = json.loads((preset_dir("roberta_1layer") / "config.json").read_text())
    config["class_name"], config["registered_name"] = "BertBackbone", "keras_hub>BertBackbone"
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"holds a BertBackbone, which roberta_torch does not implement"):
        roberta_torch.Backbone.from_preset(str(tmp_path))


def test_kwargs_override_the_stored_config():
    directory = str(preset_dir("roberta_1layer"))
    model = roberta_torch.Backbone.from_preset(
        directory, dropout=0.0, dtype="mixed_bfloat16", padding_free=False
    )
    assert model.get_config()["dropout"] == 0.0
    assert model.dtype_policy.name == "mixed_bfloat16"
    assert model.token_embedding.weight.dtype == torch.float32  # mixed: float32 variables
    reference = roberta_torch.Backbone.from_preset(directory)
    for key, value in reference.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    bf16 = roberta_torch.Backbone.from_preset(directory, dtype="bfloat16")
    assert bf16.token_embedding.weight.dtype == torch.bfloat16
    torch.testing.assert_close(
        bf16.token_embedding.weight.float(), reference.token_embedding.weight, rtol=1e-2, atol=0
    )


def test_shape_changing_override_fails_listing_every_key():
    with pytest.raises(ValueError) as info:
        roberta_torch.Backbone.from_preset(str(preset_dir("roberta_3layer_oddhead")), num_layers=2)
    message = str(info.value)
    # The third layer's 16 datasets are unused; each is named with its shape and file.
    assert message.count("layers/transformer_encoder_2/") == 16
    assert "(in model.weights.h5): shape (15, 3, 5), not used by the model" in message


def test_kagglehub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path))
    put_in_kagglehub_cache(tmp_path, "someone/roberta/keras/tiny/2", preset_dir("roberta_3layer_oddhead"))
    model = roberta_torch.Backbone.from_preset("kaggle://someone/roberta/keras/tiny/2")
    assert worst_error(model, "roberta_3layer_oddhead") < TOLERANCE


def test_builtin_name_resolves_through_kagglehub_cache(tmp_path, monkeypatch):
    # The builtin's own versioned handle, served from the cache (here with a tiny XLM-R).
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path))
    handle = "keras/xlm_roberta/keras/xlm_roberta_base_multi/3"
    put_in_kagglehub_cache(tmp_path, handle, preset_dir("xlm_roberta_2layer"))
    model = XLMRobertaBackbone.from_preset("xlm_roberta_base_multi")
    assert worst_error(model, "xlm_roberta_2layer") < TOLERANCE


def test_sharded_preset_through_kagglehub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path))
    put_in_kagglehub_cache(tmp_path, "someone/roberta/keras/sharded/1", preset_dir("roberta_sharded"))
    model = roberta_torch.Backbone.from_preset("kaggle://someone/roberta/keras/sharded/1")
    assert worst_error(model, "roberta_sharded") < TOLERANCE


HF_SCRIPT = textwrap.dedent("""
    import json, sys
    import roberta_torch
    from helpers.keras_fixtures import worst_error
    results = {{}}
    for repo, case in {cases!r}:
        model = roberta_torch.Backbone.from_preset("hf://" + repo)
        results[repo] = [type(model).__name__, worst_error(model, case)]
    try:
        roberta_torch.Backbone.from_preset("hf://someone/not-cached")
    except FileNotFoundError as error:
        results["missing"] = str(error)
    print(json.dumps(results))
    """)


def test_huggingface_hub_cache(tmp_path):
    # huggingface_hub reads HF_HOME / HF_HUB_OFFLINE when imported: use a fresh interpreter.
    cases = [("someone/xlm-tiny", "xlm_roberta_2layer"), ("someone/sharded", "roberta_sharded")]
    for repo, case in cases:
        put_in_hf_cache(tmp_path, repo, preset_dir(case))
    script = HF_SCRIPT.format(cases=cases)
    out = run_python(script, {"HF_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"})
    results = json.loads(out.strip().splitlines()[-1])
    assert results["someone/xlm-tiny"][0] == "XLMRobertaBackbone"
    assert results["someone/sharded"][0] == "RobertaBackbone"
    assert results["someone/xlm-tiny"][1] < TOLERANCE and results["someone/sharded"][1] < TOLERANCE
    assert "config.json" in results["missing"] and "hf://someone/not-cached" in results["missing"]


def test_trainable_false_and_device_kwargs_survive_loading():
    model = roberta_torch.Backbone.from_preset(
        str(preset_dir("roberta_1layer")), trainable=False, device="cpu"
    )
    assert not any(p.requires_grad for p in model.parameters())
    assert all(p.device.type == "cpu" and not p.is_meta for p in model.parameters())
    assert worst_error(model, "roberta_1layer") < TOLERANCE
