"""RobertaQuestionAnswerer: transformers' RobertaForQuestionAnswering head (`qa_outputs`,
Linear(hidden, 2)) -> start and end logits. tasks/span.py turns them into an answer."""

from __future__ import annotations

from torch import nn

from ..backbone import XLMRobertaBackbone
from . import heads, losses
from .base import Task, check_dropout


class RobertaQuestionAnswerer(Task):
    """Extractive QA: returns `(start_logits, end_logits)`, each `(batch, seq)` (packed input:
    `(total,)`).

    With the answer spans, `labels` (batch, 2) [start, end] token positions or transformers'
    `start_positions=` / `end_positions=` (batch,): a TaskOutput(loss, start_logits,
    end_logits), the loss of RobertaForQuestionAnswering over each row's valid tokens
    (negative positions count as 0, positions at or past the padding as no answer; packed:
    per sequence; see tasks/losses.py). HF Trainer finds `labels` by itself; with
    the start_positions / end_positions columns give it `label_names=["start_positions",
    "end_positions"]` (it recognizes them only on classes named "...QuestionAnswering")."""

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
        start_positions=None,
        end_positions=None,
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
            cu_seqlens=cu_seqlens, max_seqlen=max_seqlen,
            targets={"labels": labels, "start_positions": start_positions, "end_positions": end_positions},
        )
        with_labels = any(value is not None for value in targets.values())
        if with_labels:  # checked before the model runs
            batch, _ = self.call_shape(backbone_inputs)
            starts, ends = losses.span_targets(**targets, batch=batch, device=self.device)
        x = self.backbone(backbone_inputs)  # (B, T, H), or packed (total, H)
        logits = self.qa_outputs(self.qa_dropout(x))  # (B, T, 2)
        start_logits, end_logits = logits.unbind(dim=-1)
        if not with_labels:
            keras_output = (start_logits, end_logits)
            return self.task_output(return_dict, keras_output, start_logits=start_logits, end_logits=end_logits)
        lengths = self.packed_lengths(backbone_inputs, x.device)
        if lengths is None:
            valid = self.valid_tokens(backbone_inputs, x.device)
            loss = losses.span_loss(start_logits, end_logits, starts, ends, valid)
        else:
            loss = losses.packed_span_loss(start_logits, end_logits, starts, ends, lengths)
        return self.task_output(return_dict, None, loss, start_logits=start_logits, end_logits=end_logits)


class XLMRobertaQuestionAnswerer(RobertaQuestionAnswerer):
    backbone_cls = XLMRobertaBackbone
    transformers_architecture = "XLMRobertaForQuestionAnswering"
