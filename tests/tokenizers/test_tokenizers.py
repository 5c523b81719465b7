"""Tokenizer parity with keras_hub (and transformers) on committed fixtures, plus the API.

Fixtures: tests/fixtures/tokenizers/ (see its README.md), written by
tools/make_tokenizer_fixtures.py from the real keras_hub / transformers tokenizers.
"""

import json
import os
import pathlib
import shutil

import numpy as np
import pytest
import torch

from roberta_torch.tokenizers import RobertaTokenizer, Tokenizer, XLMRobertaTokenizer

# keras reads its backend once, at first import (keras_hub is imported lazily below).
os.environ.setdefault("KERAS_BACKEND", "torch")

from helpers.paths import REPO_ROOT, TINY_PRESET
from helpers.paths import TOKENIZER_FIXTURES as FIXTURES
EXPECTED = json.loads((FIXTURES / "expected_tokenizers.json").read_text(encoding="utf-8"))
STRINGS = EXPECTED["strings"]
XLM_STRINGS = EXPECTED["xlm_roberta_strings"]

ROBERTA_DIRS = {"roberta_tiny_random": TINY_PRESET, "roberta_whitespace": FIXTURES / "roberta_whitespace"}
SPECIAL_TEXT = ("<s> special </s> <mask> <pad> <unk>", "a<mask>b<s>c")

# Strings on which keras_hub 0.32's own two code paths (or keras_hub and GPT-2) disagree;
# roberta_torch follows GPT-2 / transformers there. See tests/fixtures/tokenizers/README.md.
KERAS_PYTHON_PATH_DIVERGENCES = {
    "roberta_tiny_random": {"'quoted' and \"double quoted\" words, 's 's"},
    "roberta_whitespace": {
        "   leading spaces",
        "multiple   spaces  inside",
        "two\n\nnewlines and three\n\n\nnewlines",
        "windows\r\nline end",
        "'quoted' and \"double quoted\" words, 's 's",
    },
}
KERAS_TF_PATH_DIVERGENCES = {
    "roberta_tiny_random": set(),
    "roberta_whitespace": {"   ", "trailing spaces  ", "two\n\nnewlines and three\n\n\nnewlines", "windows\r\nline end"},
}


@pytest.fixture(scope="module")
def roberta_tokenizers():
    return {name: RobertaTokenizer.from_preset(str(path)) for name, path in ROBERTA_DIRS.items()}


@pytest.fixture(scope="module")
def xlm_tokenizer():
    return XLMRobertaTokenizer.from_preset(str(FIXTURES / "xlm_roberta"))


def mismatches(strings, got, expected):
    return [(s, g, e) for s, g, e in zip(strings, got, expected) if g != e]


# -- id parity ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(ROBERTA_DIRS))
def test_roberta_ids_equal_transformers_except_special_token_text(roberta_tokenizers, name):
    ours = roberta_tokenizers[name](STRINGS)
    bad = mismatches(STRINGS, ours, EXPECTED[name]["transformers"])
    # transformers' <mask> strips the space before it; keras_hub keeps it, and so do we.
    assert {s for s, _, _ in bad} == {SPECIAL_TEXT[0]}
    index = STRINGS.index(SPECIAL_TEXT[0])
    assert ours[index] == EXPECTED[name]["keras_python"][index] == EXPECTED[name]["keras_tf"][index]


@pytest.mark.parametrize("name", sorted(ROBERTA_DIRS))
@pytest.mark.parametrize("path", ["keras_python", "keras_tf"])
def test_roberta_ids_equal_keras_hub_outside_its_known_divergences(roberta_tokenizers, name, path):
    ours = roberta_tokenizers[name](STRINGS)
    known = (KERAS_PYTHON_PATH_DIVERGENCES if path == "keras_python" else KERAS_TF_PATH_DIVERGENCES)[name]
    bad = mismatches(STRINGS, ours, EXPECTED[name][path])
    # Exactly the known strings differ: a fixed or new divergence fails here.
    assert {s for s, _, _ in bad} == known
    for text, got, _ in bad:
        assert got == EXPECTED[name]["transformers"][STRINGS.index(text)], text
    assert len(STRINGS) - len(known) >= 30


