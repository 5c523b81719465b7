"""The answer-span helper: packing, span search, character offsets back into the context."""

import pytest
import torch

from helpers.paths import TINY_PRESET
from helpers.random_weights import randomize_
from roberta_torch import RobertaTokenizer
from roberta_torch.tasks import RobertaQuestionAnswerer
from roberta_torch.tasks.span import answer_question, best_answer_span, encode_question_context

CONTEXT = "The cat sat on the mat while the dog slept."


@pytest.fixture(scope="module")
def tokenizer():
    return RobertaTokenizer.from_preset(str(TINY_PRESET))


def test_span_maps_back_to_the_context_words(tokenizer):
    encoded = encode_question_context(tokenizer, "Where did the cat sit?", CONTEXT, sequence_length=64)
    ids = encoded.inputs["token_ids"][0].tolist()
    assert ids[0] == tokenizer.start_token_id and ids[-1] == tokenizer.end_token_id
    assert ids[encoded.context_start - 2 : encoded.context_start] == [tokenizer.end_token_id] * 2
    begin = CONTEXT.index("the mat")
    first = next(k for k, (s, _) in enumerate(encoded.context_offsets) if s == begin)
    last = next(k for k, (_, e) in enumerate(encoded.context_offsets) if e == begin + len("the mat"))
    start = torch.full((len(ids),), -5.0)
    end = torch.full((len(ids),), -5.0)
    start[encoded.context_start + first] = 3.0  # "the mat"
    end[encoded.context_start + last] = 4.0
    end[3] = 100.0  # a question token is never an answer
    answer = best_answer_span(start, end, encoded, CONTEXT)
    assert answer.text == "the mat" and CONTEXT[answer.start : answer.end] == "the mat"
    assert answer.score == pytest.approx(7.0)
    # An end before its start, or a span longer than max_answer_length, is never chosen.
    start[: encoded.context_start + first] = -100.0
    end[encoded.context_start + first - 1] = 50.0  # high, but before every good start
    assert best_answer_span(start, end, encoded, CONTEXT).text == "the mat"
    assert best_answer_span(start, end, encoded, CONTEXT, max_answer_length=1).text != "the mat"


def test_answer_question_is_the_brute_force_best_span(tokenizer):
    torch.manual_seed(0)
    model = randomize_(RobertaQuestionAnswerer.from_preset(str(TINY_PRESET)), seed=3).eval()
    answer = answer_question(model, tokenizer, "Who slept?", CONTEXT, max_answer_length=4)
    encoded = encode_question_context(tokenizer, "Who slept?", CONTEXT, 128)
    with torch.no_grad():
        start, end = model(encoded.inputs)
    first, n = encoded.context_start, len(encoded.context_offsets)
    best = max(
        (float(start[0, first + i] + end[0, first + j]), i, j) for i in range(n) for j in range(i, min(n, i + 4))
    )
    assert answer.score == pytest.approx(best[0], rel=1e-6)
    assert answer.text == CONTEXT[encoded.context_offsets[best[1]][0] : encoded.context_offsets[best[2]][1]]


def test_bad_arguments(tokenizer):
    with pytest.raises(ValueError, match="sequence_length"):
        encode_question_context(tokenizer, "a very long question " * 10, CONTEXT, sequence_length=8)
    with pytest.raises(TypeError, match="question"):
        encode_question_context(tokenizer, None, CONTEXT)
    encoded = encode_question_context(tokenizer, "q", CONTEXT, 64)
    with pytest.raises(ValueError, match="max_answer_length"):
        best_answer_span(torch.zeros(64), torch.zeros(64), encoded, CONTEXT, max_answer_length=0)
