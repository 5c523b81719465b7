"""One reader per preset: resolved once, config.json classified once, shared by the backbone,
tokenizer and preprocessor loaders; every format's loader implements the loader protocol."""

import json
import shutil

import pytest

import roberta_torch
from helpers.keras_fixtures import preset_dir
from helpers.paths import TINY_PRESET
from roberta_torch.presets import formats, resolve
from roberta_torch.presets.loader import PresetLoader
from roberta_torch.presets.preset import Preset, open_preset

PROTOCOL = ("is_config", "parse_config", "read_backbone_tensors", "conversion_rows")


@pytest.mark.parametrize("loader_cls", formats.LOADERS, ids=lambda m: m.NAME)
def test_every_format_loader_implements_the_protocol(loader_cls):
    assert issubclass(loader_cls, PresetLoader)
    missing = [name for name in PROTOCOL if getattr(loader_cls, name) is getattr(PresetLoader, name)]
    assert not missing


def test_a_preset_is_resolved_once_for_every_loader(monkeypatch, tmp_path):
    calls = []
    original = resolve.resolve_preset
    monkeypatch.setattr(resolve, "resolve_preset", lambda *a, **k: calls.append(a) or original(*a, **k))
    preset = open_preset("roberta_tiny_random")
    assert isinstance(preset, Preset) and preset.format_name == "keras"
    assert (preset.class_name, preset.max_sequence_length) == ("RobertaBackbone", 128)
    backbone = roberta_torch.Backbone.from_preset(preset)
    tokenizer = roberta_torch.Tokenizer.from_preset(preset)
    preprocessor = roberta_torch.Preprocessor.from_preset(preset)
    assert len(calls) == 1
    assert preprocessor.sequence_length == backbone.max_sequence_length == 128
    assert tokenizer("hello") == preprocessor.tokenizer("hello")


def test_transformers_sequence_length_is_derived_in_one_place(tmp_path):
    # pad_token_id decides the reserved rows: max_position_embeddings - (pad + 1).
    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "roberta", "max_position_embeddings": 40, "pad_token_id": 3})
    )
    assert open_preset(str(tmp_path)).max_sequence_length == 36
    shutil.copytree(TINY_PRESET / "assets", tmp_path / "assets")
    shutil.copy(TINY_PRESET / "tokenizer.json", tmp_path / "tokenizer.json")
    assert roberta_torch.Preprocessor.from_preset(str(tmp_path)).sequence_length == 36


def test_link_out_of_a_preset_is_refused(tmp_path):
    preset = tmp_path / "preset"
    shutil.copytree(preset_dir("roberta_1layer"), preset)
    outside = tmp_path / "elsewhere.h5"
    (preset / "model.weights.h5").rename(outside)
    (preset / "model.weights.h5").symlink_to(outside)
    with pytest.raises(ValueError, match="outside the preset"):
        roberta_torch.Backbone.from_preset(str(preset))
