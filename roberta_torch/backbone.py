"""RobertaBackbone and XLMRobertaBackbone: keras_hub's backbones as torch.nn.Modules."""

from __future__ import annotations

import contextlib
import logging
import numbers

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from . import attention
from .dtype_policy import DTypePolicy, get_dtype_policy
from .inputs import is_compiling, is_packed_input, prepare_inputs, prepare_packed_inputs
from .layers import LAYER_NORM_EPSILON, LayerNorm32, TransformerEncoderLayer, init_kernel_
from .padding import (
    COMPILED_PACKING_SUPPORTED,
    layout_of_packed_input,
    pad,
    packed_layout,
    packed_positions,
    unpad,
)

logger = logging.getLogger(__name__)

PADDING_FREE_CHOICES = ("auto", True, False)
# With "auto", a batch runs padding-free when at least this fraction of it is padding:
# below it, the gather/scatter and per-sequence attention cost more than they save.
PADDING_FREE_MIN_PADDING_FRACTION = 0.1

# Keras config keys other than the constructor arguments; accepted and not used.
_KERAS_LAYER_KEYS = ("name", "trainable")


class _ClassProperty:
    """A read-only property on the class itself (Keras's `Backbone.presets`)."""

    def __init__(self, fget):
        self.fget = fget
        self.__doc__ = fget.__doc__

    def __get__(self, instance, owner):
        return self.fget(owner)


