"""The task heads (torch modules) and their conversion tables, as data.

Each table row is (source key, model key, transform) like the backbone tables in
presets/keras_format.py and presets/transformers_format.py; the model keys are relative to
the task module (the backbone's tensors live under "backbone."). Reading applies each row's
transform, writing applies its inverse (presets/mapping.py), so nothing is written twice.

Keras source keys are dataset paths in `task.weights.h5` as keras-hub 0.32 writes them;
transformers keys are those of `RobertaFor*` / `XLMRobertaFor*` after the `roberta.` prefix
is removed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import LAYER_NORM_EPSILON, LayerNorm32, Linear, init_kernel_, linear_then
from ..presets.mapping import COPY, TRANSPOSE

# -- Keras task.weights.h5 -----------------------------------------------------------------

KERAS_TEXT_CLASSIFIER_TABLE = (
    ("layers/dense/vars/0", "classifier.dense.weight", TRANSPOSE),
    ("layers/dense/vars/1", "classifier.dense.bias", COPY),
    ("layers/dense_1/vars/0", "classifier.out_proj.weight", TRANSPOSE),
    ("layers/dense_1/vars/1", "classifier.out_proj.bias", COPY),
)
# Every `vars` group keras writes (weightless ones included) with its keras layer name; "" is
# the task itself, named by the task (filled in when writing).
KERAS_TEXT_CLASSIFIER_GROUPS = (
    ("layers/dense", "pooled_dense"),
    ("layers/dense_1", "logits"),
    ("layers/dropout", "pooled_dropout"),
    ("layers/dropout_1", "output_dropout"),
)

KERAS_MASKED_LM_TABLE = (
    ("layers/masked_lm_head/_intermediate_dense/vars/0", "lm_head.dense.weight", TRANSPOSE),
    ("layers/masked_lm_head/_intermediate_dense/vars/1", "lm_head.dense.bias", COPY),
    ("layers/masked_lm_head/_intermediate_layer_norm/vars/0", "lm_head.layer_norm.weight", COPY),
    ("layers/masked_lm_head/_intermediate_layer_norm/vars/1", "lm_head.layer_norm.bias", COPY),
    ("layers/masked_lm_head/vars/0", "lm_head.bias", COPY),
)
KERAS_MASKED_LM_GROUPS = (
    ("layers/input_layer_2", "mask_positions"),
    ("layers/masked_lm_head", "mlm_head"),
    ("layers/masked_lm_head/_intermediate_dense", "intermediate_dense"),
    ("layers/masked_lm_head/_intermediate_layer_norm", "intermediate_layer_norm"),
)

# -- transformers ----------------------------------------------------------------------------

# Our head has transformers' layout (RobertaClassificationHead), so the rows are the identity.
TRANSFORMERS_TEXT_CLASSIFIER_TABLE = (
    ("classifier.dense.weight", "classifier.dense.weight", COPY),
    ("classifier.dense.bias", "classifier.dense.bias", COPY),
    ("classifier.out_proj.weight", "classifier.out_proj.weight", COPY),
    ("classifier.out_proj.bias", "classifier.out_proj.bias", COPY),
)
# The text classifier's head modules before it moved under `classifier` (keras_hub's names),
# old prefix -> new: state dicts saved then (torch.save(model.state_dict()), Lightning and
# Trainer checkpoints) are renamed on load (RobertaTextClassifier's load_state_dict pre-hook).
TEXT_CLASSIFIER_RENAMED_MODULES = (
    ("pooled_dense.", "classifier.dense."),
    ("output_dense.", "classifier.out_proj."),
)
TRANSFORMERS_MASKED_LM_TABLE = (
    ("lm_head.dense.weight", "lm_head.dense.weight", COPY),
    ("lm_head.dense.bias", "lm_head.dense.bias", COPY),
    ("lm_head.layer_norm.weight", "lm_head.layer_norm.weight", COPY),
    ("lm_head.layer_norm.bias", "lm_head.layer_norm.bias", COPY),
    ("lm_head.bias", "lm_head.bias", COPY),
)
# transformers ties these to the word embeddings and to lm_head.bias; when a file stores
# them they are checked equal to what they are tied to (tasks/loading.py), never dropped.
TRANSFORMERS_MASKED_LM_TIED = {
    "lm_head.decoder.weight": "backbone.token_embedding.weight",
    "lm_head.decoder.bias": "lm_head.bias",
}
TRANSFORMERS_TOKEN_CLASSIFIER_TABLE = (
    ("classifier.weight", "classifier.weight", COPY),
    ("classifier.bias", "classifier.bias", COPY),
)
TRANSFORMERS_QUESTION_ANSWERER_TABLE = (
    ("qa_outputs.weight", "qa_outputs.weight", COPY),
    ("qa_outputs.bias", "qa_outputs.bias", COPY),
)


# -- modules ---------------------------------------------------------------------------------

ACTIVATIONS = {
    "linear": lambda x: x,
    "softmax": lambda x: torch.softmax(x, dim=-1),
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "relu": torch.relu,
}


class GlorotLinear(Linear):
    """Linear with Keras's Dense defaults (glorot_uniform kernel, zero bias): keras_hub's
    `pooled_dense` sets no initializer."""

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.weight)
        nn.init.zeros_(self.bias)


class ClassificationHead(nn.Module):
    """keras_hub's text-classifier head in transformers' layout (RobertaClassificationHead):
    <s> features -> dropout -> dense (tanh) -> dropout -> out_proj -> scores, before the
    task's activation. keras_hub's pooled_dense / output_dense are `dense` / `out_proj`; its
    two dropout layers (same rate, no state) are the one `dropout`, as in transformers."""

    def __init__(self, input_dim: int, hidden_dim: int, num_classes: int, dropout: float, *, device=None, dtype=None):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.dense = GlorotLinear(input_dim, hidden_dim, device=device, dtype=dtype)  # keras_hub: pooled_dense
        self.out_proj = Linear(hidden_dim, num_classes, device=device, dtype=dtype)  # keras_hub: output_dense

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dense(self.dropout(x)).tanh()  # (B, hidden_dim)
        return self.out_proj(self.dropout(x))  # (B, num_classes)


def rename_state_dict_keys(state_dict: dict, prefix: str, renamed_modules) -> None:
    """In place: keys under `prefix + old` moved to `prefix + new` for each (old, new) module
    prefix; a key whose new name is already present is left (load_state_dict then reports it)."""
    for key in [k for k in state_dict if k.startswith(prefix)]:
        for old, new in renamed_modules:
            if key.startswith(prefix + old):
                target = prefix + new + key[len(prefix + old):]
                if target not in state_dict:
                    state_dict[target] = state_dict.pop(key)
                break


class MaskedLMHead(nn.Module):
    """keras_hub's MaskedLMHead (= transformers' RobertaLMHead): Dense(hidden, exact GELU) ->
    LayerNorm(1e-5) -> the token embedding transposed (tied, not a parameter here) + bias."""

    def __init__(self, hidden_dim: int, vocabulary_size: int):
        super().__init__()
        self.dense = Linear(hidden_dim, hidden_dim)
        self.layer_norm = LayerNorm32(hidden_dim, eps=LAYER_NORM_EPSILON)
        self.bias = nn.Parameter(torch.zeros(vocabulary_size))

    def forward(self, x: torch.Tensor, token_embedding: torch.Tensor) -> torch.Tensor:
        x = self.layer_norm(linear_then(self.dense, x, activation="gelu"))  # (..., H)
        return F.linear(x, token_embedding.to(x.dtype), self.bias.to(x.dtype))  # (..., V)


def init_head_linear_(linear: nn.Linear) -> nn.Linear:
    """keras_hub's RoBERTa kernel initializer (TruncatedNormal(0.02)), zero bias."""
    init_kernel_(linear.weight)
    nn.init.zeros_(linear.bias)
    return linear
