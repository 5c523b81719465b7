"""Only the kept part of a text is tokenized (issue 22 B2), with ids equal to the whole text's.

`Tokenizer.encode_batch(texts, max_length=k)` tokenizes a prefix cut where the tokenizer
provably splits (tokenizers/prefix.py). Checked against the whole text's tokenization on
texts built from tricky pieces (whitespace runs, \\r\\n, multibyte and combining characters,
CJK punctuation, long words, special tokens, contractions), at every cut position and for
many k, on the committed fixture vocabularies (byte-level BPE with whitespace merges;
sentencepiece through both backends) and on sentencepiece models trained here.
"""

import io
import random

import pytest

import roberta_torch
from helpers.paths import TINY_PRESET
from helpers.paths import TOKENIZER_FIXTURES as FIXTURES
from roberta_torch.tokenizers import RobertaTokenizer, XLMRobertaTokenizer, prefix

PIECES = [
    "the", " ", "  ", "   ", "\n", "\n\n", "\t", "\r\n", " \n ", "don't", "'s", "'ll", "é", "e\u0301", "漢字", "。", "，",
    "！", "?", ".", ",", ";", "🙂", "<mask>", "<s>", "</s>", "<pad>", "supercalifragilisticexpialidocious", "123",
    "4.5", "x", "\u3000", "\u00a0", "ｶﾞ", "¨", "Ünïcödé", "안녕", "ひらがな", "_", "__init__", " ...", "—", "\u2028",
    "\x85", "\x0c", "\u180e", "\u200b", "word", " word", "A", "quick brown", "fox.", "Hello, world!",
]


def tricky_texts(count, seed, max_pieces=60):
    rng = random.Random(seed)
    return ["".join(rng.choice(PIECES) for _ in range(rng.randint(1, max_pieces))) for _ in range(count)]


@pytest.fixture(scope="module")
def tokenizers():
    return {
        "bpe_tiny": RobertaTokenizer.from_preset(str(TINY_PRESET)),
        "bpe_whitespace": RobertaTokenizer.from_preset(str(FIXTURES / "roberta_whitespace")),
        "bpe_whitespace_hf": RobertaTokenizer.from_preset(str(FIXTURES / "roberta_whitespace_hf")),
        "sentencepiece": XLMRobertaTokenizer.from_preset(str(FIXTURES / "xlm_roberta")),
        "sentencepiece_hf": XLMRobertaTokenizer.from_preset(str(FIXTURES / "xlm_roberta_hf")),
    }


def check_every_cut(tokenizer, texts):
    """ids(text[:c]) is the start of ids(text) at every safe cut c; returns the number of cuts."""
    cuts = 0
    for text in texts:
        whole = tokenizer.encode_batch([text])[0]
        cut = tokenizer._next_safe_cut(text, 1)
        while cut is not None:
            part = tokenizer.encode_batch([text[:cut]])[0]
            assert whole[: len(part)] == part, (text[:cut], text[cut:])
            cuts += 1
            cut = tokenizer._next_safe_cut(text, cut + 1)
    return cuts


@pytest.mark.parametrize("name", ["bpe_tiny", "bpe_whitespace", "bpe_whitespace_hf", "sentencepiece", "sentencepiece_hf"])
def test_every_safe_cut_keeps_the_ids_before_it(tokenizers, name):
    assert check_every_cut(tokenizers[name], tricky_texts(120, seed=len(name))) > 500


@pytest.mark.parametrize("name", ["bpe_tiny", "bpe_whitespace_hf", "sentencepiece", "sentencepiece_hf"])
def test_max_length_equals_the_whole_texts_first_ids(tokenizers, name, monkeypatch):
    tokenizer = tokenizers[name]
    # Small first prefixes so that cutting and growing happen on these short texts.
    monkeypatch.setattr(prefix, "CHARS_PER_ID", 1)
    monkeypatch.setattr(prefix, "MIN_CHARS", 1)
    texts = tricky_texts(60, seed=7, max_pieces=200) + ["a" * 3000 + " b", "漢字。" * 500, " " * 2000 + "x", ""]
    whole = tokenizer.encode_batch(texts)
    for k in (0, 1, 2, 3, 5, 8, 13, 40, 100, 400):
        assert tokenizer.encode_batch(texts, max_length=k) == [ids[:k] for ids in whole], k


