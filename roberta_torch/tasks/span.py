"""From a question answerer's start/end logits to the answer text in the context.

A long context is read in overlapping windows, as transformers' question-answering pipeline
(and its tokenizers' `return_overflowing_tokens=True, stride=doc_stride`) do: each window is
`<s> question </s></s> context[k : k + room] </s>` (transformers' RoBERTa pair layout),
`room = sequence_length - len(question) - 4` context tokens, the next window starting
`room - doc_stride` tokens later, until the context's end is inside a window.

`best_answer_span` picks a window's span (i <= j, at most `max_answer_length` tokens, both
inside the context) with the highest start_logits[i] + end_logits[j]; `answer_question`
returns, over all windows, the span with the highest probability: start and end logits
softmax-normalized over the window's context tokens and `<s>` (then `<s>` excluded), the
span's probability p_start[i] * p_end[j], which is the pipeline's `score`. Within one window
the two criteria pick the same span (the softmax is monotonic); across windows only the
probabilities are comparable, as each window normalizes its own logits.
"""

from __future__ import annotations

import dataclasses
import numbers

import torch


@dataclasses.dataclass(frozen=True)
class Answer:
    """The answer text, its character span [start, end) in the context, its score (start
    logit + end logit, in its window) and its probability (transformers' pipeline `score`)."""

    text: str
    start: int
    end: int
    score: float
    probability: float = float("nan")


@dataclasses.dataclass(frozen=True)
class EncodedPair:
    inputs: dict  # {"token_ids": (1, T), "padding_mask": (1, T)}
    context_start: int  # token index of the first context token
    context_offsets: list  # (start, end) characters of each context token of this window


def _check_int(value, argument: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"`{argument}` must be an int >= {minimum}; got {value!r}.")
    return int(value)


