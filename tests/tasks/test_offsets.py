"""Tokenizer character offsets against transformers' fast tokenizers' `offset_mapping`."""

import pytest

from helpers.paths import TINY_PRESET, TOKENIZER_FIXTURES
from roberta_torch import RobertaTokenizer, XLMRobertaTokenizer

TEXTS = [
    "Hello world, it's  a test.",
    "  leading spaces and trailing  ",
    "naïve café 日本語 ok",
    "a\tb\nc",
    "Emoji 🙂 and ﬁ ligature, numbers 12345.",
    "",
]


def _transformers(directory):
    import transformers

    return transformers.AutoTokenizer.from_pretrained(str(directory))


@pytest.mark.parametrize(
    "ours, theirs, texts",
    [
        (lambda: RobertaTokenizer.from_preset(str(TOKENIZER_FIXTURES / "roberta_whitespace")),
         lambda: _transformers(TOKENIZER_FIXTURES / "roberta_whitespace_hf"), TEXTS + ["text with <mask> inside"]),
        (lambda: XLMRobertaTokenizer.from_preset(str(TOKENIZER_FIXTURES / "xlm_roberta")),
         lambda: _transformers(TOKENIZER_FIXTURES / "xlm_roberta_hf"), TEXTS),
        (lambda: XLMRobertaTokenizer.from_hf_tokenizer_file(TOKENIZER_FIXTURES / "xlm_roberta_hf" / "tokenizer.json"),
         lambda: _transformers(TOKENIZER_FIXTURES / "xlm_roberta_hf"), TEXTS + ["text with <mask> inside"]),
    ],
    ids=["roberta", "xlm_roberta_sentencepiece", "xlm_roberta_tokenizer_json"],
)
def test_offsets_equal_transformers_offset_mapping(ours, theirs, texts):
    ours, theirs = ours(), theirs()
    ids, offsets = ours.encode_with_offsets(texts)
    assert ids == ours.encode_batch(texts)
    for text, row_ids, row_offsets in zip(texts, ids, offsets):
        expected = theirs(text, add_special_tokens=False, return_offsets_mapping=True)
        assert row_ids == expected["input_ids"], text
        assert row_offsets == [tuple(o) for o in expected["offset_mapping"]], text
    single_ids, single_offsets = ours.encode_with_offsets(texts[0])
    assert single_ids == ids[0] and single_offsets == offsets[0]


def test_offsets_of_the_shipped_tiny_preset_cover_the_words():
    tokenizer = RobertaTokenizer.from_preset(str(TINY_PRESET))
    text = "The cat sat on the mat."
    _, offsets = tokenizer.encode_with_offsets(text)
    assert "".join(text[s:e] for s, e in offsets) == text.replace(" ", "")
