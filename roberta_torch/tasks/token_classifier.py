"""RobertaTokenClassifier: transformers' RobertaForTokenClassification head (dropout -> Linear)."""

from __future__ import annotations

from torch import nn

from ..backbone import XLMRobertaBackbone
from . import heads, losses
from .base import Task, check_dropout, check_labels, check_num_classes, labels_config


class RobertaTokenClassifier(Task):
    """Per-token classification (NER, POS): returns `(batch, seq, num_classes)` logits
    (packed input: `(total, num_classes)`); with `labels` (one class id per token, -100 where
    no label counts, as transformers) a TaskOutput(loss, logits)."""

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
        backbone_inputs, _, targets, return_dict = self.split_call(
            inputs, token_ids=token_ids, padding_mask=padding_mask, position_ids=position_ids,
            return_dict=return_dict, input_ids=input_ids, attention_mask=attention_mask,
            token_type_ids=token_type_ids, inputs_embeds=inputs_embeds, output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            cu_seqlens=cu_seqlens, max_seqlen=max_seqlen, targets={"labels": labels},
        )
        labels = targets["labels"]
        if labels is not None:  # checked before the model runs
            _, shape = self.call_shape(backbone_inputs)
            labels = losses.token_targets(labels, shape=shape, num_classes=self.num_classes, device=self.device)
        x = self.backbone(backbone_inputs)  # (B, T, H), or packed (total, H)
        logits = self.classifier(self.classifier_dropout(x))  # (B, T, num_classes)
        loss = None
        if labels is not None:
            loss = losses.token_loss(logits, labels, self.valid_tokens(backbone_inputs, logits.device))
        return self.task_output(return_dict, logits, loss, logits=logits)


class XLMRobertaTokenClassifier(RobertaTokenClassifier):
    backbone_cls = XLMRobertaBackbone
    transformers_architecture = "XLMRobertaForTokenClassification"
