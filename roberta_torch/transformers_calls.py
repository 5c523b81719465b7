"""transformers' call spellings on our models: `model(input_ids=..., attention_mask=...)`.

PEFT's PeftModelFor* wrappers, HF Trainer with a tokenizer's columns and code written for
transformers' RobertaModel call a model with transformers' argument names. They are aliases
of ours (`input_ids` -> `token_ids`, `attention_mask` -> `padding_mask`); the arguments that
transformers' RoBERTa takes and that change nothing here are accepted at their neutral value
(`token_type_ids` all zeros, `inputs_embeds=None`, `output_attentions` None/False) and refused
otherwise with a ValueError, before anything runs. A call that uses a transformers spelling
returns a dict (`TaskOutput`), as transformers' models do; Keras spellings keep keras_hub's
outputs.
"""

from __future__ import annotations

import torch

from .tracing import is_compiling

# transformers' name -> ours.
INPUT_ALIASES = {"input_ids": "token_ids", "attention_mask": "padding_mask"}


def _check_token_type_ids(value) -> None:
    # RoBERTa has one token type (type_vocab_size=1; row 0 is folded into the positions):
    # all zeros is what transformers computes, anything else would be an index error there.
    if not isinstance(value, torch.Tensor):
        value = torch.as_tensor(value)
    message = "`token_type_ids` must be all zeros (RoBERTa has a single token type); drop them or pass zeros."
    if is_compiling():
        torch._assert_async((value == 0).all(), message)
    elif bool((value != 0).any()):
        raise ValueError(message)


def check_unsupported_arguments(inputs_embeds=None, output_attentions=None) -> None:
    """transformers' arguments that have no counterpart here, refused unless neutral."""
    if inputs_embeds is not None:
        raise ValueError(
            "`inputs_embeds` is not supported: the model embeds `input_ids` / `token_ids` itself "
            "(token + position embeddings, as keras_hub). Pass the ids."
        )
    if output_attentions:
        raise ValueError(
            "`output_attentions=True` is not supported: attention runs in fused kernels that do not "
            "materialize the attention probabilities. Pass output_attentions=None or False."
        )


def check_output_hidden_states(value, model_name: str) -> None:
    """Task models return their head's outputs only (every layer's output is the backbone's
    business)."""
    if value:
        raise ValueError(
            f"`output_hidden_states=True` is not supported on {model_name}: call its backbone, "
            "`model.backbone(inputs, output_hidden_states=True)`, for every layer's output."
        )


def rename_transformers_inputs(inputs) -> tuple[dict, bool]:
    """(inputs with transformers' names replaced by ours, whether any transformers name was used).

    `inputs` is the merged dict of one call (inputs.merge_call_arguments). Giving both
    spellings of one input is a ValueError; so are token_type_ids other than zeros."""
    renamed, transformers_style = dict(inputs), False
    for theirs, ours in INPUT_ALIASES.items():
        if theirs not in renamed:
            continue
        transformers_style = True
        if ours in renamed:
            raise ValueError(
                f"Both `{theirs}` (transformers' name) and `{ours}` were given; they are the same input. Pass one."
            )
        renamed[ours] = renamed.pop(theirs)
    if "token_type_ids" in renamed:
        transformers_style = True
        token_type_ids = renamed.pop("token_type_ids")
        if token_type_ids is not None:
            _check_token_type_ids(token_type_ids)
    return renamed, transformers_style
