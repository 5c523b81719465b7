"""RobertaTokenClassifier: transformers' RobertaForTokenClassification head (dropout -> Linear)."""

from __future__ import annotations

from torch import nn

from ..backbone import XLMRobertaBackbone
from . import heads
from .base import Task, check_dropout, check_labels, check_num_classes, labels_config


class RobertaTokenClassifier(Task):
    """Per-token classification (NER, POS): returns `(batch, seq, num_classes)` logits."""

    task_kind = "token_classifier"
    transformers_architecture = "RobertaForTokenClassification"
    transformers_head_table = heads.TRANSFORMERS_TOKEN_CLASSIFIER_TABLE

    def __init__(
        self,
        backbone,
        num_classes: int,
        dropout: float = 0.1,
        id2label: dict | None = None,
        label2id: dict | None = None,
        problem_type: str | None = None,
    ):
        super().__init__(backbone)
        self.num_classes = check_num_classes(num_classes)
        self.dropout = check_dropout(dropout)
        self.id2label, self.label2id = check_labels(self.num_classes, id2label, label2id)
        self.problem_type = problem_type
        weight = backbone.token_embedding.weight
        self.classifier_dropout = nn.Dropout(self.dropout)
        self.classifier = heads.Linear(
            backbone.hidden_dim, self.num_classes, device=weight.device, dtype=backbone.dtype_policy.variable_dtype
        )

    def head_config(self) -> dict:
        config = {"num_classes": self.num_classes, "dropout": self.dropout}
        return {**config, **labels_config(self)}

    def forward(self, inputs=None, *, token_ids=None, padding_mask=None):
        backbone_inputs, _ = self.backbone_inputs(inputs, token_ids, padding_mask)
        x = self.backbone(backbone_inputs)  # (B, T, H)
        return self.classifier(self.classifier_dropout(x))  # (B, T, num_classes)


class XLMRobertaTokenClassifier(RobertaTokenClassifier):
    backbone_cls = XLMRobertaBackbone
    transformers_architecture = "XLMRobertaForTokenClassification"
