"""int8 inference on CPU: keras' `model.quantize("int8")` for torch modules.

`quantize_(model, "int8")` replaces every `nn.Linear` in `model` (subclasses included, found
by type, heads too) by an `Int8Linear`: int8 weights with one float32 scale per output channel,
activations quantized to 8 bits per call (dynamic, per tensor), int32 accumulation, float32
bias and output, on the fastest int8 kernel this CPU runs (see int8_kernels.py). Embeddings,
LayerNorms and attention stay in the model's dtype, as in keras, whose int8 mode also keeps
activations outside the dense layers in float.

A quantized model is for inference: `quantize_` puts it in eval mode and freezes its remaining
parameters; calling it in training mode, or with inputs that require grad, raises. It runs on
CPU only (no int8 GPU kernel here): quantizing a model on another device, or calling a
quantized layer with a tensor elsewhere, raises a ValueError.

Saving: `model.state_dict()` holds the int8 weights and scales (`weight_int8`, `weight_scale`,
`bias`), so `torch.save(model.state_dict())` and `load_state_dict` into a model quantized the
same way round-trip exactly, as does whole-model `torch.save` / pickle / `copy.deepcopy`.
Presets (`save_to_preset`) refuse: keras_hub, transformers and sentence-transformers files
have no int8 layout that would load back quantized; save the float model and quantize after
loading (a few seconds for roberta-base).
"""

from __future__ import annotations

import torch
from torch import nn

from . import dispatch, int8_kernels

MODES = ("int8",)
# keras' other quantization modes, named in the error so a keras user knows what is missing.
_KERAS_MODES = ("float8", "int4", "gptq")
_ACTIVATIONS = (None, "gelu")


class Int8Linear(nn.Module):
    """y = x W^T + b with int8 W (per-output-channel scales) and per-call int8 activations.

    Built from a float linear with `Int8Linear.from_float(linear)`. `forward(x)` is
    `nn.Linear`'s; it also takes the epilogue form the blocks call where nothing can tell
    (`roberta_torch.layers.linear_then`), `forward(x, activation="gelu" | None,
    residual=None)`, applied after the int8 product.
    Input of any float dtype and shape (..., in_features); output in the input's dtype.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, kernel: str = "auto"):
        super().__init__()
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.kernel = int8_kernels.check_kernel(kernel)
        self.register_buffer("weight_int8", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.ones(out_features, dtype=torch.float32))
        self.register_buffer("bias", torch.zeros(out_features, dtype=torch.float32) if bias else None)
        self._packed = None  # (source key, KernelSetting, packed weights): rebuilt when stale
        self.train(False)  # inference-only (see forward)

    @classmethod
    def from_float(cls, linear: nn.Linear, kernel: str = "auto") -> "Int8Linear":
        """The int8 version of `linear` (an nn.Linear or subclass, on CPU)."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"`linear` must be a torch.nn.Linear; got {type(linear).__name__}.")
        _check_cpu(linear.weight, "the linear layer's weight")
        module = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, kernel=kernel)
        # Choose (and probe) the kernel now, not in the first forward; quantize for it.
        setting = module._setting()
        q, scale = int8_kernels.quantize_weight(linear.weight, bits=setting.weight_bits)
        with torch.no_grad():
            module.weight_int8.copy_(q)
            module.weight_scale.copy_(scale)
            if linear.bias is not None:
                module.bias.copy_(linear.bias.detach().float())
        return module

    def dequantized_weight(self) -> torch.Tensor:
        """The float32 weight the int8 one stands for, (out_features, in_features)."""
        return self.weight_int8.float() * self.weight_scale[:, None]

    def _setting(self) -> int8_kernels.KernelSetting:
        return int8_kernels.resolve(self.kernel, self.in_features, self.out_features)

    def _packed_weights(self):
        setting, why = int8_kernels.resolve_with_reason(self.kernel, self.in_features, self.out_features)
        dispatch.note(int8_kernels.INT8_KERNEL, setting.kernel, (self.in_features, self.out_features), why)
        # Any in-place change (load_state_dict, copy_) bumps a version; .to() or assignment
        # replaces the tensor: either way the packed copy is rebuilt.
        key = tuple((t.data_ptr(), t._version) for t in (self.weight_int8, self.weight_scale, self.bias) if t is not None)
        if self._packed is None or self._packed[0] != key or self._packed[1] != setting:
            packed = int8_kernels.pack(setting, self.weight_int8, self.weight_scale, self.bias)
            self._packed = (key, setting, packed)
        return self._packed[1], self._packed[2]

    def forward(
        self, x: torch.Tensor, activation: str | None = None, residual: torch.Tensor | None = None
    ) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"Int8Linear expects a tensor; got {type(x).__name__}.")
        _check_cpu(x, "the input")
        if self.training:
            raise RuntimeError(
                "int8 layers are inference-only: call model.eval() before calling a quantized model. "
                "To train, fine-tune the float model and quantize it afterwards."
            )
        if torch.is_grad_enabled() and x.requires_grad:
            raise RuntimeError(
                "int8 layers have no gradient: run a quantized model under torch.no_grad() / "
                "torch.inference_mode(), or fine-tune the float model and quantize it afterwards."
            )
        if not x.is_floating_point():
            raise TypeError(f"Int8Linear expects a floating-point input; got dtype {x.dtype}.")
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"Int8Linear({self.in_features}, {self.out_features}) got an input whose last dimension is "
                f"{x.shape[-1]} (shape {tuple(x.shape)})."
            )
        if activation not in _ACTIVATIONS:
            raise ValueError(f"`activation` must be one of {_ACTIVATIONS}; got {activation!r}.")
        setting, packed = self._packed_weights()
        rows = x.reshape(-1, self.in_features)
        if rows.dtype != torch.float32 or not rows.is_contiguous():
            rows = rows.to(torch.float32).contiguous()
        if residual is not None:
            if residual.shape != (*x.shape[:-1], self.out_features):
                raise ValueError(
                    f"`residual` must have the output's shape {(*x.shape[:-1], self.out_features)}; "
                    f"got {tuple(residual.shape)}."
                )
            residual = residual.reshape(-1, self.out_features)
            if residual.dtype != torch.float32 or not residual.is_contiguous():
                residual = residual.to(torch.float32).contiguous()
        if rows.shape[0] == 0:
            y = rows.new_zeros(0, self.out_features)
        else:
            y = int8_kernels.get_kernel(setting.kernel).run_with_epilogue(packed, rows, activation, residual)
        y = y.view(*x.shape[:-1], self.out_features)
        return y if y.dtype == x.dtype else y.to(x.dtype)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_packed"] = None  # packed kernels are rebuilt (and may differ) where it loads
        return state

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, kernel={self.kernel!r}"
        )


