"""Where keras_hub fixes a behaviour, ours is the same: the exception types for the same
mistakes, and XLM-R's fixed sentencepiece -> fairseq id rule for any sentencepiece model."""

import io

import pytest

import roberta_torch
from helpers.paths import TINY_PRESET

keras_hub = pytest.importorskip("keras_hub")

TEXTS = ["the quick zebra", "hello QX world", "a b c"]


def sentencepiece_model(**layout) -> bytes:
    """A small sentencepiece model trained here, with the special-token layout given."""
    import sentencepiece

    corpus = ["the quick brown fox jumps over the lazy dog", "hello world, hello there", "a b c d e f g"] * 20
    buffer = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_writer=buffer, vocab_size=40, model_type="unigram",
        hard_vocab_limit=False, **layout,
    )
    return buffer.getvalue()


@pytest.mark.parametrize(
    "layout",
    [
        dict(unk_id=0, bos_id=1, eos_id=2, pad_id=-1),  # XLM-R's own layout
        dict(unk_id=3, bos_id=0, eos_id=1, pad_id=2),  # unknown piece not at 0
        dict(unk_id=1, bos_id=-1, eos_id=-1, pad_id=0),
    ],
)
def test_sentencepiece_ids_follow_keras_hubs_fixed_rule(layout):
    proto = sentencepiece_model(**layout)
    ours = roberta_torch.XLMRobertaTokenizer(proto)
    theirs = keras_hub.models.XLMRobertaTokenizer(proto=proto)
    assert ours(TEXTS) == [list(map(int, row)) for row in theirs(TEXTS)]
    for token in ("▁the", "▁hello", "zebra-not-a-piece"):
        assert ours.token_to_id(token) == int(theirs.token_to_id(token))


def test_same_exception_types_as_keras_hub():
    with pytest.raises(ValueError):
        keras_hub.models.RobertaTokenizer(vocabulary=["a"], merges=[])
    with pytest.raises(ValueError, match="`vocabulary`"):
        roberta_torch.RobertaTokenizer(vocabulary=["a"], merges=[])
    two_d = [["a", "b"], ["c", "d"]]
    tokenizer = roberta_torch.Tokenizer.from_preset("roberta_tiny_random")
    with pytest.raises(ValueError, match="1-D"):
        roberta_torch.Preprocessor(tokenizer, sequence_length=8)(two_d)
    keras_preprocessor = keras_hub.models.RobertaTextClassifierPreprocessor(
        keras_hub.models.RobertaTokenizer.from_preset(str(TINY_PRESET)), sequence_length=8
    )
    with pytest.raises(ValueError):
        keras_preprocessor(two_d)
