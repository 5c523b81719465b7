"""RobertaMaskedLM: keras_hub's MaskedLMHead (= transformers' RobertaLMHead), tied to the
token embedding.

With `mask_positions` the head runs only on the gathered positions (batch, num_masked):
the projection to the 50k / 250k vocabulary is never made for every token in training.
"""

from __future__ import annotations

import torch

from ..backbone import XLMRobertaBackbone
from ..tracing import is_compiling
from . import heads
from .base import Task

_INTEGER_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


def check_mask_positions(mask_positions, batch: int, seq: int, device) -> torch.Tensor:
    """(batch, num_masked) integer positions in [0, seq), or a typed error naming the argument."""
    if not isinstance(mask_positions, torch.Tensor):
        try:
            import numpy as np

            mask_positions = torch.as_tensor(np.asarray(mask_positions))
        except (TypeError, ValueError) as error:
            raise TypeError(
                f"`mask_positions` must be a (batch, num_masked) int tensor; got {type(mask_positions).__name__}."
            ) from error
    if mask_positions.dtype not in _INTEGER_DTYPES:
        raise TypeError(
            f"`mask_positions` must hold integer positions; got dtype {mask_positions.dtype}. Cast with .long()."
        )
    if mask_positions.dim() != 2 or mask_positions.shape[0] != batch:
        raise ValueError(
            f"`mask_positions` must have shape (batch={batch}, num_masked); got {tuple(mask_positions.shape)}."
        )
    mask_positions = mask_positions.to(device).long()
    if not is_compiling() and mask_positions.numel():
        low, high = int(mask_positions.min()), int(mask_positions.max())
        if low < 0 or high >= seq:
            raise ValueError(
                f"`mask_positions` must lie in [0, sequence length={seq}); found values in [{low}, {high}]."
            )
    return mask_positions


class RobertaMaskedLM(Task):
    """Masked language model. Call with `{"token_ids", "padding_mask", "mask_positions"}` ->
    logits `(batch, num_masked, vocabulary_size)` as keras_hub; without `mask_positions`,
    logits at every position `(batch, seq, vocabulary_size)`."""

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

    def forward(self, inputs=None, *, token_ids=None, padding_mask=None, mask_positions=None):
        backbone_inputs, extra = self.backbone_inputs(inputs, token_ids, padding_mask, extra=("mask_positions",))
        if inputs is None and mask_positions is not None:
            extra["mask_positions"] = mask_positions
        x = self.backbone(backbone_inputs)  # (B, T, H)
        positions = extra.get("mask_positions")
        if positions is not None:
            batch, seq, hidden = x.shape
            positions = check_mask_positions(positions, batch, seq, x.device)
            x = torch.take_along_dim(x, positions.unsqueeze(-1).expand(-1, -1, hidden), dim=1)  # (B, M, H)
        return self.lm_head(x, self.backbone.token_embedding.weight)  # (B, M or T, V)


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