def _check_cpu(tensor: torch.Tensor, what: str) -> None:
    if tensor.device.type != "cpu":
        raise ValueError(
            f"int8 quantization runs on CPU only, and {what} is on {tensor.device}: move the model to CPU "
            "(model.cpu()) first. On GPU use bfloat16 (dtype='bfloat16') instead."
        )


def check_mode(mode) -> str:
    if mode in MODES:
        return mode
    if mode in _KERAS_MODES:
        raise ValueError(f"Quantization mode {mode!r} is not supported by roberta_torch; supported: {MODES}.")
    raise ValueError(f"`mode` must be one of {MODES}; got {mode!r}.")


def quantize_(model: nn.Module, mode: str = "int8", *, kernel: str = "auto") -> nn.Module:
    """Replace every nn.Linear in `model` (by type, subclasses included) with an Int8Linear,
    in place; put `model` in eval mode and freeze its parameters. Returns `model`.

    `kernel`: "auto" (the fastest int8 kernel on this CPU, per layer shape) or one of
    int8_kernels.KERNELS. Layers already quantized are left as they are."""
    check_mode(mode)
    int8_kernels.check_kernel(kernel)
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be a torch.nn.Module; got {type(model).__name__}.")
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        _check_cpu(tensor, f"`{name}`")
    if isinstance(model, nn.Linear):
        raise TypeError("quantize_ replaces the linear layers inside a model; call Int8Linear.from_float(linear) "
                        "for a single layer.")
    # Collect first, then swap: replacing children while iterating named_modules is unsafe.
    targets = [
        (parent, child_name, child)
        for parent in model.modules()
        for child_name, child in parent.named_children()
        if isinstance(child, nn.Linear)
    ]
    for parent, child_name, child in targets:
        setattr(parent, child_name, Int8Linear.from_float(child, kernel=kernel))
    model.eval()
    model.requires_grad_(False)
    return model


def check_preset_quantize(quantize, device=None):
    """Validate `from_preset(..., quantize=)` before anything is read: None (float, the default)
    or a mode of `quantize_`; int8 runs on CPU only, so a `device=` elsewhere is refused too."""
    if quantize is None:
        return None
    try:
        check_mode(quantize)
    except ValueError as error:
        raise ValueError(f"`quantize` must be None or one of {MODES}; got {quantize!r}.") from error
    if device is not None and torch.device(device).type != "cpu":
        raise ValueError(
            f"`quantize={quantize!r}` runs on CPU only, but `device={device!r}`: load on CPU "
            "(leave `device` out) or use dtype='bfloat16' on GPU instead."
        )
    return quantize


def quantize_loaded(model: nn.Module, quantize) -> nn.Module:
    """`model` quantized in place by `model.quantize(quantize)`, or as it is for None."""
    return model if quantize is None else model.quantize(quantize)


def is_quantized(model: nn.Module) -> bool:
    return any(isinstance(module, Int8Linear) for module in model.modules())


def refuse_if_quantized(model: nn.Module, action: str) -> None:
    """Raise a ValueError naming `action` (e.g. "save_to_preset") for a quantized model."""
    if is_quantized(model):
        raise ValueError(
            f"{action} cannot write an int8-quantized model: keras_hub, transformers and sentence-transformers "
            "files have no int8 layout that loads back quantized. Save the float model and call "
            "quantize('int8') after loading it (a few seconds), or save `model.state_dict()` with "
            "torch.save and load it into a model quantized the same way."
        )
