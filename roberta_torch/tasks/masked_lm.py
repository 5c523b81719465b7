"""RobertaMaskedLM: keras_hub's MaskedLMHead (= transformers' RobertaLMHead), tied to the
token embedding.

With `mask_positions` the head runs only on the gathered positions (batch, num_masked):
the projection to the 50k / 250k vocabulary is never made for every token in training.
With `labels` it also returns the loss: transformers' convention (one token id per position,
-100 where nothing is predicted), for every token or for the `mask_positions`.
"""

from __future__ import annotations

import torch

from ..backbone import XLMRobertaBackbone
from ..inputs import _as_tensor, check_integer_dtype
from ..tracing import is_compiling
from . import heads, losses
from .base import Task


def check_mask_positions(mask_positions, batch: int, lengths, device) -> torch.Tensor:
    """(batch, num_masked) integer positions, each in [0, its sequence's length), or a typed
    error naming the argument. `lengths`: the padded sequence length (an int), or a packed
    batch's (batch,) sequence lengths (positions then count within each sequence)."""
    try:
        mask_positions = _as_tensor(mask_positions, "mask_positions")
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"`mask_positions` must be a (batch, num_masked) int tensor; got {type(mask_positions).__name__}."
        ) from error
    check_integer_dtype(mask_positions, "mask_positions")
    if mask_positions.dim() != 2 or mask_positions.shape[0] != batch:
        raise ValueError(
            f"`mask_positions` must have shape (batch={batch}, num_masked); got {tuple(mask_positions.shape)}."
        )
    mask_positions = mask_positions.to(device).long()
    if not mask_positions.numel():
        return mask_positions
    packed = isinstance(lengths, torch.Tensor)
    limit = lengths[:, None] if packed else lengths
    in_range = (mask_positions >= 0) & (mask_positions < limit)
    what = "its sequence's length (cu_seqlens)" if packed else f"sequence length={lengths}"
    if is_compiling():
        torch._assert_async(in_range.all(), "mask_positions must lie in [0, sequence length)")
    elif not bool(in_range.all()):
        low, high = int(mask_positions.min()), int(mask_positions.max())
        raise ValueError(f"`mask_positions` must lie in [0, {what}); found values in [{low}, {high}].")
    return mask_positions


class RobertaMaskedLM(Task):
    """Masked language model. Call with `{"token_ids", "padding_mask", "mask_positions"}` ->
    logits `(batch, num_masked, vocabulary_size)` as keras_hub; without `mask_positions`,
    logits at every position `(batch, seq, vocabulary_size)` (packed input: `(total, V)`, or
    with mask_positions counted within each sequence, `(batch, num_masked, V)`).

    `labels` of the logits' leading shape (token ids, -100 where nothing is predicted) add
    the loss: TaskOutput(loss, logits). From keras_hub's preprocessor output
    `(x, mask_ids, mask_weights)`: `labels = mask_ids.masked_fill(mask_weights == 0, -100)`.
    """

    task_kind = "masked_lm"
    keras_class_name = "RobertaMaskedLM"
    keras_module = "keras_hub.src.models.roberta.roberta_masked_lm"
    keras_config_name = "roberta_masked_lm"
    keras_preprocessor = (
        "keras_hub.src.models.roberta.roberta_masked_lm_preprocessor",
        "RobertaMaskedLMPreprocessor",
    )
    keras_head_table = heads.KERAS_MASKED_LM_TABLE
    keras_head_groups = heads.KERAS_MASKED_LM_GROUPS
    transformers_architecture = "RobertaForMaskedLM"
    transformers_head_table = heads.TRANSFORMERS_MASKED_LM_TABLE
    transformers_tied = heads.TRANSFORMERS_MASKED_LM_TIED

    def __init__(self, backbone):
        super().__init__(backbone)
        weight = backbone.token_embedding.weight
        with torch.device(weight.device):  # on meta when loading weights: nothing initialized
            self.lm_head = heads.MaskedLMHead(backbone.hidden_dim, backbone.vocabulary_size)
        heads.init_head_linear_(self.lm_head.dense)
        self.lm_head.to(dtype=backbone.dtype_policy.variable_dtype)

    def head_config(self) -> dict:
        return {}

    def forward(
        self,
        inputs=None,
        *,
        token_ids=None,
        padding_mask=None,
        position_ids=None,
        cu_seqlens=None,
        max_seqlen=None,
        mask_positions=None,
        labels=None,
        return_dict=None,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        inputs_embeds=None,
        output_attentions=None,
        output_hidden_states=None,
    ):
        backbone_inputs, extra, targets, return_dict = self.split_call(
            inputs, token_ids=token_ids, padding_mask=padding_mask, position_ids=position_ids,
            return_dict=return_dict, input_ids=input_ids, attention_mask=attention_mask,
            token_type_ids=token_type_ids, inputs_embeds=inputs_embeds, output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            cu_seqlens=cu_seqlens, max_seqlen=max_seqlen, mask_positions=mask_positions,
            extra=("mask_positions",), targets={"labels": labels},
        )
        positions, labels = extra.get("mask_positions"), targets["labels"]
        if positions is not None or labels is not None:  # checked before the model runs
            batch, shape = self.call_shape(backbone_inputs)
            lengths = self.packed_lengths(backbone_inputs, self.device)
            if positions is not None:
                limit = shape[-1] if lengths is None else lengths
                positions = check_mask_positions(positions, batch, limit, self.device)
                shape = tuple(positions.shape)
            if labels is not None:
                labels = losses.token_targets(
                    labels, shape=shape, num_classes=self.backbone.vocabulary_size, device=self.device
                )
        x = self.backbone(backbone_inputs)  # (B, T, H), or packed (total, H)
        if positions is not None:
            if lengths is None:
                index = positions.unsqueeze(-1).expand(-1, -1, x.shape[-1])
                x = torch.take_along_dim(x, index, dim=1)  # (B, M, H)
            else:
                x = x[positions + (torch.cumsum(lengths, 0) - lengths)[:, None]]  # (B, M, H)
        logits = self.lm_head(x, self.backbone.token_embedding.weight)  # (B, M or T, V)
        loss = None
        if labels is not None:
            valid = None if positions is not None else self.valid_tokens(backbone_inputs, logits.device)
            loss = losses.token_loss(logits, labels, valid)
        return self.task_output(return_dict, logits, loss, logits=logits)


class XLMRobertaMaskedLM(RobertaMaskedLM):
    backbone_cls = XLMRobertaBackbone
    keras_class_name = "XLMRobertaMaskedLM"
    keras_module = "keras_hub.src.models.xlm_roberta.xlm_roberta_masked_lm"
    keras_config_name = "xlm_roberta_masked_lm"
    keras_preprocessor = (
        "keras_hub.src.models.xlm_roberta.xlm_roberta_masked_lm_preprocessor",
        "XLMRobertaMaskedLMPreprocessor",
    )
    transformers_architecture = "XLMRobertaForMaskedLM"
