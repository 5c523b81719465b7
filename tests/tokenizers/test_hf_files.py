"""Tokenizer.save_to_preset(format="transformers"): the real transformers.AutoTokenizer
reads the files and gives our ids on every fixture string (XLM-R: except text that spells a
special token, which transformers keeps whole and sentencepiece does not)."""

import json

import pytest

import roberta_torch
from helpers.paths import TINY_PRESET
from helpers.paths import TOKENIZER_FIXTURES as FIXTURES

transformers = pytest.importorskip("transformers")

EXPECTED = json.loads((FIXTURES / "expected_tokenizers.json").read_text(encoding="utf-8"))
SPECIAL_SPELLINGS = ("<s>", "</s>", "<mask>", "<pad>", "<unk>")
CASES = {
    "roberta_tiny_random": (TINY_PRESET, "strings"),
    "roberta_whitespace": (FIXTURES / "roberta_whitespace", "strings"),
    "roberta_whitespace_hf": (FIXTURES / "roberta_whitespace_hf", "strings"),
    "xlm_roberta": (FIXTURES / "xlm_roberta", "xlm_roberta_strings"),
    "xlm_roberta_hf": (FIXTURES / "xlm_roberta_hf", "xlm_roberta_strings"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_auto_tokenizer_gives_our_ids(tmp_path, case):
    source, strings_key = CASES[case]
    ours = roberta_torch.Tokenizer.from_preset(source)
    ours.save_to_preset(tmp_path, format="transformers")
    names = sorted(p.name for p in tmp_path.iterdir())
    common = ["special_tokens_map.json", "tokenizer.json", "tokenizer_config.json"]
    if case.startswith("roberta"):
        assert names == sorted(common + ["merges.txt", "vocab.json"])
    elif case == "xlm_roberta":
        assert names == sorted(common + ["sentencepiece.bpe.model"])
    else:  # built from a tokenizer.json alone: no sentencepiece model to write
        assert names == common
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path)
    expected_class = "RobertaTokenizer" if case.startswith("roberta") else "XLMRobertaTokenizer"
    assert type(hf).__name__.removesuffix("Fast") == expected_class
    strings = EXPECTED[strings_key]
    spm = case == "xlm_roberta"
    differing = []
    for text in strings:
        if hf(text, add_special_tokens=False)["input_ids"] != ours(text):
            differing.append(text)
    allowed = [t for t in strings if spm and any(s in t for s in SPECIAL_SPELLINGS)]
    assert set(differing) <= set(allowed), differing
    assert len(differing) < len(strings) // 4
    # transformers adds <s> ... </s> (and pairs as </s></s>) as our preprocessor does.
    text = "The quick brown fox"
    assert hf(text)["input_ids"] == [0] + ours(text) + [2]
    assert hf(text, "fox")["input_ids"] == [0] + ours(text) + [2, 2] + ours("fox") + [2]
    for attribute in ("bos_token_id", "eos_token_id", "pad_token_id", "mask_token_id"):
        ours_name = {"bos": "start", "eos": "end"}.get(attribute.split("_")[0], attribute.split("_")[0])
        assert getattr(hf, attribute) == getattr(ours, f"{ours_name}_token_id"), attribute
    # And roberta_torch reads the files back to the same tokenizer.
    again = roberta_torch.Tokenizer.from_preset(tmp_path)
    assert type(again) is type(ours) and all(again(t) == ours(t) for t in strings)


def test_unknown_format_is_refused(tmp_path):
    ours = roberta_torch.Tokenizer.from_preset(TINY_PRESET)
    with pytest.raises(ValueError, match="format.*'keras' or 'transformers'"):
        ours.save_to_preset(tmp_path, format="onnx")
    assert list(tmp_path.iterdir()) == []
