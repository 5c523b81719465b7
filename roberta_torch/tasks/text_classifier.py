"""RobertaTextClassifier: keras_hub's classifier head (= transformers' RobertaClassificationHead).

    <s> features -> dropout -> Dense(hidden_dim, tanh) -> dropout -> Dense(num_classes) -> activation

The head is the submodule `classifier` (`classifier.dense`, `classifier.out_proj`, as in
transformers), so PEFT's task_type SEQ_CLS trains it by default; keras_hub's attribute names
`pooled_dense` / `output_dense` remain as read-only aliases.
"""

from __future__ import annotations

import torch
from torch import nn

from ..backbone import XLMRobertaBackbone
from ..inputs import is_compiling
from . import heads, losses
from .base import Task, check_dropout, check_labels, check_num_classes, labels_config


def first_tokens(x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """The `<s>` row of each sequence: (B, T, H) -> (B, H), or packed (total, H) with the
    (B,) sequence lengths -> (B, H)."""
    if lengths is None:
        return x[:, 0, :]
    message = "every sequence of a packed batch needs at least one token (its <s>) to be classified"
    if is_compiling():
        torch._assert_async((lengths > 0).all(), message)
    elif not bool((lengths > 0).all()):
        empty = torch.nonzero(lengths == 0).flatten()[:5].tolist()
        raise ValueError(f"{message}; sequences {empty} of `cu_seqlens` are empty.")
    starts = torch.cumsum(lengths, 0) - lengths
    return x[starts]


# keras_hub's head attribute -> our module (the renamed modules' table, without the dots).
KERAS_HEAD_ALIASES = {old.rstrip("."): new.rstrip(".") for old, new in heads.TEXT_CLASSIFIER_RENAMED_MODULES}


class RobertaTextClassifier(Task):
    """Sequence classification on the `<s>` token; returns `(batch, num_classes)` logits.

    Args (keras_hub's): backbone, num_classes, hidden_dim (default backbone.hidden_dim),
    dropout (default 0.0), activation (None/"linear", "softmax", "sigmoid", ...).
    transformers' label metadata is kept when given: id2label, label2id, problem_type
    (which also picks the loss, see tasks/losses.py).
    """

    task_kind = "text_classifier"
    keras_class_name = "RobertaTextClassifier"
    keras_module = "keras_hub.src.models.roberta.roberta_text_classifier"
    keras_config_name = "roberta_text_classifier"
    keras_preprocessor = (
        "keras_hub.src.models.roberta.roberta_text_classifier_preprocessor",
        "RobertaTextClassifierPreprocessor",
    )
    keras_head_table = heads.KERAS_TEXT_CLASSIFIER_TABLE
    keras_head_groups = heads.KERAS_TEXT_CLASSIFIER_GROUPS
    transformers_architecture = "RobertaForSequenceClassification"
    transformers_head_table = heads.TRANSFORMERS_TEXT_CLASSIFIER_TABLE

    def __init__(
        self,
        backbone,
        num_classes: int,
        hidden_dim: int | None = None,
        dropout: float = 0.0,
        activation: str | None = None,
        id2label: dict | None = None,
        label2id: dict | None = None,
        problem_type: str | None = None,
    ):
        super().__init__(backbone)
        self.num_classes = check_num_classes(num_classes)
        self.hidden_dim = backbone.hidden_dim if hidden_dim is None else check_num_classes(hidden_dim, "hidden_dim")
        self.dropout = check_dropout(dropout)
        activation = "linear" if activation is None else activation
        if activation not in heads.ACTIVATIONS:
            raise ValueError(f"`activation` must be None or one of {sorted(heads.ACTIVATIONS)}; got {activation!r}.")
        self.activation = activation
        self.id2label, self.label2id = check_labels(self.num_classes, id2label, label2id)
        self.problem_type = problem_type

        dtype = backbone.dtype_policy.variable_dtype
        device = backbone.token_embedding.weight.device
        self.classifier = heads.ClassificationHead(
            backbone.hidden_dim, self.hidden_dim, self.num_classes, self.dropout, device=device, dtype=dtype
        )
        self.register_load_state_dict_pre_hook(_rename_old_head_keys)

    # keras_hub's attribute names, as read-only aliases (not registered twice: each parameter
    # is listed once, under `classifier.`).
    @property
    def pooled_dense(self) -> nn.Module:
        return self.classifier.dense

    @property
    def output_dense(self) -> nn.Module:
        return self.classifier.out_proj

    def __setattr__(self, name, value) -> None:
        # nn.Module would register an assigned module under the alias's name, unused and hidden
        # behind the property.
        if name in KERAS_HEAD_ALIASES:
            raise AttributeError(
                f"`{name}` is keras_hub's read-only name of `{KERAS_HEAD_ALIASES[name]}`; assign that instead."
            )
        super().__setattr__(name, value)

    def head_config(self) -> dict:
        config = {
            "num_classes": self.num_classes,
            "hidden_dim": self.hidden_dim,
            "dropout": self.dropout,
            "activation": self.activation,
        }
        return {**config, **labels_config(self)}

    def forward(
        self,
        inputs=None,
        *,
        token_ids=None,
        padding_mask=None,
        position_ids=None,
        cu_seqlens=None,
        max_seqlen=None,
        labels=None,
        return_dict=None,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        inputs_embeds=None,
        output_attentions=None,
        output_hidden_states=None,
    ):
        """inputs: {"token_ids", "padding_mask"} (batch, seq), or a packed batch
        {"token_ids": (total,), "cu_seqlens": (batch + 1,)} (each sequence's first token is
        its <s>) -> (batch, num_classes) outputs (after `activation`).

        With `labels` ((batch,) class ids, (batch,) floats for num_classes == 1, or (batch,
        num_classes) 0/1 floats for multi-label; see `problem_type`) -> TaskOutput(loss, logits).
        """
        backbone_inputs, _, targets, return_dict = self.split_call(
            inputs, token_ids=token_ids, padding_mask=padding_mask, position_ids=position_ids,
            return_dict=return_dict, input_ids=input_ids, attention_mask=attention_mask,
            token_type_ids=token_type_ids, inputs_embeds=inputs_embeds, output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            cu_seqlens=cu_seqlens, max_seqlen=max_seqlen, targets={"labels": labels},
        )
        labels = targets["labels"]
        if labels is not None:  # checked before the model runs
            batch, _ = self.call_shape(backbone_inputs)
            kind, labels = losses.classifier_targets(
                labels, batch=batch, num_classes=self.num_classes, problem_type=self.problem_type,
                activation=self.activation, device=self.device,
            )
        x = self.backbone(backbone_inputs)  # (B, T, H), or packed (total, H)
        x = first_tokens(x, self.packed_lengths(backbone_inputs, x.device))  # <s> (B, H)
        scores = self.classifier(x)  # (B, num_classes)
        outputs = heads.ACTIVATIONS[self.activation](scores)
        loss = None if labels is None else losses.classifier_loss(kind, scores, outputs, labels)
        return self.task_output(return_dict, outputs, loss, logits=outputs)


def _rename_old_head_keys(module, state_dict, prefix, *args) -> None:
    """load_state_dict pre-hook: state dicts saved with the head's old names load as well."""
    heads.rename_state_dict_keys(state_dict, prefix, heads.TEXT_CLASSIFIER_RENAMED_MODULES)


class XLMRobertaTextClassifier(RobertaTextClassifier):
    backbone_cls = XLMRobertaBackbone
    keras_class_name = "XLMRobertaTextClassifier"
    keras_module = "keras_hub.src.models.xlm_roberta.xlm_roberta_text_classifier"
    keras_config_name = "xlm_roberta_text_classifier"
    keras_preprocessor = (
        "keras_hub.src.models.xlm_roberta.xlm_roberta_text_classifier_preprocessor",
        "XLMRobertaTextClassifierPreprocessor",
    )
    transformers_architecture = "XLMRobertaForSequenceClassification"
