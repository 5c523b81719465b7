"""RobertaBackbone and XLMRobertaBackbone: keras_hub's backbones as torch.nn.Modules."""

from __future__ import annotations

import contextlib
import logging
import numbers
from typing import NamedTuple

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from . import attention, quantization
from .dtype_policy import DTypePolicy, get_dtype_policy, policy_after_cast
from .inputs import (
    is_compiling,
    is_exporting,
    is_packed_input,
    merge_call_arguments,
    prepare_inputs,
    prepare_packed_inputs,
    prepare_position_ids,
)
from .presets import loading, registry, saving
from .presets.preset import Preset, open_preset
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


def padding_statistics(padding_mask: torch.Tensor, count_left_padded: bool) -> tuple[int, int]:
    """(valid tokens, left-padded rows) of a (B, T) bool mask, in one host sync.

    A row is left-padded when it starts with padding but has a valid token later. Counting
    those rides on the sync the execution plan needs anyway; `count_left_padded=False`
    skips it (reported as 0).
    """
    if not count_left_padded:
        return int(padding_mask.sum()), 0
    left_padded = ~padding_mask[:, 0] & padding_mask.any(dim=1)  # (B,)
    num_valid, num_left_padded = torch.stack((padding_mask.sum(), left_padded.sum())).tolist()
    return num_valid, num_left_padded


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


def _check_fits_in_memory(config: dict, dtype: torch.dtype, device) -> None:
    """Refuse, before allocating, a CPU model whose parameters exceed this machine's memory
    (a hostile or mistyped config must not ask the allocator for terabytes)."""
    target = torch.device(device) if device is not None else torch.get_default_device()
    if target.type != "cpu":
        return  # meta costs nothing; accelerators report their own out-of-memory quickly
    limit = loading.available_memory_bytes()
    parameters = registry.count_parameters(config)
    needed = parameters * torch.empty((), dtype=dtype).element_size()
    if limit is not None and needed > limit:
        raise ValueError(
            f"This configuration has {parameters:,} parameters "
            f"({needed / 2**30:,.1f} GiB in {dtype}), more than this machine's memory "
            f"({limit / 2**30:,.1f} GiB). Check num_layers, hidden_dim, intermediate_dim, vocabulary_size "
            "and max_sequence_length, or build it on device='meta'."
        )


def _output(x: torch.Tensor, hidden_states: list | None):
    """A plain call returns the sequence output; with output_hidden_states a BackboneOutput."""
    if hidden_states is None:
        return x
    return BackboneOutput(sequence_output=x, hidden_states=tuple(hidden_states))


class Backbone(nn.Module):
    """Base class: config round trip, presets, dtype policy plumbing.

    Subclasses register themselves by their Keras class name, so a preset picks its class
    by name (the presets package imports no model class).
    """

    keras_class_name = "Backbone"
    keras_module = "keras_hub.src.models.backbone"
    keras_config_name = "backbone"
    _classes: dict = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "keras_class_name" in cls.__dict__:  # a class of its own, not a user's subclass
            Backbone._classes[cls.keras_class_name] = cls

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
    def from_preset(cls, preset, load_weights: bool = True, **kwargs) -> "Backbone":
        """Build the backbone a preset describes: a builtin name, `kaggle://...`,
        `hf://...`, a local directory (Keras preset, transformers checkpoint, or our
        safetensors export), or an already opened `Preset`.

        `kwargs` override the stored config (dtype, dropout, padding_free, device, ...).
        Keras presets load in float32 unless `dtype=` is given, as in keras_hub.
        `allow_pickle=True` opts in to transformers' pickled `pytorch_model.bin` (read with
        `torch.load(weights_only=True)`). The model comes back in eval mode, like
        transformers' `from_pretrained`; call `.train()` to fine-tune.
        """
        allow_pickle = kwargs.pop("allow_pickle", False)
        if not isinstance(allow_pickle, bool):
            raise TypeError(f"`allow_pickle` must be a bool; got {type(allow_pickle).__name__} ({allow_pickle!r}).")
        if not isinstance(load_weights, bool):
            raise TypeError(f"`load_weights` must be a bool; got {type(load_weights).__name__} ({load_weights!r}).")
        builtin = registry.builtin_architecture(preset)
        if not load_weights and builtin is not None:
            # The architecture of a builtin is known: no download.
            class_name, config = builtin
            return cls.class_for_preset(class_name, preset)(**{**config, **kwargs}).eval()

        preset = open_preset(preset, allow_pickle=allow_pickle)
        backbone_cls = cls.class_for_preset(preset.class_name, preset)
        _, stored, dims = preset.parse(kwargs)
        config = {**stored, **kwargs}
        if not load_weights:
            return backbone_cls(**config).eval()
        device = config.pop("device", None)
        source, description = loading.read_weights_header(preset, config)
        model = backbone_cls(**config, device="meta")
        loading.load_backbone_weights(model, preset, config, dims, source, description, device=device)
        return model.eval()

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


