"""The losses task models compute when given labels, in transformers' conventions.

  classifier        `problem_type` (or, when None, inferred per call as transformers does:
                    num_classes == 1 -> "regression"; integer labels -> "single_label_classification";
                    float labels -> "multi_label_classification"): MSE, cross-entropy (-100
                    ignored) or BCE-with-logits.
  token classifier  cross-entropy over every token, -100 ignored.
  masked LM         cross-entropy over the vocabulary, -100 ignored (labels (B, T), or (B, M)
                    with `mask_positions`).
  QA                (start loss + end loss) / 2; positions outside [0, seq) are clamped and
                    those clamped to seq ignored, as RobertaForQuestionAnswering does.

Means are taken over the labels that count; a batch with none gives a loss of 0 (transformers
gives NaN there, which would poison the weights). Losses are computed in float32 whatever the
compute dtype. Labels are checked before anything runs: integer class ids in range (or -100),
shapes that match the logits; a ValueError / TypeError names the argument.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..inputs import _as_tensor, check_integer_dtype, is_compiling

IGNORE_INDEX = -100  # transformers' (and torch's) "no label here"
# Padded positions in a softmax: finite (a row of padding must not give NaN), and exp() of it is 0.
_MASKED_LOGIT = -1e9
PROBLEM_TYPES = ("regression", "single_label_classification", "multi_label_classification")


def as_labels(labels, argument: str, device) -> torch.Tensor:
    """A tensor/numpy/list of labels as a tensor on `device`."""
    return _as_tensor(labels, argument).to(device, non_blocking=True)


def _check_shape(labels: torch.Tensor, expected: tuple, argument: str, what: str) -> None:
    if tuple(labels.shape) != tuple(expected):
        raise ValueError(f"`{argument}` must have shape {tuple(expected)} ({what}); got {tuple(labels.shape)}.")


def _check_class_ids(labels: torch.Tensor, num_classes: int, argument: str) -> torch.Tensor:
    check_integer_dtype(labels, argument)
    labels = labels.long()
    valid = ((labels >= 0) & (labels < num_classes)) | (labels == IGNORE_INDEX)
    rule = f"must be class ids in [0, {num_classes}) or {IGNORE_INDEX} (ignored)"
    if is_compiling():
        torch._assert_async(valid.all(), f"{argument} {rule}")
    elif not bool(valid.all()):
        bad = torch.unique(labels[~valid])[:5].tolist()
        raise ValueError(f"`{argument}` {rule}; found {bad}.")
    return labels


def _mean_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = IGNORE_INDEX):
    """Cross-entropy averaged over the targets that are not `ignore_index` (0 when none is)."""
    losses = F.cross_entropy(logits.float(), targets, ignore_index=ignore_index, reduction="sum")
    counted = (targets != ignore_index).sum()
    return losses / counted.clamp(min=1)


# -- classifier ---------------------------------------------------------------------------------


def problem_type_of(problem_type, num_classes: int, labels: torch.Tensor) -> str:
    if problem_type is not None:
        if problem_type not in PROBLEM_TYPES:
            raise ValueError(f"`problem_type` must be None or one of {PROBLEM_TYPES}; got {problem_type!r}.")
        return problem_type
    if num_classes == 1:
        return "regression"
    if not labels.is_floating_point() and labels.dtype != torch.bool:
        return "single_label_classification"
    return "multi_label_classification"


def classifier_targets(labels, *, batch: int, num_classes: int, problem_type, activation: str, device):
    """(problem type, checked labels) for a classifier's (batch, num_classes) output."""
    labels = as_labels(labels, "labels", device)
    kind = problem_type_of(problem_type, num_classes, labels)
    if kind == "regression":
        if labels.dtype == torch.bool or labels.is_complex():
            raise TypeError(f"`labels` for regression must be real numbers; got dtype {labels.dtype}.")
        if num_classes == 1:
            if labels.numel() != batch or labels.dim() > 2:
                raise ValueError(
                    f"`labels` for regression must have shape ({batch},): one target each; got {tuple(labels.shape)}."
                )
            return kind, labels.reshape(batch, 1)
        _check_shape(labels, (batch, num_classes), "labels", "one regression target per output")
        return kind, labels
    if kind == "single_label_classification":
        if activation not in ("linear", "softmax"):
            raise ValueError(
                "Cross-entropy labels need activation None or 'softmax' (the loss is computed from the scores "
                f"before it); this classifier has activation={activation!r}."
            )
        if labels.numel() != batch or labels.dim() > 2:
            raise ValueError(
                f"`labels` must have shape ({batch},): one class id per example; got {tuple(labels.shape)}."
            )
        return kind, _check_class_ids(labels.reshape(batch), num_classes, "labels")
    if activation not in ("linear", "sigmoid"):
        raise ValueError(
            "Multi-label targets need activation None or 'sigmoid' (BCE is computed from the scores before it); "
            f"this classifier has activation={activation!r}."
        )
    _check_shape(labels, (batch, num_classes), "labels", "a 0/1 target per class, for multi-label classification")
    return kind, labels