def test_known_divergences_are_keras_hub_inconsistencies():
    """Each divergent string is one where keras_hub disagrees with itself or with GPT-2."""
    for name in ROBERTA_DIRS:
        entry = EXPECTED[name]
        for text in KERAS_PYTHON_PATH_DIVERGENCES[name] | KERAS_TF_PATH_DIVERGENCES[name]:
            i = STRINGS.index(text)
            assert entry["keras_python"][i] != entry["keras_tf"][i] or entry["keras_tf"][i] != entry["transformers"][i]


def test_whitespace_vocabulary_exercises_whitespace_merges():
    merges = (FIXTURES / "roberta_whitespace/assets/tokenizer/merges.txt").read_text(encoding="utf-8").splitlines()
    assert "Ġ Ġ" in merges and "Ċ Ċ" in merges


def test_xlm_roberta_ids_equal_keras_hub_everywhere(xlm_tokenizer):
    ours = xlm_tokenizer(XLM_STRINGS)
    assert mismatches(XLM_STRINGS, ours, EXPECTED["xlm_roberta"]["keras_python"]) == []
    assert mismatches(XLM_STRINGS, ours, EXPECTED["xlm_roberta"]["keras_tf"]) == []
    # fairseq's layout is exercised: unknown characters -> <unk>=3, pieces shifted by one.
    assert any(3 in row for row in ours)
    assert all(0 not in row and 1 not in row and 2 not in row for row in ours)
    bad = mismatches(XLM_STRINGS, ours, EXPECTED["xlm_roberta"]["transformers"])
    assert {s for s, _, _ in bad} == set(SPECIAL_TEXT)


def test_xlm_roberta_from_transformers_tokenizer_json_only():
    tokenizer = XLMRobertaTokenizer.from_preset(str(FIXTURES / "xlm_roberta_hf"))
    ours = tokenizer(XLM_STRINGS)
    assert mismatches(XLM_STRINGS, ours, EXPECTED["xlm_roberta"]["transformers"]) == []
    bad = mismatches(XLM_STRINGS, ours, EXPECTED["xlm_roberta"]["keras_python"])
    assert {s for s, _, _ in bad} == set(SPECIAL_TEXT)
    detokenized = [tokenizer.detokenize(ids) for ids in EXPECTED["xlm_roberta"]["keras_tf"]]
    assert detokenized == EXPECTED["xlm_roberta"]["keras_detokenized"]
    special = EXPECTED["xlm_roberta"]["special_detokenize"]
    assert tokenizer.detokenize(special["ids"]) == special["keras"]
    assert tokenizer.vocabulary_size() == EXPECTED["xlm_roberta"]["vocabulary_size"]


# -- detokenize and round trips -----------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(ROBERTA_DIRS))
def test_roberta_detokenize_equals_keras_and_round_trips(roberta_tokenizers, name):
    tokenizer = roberta_tokenizers[name]
    got = [tokenizer.detokenize(ids) for ids in EXPECTED[name]["keras_tf"]]
    assert got == EXPECTED[name]["keras_detokenized"]
    # Byte-level BPE is lossless.
    assert tokenizer.detokenize(tokenizer(STRINGS)) == STRINGS
    assert tokenizer.detokenize([tokenizer.start_token_id, *tokenizer("hi"), tokenizer.end_token_id]) == "<s>hi</s>"


def test_xlm_roberta_detokenize_equals_keras(xlm_tokenizer):
    got = [xlm_tokenizer.detokenize(ids) for ids in EXPECTED["xlm_roberta"]["keras_tf"]]
    assert got == EXPECTED["xlm_roberta"]["keras_detokenized"]
    special = EXPECTED["xlm_roberta"]["special_detokenize"]
    assert xlm_tokenizer.detokenize(special["ids"]) == special["keras"]
    # Text made only of known pieces round-trips.
    assert xlm_tokenizer.detokenize(xlm_tokenizer("the river and the sea")) == "the river and the sea"


