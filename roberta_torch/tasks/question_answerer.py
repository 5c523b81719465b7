"""RobertaQuestionAnswerer: transformers' RobertaForQuestionAnswering head (`qa_outputs`,
Linear(hidden, 2)) -> start and end logits. tasks/span.py turns them into an answer."""

from __future__ import annotations

from torch import nn

from ..backbone import XLMRobertaBackbone
from . import heads
from .base import Task, check_dropout


class RobertaQuestionAnswerer(Task):
    """Extractive QA: returns `(start_logits, end_logits)`, each `(batch, seq)`."""

    task_kind = "question_answerer"
    transformers_architecture = "RobertaForQuestionAnswering"
    transformers_head_table = heads.TRANSFORMERS_QUESTION_ANSWERER_TABLE

    def __init__(self, backbone, dropout: float = 0.0):
        super().__init__(backbone)
        self.dropout = check_dropout(dropout)
        weight = backbone.token_embedding.weight
        self.qa_dropout = nn.Dropout(self.dropout)
        self.qa_outputs = heads.Linear(
            backbone.hidden_dim, 2, device=weight.device, dtype=backbone.dtype_policy.variable_dtype
        )

    def head_config(self) -> dict:
        return {"dropout": self.dropout}

    def forward(self, inputs=None, *, token_ids=None, padding_mask=None):
        backbone_inputs, _ = self.backbone_inputs(inputs, token_ids, padding_mask)
        x = self.backbone(backbone_inputs)  # (B, T, H)
        logits = self.qa_outputs(self.qa_dropout(x))  # (B, T, 2)
        start_logits, end_logits = logits.unbind(dim=-1)
        return start_logits, end_logits


class XLMRobertaQuestionAnswerer(RobertaQuestionAnswerer):
    backbone_cls = XLMRobertaBackbone
    transformers_architecture = "XLMRobertaForQuestionAnswering"