class RobertaBackbone(Backbone):
    """RoBERTa encoder, numerically keras_hub's `RobertaBackbone`.

    Call it on `{"token_ids": (batch, seq) ints, "padding_mask": (batch, seq) 0/1}` (torch
    tensors or numpy arrays; optionally `"position_ids"`, see `forward`); it returns the
    sequence output `(batch, seq, hidden_dim)` in the policy's compute dtype, on the model's
    device (a `BackboneOutput` with every hidden state when `output_hidden_states=True`).
    The policy follows torch casts (`.half()`, `.to(torch.bfloat16)`, `.double()`, ...).

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
        self.dtype_policy = dtype  # no parameters yet: nothing to cast
        self.padding_free = padding_free
        self.attention_backend = attention_backend
        self.gradient_checkpointing = bool(gradient_checkpointing)
        self._left_padding_warned = False
        _check_fits_in_memory(self.get_config(), self.dtype_policy.variable_dtype, device)

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
        self.to(self._dtype_policy.variable_dtype)
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
    def dtype_policy(self) -> DTypePolicy:
        """The policy in force. It follows the parameters: after `.to(torch.bfloat16)`,
        `.half()`, `.double()`, ... a plain policy of the new dtype (see
        `dtype_policy.policy_after_cast`); mixed policies survive `.float()` and `.to(device)`.
        """
        policy = self._dtype_policy
        weight = self._modules.get("token_embedding")
        if weight is not None and weight.weight.dtype != policy.variable_dtype:
            # Parameters replaced without `_apply` (e.g. load_state_dict(assign=True)).
            policy = policy_after_cast(policy, weight.weight.dtype)
        return policy

    @dtype_policy.setter
    def dtype_policy(self, value) -> None:
        """Set a policy (any form `dtype=` takes), casting the parameters to its variable dtype."""
        self._dtype_policy = get_dtype_policy(value)
        if "token_embedding" in self._modules:
            self.to(self._dtype_policy.variable_dtype)

    def _apply(self, fn, *args, **kwargs):
        # Every cast (.to, .half, .bfloat16, .float, .double, .cuda, ...) ends here.
        result = super()._apply(fn, *args, **kwargs)
        self._dtype_policy = self.dtype_policy
        return result

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

    def _execution_plan(
        self, padding_mask: torch.Tensor | None, warn_left_padding: bool = False
    ) -> tuple[torch.Tensor | None, bool]:
        """(mask to use, whether to run padding-free), from one host sync in eager mode.

        A mask with no padding is dropped: unmasked attention kernels are faster, and there
        is nothing to skip. `warn_left_padding` (no position_ids given) adds the left-padding
        test to the same host sync. Inside torch.compile the padding fraction is not known while
        tracing, so a masked batch always runs padding-free (unless `padding_free=False`): at
        10-75 % padding that is what "auto" picks anyway, and on a batch with no padding the
        extra gather/scatter costs little (see benchmarks/README.md), while a `torch.cond`
        over both paths would compile the encoder twice.
        """
        if padding_mask is None or self._padding_free is False:
            return padding_mask, False
        if is_compiling():
            # Exported graphs (torch.export, ONNX) keep static shapes: the padded path.
            return padding_mask, not is_exporting() and _compiled_padding_free_supported()
        check_left_padding = warn_left_padding and not self._left_padding_warned
        num_valid, num_left_padded = padding_statistics(padding_mask, check_left_padding)
        if num_left_padded:
            self._warn_left_padding(num_left_padded)
        if num_valid == padding_mask.numel():
            return None, False
        if self._padding_free == "auto":
            padding_fraction = 1.0 - num_valid / padding_mask.numel()
            return padding_mask, padding_fraction >= PADDING_FREE_MIN_PADDING_FRACTION
        return padding_mask, True

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
        output_hidden_states: bool = False,
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
        """
        inputs = merge_call_arguments(
            inputs, token_ids=token_ids, padding_mask=padding_mask, position_ids=position_ids
        )
        if is_packed_input(inputs):
            return self._forward_packed(inputs, output_hidden_states)
        token_ids, padding_mask = prepare_inputs(
            inputs, self.vocabulary_size, self.max_sequence_length, self.token_embedding.weight.device
        )
        position_ids = prepare_position_ids(inputs, token_ids, self.max_sequence_length)
        x = self._embed(token_ids, position_ids)
        hidden_states = [] if output_hidden_states else None

        padding_mask, padding_free = self._execution_plan(padding_mask, position_ids is None)
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
        recompute = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        if hidden_states is not None:
            hidden_states.append(x)
        for layer in self.layers:
            if recompute:
                x = checkpoint(layer, x, mask, self._attention_backend, use_reentrant=False)
            else:
                x = layer(x, mask, self._attention_backend)
            if hidden_states is not None:
                hidden_states.append(x)
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


