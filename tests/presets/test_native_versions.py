"""Native safetensors presets: version 2 (separate query/key/value) is written and read back,
and version 1 files (one fused `attention.qkv` per layer, rows [query; key; value]), written
by the old code (tests/fixtures/make_native_v1_fixture.py), still load to the same outputs."""

import json
import shutil

import numpy as np
import pytest
import torch
from helpers.paths import NATIVE_V1
from helpers.random_weights import randomize_
from safetensors.torch import load_file, save_file

import roberta_torch
from roberta_torch.presets import native_format


def _v1_inputs():
    saved = np.load(NATIVE_V1 / "outputs.npz")
    inputs = {"token_ids": torch.from_numpy(saved["token_ids"]), "padding_mask": torch.from_numpy(saved["padding_mask"])}
    return inputs, torch.from_numpy(saved["sequence_output"])


def test_version_1_file_loads_to_the_outputs_it_was_saved_with():
    assert json.loads((NATIVE_V1 / "preset" / "config.json").read_text())["format_version"] == 1
    assert "layers.0.attention.qkv.weight" in load_file(NATIVE_V1 / "preset" / "model.safetensors")
    model = roberta_torch.Backbone.from_preset(str(NATIVE_V1 / "preset"))
    inputs, expected = _v1_inputs()
    with torch.no_grad():
        actual = model(inputs)
    torch.testing.assert_close(actual, expected, rtol=1e-6, atol=1e-6)


def test_version_1_rows_split_query_key_value():
    v1 = load_file(NATIVE_V1 / "preset" / "model.safetensors")
    model = roberta_torch.Backbone.from_preset(str(NATIVE_V1 / "preset"))
    for i in range(2):
        weights = v1[f"layers.{i}.attention.qkv.weight"].chunk(3)
        biases = v1[f"layers.{i}.attention.qkv.bias"].chunk(3)
        attention = model.layers[i].attention
        for part, projection in enumerate((attention.query, attention.key, attention.value)):
            assert torch.equal(projection.weight, weights[part]) and torch.equal(projection.bias, biases[part])


def test_resaving_a_version_1_file_writes_version_2(tmp_path):
    model = roberta_torch.Backbone.from_preset(str(NATIVE_V1 / "preset"))
    model.save_to_preset(tmp_path, format="safetensors")
    assert json.loads((tmp_path / "config.json").read_text())["format_version"] == native_format.FORMAT_VERSION == 2
    keys = set(load_file(tmp_path / "model.safetensors"))
    assert "layers.1.attention.value.bias" in keys and not any("qkv" in k for k in keys)
    reloaded = roberta_torch.Backbone.from_preset(str(tmp_path))
    inputs, expected = _v1_inputs()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(inputs), expected, rtol=1e-6, atol=1e-6)


def test_version_2_round_trip(tmp_path):
    model = randomize_(roberta_torch.RobertaBackbone(vocabulary_size=40, num_layers=2, num_heads=2, hidden_dim=8,
                                                     intermediate_dim=16, max_sequence_length=12), seed=3).eval()
    model.save_to_preset(tmp_path, format="safetensors")
    reloaded = roberta_torch.Backbone.from_preset(str(tmp_path))
    for key, value in model.state_dict().items():
        assert torch.equal(reloaded.state_dict()[key], value), key


def _broken_v1(tmp_path, edit):
    directory = tmp_path / "v1"
    shutil.copytree(NATIVE_V1 / "preset", directory)
    tensors = load_file(directory / "model.safetensors")
    edit(tensors)
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
    return directory


def test_version_1_with_a_mis_shaped_qkv_names_key_shapes_and_file(tmp_path):
    def truncate(tensors):
        tensors["layers.1.attention.qkv.weight"] = tensors["layers.1.attention.qkv.weight"][:-2].clone()

    directory = _broken_v1(tmp_path, truncate)
    with pytest.raises(ValueError, match=r"layers\.1\.attention\.qkv\.weight .*model\.safetensors.*\(22, 8\).*\(24, 8\)"):
        roberta_torch.Backbone.from_preset(str(directory))


def test_version_1_without_qkv_is_refused(tmp_path):
    directory = _broken_v1(tmp_path, lambda tensors: tensors.pop("layers.0.attention.qkv.bias"))
    with pytest.raises(ValueError, match=r"layers\.0\.attention\.qkv\.bias: missing"):
        roberta_torch.Backbone.from_preset(str(directory))


def test_version_2_file_with_v1_keys_is_refused(tmp_path):
    directory = _broken_v1(tmp_path, lambda tensors: None)
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, "format_version": 2}))
    with pytest.raises(ValueError, match=r"layers\.0\.attention\.query\.weight: missing"):
        roberta_torch.Backbone.from_preset(str(directory))


def test_unknown_version_is_refused(tmp_path):
    directory = _broken_v1(tmp_path, lambda tensors: None)
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, "format_version": 3}))
    with pytest.raises(ValueError, match=r"format_version=3 is not supported .*reads versions 1, 2"):
        roberta_torch.Backbone.from_preset(str(directory))


def test_a_table_that_fills_one_tensor_twice_is_refused():
    from roberta_torch.presets.mapping import Row, SourceTensor, check_rows

    def source(shape):
        return SourceTensor(shape, "float32", "f.safetensors", lambda: torch.zeros(shape))

    rows = [Row("a", "w"), Row("b", "w")]
    problems, _ = check_rows(rows, {"a": source((2,)), "b": source((2,))}, {"w": torch.zeros(2)}, {})
    assert problems == ["w: 2 source tensors fill it (conversion table bug)"]
