"""RobertaBackbone and XLMRobertaBackbone: keras_hub's backbones as torch.nn.Modules.

This module holds the modules and their forward paths. The rest of a backbone's jobs live
next to it: hyper-parameters and their validation (config.py), the memory check (memory.py),
dtype policies following the parameters (dtype_policy.py), the padded vs padding-free choice
(execution_plan.py), presets (presets/: `from_preset` asks the preset's format loader).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from typing import NamedTuple

import torch
from torch import nn

from . import attention, execution_plan, quantization
from .checkpointing import ActivationCheckpointing
from .config import BACKBONE_CLASSES, BackboneConfig
from .dtype_policy import FollowsParameterDtype
from .inputs import (
    is_packed_input,
    merge_call_arguments,
    prepare_inputs,
    prepare_packed_inputs,
    prepare_position_ids,
)
from .layers import LAYER_NORM_EPSILON, LayerNorm32, TransformerEncoderLayer, init_kernel_
from .memory import check_fits_in_memory
from .tracing import is_compiling
from .transformers_calls import check_unsupported_arguments, rename_transformers_inputs
from .padding import layout_of_packed_input, pad, packed_layout, packed_positions, unpad
from .presets import registry, saving, transformers_format
from .transformers_config import TransformersConfig
from .presets.preset import Preset, open_preset

logger = logging.getLogger(__name__)

# Kept here too: the embedder and users import them from the backbone.
PADDING_FREE_CHOICES = execution_plan.PADDING_FREE_CHOICES
PADDING_FREE_MIN_PADDING_FRACTION = execution_plan.PADDING_FREE_MIN_PADDING_FRACTION

# Keras config keys other than the constructor arguments; accepted and not used.
_KERAS_LAYER_KEYS = ("name", "trainable")


class BackboneOutput(NamedTuple):
    """What `model(inputs, output_hidden_states=True)` returns (a tuple, so torch.export,
    torch.compile and pytree utilities take it as is).

    sequence_output: (B, T, H), the plain call's output.
    hidden_states:   num_layers + 1 tensors (B, T, H): the embedding output (after its
                     LayerNorm), then each layer's output; the last is `sequence_output`.
                     On the padding-free path padded positions hold zeros.
    """

    sequence_output: torch.Tensor
    hidden_states: tuple


class _ClassProperty:
    """A read-only property on the class itself (Keras's `Backbone.presets`)."""

    def __init__(self, fget):
        self.fget = fget
        self.__doc__ = fget.__doc__

    def __get__(self, instance, owner):
        return self.fget(owner)


def _as_dict(output):
    """transformers' RobertaModel output: {"last_hidden_state"[, "hidden_states"]}."""
    from .tasks.outputs import TaskOutput  # here: roberta_torch.tasks imports this module

    if isinstance(output, BackboneOutput):
        return TaskOutput(last_hidden_state=output.sequence_output, hidden_states=output.hidden_states)
    return TaskOutput(last_hidden_state=output)


def _output(x: torch.Tensor, hidden_states: list | None):
    """A plain call returns the sequence output; with output_hidden_states a BackboneOutput."""
    if hidden_states is None:
        return x
    return BackboneOutput(sequence_output=x, hidden_states=tuple(hidden_states))


class Backbone(nn.Module):
    """Base class: the config round trip and presets (`from_preset` asks the preset's format
    loader to build the class the preset names; `save_to_preset` writes a format).

    Subclasses register themselves by their Keras class name (config.BACKBONE_CLASSES), so a
    preset picks its class by name (the presets package imports no model class).
    """

    keras_class_name = "Backbone"
    keras_module = "keras_hub.src.models.backbone"
    keras_config_name = "backbone"
    _classes: dict = BACKBONE_CLASSES  # Keras class name -> class (config.BACKBONE_CLASSES)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "keras_class_name" in cls.__dict__:  # a class of its own, not a user's subclass
            BACKBONE_CLASSES[cls.keras_class_name] = cls

    @classmethod
    def class_for_preset(cls, class_name: str, preset) -> type:
        """The class to build for a preset holding `class_name`, if it is `cls` or a subclass."""
        preset_cls = Backbone._classes.get(class_name)
        handle = preset.handle if isinstance(preset, Preset) else preset
        if preset_cls is None:
            raise ValueError(
                f"Preset {str(handle)!r} holds a {class_name}, which roberta_torch does not implement "
                f"(supported: {', '.join(Backbone._classes)})."
            )
        if not issubclass(preset_cls, cls):
            raise ValueError(
                f"Preset {str(handle)!r} holds a {class_name}, which {cls.__name__}.from_preset cannot load; use "
                f"{class_name}.from_preset or roberta_torch.Backbone.from_preset."
            )
        return preset_cls

    @_ClassProperty
    def presets(cls) -> dict:
        """Builtin presets this class can load: name -> metadata (a class lists its
        subclasses' presets too, as in keras_hub)."""
        names = [name for name, c in Backbone._classes.items() if issubclass(c, cls)]
        return registry.presets_for_classes(names)

    @classmethod
    def from_preset(
        cls, preset, load_weights: bool = True, *, allow_pickle: bool = False, quantize: str | None = None, **kwargs
    ) -> "Backbone":
        """Build the backbone a preset describes: a builtin name, `kaggle://...`,
        `hf://...`, a local directory (Keras preset, transformers checkpoint, our safetensors
        export, or a sentence-transformers directory), or an already opened `Preset`.

        `kwargs` override the stored config (dtype, dropout, padding_free, device, ...).
        Keras presets load in float32 unless `dtype=` is given, as in keras_hub.
        `allow_pickle=True` opts in to transformers' pickled `pytorch_model.bin` (read with
        `torch.load(weights_only=True)`). The model comes back in eval mode, like
        transformers' `from_pretrained`; call `.train()` to fine-tune.
        `quantize="int8"` calls `quantize("int8")` on the loaded model (CPU inference; checked
        before anything is read).
        """
        if not isinstance(load_weights, bool):
            raise TypeError(f"`load_weights` must be a bool; got {type(load_weights).__name__} ({load_weights!r}).")
        quantization.check_preset_quantize(quantize, kwargs.get("device"))
        builtin = registry.builtin_architecture(preset)
        if not load_weights and builtin is not None:  # a builtin's architecture is known: no download
            class_name, config = builtin
            backbone = cls.class_for_preset(class_name, preset)(**{**config, **kwargs}).eval()
        else:
            loader = open_preset(preset, allow_pickle=allow_pickle).loader
            backbone_cls = cls.class_for_preset(loader.backbone_class_name(), loader.preset)
            backbone = loader.load_backbone(backbone_cls, load_weights, **kwargs)
        return quantization.quantize_loaded(backbone, quantize)

    def save_to_preset(
        self, directory, format: str = "keras", *, overwrite: bool = False, max_shard_size=None
    ) -> None:
        """Write a preset: `format="keras"` (loadable by keras_hub), `"transformers"`
        (loadable by `transformers.AutoModel.from_pretrained`; weights sharded above
        `max_shard_size`, an int in bytes or e.g. "5GB", default "50GB" as transformers) or
        `"safetensors"` (roberta_torch's native export). A non-empty `directory` is replaced
        only with `overwrite=True`; an interrupted save leaves nothing half-written.
        An int8-quantized model refuses (see `quantize`)."""
        quantization.refuse_if_quantized(self, f"{type(self).__name__}.save_to_preset")
        saving.save_preset(self, directory, format=format, overwrite=overwrite, max_shard_size=max_shard_size)

    def quantize(self, mode: str, *, kernel: str = "auto") -> "Backbone":
        """keras' `quantize(mode)`: `mode="int8"` turns every dense layer into int8 (per-channel
        int8 weights, activations quantized per call) for CPU inference, in place; embeddings
        and LayerNorms stay float. Puts the model in eval mode and freezes it; returns it.
        `kernel`: "auto" (fastest on this CPU) or a name from `roberta_torch.int8_kernels.KERNELS`.
        See roberta_torch.quantization for accuracy, saving and what raises."""
        return quantization.quantize_(self, mode, kernel=kernel)

    @classmethod
    def from_config(cls, config: dict) -> "Backbone":
        return cls(**config)

    def get_config(self) -> dict:
        raise NotImplementedError


class RobertaBackbone(ActivationCheckpointing, FollowsParameterDtype, Backbone):
    """RoBERTa encoder, numerically keras_hub's `RobertaBackbone`.

    Call it on `{"token_ids": (batch, seq) ints, "padding_mask": (batch, seq) 0/1}` (torch
    tensors or numpy arrays; optionally `"position_ids"`, see `forward`); it returns the
    sequence output `(batch, seq, hidden_dim)` in the policy's compute dtype, on the model's
    device (a `BackboneOutput` with every hidden state when `output_hidden_states=True`).
    The policy follows torch casts (`.half()`, `.to(torch.bfloat16)`, `.double()`, ...).

    Keyword arguments beyond Keras's:
      padding_free: "auto" (default), True or False. Padding-free execution packs the valid
        tokens so dense layers skip padding; "auto" uses it when at least 10% of the batch
        is padding (inside torch.compile: whenever a mask is given, as the padding fraction is
        not known while tracing). Outputs at padded positions are zeros on
        that path and Keras's (meaningless but finite) values on the padded path.
      attention_backend: "auto" (default), "triton" or "sdpa" (see roberta_torch.attention).
      gradient_checkpointing: recompute each layer in backward (non-reentrant) to save memory;
        also `gradient_checkpointing_enable()` / `activation_checkpointing_enable()` with
        transformers' arguments (roberta_torch.checkpointing), as HF Trainer and PEFT call them.
      device: where to create the parameters (e.g. "meta" to build without allocating or
        initializing).
      name, trainable: Keras's layer config entries (trainable=False freezes the parameters).

    Attributes beyond the constructor's: `backbone_config` (the validated `BackboneConfig`), and
    `transformers_source`: what writing back to a transformers checkpoint needs beyond the
    state dict (a `presets.transformers_format.TransformersSource` when the weights came from
    one, else None; set by every preset loader, not in the state dict, not moved by `.to()`).
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
        *,
        padding_free="auto",
        attention_backend: str | None = None,
        gradient_checkpointing: bool = False,
        device=None,
        name: str | None = None,
        trainable: bool = True,
    ):
        super().__init__()
        config = BackboneConfig(
            vocabulary_size, num_layers, num_heads, hidden_dim, intermediate_dim, dropout, max_sequence_length
        )
        # Not `config`: that name stays free for what PEFT and transformers' tools read (issue 20).
        self.backbone_config = config
        self.name = self.keras_config_name if name is None else name
        self.dtype_policy = dtype  # no parameters yet: nothing to cast
        self.padding_free = padding_free
        self.attention_backend = attention_backend
        self.gradient_checkpointing = bool(gradient_checkpointing)
        self.transformers_source = None
        self._left_padding_warned = False
        check_fits_in_memory(type(self).count_parameters(config), self._dtype_policy.variable_dtype, device)

        with torch.device(device) if device is not None else contextlib.nullcontext():
            for key, module in self._embedding_modules(config).items():
                setattr(self, key, module)
            self.layers = nn.ModuleList(self._encoder_layer(config) for _ in range(config.num_layers))
        init_kernel_(self.token_embedding.weight)
        init_kernel_(self.position_embedding.weight)
        self.to(self._dtype_policy.variable_dtype)
        if not trainable:
            self.requires_grad_(False)

    # -- the architecture ---------------------------------------------------------------------

    @staticmethod
    def _embedding_modules(config: BackboneConfig) -> dict:
        # `_weight`: allocated, not initialized (init_kernel_ below draws Keras's values once).
        hidden, vocabulary, positions = config.hidden_dim, config.vocabulary_size, config.max_sequence_length
        return {
            "token_embedding": nn.Embedding(vocabulary, hidden, _weight=torch.empty(vocabulary, hidden)),
            "position_embedding": nn.Embedding(positions, hidden, _weight=torch.empty(positions, hidden)),
            "embeddings_layer_norm": LayerNorm32(config.hidden_dim, eps=LAYER_NORM_EPSILON),
            "embeddings_dropout": nn.Dropout(config.dropout),
        }

    @staticmethod
    def _encoder_layer(config: BackboneConfig) -> TransformerEncoderLayer:
        return TransformerEncoderLayer(config.hidden_dim, config.num_heads, config.intermediate_dim, config.dropout)

    @classmethod
    def count_parameters(cls, config: BackboneConfig) -> int:
        """The parameters a backbone of `config` has, counted on the meta device (the
        embeddings and one encoder layer: no memory, whatever num_layers says)."""
        with torch.device("meta"):
            embeddings = sum(p.numel() for m in cls._embedding_modules(config).values() for p in m.parameters())
            layer = sum(p.numel() for p in cls._encoder_layer(config).parameters())
        return embeddings + config.num_layers * layer

    # -- properties ---------------------------------------------------------------------------

    vocabulary_size = property(lambda self: self.backbone_config.vocabulary_size)
    num_layers = property(lambda self: self.backbone_config.num_layers)
    num_heads = property(lambda self: self.backbone_config.num_heads)
    hidden_dim = property(lambda self: self.backbone_config.hidden_dim)
    intermediate_dim = property(lambda self: self.backbone_config.intermediate_dim)
    max_sequence_length = property(lambda self: self.backbone_config.max_sequence_length)
    dropout = property(lambda self: self.backbone_config.dropout)

    @property
    def padding_free(self):
        return self._padding_free

    @padding_free.setter
    def padding_free(self, value) -> None:
        self._padding_free = execution_plan.check_padding_free(value)

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

    @property
    def config(self) -> TransformersConfig:
        """The backbone in transformers' terms (what PEFT reads: model_type "roberta" /
        "xlm-roberta", hidden_size, ...): the config.json fields of RobertaModel; see
        roberta_torch/transformers_config.py. keras_hub's config is `get_config()`."""
        return TransformersConfig.of(self, transformers_format.transformers_config(self))

    def get_config(self) -> dict:
        """keras_hub's config: the constructor arguments and the dtype policy in force."""
        return {**self.backbone_config.to_dict(), "dtype": self.dtype_policy.name}

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

    def _warn_left_padding(self, num_rows: int) -> None:
        """Once per model: left padding with Keras's column positions is rarely intended."""
        self._left_padding_warned = True
        logger.warning(
            "%s got a left-padded batch (%d row(s) start with padding) and no position_ids: "
            "positions are by column (0..seq-1) as in keras_hub, so a left-padded row gives "
            "other outputs than the same text right-padded, and than transformers. Pad on the "
            "right, or pass position_ids (transformers' positions: "
            "roberta_torch.transformers_position_ids(padding_mask)). Shown once per model.",
            type(self).__name__,
            num_rows,
        )

    def forward(
        self,
        inputs=None,
        *,
        token_ids=None,
        padding_mask=None,
        position_ids=None,
        output_hidden_states: bool | None = False,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        inputs_embeds=None,
        output_attentions=None,
        return_dict: bool | None = None,
    ):
        """inputs: {"token_ids": (B, T), "padding_mask": (B, T)[, "position_ids": (B, T)]}
        -> (B, T, hidden_dim), or packed {"token_ids": (total,), "cu_seqlens": (B + 1,) int32
        [, "max_seqlen": int][, "position_ids": (total,)]} -> (total, hidden_dim) (positions
        restart at 0 in every sequence unless given).

        The tensors may also be passed as keyword arguments. `position_ids` (ints in
        [0, max_sequence_length)) replace Keras's column positions 0..T-1, e.g.
        `transformers_position_ids(padding_mask)` for transformers' positions on left-padded
        batches. With `output_hidden_states=True` the result is a `BackboneOutput`:
        `sequence_output` (what a plain call returns) and `hidden_states`, num_layers + 1
        tensors (B, T, hidden_dim): the embedding output, then every layer's output.

        transformers' spellings are accepted too (roberta_torch/transformers_calls.py):
        `input_ids` / `attention_mask` for token_ids / padding_mask, token_type_ids (zeros),
        inputs_embeds=None, output_attentions None/False. Such a call, or `return_dict=True`,
        returns a dict as RobertaModel does: {"last_hidden_state"[, "hidden_states"]}
        (attribute access too; a `TaskOutput`). Note that `position_ids` keeps our meaning
        (rows of our position table, see above), not transformers' (offset by 2).
        """
        check_unsupported_arguments(inputs_embeds, output_attentions)
        inputs = merge_call_arguments(
            inputs, token_ids=token_ids, padding_mask=padding_mask, position_ids=position_ids,
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
        )
        transformers_style = False
        if isinstance(inputs, Mapping):  # anything else gets prepare_inputs' TypeError
            inputs, transformers_style = rename_transformers_inputs(inputs)
        output = self._forward(inputs, bool(output_hidden_states))
        if return_dict is None:
            return_dict = transformers_style
        if not isinstance(return_dict, bool):
            raise TypeError(f"`return_dict` must be None or a bool; got {return_dict!r}.")
        return _as_dict(output) if return_dict else output

    def _forward(self, inputs, output_hidden_states: bool):
        if is_packed_input(inputs):
            return self._forward_packed(inputs, output_hidden_states)
        token_ids, padding_mask = prepare_inputs(
            inputs, self.vocabulary_size, self.max_sequence_length, self.token_embedding.weight.device
        )
        position_ids = prepare_position_ids(inputs, token_ids, self.max_sequence_length)
        x = self._embed(token_ids, position_ids)
        hidden_states = [] if output_hidden_states else None

        check_left_padding = position_ids is None and not self._left_padding_warned
        padding_mask, padding_free, left_padded_rows = execution_plan.plan(
            padding_mask, self._padding_free, check_left_padding
        )
        if left_padded_rows:
            self._warn_left_padding(left_padded_rows)
        if padding_free:
            x, hidden_states = self._run_padding_free(x, padding_mask, hidden_states)
        else:
            mask = attention.padded_attention_mask(padding_mask)
            x = self._run_layers(x, mask, hidden_states)
        return _output(x, hidden_states)

    def _run_padding_free(self, x: torch.Tensor, padding_mask: torch.Tensor, hidden_states: list | None):
        """Unpad once, run the encoder on valid tokens only, pad once: (B, T, H) -> (B, T, H)
        (and every hidden state padded back too)."""
        layout = packed_layout(padding_mask, eager=not is_compiling())
        x = pad(self._run_layers(unpad(x, layout), attention.packed_attention_mask(layout), hidden_states), layout)
        if hidden_states is not None:
            hidden_states = [pad(h, layout) for h in hidden_states[:-1]] + [x]
        return x, hidden_states

    def _forward_packed(self, inputs, output_hidden_states: bool = False):
        """Packed inputs: positions restart at 0 in every sequence; (total,) -> (total, H)."""
        token_ids, cu_seqlens, max_seqlen = prepare_packed_inputs(
            inputs, self.vocabulary_size, self.max_sequence_length, self.token_embedding.weight.device
        )
        position_ids = prepare_position_ids(inputs, token_ids, self.max_sequence_length)
        if position_ids is None:
            position_ids = packed_positions(cu_seqlens, token_ids.shape[0])
        x = self._embed(token_ids, position_ids)  # (total, H)
        layout = layout_of_packed_input(
            cu_seqlens, max_seqlen, self.max_sequence_length, eager=not is_compiling()
        )
        hidden_states = [] if output_hidden_states else None
        x = self._run_layers(x, attention.packed_attention_mask(layout), hidden_states)
        return _output(x, hidden_states)

    def _embed(self, token_ids: torch.Tensor, position_ids: torch.Tensor | None) -> torch.Tensor:
        """LayerNorm(token + position embedding), in the compute dtype: (B, T, H) or (total, H)."""
        compute_dtype = self.dtype_policy.compute_dtype
        x = self.token_embedding(token_ids).to(compute_dtype)
        if position_ids is None:
            # Keras: absolute positions 0..T-1 by column, not derived from padding.
            positions = self.position_embedding.weight[: token_ids.shape[1]]
        else:
            positions = self.position_embedding(position_ids)
        x = x + positions.to(compute_dtype)
        return self.embeddings_dropout(self.embeddings_layer_norm(x))

    def _run_layers(
        self, x: torch.Tensor, mask: attention.AttentionMask, hidden_states: list | None = None
    ) -> torch.Tensor:
        """The encoder layers; appends the input and every layer's output to `hidden_states`."""
        if hidden_states is not None:
            hidden_states.append(x)
        for index, layer in enumerate(self.layers):
            if self._checkpoints_layer(index):
                x = self._run_checkpointed(layer, x, mask, self._attention_backend)
            else:
                x = layer(x, mask, self._attention_backend)
            if hidden_states is not None:
                hidden_states.append(x)
        return x


class XLMRobertaBackbone(RobertaBackbone):
    """XLM-RoBERTa encoder: RoBERTa's architecture with its own presets (a sentencepiece
    vocabulary of 250,002 tokens), numerically keras_hub's `XLMRobertaBackbone`."""

    keras_class_name = "XLMRobertaBackbone"
    keras_module = "keras_hub.src.models.xlm_roberta.xlm_roberta_backbone"
    keras_config_name = "xlm_roberta_backbone"


