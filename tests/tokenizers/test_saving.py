"""Tokenizers and preprocessors save themselves exactly as keras_hub does, and keras_hub
loads what they write."""

import json

import pytest

import roberta_torch
from helpers.paths import TINY_PRESET
from helpers.paths import TOKENIZER_FIXTURES as FIXTURES

TEXTS = ["The quick brown fox.", "  spaces\tand\nnew lines ", "<mask> hello </s>"]


def test_roberta_tokenizer_writes_keras_hub_files_byte_for_byte(tmp_path):
    # The shipped preset's files were written by keras_hub's own save_to_preset.
    roberta_torch.Tokenizer.from_preset("roberta_tiny_random").save_to_preset(tmp_path)
    for name in ("assets/tokenizer/vocabulary.json", "assets/tokenizer/merges.txt"):
        assert (tmp_path / name).read_bytes() == (TINY_PRESET / name).read_bytes(), name
    assert json.loads((tmp_path / "tokenizer.json").read_text()) == json.loads((TINY_PRESET / "tokenizer.json").read_text())


def test_xlm_roberta_tokenizer_writes_its_sentencepiece_model(tmp_path):
    tokenizer = roberta_torch.Tokenizer.from_preset(str(FIXTURES / "xlm_roberta"))
    tokenizer.save_to_preset(tmp_path)
    source = FIXTURES / "xlm_roberta"
    assert (tmp_path / "assets/tokenizer/vocabulary.spm").read_bytes() == (
        source / "assets/tokenizer/vocabulary.spm"
    ).read_bytes()
    saved = json.loads((tmp_path / "tokenizer.json").read_text())
    assert saved["class_name"] == "XLMRobertaTokenizer" and saved["config"]["proto"] is None
    assert roberta_torch.Tokenizer.from_preset(str(tmp_path))(TEXTS) == tokenizer(TEXTS)
    from_json_only = roberta_torch.Tokenizer.from_preset(str(FIXTURES / "xlm_roberta_hf"))
    with pytest.raises(ValueError, match="sentencepiece"):
        from_json_only.save_to_preset(tmp_path / "nope")


def test_keras_hub_loads_what_we_save(tmp_path):
    keras_hub = pytest.importorskip("keras_hub")
    ours = roberta_torch.Preprocessor.from_preset("roberta_tiny_random", sequence_length=24)
    backbone = roberta_torch.Backbone.from_preset("roberta_tiny_random")
    backbone.save_to_preset(tmp_path)
    ours.save_to_preset(tmp_path)
    keras_tokenizer = keras_hub.models.Tokenizer.from_preset(str(tmp_path))
    assert [list(map(int, row)) for row in keras_tokenizer(TEXTS)] == ours.tokenizer(TEXTS)
    keras_preprocessor = keras_hub.models.TextClassifierPreprocessor.from_preset(str(tmp_path))
    assert type(keras_preprocessor).__name__ == "RobertaTextClassifierPreprocessor"
    assert keras_preprocessor.sequence_length == 24
    reloaded = roberta_torch.Preprocessor.from_preset(str(tmp_path))
    assert (reloaded.sequence_length, reloaded.truncate) == (24, "round_robin")
    keras_ids = keras_preprocessor(TEXTS)["token_ids"]
    our_ids = reloaded(TEXTS)["token_ids"]
    assert keras_ids.shape[1] == 24
    assert [list(map(int, row[: our_ids.shape[1]])) for row in keras_ids] == our_ids.tolist()
    for name in ("tokenizer.json", "preprocessor.json", "config.json", "model.weights.h5"):
        assert (tmp_path / name).is_file()


def test_tokenizer_save_refuses_links(tmp_path):
    target = tmp_path / "victim.txt"
    target.write_text("keep me")
    out = tmp_path / "out"
    (out / "assets" / "tokenizer").mkdir(parents=True)
    (out / "tokenizer.json").symlink_to(target)
    with pytest.raises(ValueError, match="symbolic link"):
        roberta_torch.Tokenizer.from_preset("roberta_tiny_random").save_to_preset(out)
    assert target.read_text() == "keep me"