def classifier_loss(kind: str, scores: torch.Tensor, outputs: torch.Tensor, labels: torch.Tensor):
    """scores: (B, C) before the head's activation; outputs: (B, C) after it.

    Cross-entropy and BCE are computed from the scores (stable): the loss of the outputs when
    the activation is their link (softmax, sigmoid) or none (other activations were refused by
    classifier_targets). Regression compares the outputs with the labels."""
    if kind == "regression":
        return F.mse_loss(outputs.float(), labels.float())
    if kind == "single_label_classification":
        return _mean_cross_entropy(scores, labels)
    return F.binary_cross_entropy_with_logits(scores.float(), labels.float())


# -- per-token: token classifier, masked LM ---------------------------------------------------------


def token_targets(labels, *, shape: tuple, num_classes: int, device, argument: str = "labels") -> torch.Tensor:
    """labels of `shape` (one per position), class ids in [0, num_classes) or -100."""
    labels = as_labels(labels, argument, device)
    _check_shape(labels, shape, argument, "one class id or -100 per position")
    return _check_class_ids(labels, num_classes, argument)


def token_loss(logits: torch.Tensor, labels: torch.Tensor, valid=None) -> torch.Tensor:
    """logits (..., C) and checked labels (...) -> mean cross-entropy over the labelled
    positions. Labels at padded positions (`valid` False) are ignored like -100: the logits
    there depend on the execution path (padded or padding-free), not on the text."""
    if valid is not None:
        labels = labels.masked_fill(~valid, IGNORE_INDEX)
    return _mean_cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))


# -- question answering -----------------------------------------------------------------------------


def span_targets(labels, start_positions, end_positions, *, batch: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(start, end) positions, each (B,), from `labels` (B, 2) or transformers' two keywords."""
    if labels is not None:
        if start_positions is not None or end_positions is not None:
            raise TypeError(
                "Pass the answer spans either as `labels` (batch, 2) or as start_positions= and end_positions=, "
                "not both."
            )
        labels = as_labels(labels, "labels", device)
        _check_shape(labels, (batch, 2), "labels", "the [start, end] token positions of each answer")
        check_integer_dtype(labels, "labels")
        return labels[:, 0].long(), labels[:, 1].long()
    if start_positions is None or end_positions is None:
        raise TypeError("Pass both start_positions= and end_positions= (or `labels` (batch, 2)).")
    positions = []
    for value, argument in ((start_positions, "start_positions"), (end_positions, "end_positions")):
        value = as_labels(value, argument, device)
        if value.numel() != batch or value.dim() > 2:
            raise ValueError(f"`{argument}` must have shape ({batch},); got {tuple(value.shape)}.")
        check_integer_dtype(value, argument)
        positions.append(value.reshape(batch).long())
    return positions[0], positions[1]


def span_loss(start_logits, end_logits, start_positions, end_positions, valid=None) -> torch.Tensor:
    """Padded (B, T) logits, `valid` the (B, T) bool mask of real tokens (None: all real).

    RobertaForQuestionAnswering's loss, except that padded positions are left out of the
    softmax (their logits depend on the execution path: Keras's values on the padded path,
    the bias on the padding-free one, transformers' own position scheme there) and a position
    in the padding counts as no answer; equal to transformers' on unpadded rows."""
    ignored = start_logits.shape[1]
    losses = []
    for logits, positions in ((start_logits, start_positions), (end_logits, end_positions)):
        positions = positions.clamp(0, ignored)
        if valid is not None:
            logits = logits.float().masked_fill(~valid, _MASKED_LOGIT)
            at_padding = ~valid.gather(1, positions.clamp(max=ignored - 1)[:, None])[:, 0]
            positions = positions.masked_fill(at_padding, ignored)
        losses.append(_mean_cross_entropy(logits, positions, ignore_index=ignored))
    return (losses[0] + losses[1]) / 2


def packed_span_loss(start_logits, end_logits, start_positions, end_positions, lengths) -> torch.Tensor:
    """Packed (total,) logits of sequences of `lengths` (B,): each sequence's softmax over its
    own tokens; positions count within each sequence, and those outside it (after clamping
    negatives to 0) are ignored."""
    lengths = lengths.to(start_logits.device).long()
    batch, total = lengths.shape[0], start_logits.shape[0]
    first = torch.cumsum(lengths, 0) - lengths  # (B,) where each sequence starts
    sequence = torch.repeat_interleave(torch.arange(batch, device=lengths.device), lengths, output_size=total)
    losses = []
    for logits, positions in ((start_logits, start_positions), (end_logits, end_positions)):
        x = logits.float()
        top = x.detach().new_full((batch,), float("-inf")).scatter_reduce(0, sequence, x.detach(), "amax")
        top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))  # empty sequences
        normalizer = x.new_zeros(batch).index_add(0, sequence, (x - top[sequence]).exp())
        positions = positions.clamp(min=0)
        counted = positions < lengths
        index = (first + positions).clamp(max=max(total - 1, 0))
        nll = top + normalizer.clamp(min=torch.finfo(x.dtype).tiny).log() - x[index]
        nll = torch.where(counted, nll, torch.zeros_like(nll))
        losses.append(nll.sum() / counted.sum().clamp(min=1))
    return (losses[0] + losses[1]) / 2