# -- special tokens and vocabulary ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["roberta_tiny_random", "roberta_whitespace", "xlm_roberta"])
def test_special_tokens_and_vocabulary_match_keras(roberta_tokenizers, xlm_tokenizer, name):
    tokenizer = xlm_tokenizer if name == "xlm_roberta" else roberta_tokenizers[name]
    facts = EXPECTED[name]
    assert tokenizer.vocabulary_size() == facts["vocabulary_size"]
    for attribute in ("start_token_id", "end_token_id", "pad_token_id", "mask_token_id"):
        assert getattr(tokenizer, attribute) == facts[attribute], attribute
    assert (tokenizer.start_token_id, tokenizer.pad_token_id, tokenizer.end_token_id, tokenizer.unk_token_id) == (0, 1, 2, 3)
    assert tokenizer.mask_token_id == tokenizer.vocabulary_size() - 1
    for token_id, token in facts["id_to_token"].items():
        assert tokenizer.id_to_token(int(token_id)) == token
    for token, token_id in facts["token_to_id"].items():
        assert tokenizer.token_to_id(token) == token_id
    vocabulary = tokenizer.get_vocabulary()
    assert len(vocabulary) == tokenizer.vocabulary_size()
    assert [tokenizer.token_to_id(t) for t in vocabulary[:6]] == list(range(6))
    assert tokenizer.special_token_ids == [0, 1, 2, 3, tokenizer.mask_token_id]
    assert tokenizer.special_tokens == ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


def test_special_token_text_is_kept_whole_by_roberta(roberta_tokenizers):
    tokenizer = roberta_tokenizers["roberta_tiny_random"]
    ids = tokenizer("a<mask>b<s>c</s><pad>")
    assert ids[1] == tokenizer.mask_token_id and tokenizer.start_token_id in ids
    assert tokenizer.end_token_id in ids and tokenizer.pad_token_id in ids
    # <unk> is not unsplittable in keras_hub's RobertaTokenizer.
    assert tokenizer.unk_token_id not in tokenizer("<unk>")


# -- call forms, batching, sequence_length ------------------------------------------------------


def test_call_forms_and_batching(roberta_tokenizers, xlm_tokenizer):
    for tokenizer in (roberta_tokenizers["roberta_tiny_random"], xlm_tokenizer):
        texts = ["The quick brown fox.", "", "a b c"]
        batch = tokenizer(texts)
        assert isinstance(batch, list) and all(isinstance(row, list) for row in batch)
        assert batch == [tokenizer.tokenize(t) for t in texts]
        assert tokenizer(tuple(texts)) == batch
        assert tokenizer(np.array(texts)) == batch
        assert tokenizer(np.array(texts[0])) == batch[0]
        assert tokenizer(texts[0].encode("utf-8")) == batch[0]
        assert all(isinstance(i, int) for i in batch[0])
        assert tokenizer([]) == []
        assert tokenizer("") == []
        # detokenize takes lists, nested lists, numpy and torch.
        assert tokenizer.detokenize(torch.tensor(batch[0])) == tokenizer.detokenize(batch[0])
        assert tokenizer.detokenize(np.array(batch[0], dtype=np.int32)) == tokenizer.detokenize(batch[0])
        padded = torch.tensor([batch[0], batch[0]])
        assert tokenizer.detokenize(padded) == [tokenizer.detokenize(batch[0])] * 2
        assert tokenizer.detokenize(batch) == [tokenizer.detokenize(row) for row in batch]
        assert tokenizer.detokenize(batch[0][0]) == tokenizer.detokenize(batch[0][:1])


def test_sequence_length_truncates_and_pads_like_keras(xlm_tokenizer):
    tokenizer = RobertaTokenizer.from_preset(str(TINY_PRESET), sequence_length=5)
    plain = RobertaTokenizer.from_preset(str(TINY_PRESET))
    long_ids = plain("The quick brown fox jumps over the lazy dog.")
    assert len(long_ids) > 5
    assert tokenizer("The quick brown fox jumps over the lazy dog.") == long_ids[:5]
    assert tokenizer(["a", ""]) == [plain("a") + [1] * (5 - len(plain("a"))), [1] * 5]
    xlm = XLMRobertaTokenizer(FIXTURES / "xlm_roberta/assets/tokenizer/vocabulary.spm", sequence_length=3)
    assert xlm("") == [1, 1, 1]


