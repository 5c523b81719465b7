"""answer_question reads a long context in overlapping windows (issue 22 W5: it silently kept
the first window only), as transformers' question-answering pipeline does.

transformers 5 removed `pipeline("question-answering")`; the reference here is its 4.x
algorithm rebuilt from what transformers 5.25 still ships: the fast tokenizer's windows
(`truncation="only_second", stride=doc_stride, return_overflowing_tokens=True`), the model
RobertaForQuestionAnswering, and `select_starts_ends` (the pipeline's span selection, kept in
pipelines/document_question_answering.py), best score over windows. The one step not rebuilt
is the pipeline's widening of a span to whole words; spans are compared by token offsets.
"""

import numpy as np
import pytest
import torch

from helpers.paths import TINY_PRESET
from helpers.random_weights import randomize_
from roberta_torch import RobertaTokenizer
from roberta_torch.tasks import RobertaQuestionAnswerer
from roberta_torch.tasks.span import answer_question, encode_windows

QUESTION = "Where did the dog sleep?"
CONTEXT = " ".join(
    f"On day {i} the {animal} slept in the {place} while the {other} watched from the {spot}."
    for i, (animal, place, other, spot) in enumerate(
        [("dog", "garden", "cat", "roof"), ("cat", "kitchen", "bird", "tree"), ("fox", "forest", "owl", "branch")] * 5
    )
)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(ours, transformers' model, transformers' tokenizer) on the same random weights."""
    import transformers

    directory = tmp_path_factory.mktemp("qa")
    ours = randomize_(RobertaQuestionAnswerer.from_preset(str(TINY_PRESET)), seed=7).eval()
    ours.save_to_preset(directory, format="transformers")
    tokenizer = RobertaTokenizer.from_preset(str(TINY_PRESET))
    tokenizer.save_to_preset(directory, format="transformers")
    theirs = transformers.RobertaForQuestionAnswering.from_pretrained(directory).eval()
    return ours, tokenizer, theirs, transformers.AutoTokenizer.from_pretrained(directory)


def pipeline_answer(model, tokenizer, question, context, max_seq_len, doc_stride, max_answer_len):
    """transformers 4.x QuestionAnsweringPipeline (fast tokenizer, top_k=1, no impossible answer)."""
    from transformers.pipelines.document_question_answering import select_starts_ends

    encoded = tokenizer(
        question, context, truncation="only_second", max_length=max_seq_len, stride=doc_stride,
        return_overflowing_tokens=True, return_offsets_mapping=True,
    )
    answers, windows = [], len(encoded["input_ids"])
    for k in range(windows):
        ids = torch.tensor([encoded["input_ids"][k]])
        p_mask = np.asarray([[token != 1 for token in encoded.sequence_ids(k)]])
        p_mask[ids.numpy() == tokenizer.cls_token_id] = 0  # the pipeline keeps <s> unmasked
        attention_mask = np.asarray([encoded["attention_mask"][k]])
        with torch.no_grad():
            out = model(input_ids=ids, attention_mask=torch.tensor(attention_mask))
        starts, ends, scores, _ = select_starts_ends(
            out.start_logits.numpy(), out.end_logits.numpy(), p_mask, attention_mask, max_answer_len=max_answer_len
        )
        offsets = encoded["offset_mapping"][k]
        for s, e, score in zip(starts, ends, scores):
            answers.append((float(score), offsets[s][0], offsets[e][1]))
    answers.sort(key=lambda answer: answer[0], reverse=True)  # stable: ties keep the earlier window
    return answers[0], windows


@pytest.mark.parametrize("sequence_length, doc_stride, max_answer_length", [(48, 12, 5), (64, 20, 15), (40, 0, 3)])
def test_long_contexts_give_the_pipelines_best_span(models, sequence_length, doc_stride, max_answer_length):
    ours, tokenizer, theirs, hf_tokenizer = models
    (score, start, end), windows = pipeline_answer(
        theirs, hf_tokenizer, QUESTION, CONTEXT, sequence_length, doc_stride, max_answer_length
    )
    assert windows > 5  # a long context: many windows
    assert len(encode_windows(tokenizer, QUESTION, CONTEXT, sequence_length, doc_stride)) == windows
    answer = answer_question(
        ours, tokenizer, QUESTION, CONTEXT, max_answer_length=max_answer_length,
        sequence_length=sequence_length, doc_stride=doc_stride, batch_size=4,
    )
    assert (answer.start, answer.end) == (start, end) and answer.text == CONTEXT[start:end]
    assert answer.probability == pytest.approx(score, rel=1e-4)


class _PointsAt(torch.nn.Module):
    """A stand-in answerer whose start and end logits are high on one token id only."""

    def __init__(self, token_id):
        super().__init__()
        self.token_id = token_id

    def forward(self, inputs, return_dict=None):
        logits = (inputs["token_ids"] == self.token_id).float() * 10
        return logits, logits


def test_the_answer_can_come_from_the_last_window(models):
    _, tokenizer, _, _ = models
    context = CONTEXT + " Quokkas nap at noon."
    windows = encode_windows(tokenizer, QUESTION, context, 48, 12)
    ids, offsets = tokenizer.encode_with_offsets(context)
    late = [k for k, t in enumerate(ids) if ids.count(t) == 1 and offsets[k][0] > windows[0].context_offsets[-1][1]]
    answer = answer_question(_PointsAt(ids[late[-1]]), tokenizer, QUESTION, context, max_answer_length=1, sequence_length=48, doc_stride=12)
    assert (answer.start, answer.end) == tuple(offsets[late[-1]])  # the first window ends long before


def test_window_arguments_are_checked(models):
    _, tokenizer, _, _ = models
    with pytest.raises(ValueError, match=r"doc_stride.*smaller than the \d+ context tokens"):
        encode_windows(tokenizer, QUESTION, CONTEXT, 32, 30)
    with pytest.raises(ValueError, match="doc_stride"):
        encode_windows(tokenizer, QUESTION, CONTEXT, 32, -1)
    with pytest.raises(ValueError, match="sequence_length"):
        encode_windows(tokenizer, QUESTION, CONTEXT, 8)
    short = encode_windows(tokenizer, QUESTION, "The dog slept.", 64)
    assert len(short) == 1