def test_tokenizer_sequence_length_and_arguments(tokenizers):
    bpe = tokenizers["bpe_tiny"]
    fixed = RobertaTokenizer.from_preset(str(TINY_PRESET), sequence_length=6)
    text = "The quick brown fox jumps over the lazy dog. " * 50
    assert fixed(text) == bpe(text)[:6]
    assert fixed("a") == bpe("a") + [bpe.pad_token_id] * (6 - len(bpe("a")))
    for bad in (-1, 1.5, True, "3"):
        with pytest.raises(ValueError, match="max_length"):
            bpe.encode_batch(["a"], max_length=bad)


def test_cuts_never_split_a_special_token():
    tokenizer = RobertaTokenizer.from_preset(str(TINY_PRESET))
    custom = RobertaTokenizer(
        {**tokenizer.vocabulary, "[a b]": len(tokenizer.vocabulary), "x.y": len(tokenizer.vocabulary) + 1},
        tokenizer.merges, unsplittable_tokens=["<s>", "<pad>", "</s>", "<mask>", "[a b]", "x.y"],
    )
    texts = ["w[a b]v x.y [a b] zx.y.", "[a b][a b] x.y x.y" * 10]
    assert check_every_cut(custom, texts) > 10
    assert custom._next_safe_cut("w[a b]", 1) is None  # the space inside the token is no cut


def train_sentencepiece(**options) -> XLMRobertaTokenizer:
    sentencepiece = pytest.importorskip("sentencepiece")
    corpus = tricky_texts(1500, seed=3, max_pieces=40)
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_writer=model, vocab_size=400, character_coverage=0.98,
        normalization_rule_name="nmt_nfkc", minloglevel=2, **options,
    )
    return XLMRobertaTokenizer(model.getvalue())


@pytest.mark.parametrize("options", [{}, {"model_type": "bpe"}, {"split_by_unicode_script": False}])
def test_trained_sentencepiece_models(options):
    tokenizer = train_sentencepiece(**options)
    assert tokenizer._backend.cut_pattern is not None
    assert check_every_cut(tokenizer, tricky_texts(80, seed=11)) > 200


def test_a_model_whose_pieces_cross_words_gets_no_cuts():
    tokenizer = train_sentencepiece(split_by_whitespace=False)
    assert any("\u2581" in piece[1:] for piece in tokenizer.get_vocabulary())
    assert tokenizer._backend.cut_pattern is None
    text = "the quick brown fox " * 200
    assert tokenizer.encode_batch([text], max_length=5) == [tokenizer.encode_batch([text])[0][:5]]


def record_tokenized_lengths(tokenizer, monkeypatch) -> list:
    lengths = []
    original = tokenizer._encode_batch

    def recording(texts):
        lengths.extend(len(t) for t in texts)
        return original(texts)

    monkeypatch.setattr(tokenizer, "_encode_batch", recording)
    return lengths


@pytest.mark.parametrize("preset", [TINY_PRESET, FIXTURES / "xlm_roberta"])
def test_a_huge_text_is_tokenized_only_as_far_as_it_is_kept(preset, monkeypatch):
    """Before: the whole 4 MB text was tokenized to keep 30 ids."""
    preprocessor = roberta_torch.Preprocessor.from_preset(str(preset), sequence_length=32)
    lengths = record_tokenized_lengths(preprocessor.tokenizer, monkeypatch)
    huge = "Snow covered the village, and the river froze. 漢字。" * 80_000
    out = preprocessor([huge, "short"])
    assert max(lengths) < 2_000 and len(huge) >= 4_000_000
    lengths.clear()
    expected = roberta_torch.Preprocessor(preprocessor.tokenizer, sequence_length=32)([huge[:5000], "short"])
    assert out["token_ids"].tolist() == expected["token_ids"].tolist()
    pair = preprocessor((huge, huge), return_tensors="np")
    assert pair["token_ids"].shape == (1, 32) and max(lengths) < 2_000


def test_the_embedder_tokenizes_only_what_it_keeps(monkeypatch):
    embedder = roberta_torch.TextEmbedder.from_preset(str(TINY_PRESET), max_seq_length=16)
    lengths = record_tokenized_lengths(embedder.tokenizer, monkeypatch)
    huge = "the quick brown fox jumps over the lazy dog " * 100_000
    rows, _ = embedder.tokenize([huge], prompt="query: ")
    assert len(rows[0]) == 16 and max(lengths) < 1_000
    assert rows[0][1:-1] == embedder.tokenizer.encode_batch(["query: " + huge[:2000]])[0][:14]
