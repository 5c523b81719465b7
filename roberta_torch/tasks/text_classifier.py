"""RobertaTextClassifier: keras_hub's classifier head (= transformers' RobertaClassificationHead).

    <s> features -> dropout -> Dense(hidden_dim, tanh) -> dropout -> Dense(num_classes) -> activation
"""

from __future__ import annotations

from torch import nn

from ..backbone import XLMRobertaBackbone
from . import heads
from .base import Task, check_dropout, check_labels, check_num_classes, labels_config


class RobertaTextClassifier(Task):
    """Sequence classification on the `<s>` token; returns `(batch, num_classes)` logits.

    Args (keras_hub's): backbone, num_classes, hidden_dim (default backbone.hidden_dim),
    dropout (default 0.0), activation (None/"linear", "softmax", "sigmoid", ...).
    transformers' label metadata is kept when given: id2label, label2id, problem_type.
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
        self.pooled_dropout = nn.Dropout(self.dropout)
        self.pooled_dense = heads.GlorotLinear(backbone.hidden_dim, self.hidden_dim, device=device, dtype=dtype)
        self.output_dropout = nn.Dropout(self.dropout)
        self.output_dense = heads.Linear(self.hidden_dim, self.num_classes, device=device, dtype=dtype)

    def head_config(self) -> dict:
        config = {
            "num_classes": self.num_classes,
            "hidden_dim": self.hidden_dim,
            "dropout": self.dropout,
            "activation": self.activation,
        }
        return {**config, **labels_config(self)}

    def forward(self, inputs=None, *, token_ids=None, padding_mask=None):
        """inputs: {"token_ids", "padding_mask"} (batch, seq) -> logits (batch, num_classes)."""
        backbone_inputs, _ = self.backbone_inputs(inputs, token_ids, padding_mask)
        x = self.backbone(backbone_inputs)[:, 0, :]  # <s> (B, H)
        x = self.pooled_dense(self.pooled_dropout(x)).tanh()  # (B, hidden_dim)
        logits = self.output_dense(self.output_dropout(x))  # (B, num_classes)
        return heads.ACTIVATIONS[self.activation](logits)


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
