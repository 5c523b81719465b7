"""From a question answerer's start/end logits to the answer text in the context.

`encode_question_context` packs `<s> question </s></s> context </s>` (transformers' RoBERTa
pair layout; only the context is truncated) and keeps each context token's character
offsets; `best_answer_span` picks the span (i <= j, at most `max_answer_length` tokens, both
inside the context) with the highest start_logits[i] + end_logits[j], as transformers'
question-answering pipeline does; `answer_question` runs the model in between.
"""

from __future__ import annotations

import dataclasses
import numbers

import torch


@dataclasses.dataclass(frozen=True)
class Answer:
    """The answer text, its character span [start, end) in the context, and its score
    (start logit + end logit)."""

    text: str
    start: int
    end: int
    score: float


@dataclasses.dataclass(frozen=True)
class EncodedPair:
    inputs: dict  # {"token_ids": (1, T), "padding_mask": (1, T)}
    context_start: int  # token index of the first context token
    context_offsets: list  # (start, end) characters of each context token


def encode_question_context(tokenizer, question: str, context: str, sequence_length: int = 512) -> EncodedPair:
    if not isinstance(question, str) or not isinstance(context, str):
        raise TypeError("`question` and `context` must be str.")
    question_ids = tokenizer.encode_batch([question])[0]
    context_ids, offsets = tokenizer.encode_with_offsets(context)
    room = sequence_length - len(question_ids) - 4  # <s> q </s></s> c </s>
    if room < 1:
        raise ValueError(
            f"`sequence_length`={sequence_length} leaves no room for the context after a question of "
            f"{len(question_ids)} tokens; shorten the question or raise sequence_length."
        )
    context_ids, offsets = context_ids[:room], offsets[:room]
    start, end = tokenizer.start_token_id, tokenizer.end_token_id
    ids = [start, *question_ids, end, end, *context_ids, end]
    token_ids = torch.tensor([ids], dtype=torch.long)
    return EncodedPair(
        {"token_ids": token_ids, "padding_mask": torch.ones_like(token_ids, dtype=torch.bool)},
        len(question_ids) + 3,
        offsets,
    )


def best_answer_span(
    start_logits, end_logits, encoded: EncodedPair, context: str, max_answer_length: int = 30
) -> Answer:
    """The best span over the context tokens of one encoded pair; logits are (T,) or (1, T)."""
    is_int = isinstance(max_answer_length, numbers.Integral) and not isinstance(max_answer_length, bool)
    if not is_int or max_answer_length < 1:
        raise ValueError(f"`max_answer_length` must be an int >= 1; got {max_answer_length!r}.")
    n = len(encoded.context_offsets)
    if n == 0:
        return Answer("", 0, 0, float("-inf"))
    first = encoded.context_start
    start = torch.as_tensor(start_logits).reshape(-1)[first : first + n].float()
    end = torch.as_tensor(end_logits).reshape(-1)[first : first + n].float()
    scores = start[:, None] + end[None, :]  # (n, n): [i, j] = start i, end j
    i, j = torch.arange(n)[:, None], torch.arange(n)[None, :]
    allowed = (j >= i) & (j - i < max_answer_length)
    scores = scores.masked_fill(~allowed, float("-inf"))
    best = int(scores.argmax())
    i, j = divmod(best, n)
    char_start, char_end = encoded.context_offsets[i][0], encoded.context_offsets[j][1]
    return Answer(context[char_start:char_end], char_start, char_end, float(scores[i, j]))


@torch.no_grad()
def answer_question(model, tokenizer, question: str, context: str, max_answer_length: int = 30,
                    sequence_length: int | None = None) -> Answer:
    """The best answer span of `context` for `question` under a RobertaQuestionAnswerer."""
    if sequence_length is None:
        sequence_length = min(512, model.backbone.max_sequence_length)
    encoded = encode_question_context(tokenizer, question, context, sequence_length)
    start_logits, end_logits = model(encoded.inputs)
    return best_answer_span(start_logits[0].cpu(), end_logits[0].cpu(), encoded, context, max_answer_length)