def _check_positive_int(value, argument: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{argument}` must be a positive int; got {type(value).__name__} ({value!r}).")
    if value <= 0:
        raise ValueError(f"`{argument}` must be a positive int; got {value}.")
    return int(value)


class Backbone(nn.Module):
    """Base class: config round trip, presets, dtype policy plumbing."""

    keras_class_name = "Backbone"
    keras_module = "keras_hub.src.models.backbone"
    keras_config_name = "backbone"

    @_ClassProperty
    def presets(cls) -> dict:
        """Builtin presets this class can load: name -> metadata (a class lists its
        subclasses' presets too, as in keras_hub)."""
        from .presets.registry import presets_for_class

        return presets_for_class(cls)

    @classmethod
    def from_preset(cls, preset: str, load_weights: bool = True, **kwargs) -> "Backbone":
        """Build the backbone a preset describes: a builtin name, `kaggle://...`,
        `hf://...` or a local directory (Keras preset, transformers checkpoint, or our
        safetensors export).

        `kwargs` override the stored config (dtype, dropout, padding_free, device, ...).
        Keras presets load in float32 unless `dtype=` is given, as in keras_hub.
        `allow_pickle=True` opts in to transformers' pickled `pytorch_model.bin` (read with
        `torch.load(weights_only=True)`). The model comes back in eval mode, like
        transformers' `from_pretrained`; call `.train()` to fine-tune.
        """
        from .presets.loading import backbone_from_preset

        return backbone_from_preset(cls, preset, load_weights=load_weights, **kwargs)

    def save_to_preset(self, directory, format: str = "keras") -> None:
        """Write a preset: `format="keras"` (loadable by keras_hub) or `"safetensors"`."""
        from .presets.saving import save_preset

        save_preset(self, directory, format=format)

    @classmethod
    def from_config(cls, config: dict) -> "Backbone":
        return cls(**config)

    def get_config(self) -> dict:
        raise NotImplementedError


class RobertaBackbone(Backbone):
    """RoBERTa encoder, numerically keras_hub's `RobertaBackbone`.

    Call it on `{"token_ids": (batch, seq) ints, "padding_mask": (batch, seq) 0/1}` (torch
    tensors or numpy arrays); it returns the sequence output `(batch, seq, hidden_dim)` in the
    policy's compute dtype, on the model's device.

    Extra keyword arguments (not Keras's):
      padding_free: "auto" (default), True or False. Padding-free execution packs the valid
        tokens so dense layers skip padding; "auto" uses it when at least 10% of the batch
        is padding (inside torch.compile: whenever a mask is given, as the padding fraction is
        not known while tracing). Outputs at padded positions are zeros on
        that path and Keras's (meaningless but finite) values on the padded path.
      attention_backend: "auto" (default), "triton" or "sdpa" (see roberta_torch.attention).
      gradient_checkpointing: recompute each layer in backward (non-reentrant) to save memory.
      device: where to create the parameters (e.g. "meta" to build without allocating).
    """

    keras_class_name = "RobertaBackbone"
    keras_module = "keras_hub.src.models.roberta.roberta_backbone"
    keras_config_name = "roberta_backbone"

    def __init__(
        self,
        vocabulary_size: int,
        num_layers: int,
        num_heads: int,
        hidden_dim: int,
        intermediate_dim: int,
        dropout: float = 0.1,
        max_sequence_length: int = 512,
        dtype=None,
        **kwargs,
    ):
        super().__init__()
        padding_free = kwargs.pop("padding_free", "auto")
        attention_backend = kwargs.pop("attention_backend", None)
        gradient_checkpointing = kwargs.pop("gradient_checkpointing", False)
        device = kwargs.pop("device", None)
        self.name = kwargs.pop("name", self.keras_config_name)
        trainable = kwargs.pop("trainable", True)
        if kwargs:
            raise TypeError(
                f"{type(self).__name__} got unexpected keyword arguments {sorted(kwargs)}; "
                "allowed extras: padding_free, attention_backend, gradient_checkpointing, "
                "device, name, trainable."
            )

        self.vocabulary_size = _check_positive_int(vocabulary_size, "vocabulary_size")
        self.num_layers = _check_positive_int(num_layers, "num_layers")
        self.num_heads = _check_positive_int(num_heads, "num_heads")
        self.hidden_dim = _check_positive_int(hidden_dim, "hidden_dim")
        self.intermediate_dim = _check_positive_int(intermediate_dim, "intermediate_dim")
        self.max_sequence_length = _check_positive_int(max_sequence_length, "max_sequence_length")
        if hidden_dim % num_heads:
            raise ValueError(
                f"`hidden_dim`={hidden_dim} must be divisible by `num_heads`={num_heads} "
                f"(head size = hidden_dim / num_heads); e.g. use num_heads="
                f"{max(d for d in range(1, num_heads + 1) if hidden_dim % d == 0)}."
            )
        if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real):
            raise TypeError(f"`dropout` must be a float in [0, 1); got {dropout!r}.")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"`dropout` must be in [0, 1); got {dropout}.")
        self.dropout = float(dropout)
        self.dtype_policy: DTypePolicy = get_dtype_policy(dtype)
        self.padding_free = padding_free
        self.attention_backend = attention_backend
        self.gradient_checkpointing = bool(gradient_checkpointing)

        with torch.device(device) if device is not None else contextlib.nullcontext():
            self.token_embedding = nn.Embedding(vocabulary_size, hidden_dim)
            self.position_embedding = nn.Embedding(max_sequence_length, hidden_dim)
            self.embeddings_layer_norm = LayerNorm32(hidden_dim, eps=LAYER_NORM_EPSILON)
            self.embeddings_dropout = nn.Dropout(self.dropout)
            self.layers = nn.ModuleList(
                TransformerEncoderLayer(hidden_dim, num_heads, intermediate_dim, self.dropout)
                for _ in range(num_layers)
            )
        init_kernel_(self.token_embedding.weight)
        init_kernel_(self.position_embedding.weight)
        self.to(self.dtype_policy.variable_dtype)
        if not trainable:
            self.requires_grad_(False)

    # -- properties -------------------------------------------------------------------------

    @property
    def padding_free(self):
        return self._padding_free

    @padding_free.setter
    def padding_free(self, value) -> None:
        # Identity checks: 1 == True would otherwise slip through.
        if not any(value is choice for choice in (True, False)) and value != "auto":
            raise ValueError(f"`padding_free` must be one of {PADDING_FREE_CHOICES}; got {value!r}.")
        self._padding_free = value

    @property
    def attention_backend(self):
        return self._attention_backend

    @attention_backend.setter
    def attention_backend(self, value) -> None:
        if value is not None:
            attention.requested_backend(value)  # validates
        self._attention_backend = value

    def set_gradient_checkpointing(self, enabled: bool = True) -> "RobertaBackbone":
        """Recompute each encoder layer during backward (non-reentrant checkpointing)."""
        self.gradient_checkpointing = bool(enabled)
        return self

    def get_config(self) -> dict:
        return {
            "vocabulary_size": self.vocabulary_size,
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "hidden_dim": self.hidden_dim,
            "intermediate_dim": self.intermediate_dim,
            "dropout": self.dropout,
            "max_sequence_length": self.max_sequence_length,
            "dtype": self.dtype_policy.name,
        }

    @classmethod
    def from_config(cls, config: dict) -> "RobertaBackbone":
        config = {k: v for k, v in config.items() if k not in _KERAS_LAYER_KEYS or k == "name"}
        return cls(**config)

    def extra_repr(self) -> str:
        config = self.get_config()
        return ", ".join(f"{k}={v!r}" for k, v in config.items())

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # -- forward ----------------------------------------------------------------------------

    def _execution_plan(self, padding_mask: torch.Tensor | None) -> tuple[torch.Tensor | None, bool]:
        """(mask to use, whether to run padding-free), from one host sync in eager mode.

        A mask with no padding is dropped: unmasked attention kernels are faster, and there
        is nothing to skip. Inside torch.compile the padding fraction is not known while
        tracing, so a masked batch always runs padding-free (unless `padding_free=False`): at
        10-75 % padding that is what "auto" picks anyway, and on a batch with no padding the
        extra gather/scatter costs little (see benchmarks/README.md), while a `torch.cond`
        over both paths would compile the encoder twice.
        """
        if padding_mask is None or self._padding_free is False:
            return padding_mask, False
        if is_compiling():
            return padding_mask, _compiled_padding_free_supported()
        num_valid = int(padding_mask.sum())  # the one host sync of this decision
        if num_valid == padding_mask.numel():
            return None, False
        if self._padding_free == "auto":
            padding_fraction = 1.0 - num_valid / padding_mask.numel()
            return padding_mask, padding_fraction >= PADDING_FREE_MIN_PADDING_FRACTION
        return padding_mask, True

    def forward(self, inputs=None, *, token_ids=None, padding_mask=None) -> torch.Tensor:
        """inputs: {"token_ids": (B, T), "padding_mask": (B, T)} -> (B, T, hidden_dim), or
        packed {"token_ids": (total,), "cu_seqlens": (B + 1,) int32[, "max_seqlen": int]}
        -> (total, hidden_dim).

        The two padded tensors may also be passed as keyword arguments.
        """
        if inputs is None:
            inputs = {"token_ids": token_ids}
            if padding_mask is not None:
                inputs["padding_mask"] = padding_mask
        if is_packed_input(inputs):
            return self._forward_packed(inputs)
        token_ids, padding_mask = prepare_inputs(
            inputs, self.vocabulary_size, self.max_sequence_length, self.token_embedding.weight.device
        )
        compute_dtype = self.dtype_policy.compute_dtype
        seq = token_ids.shape[1]

        # Keras: token + absolute position (0..T-1, not derived from padding).
        x = self.token_embedding(token_ids).to(compute_dtype)  # (B, T, H)
        x = x + self.position_embedding.weight[:seq].to(compute_dtype)
        x = self.embeddings_dropout(self.embeddings_layer_norm(x))

        padding_mask, padding_free = self._execution_plan(padding_mask)
        if padding_free:
            return self._run_padding_free(x, padding_mask)
        mask = attention.padded_attention_mask(padding_mask, eager=not is_compiling())
        return self._run_layers(x, mask)

    def _run_padding_free(self, x: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        """Unpad once, run the encoder on valid tokens only, pad once: (B, T, H) -> (B, T, H)."""
        layout = packed_layout(padding_mask, eager=not is_compiling())
        x = self._run_layers(unpad(x, layout), attention.packed_attention_mask(layout))  # (total, H)
        return pad(x, layout)

    def _forward_packed(self, inputs) -> torch.Tensor:
        """Packed inputs: positions restart at 0 in every sequence; (total,) -> (total, H)."""
        token_ids, cu_seqlens, max_seqlen = prepare_packed_inputs(
            inputs, self.vocabulary_size, self.max_sequence_length, self.token_embedding.weight.device
        )
        compute_dtype = self.dtype_policy.compute_dtype
        positions = packed_positions(cu_seqlens, token_ids.shape[0])
        x = self.token_embedding(token_ids).to(compute_dtype)  # (total, H)
        x = x + self.position_embedding(positions).to(compute_dtype)
        x = self.embeddings_dropout(self.embeddings_layer_norm(x))
        layout = layout_of_packed_input(
            cu_seqlens, max_seqlen, self.max_sequence_length, eager=not is_compiling()
        )
        return self._run_layers(x, attention.packed_attention_mask(layout))

    def _run_layers(self, x: torch.Tensor, mask: attention.AttentionMask) -> torch.Tensor:
        recompute = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for layer in self.layers:
            if recompute:
                x = checkpoint(layer, x, mask, self._attention_backend, use_reentrant=False)
            else:
                x = layer(x, mask, self._attention_backend)
        return x


_fallback_logged = False


def _compiled_padding_free_supported() -> bool:
    """Whether this torch can trace the padding-free path (custom ops with dynamic sizes,
    torch >= 2.4); logs the fallback to the padded path once."""
    global _fallback_logged
    if not COMPILED_PACKING_SUPPORTED and not _fallback_logged:
        _fallback_logged = True
        logger.info(
            "torch %s cannot trace the padding-free path (needs torch.library.custom_op, torch "
            ">= 2.4); compiled models run padded batches on the padded path.",
            torch.__version__,
        )
    return COMPILED_PACKING_SUPPORTED


class XLMRobertaBackbone(RobertaBackbone):
    """XLM-RoBERTa encoder: RoBERTa's architecture with its own presets (a sentencepiece
    vocabulary of 250,002 tokens), numerically keras_hub's `XLMRobertaBackbone`."""

    keras_class_name = "XLMRobertaBackbone"
    keras_module = "keras_hub.src.models.xlm_roberta.xlm_roberta_backbone"
    keras_config_name = "xlm_roberta_backbone"


BACKBONE_CLASSES = {
    RobertaBackbone.keras_class_name: RobertaBackbone,
    XLMRobertaBackbone.keras_class_name: XLMRobertaBackbone,
}