# -- from_preset forms ----------------------------------------------------------------------------


def test_from_preset_shipped_builtin_name_and_copy(tmp_path):
    by_dir = Tokenizer.from_preset(str(TINY_PRESET))
    by_name = Tokenizer.from_preset("roberta_tiny_random")
    copy = tmp_path / "copy"
    shutil.copytree(TINY_PRESET, copy)
    by_copy = RobertaTokenizer.from_preset(copy)
    for tokenizer in (by_dir, by_name, by_copy):
        assert type(tokenizer) is RobertaTokenizer
        assert tokenizer(STRINGS) == by_dir(STRINGS)
    assert by_dir.vocabulary_size() == 1024


def test_from_preset_transformers_layouts(tmp_path):
    reference = RobertaTokenizer.from_preset(str(FIXTURES / "roberta_whitespace"))
    expected = reference(STRINGS)
    hf_dir = FIXTURES / "roberta_whitespace_hf"
    from_vocab_files = Tokenizer.from_preset(str(hf_dir))  # vocab.json + merges.txt (+ "#version")
    assert type(from_vocab_files) is RobertaTokenizer and from_vocab_files(STRINGS) == expected
    only_json = tmp_path / "only_tokenizer_json"
    only_json.mkdir()
    shutil.copy(hf_dir / "tokenizer.json", only_json / "tokenizer.json")
    from_json = Tokenizer.from_preset(str(only_json))
    assert type(from_json) is RobertaTokenizer and from_json(STRINGS) == expected
    assert from_json.vocabulary_size() == reference.vocabulary_size()

    spm_dir = tmp_path / "xlm_transformers"
    spm_dir.mkdir()
    shutil.copy(FIXTURES / "xlm_roberta/assets/tokenizer/vocabulary.spm", spm_dir / "sentencepiece.bpe.model")
    shutil.copy(FIXTURES / "xlm_roberta_hf/config.json", spm_dir / "config.json")
    shutil.copy(FIXTURES / "xlm_roberta_hf/tokenizer.json", spm_dir / "tokenizer.json")
    from_spm = Tokenizer.from_preset(str(spm_dir))  # the sentencepiece model wins over tokenizer.json
    assert type(from_spm) is XLMRobertaTokenizer
    assert from_spm(XLM_STRINGS) == EXPECTED["xlm_roberta"]["keras_python"]


def test_from_preset_dispatch_and_class_mismatch():
    assert type(Tokenizer.from_preset(str(FIXTURES / "xlm_roberta"))) is XLMRobertaTokenizer
    with pytest.raises(ValueError, match="XLMRobertaTokenizer"):
        RobertaTokenizer.from_preset(str(FIXTURES / "xlm_roberta"))
    with pytest.raises(ValueError, match="RobertaTokenizer"):
        XLMRobertaTokenizer.from_preset(str(TINY_PRESET))


def test_from_preset_honours_keras_config_and_kwargs(tmp_path):
    preset = tmp_path / "preset"
    shutil.copytree(TINY_PRESET, preset)
    spec = json.loads((preset / "tokenizer.json").read_text())
    spec["config"]["sequence_length"] = 7
    (preset / "tokenizer.json").write_text(json.dumps(spec))
    assert len(Tokenizer.from_preset(str(preset))("hi")) == 7
    assert len(Tokenizer.from_preset(str(preset), sequence_length=3)("hi")) == 3


def test_from_preset_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="tokenizer"):
        Tokenizer.from_preset(str(empty))
    with pytest.raises(FileNotFoundError):
        Tokenizer.from_preset(str(tmp_path / "missing"))
    bad_class = tmp_path / "bad_class"
    bad_class.mkdir()
    (bad_class / "tokenizer.json").write_text(json.dumps({"class_name": "GemmaTokenizer", "config": {}}))
    with pytest.raises(ValueError, match="GemmaTokenizer"):
        Tokenizer.from_preset(str(bad_class))
    keras_without_assets = tmp_path / "no_assets"
    keras_without_assets.mkdir()
    shutil.copy(TINY_PRESET / "tokenizer.json", keras_without_assets / "tokenizer.json")
    with pytest.raises(FileNotFoundError, match="vocabulary.json"):
        Tokenizer.from_preset(str(keras_without_assets))


