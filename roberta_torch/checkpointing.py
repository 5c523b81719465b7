"""Activation (gradient) checkpointing: the settings a model keeps and the calls training
libraries make to change them.

transformers' `Trainer(activation_checkpointing=True)` (and its older alias
`gradient_checkpointing=True`), PEFT and sentence-transformers switch checkpointing on by
calling `model.activation_checkpointing_enable(...)` or `model.gradient_checkpointing_enable(...)`
and read `model.is_gradient_checkpointing`; `ActivationCheckpointing` gives the backbone those
methods with transformers' signatures, and `DelegatedCheckpointing` gives them to task models,
which forward to their backbone. The settings are plain data, so a model still pickles.
"""

from __future__ import annotations

import contextlib
import numbers

import torch
from torch.utils.checkpoint import checkpoint

# torch.utils.checkpoint's arguments that a caller may set (the function and its inputs are ours).
_CHECKPOINT_KWARGS = (
    "use_reentrant",
    "preserve_rng_state",
    "determinism_check",
    "debug",
    "context_fn",
    "early_stop",
)


def _check_settings(kwargs, every_n_layers, offload, argument: str) -> dict:
    if kwargs is None:
        kwargs = {}
    if not isinstance(kwargs, dict):
        raise TypeError(
            f"`{argument}` must be a dict of torch.utils.checkpoint.checkpoint arguments or None; got {kwargs!r}."
        )
    unknown = sorted(set(kwargs) - set(_CHECKPOINT_KWARGS))
    if unknown:
        raise ValueError(
            f"`{argument}` has keys {unknown} that torch.utils.checkpoint.checkpoint does not take; "
            f"allowed: {', '.join(_CHECKPOINT_KWARGS)}."
        )
    if isinstance(every_n_layers, bool) or not isinstance(every_n_layers, numbers.Integral) or every_n_layers < 1:
        raise ValueError(f"`every_n_layers` must be an int >= 1; got {every_n_layers!r}.")
    if not isinstance(offload, bool):
        raise TypeError(f"`offload` must be a bool; got {offload!r}.")
    # Non-reentrant is torch's recommended mode and transformers' default.
    return {"use_reentrant": False, **kwargs}


class ActivationCheckpointing:
    """Checkpointing settings of a module whose `layers` are recomputed in backward.

    The host sets `gradient_checkpointing` (bool) in its constructor and asks
    `_checkpoints_layer(index)` / `_run_checkpointed(layer, *args)` in its layer loop.
    """

    supports_gradient_checkpointing = True  # what PEFT and transformers ask before enabling
    _checkpoint_kwargs: dict = {"use_reentrant": False}
    _checkpoint_every_n_layers: int = 1
    _checkpoint_offload: bool = False

    def activation_checkpointing_enable(
        self, activation_checkpointing_kwargs: dict | None = None, every_n_layers: int = 1, offload: bool = False
    ):
        """Recompute encoder layers in backward instead of keeping their activations
        (transformers' signature). `activation_checkpointing_kwargs` go to
        `torch.utils.checkpoint.checkpoint` (default `use_reentrant=False`);
        `every_n_layers=k` checkpoints layers 0, k, 2k, ...; `offload=True` keeps the
        activations saved for the recompute in (pinned) host memory when the model is on an
        accelerator. Applies in training mode with gradients enabled."""
        self._checkpoint_kwargs = _check_settings(
            activation_checkpointing_kwargs, every_n_layers, offload, "activation_checkpointing_kwargs"
        )
        self._checkpoint_every_n_layers = int(every_n_layers)
        self._checkpoint_offload = offload
        self.gradient_checkpointing = True
        return self

    def gradient_checkpointing_enable(
        self, gradient_checkpointing_kwargs: dict | None = None, every_n_layers: int = 1, offload: bool = False
    ):
        """The same as `activation_checkpointing_enable` (the name PEFT, sentence-transformers
        and transformers < 5 call)."""
        _check_settings(gradient_checkpointing_kwargs, every_n_layers, offload, "gradient_checkpointing_kwargs")
        return self.activation_checkpointing_enable(gradient_checkpointing_kwargs, every_n_layers, offload)

    def activation_checkpointing_disable(self):
        self.gradient_checkpointing = False
        return self

    def gradient_checkpointing_disable(self):
        return self.activation_checkpointing_disable()

    @property
    def is_activation_checkpointing(self) -> bool:
        return bool(self.gradient_checkpointing)

    @property
    def is_gradient_checkpointing(self) -> bool:
        return bool(self.gradient_checkpointing)

    def _checkpoints_layer(self, index: int) -> bool:
        """Whether layer `index` is recomputed in this forward pass."""
        return (
            self.gradient_checkpointing
            and self.training
            and torch.is_grad_enabled()
            and index % self._checkpoint_every_n_layers == 0
        )

    def _run_checkpointed(self, layer, x: torch.Tensor, *args):
        kwargs = self._checkpoint_kwargs
        if kwargs.get("use_reentrant") and not x.requires_grad:
            # Reentrant checkpointing only back-propagates into a segment whose input needs a
            # gradient; with frozen embeddings (e.g. LoRA) the trainable weights inside it
            # would silently get none (transformers' enable_input_require_grads).
            x = x.detach().requires_grad_()
        with _offloading(x) if self._checkpoint_offload else contextlib.nullcontext():
            return checkpoint(layer, x, *args, **kwargs)


def _offloading(x: torch.Tensor):
    """Keep tensors saved for backward in host memory (pinned for an async copy back)."""
    if x.device.type == "cpu":
        return contextlib.nullcontext()  # already in host memory
    return torch.autograd.graph.save_on_cpu(pin_memory=True, device_type=x.device.type)


class DelegatedCheckpointing:
    """The same calls on a task model: they act on its `backbone`."""

    supports_gradient_checkpointing = True

    def activation_checkpointing_enable(
        self, activation_checkpointing_kwargs: dict | None = None, every_n_layers: int = 1, offload: bool = False
    ):
        self.backbone.activation_checkpointing_enable(activation_checkpointing_kwargs, every_n_layers, offload)
        return self

    def gradient_checkpointing_enable(
        self, gradient_checkpointing_kwargs: dict | None = None, every_n_layers: int = 1, offload: bool = False
    ):
        self.backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs, every_n_layers, offload)
        return self

    def activation_checkpointing_disable(self):
        self.backbone.activation_checkpointing_disable()
        return self

    def gradient_checkpointing_disable(self):
        self.backbone.gradient_checkpointing_disable()
        return self

    @property
    def is_activation_checkpointing(self) -> bool:
        return self.backbone.is_activation_checkpointing

    @property
    def is_gradient_checkpointing(self) -> bool:
        return self.backbone.is_gradient_checkpointing