def encode_windows(
    tokenizer, question: str, context: str, sequence_length: int = 512, doc_stride: int | None = None
) -> list:
    """One EncodedPair per window of the context (see the module docstring); `doc_stride`
    (tokens shared by consecutive windows) defaults to min(128, sequence_length // 2), as
    transformers' pipeline, and at most room - 1."""
    if not isinstance(question, str) or not isinstance(context, str):
        raise TypeError("`question` and `context` must be str.")
    sequence_length = _check_int(sequence_length, "sequence_length", 1)
    question_ids = tokenizer.encode_batch([question])[0]
    context_ids, offsets = tokenizer.encode_with_offsets(context)
    room = sequence_length - len(question_ids) - 4  # <s> q </s></s> c </s>
    if room < 1:
        raise ValueError(
            f"`sequence_length`={sequence_length} leaves no room for the context after a question of "
            f"{len(question_ids)} tokens; shorten the question or raise sequence_length."
        )
    if doc_stride is None:
        doc_stride = min(128, sequence_length // 2, room - 1)
    doc_stride = _check_int(doc_stride, "doc_stride", 0)
    if doc_stride >= room:
        raise ValueError(
            f"`doc_stride`={doc_stride} must be smaller than the {room} context tokens a window holds after a "
            f"question of {len(question_ids)} tokens (sequence_length={sequence_length}); lower doc_stride."
        )
    start, end_id = tokenizer.start_token_id, tokenizer.end_token_id
    windows, first = [], 0
    while True:
        last = min(first + room, len(context_ids))
        ids = [start, *question_ids, end_id, end_id, *context_ids[first:last], end_id]
        token_ids = torch.tensor([ids], dtype=torch.long)
        inputs = {"token_ids": token_ids, "padding_mask": torch.ones_like(token_ids, dtype=torch.bool)}
        windows.append(EncodedPair(inputs, len(question_ids) + 3, offsets[first:last]))
        if last >= len(context_ids):
            return windows
        first += room - doc_stride


def encode_question_context(tokenizer, question: str, context: str, sequence_length: int = 512) -> EncodedPair:
    """The first window only: the context truncated to what fits after the question."""
    return encode_windows(tokenizer, question, context, sequence_length, doc_stride=0)[0]


def best_answer_span(
    start_logits, end_logits, encoded: EncodedPair, context: str, max_answer_length: int = 30
) -> Answer:
    """The best span over the context tokens of one encoded pair; logits are (T,) or (1, T)
    (T at least the pair's length; positions past it, e.g. batch padding, are not read)."""
    is_int = isinstance(max_answer_length, numbers.Integral) and not isinstance(max_answer_length, bool)
    if not is_int or max_answer_length < 1:
        raise ValueError(f"`max_answer_length` must be an int >= 1; got {max_answer_length!r}.")
    n = len(encoded.context_offsets)
    if n == 0:
        return Answer("", 0, 0, float("-inf"), 0.0)
    first = encoded.context_start
    start_logits = torch.as_tensor(start_logits).reshape(-1).double()
    end_logits = torch.as_tensor(end_logits).reshape(-1).double()
    start, end = start_logits[first : first + n], end_logits[first : first + n]
    scores = start[:, None] + end[None, :]  # (n, n): [i, j] = start i, end j
    i, j = torch.arange(n)[:, None], torch.arange(n)[None, :]
    allowed = (j >= i) & (j - i < max_answer_length)
    scores = scores.masked_fill(~allowed, float("-inf"))
    best = int(scores.argmax())
    i, j = divmod(best, n)
    p_start, p_end = (_window_probabilities(logits, first, n) for logits in (start_logits, end_logits))
    probability = float(p_start[i] * p_end[j])
    char_start, char_end = encoded.context_offsets[i][0], encoded.context_offsets[j][1]
    return Answer(context[char_start:char_end], char_start, char_end, float(scores[i, j]), probability)


def _window_probabilities(logits: torch.Tensor, first: int, n: int) -> torch.Tensor:
    """Softmax over the window's `<s>` (index 0) and context tokens, as the pipeline
    normalizes; returns the context tokens' (n,) probabilities."""
    candidates = torch.cat([logits[:1], logits[first : first + n]])
    return torch.softmax(candidates, dim=0)[1:]


def _batch(windows: list, pad_token_id: int) -> dict:
    """Right-pad the windows' (1, T_k) inputs into one (K, T) batch."""
    length = max(w.inputs["token_ids"].shape[1] for w in windows)
    token_ids = torch.full((len(windows), length), pad_token_id, dtype=torch.long)
    padding_mask = torch.zeros((len(windows), length), dtype=torch.bool)
    for row, window in enumerate(windows):
        ids = window.inputs["token_ids"][0]
        token_ids[row, : ids.shape[0]] = ids
        padding_mask[row, : ids.shape[0]] = True
    return {"token_ids": token_ids, "padding_mask": padding_mask}


@torch.no_grad()
def answer_question(model, tokenizer, question: str, context: str, max_answer_length: int = 30,
                    sequence_length: int | None = None, doc_stride: int | None = None,
                    batch_size: int = 16) -> Answer:
    """The best answer span of `context` for `question` under a RobertaQuestionAnswerer,
    reading a long context in windows of `sequence_length` tokens that share `doc_stride`
    tokens (see the module docstring; defaults: min(512, max_sequence_length) and
    min(128, sequence_length // 2)), `batch_size` windows per model call."""
    if sequence_length is None:
        sequence_length = min(512, model.backbone.max_sequence_length)
    batch_size = _check_int(batch_size, "batch_size", 1)
    windows = encode_windows(tokenizer, question, context, sequence_length, doc_stride)
    best = None
    for first in range(0, len(windows), batch_size):
        chunk = windows[first : first + batch_size]
        start_logits, end_logits = model(_batch(chunk, tokenizer.pad_token_id), return_dict=False)
        for row, window in enumerate(chunk):
            starts, ends = start_logits[row].cpu(), end_logits[row].cpu()
            answer = best_answer_span(starts, ends, window, context, max_answer_length)
            if best is None or answer.probability > best.probability:  # ties: the earlier window
                best = answer
    return best