# -- constructor and argument errors --------------------------------------------------------------


def test_bad_argument_types_raise_type_error_naming_the_argument(roberta_tokenizers, xlm_tokenizer):
    for tokenizer in (roberta_tokenizers["roberta_tiny_random"], xlm_tokenizer):
        with pytest.raises(TypeError, match="`inputs`"):
            tokenizer(123)
        with pytest.raises(TypeError, match="`inputs`.*item 1"):
            tokenizer(["ok", 5])
        with pytest.raises(TypeError, match="`ids`"):
            tokenizer.detokenize("text")
        with pytest.raises(TypeError, match="`ids`"):
            tokenizer.detokenize([[1, 2], 3])
        with pytest.raises(TypeError, match="`ids`.*float"):
            tokenizer.detokenize(np.array([1.0, 2.0]))
        with pytest.raises(ValueError, match="`ids`.*outside"):
            tokenizer.detokenize([tokenizer.vocabulary_size()])
        with pytest.raises(ValueError, match="`id`"):
            tokenizer.id_to_token(-1)
        with pytest.raises(TypeError, match="`id`"):
            tokenizer.id_to_token("5")
        with pytest.raises(TypeError, match="`token`"):
            tokenizer.token_to_id(5)
        with pytest.raises(TypeError, match="`texts`"):
            tokenizer.encode_batch("not a list")
    with pytest.raises(ValueError, match="`token`"):
        roberta_tokenizers["roberta_tiny_random"].token_to_id("not-in-vocabulary")
    assert xlm_tokenizer.token_to_id("not-in-vocabulary") == xlm_tokenizer.unk_token_id


def test_constructor_errors():
    vocabulary = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "a": 4, "b": 5, "ab": 6, "<mask>": 7}
    tokenizer = RobertaTokenizer(vocabulary, ["a b"])
    assert tokenizer("abab") == [6, 6]
    with pytest.raises(ValueError, match="`vocabulary`"):  # keras_hub's type for this mistake
        RobertaTokenizer(["a"], ["a b"])
    with pytest.raises(TypeError, match="`unsplittable_tokens`.*list"):
        RobertaTokenizer(vocabulary, ["a b"], unsplittable_tokens="<s>")
    with pytest.raises(TypeError, match="`merges`"):
        RobertaTokenizer(vocabulary, 5)
    with pytest.raises(ValueError, match="`merges`.*'a c'"):
        RobertaTokenizer(vocabulary, ["a c"])
    with pytest.raises(ValueError, match="`vocabulary`.*<mask>"):
        RobertaTokenizer({k: v for k, v in vocabulary.items() if k != "<mask>"}, ["a b"])
    with pytest.raises(ValueError, match="`sequence_length`"):
        RobertaTokenizer(vocabulary, ["a b"], sequence_length=0)
    with pytest.raises(TypeError, match="`proto`"):
        XLMRobertaTokenizer(12)
    with pytest.raises(ValueError, match="`proto`"):
        XLMRobertaTokenizer(b"not a sentencepiece model")


def test_import_does_not_load_tokenizer_libraries():
    import subprocess
    import sys

    code = (
        "import sys, roberta_torch, roberta_torch.tokenizers, roberta_torch.preprocessor;"
        "print([m for m in ('tokenizers', 'sentencepiece', 'keras', 'tensorflow') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO_ROOT)
    assert out.stdout.strip() == "[]"


# -- live keras_hub check on the shipped preset -----------------------------------------------------


def test_shipped_preset_is_a_keras_preset_with_equal_ids():
    keras_hub = pytest.importorskip("keras_hub")

    keras_tokenizer = keras_hub.models.Tokenizer.from_preset(str(TINY_PRESET))
    assert type(keras_tokenizer).__name__ == "RobertaTokenizer"
    ours = Tokenizer.from_preset(str(TINY_PRESET))
    texts = ["The quick brown fox jumps over the lazy dog.", "emoji 😀 and café", "<mask> it's 2024"]
    assert [[int(i) for i in row] for row in keras_tokenizer(texts)] == ours(texts)
