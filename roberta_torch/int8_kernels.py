"""The CPU int8 matrix-product kernels behind `Int8Linear`, and the per-machine choice among them.

Every kernel computes the same function: activations quantized per tensor to unsigned 8 bits
(asymmetric, from the tensor's min and max, as ONNX Runtime's and torch.ao's dynamic
quantization do), weights symmetric int8 per output channel, int32 accumulation, float32
bias and output. Which kernel is fastest depends on the CPU and the thread count (measured in
benchmarks/bench_cpu_paths.py): with AMX oneDNN's is 2-3x faster than fbgemm's (which has no
AMX code), with the libraries capped to AVX2 they are within noise of each other at one
thread and fbgemm's led at two. So the choice is made on this machine:

| kernel    | what                                                                        |
|-----------|-----------------------------------------------------------------------------|
| `fbgemm`  | `torch.ops.quantized.linear_dynamic`, fbgemm engine (torch.ao)               |
| `onednn`  | `torch.ops.quantized.linear_dynamic`, oneDNN engine (torch.ao)               |
| `qlinear` | `torch.ops.onednn.qlinear_pointwise` on plain uint8/int8 tensors, activation quantized here (the op Inductor's x86 int8 path lowers to) |
| `qnnpack` | `torch.ops.quantized.linear_dynamic`, QNNPACK engine (ARM CPUs only)          |

The choice is the decision point "int8_kernel" (roberta_torch/dispatch.py). `auto` (the
default) takes, per layer shape (in_features, out_features) and once per process, the fastest
of the kernels that run here and pass a correctness probe, timed by roberta_torch/cpu_choice.py
on one thread (the first correct kernel of KERNELS is the default; another must beat it by
CHOICE_MARGIN). `quantize(..., kernel=...)` (the layer's request), `dispatch.override(
int8_kernel=...)`, `set_default_kernel` (= `dispatch.set_default("int8_kernel", ...)`) or
`ROBERTA_TORCH_INT8_KERNEL` (read once, at import) force one. The choice costs a few
milliseconds per shape (tens for a whole model) and is logged at DEBUG level;
`dispatch.record("int8_kernel")` shows which kernel ran each call and why ("measured: qlinear
2.10x"), as does the older `record_kernels()`.

Saturation: without VNNI (AVX2 and plain AVX-512), the u8 x s8 instruction these kernels use
(vpmaddubsw) adds pairs of products in 16 bits and saturates (255 * 127 * 2 > 32767). The
probe detects that on this machine; such a kernel then gets 7-bit weights (|q| <= 63:
255 * 63 * 2 fits), quantized so from the float weights by Int8Linear.from_float, which cannot
saturate and loses less than 7-bit activations (torch.ao's `reduce_range`, the last resort):
per-channel weight scales absorb it, a per-tensor activation scale does not.

The torch.ao kernels need quantized tensors to pack their weights, which torch 2.13
deprecates; if a future torch drops them, those kernels fail the probe and `qlinear`
(plain tensors) remains.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import platform
import warnings

import torch

from . import cpu_choice, dispatch

logger = logging.getLogger(__name__)

KERNEL_ENV_VAR = "ROBERTA_TORCH_INT8_KERNEL"
# In order of preference: a later kernel is chosen only when clearly faster (CHOICE_MARGIN).
KERNELS = ("onednn", "fbgemm", "qlinear", "qnnpack")
CHOICES = ("auto", *KERNELS)
# The token count the choice is timed at: between a short sequence and a padded batch.
TIMING_TOKENS = 256
TIMING_REPEATS = 5
# A kernel replaces a preferred one only if at least this much faster: timing noise must not
# flip a tie.
CHOICE_MARGIN = 0.15
# A kernel's output on the probe may differ from the float reference of the same quantized
# operands by rounding only; saturation gives errors of tens of percent.
PROBE_TOLERANCE = 1e-3


# ---------------------------------------------------------------------------- quantization


def quantize_weight(weight: torch.Tensor, bits: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel int8: (int8 (out, in), float32 scales (out,)) with
    weight ~= q * scale[:, None]. Range [-127, 127] (symmetric: no zero point), or [-63, 63]
    with bits=7 (for kernels that saturate otherwise, see the module docstring)."""
    qmax = 127.0 if bits == 8 else 63.0
    weight = weight.detach().float()
    scale = weight.abs().amax(dim=1) / qmax
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # an all-zero row stays zero
    q = torch.round(weight / scale[:, None]).clamp_(-qmax, qmax).to(torch.int8)
    return q, scale


def activation_qparams(x: torch.Tensor, reduce_range: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-tensor asymmetric uint8 parameters (scale, zero point) covering [min(x, 0), max(x, 0)]
    exactly as torch.ao's dynamic quantization chooses them (0.0 is exactly representable)."""
    qmax = 127 if reduce_range else 255
    low, high = torch.aminmax(x)
    low, high = low.clamp(max=0.0), high.clamp(min=0.0)
    scale = (high - low).double() / qmax
    scale = torch.where(scale > 0, scale, torch.ones_like(scale)).float()
    zero_point = torch.round(-low / scale).clamp_(0, qmax).to(torch.long)
    return scale, zero_point


def quantize_activation(x: torch.Tensor, scale, zero_point, reduce_range: bool) -> torch.Tensor:
    qmax = 127 if reduce_range else 255
    return torch.round(x / scale).add_(zero_point).clamp_(0, qmax).to(torch.uint8)


# ---------------------------------------------------------------------------- kernels


class Kernel:
    """One int8 GEMM implementation: `pack` once per weight, `run` per call (x 2-D float32)."""

    name = ""

    def available(self) -> bool:
        raise NotImplementedError

    def pack(self, q: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None, reduce_range: bool):
        raise NotImplementedError

    def run(self, packed, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def run_with_epilogue(self, packed, x: torch.Tensor, activation: str | None, residual: torch.Tensor | None):
        """gelu(x W^T + b) or x W^T + b + residual (residual: (rows, out) float32); kernels
        that can fuse the epilogue override this."""
        y = self.run(packed, x)
        if activation == "gelu":
            y = torch.ops.aten.gelu_(y)  # y is the kernel's fresh output
        if residual is not None:
            y = y.add_(residual)
        return y


class AoDynamicKernel(Kernel):
    """torch.ao's dynamic int8 linear on one quantized engine; activation quantization
    (min/max, rounding) happens inside the kernel."""

    def __init__(self, engine: str):
        self.name = engine
        self.engine = engine

    def available(self) -> bool:
        if self.engine == "qnnpack" and platform.machine().lower() not in ("arm64", "aarch64"):
            return False  # QNNPACK is ARM's engine; on x86 it is a slow fallback
        try:
            return self.engine in torch.backends.quantized.supported_engines and hasattr(
                torch.ops.quantized, "linear_dynamic"
            )
        except (AttributeError, RuntimeError):
            return False

    def pack(self, q, scale, bias, reduce_range):
        zero_points = torch.zeros(q.shape[0], dtype=torch.long)
        previous = torch.backends.quantized.engine
        with warnings.catch_warnings():
            # torch 2.13 deprecates creating quantized tensors (see the module docstring).
            warnings.simplefilter("ignore", UserWarning)
            try:
                torch.backends.quantized.engine = self.engine  # packing follows the global engine
                qweight = torch._make_per_channel_quantized_tensor(q, scale.double(), zero_points, 0)
                packed = torch.ops.quantized.linear_prepack(qweight, bias)
            finally:
                torch.backends.quantized.engine = previous
        return packed, reduce_range

    def run(self, packed, x):
        weights, reduce_range = packed
        return torch.ops.quantized.linear_dynamic(x, weights, reduce_range)


class OnednnQLinearKernel(Kernel):
    """oneDNN's qlinear (Inductor's x86 int8 op) on plain tensors: the activation is
    quantized here (three passes over it), the product and dequantization in the kernel."""

    name = "qlinear"

    def available(self) -> bool:
        try:
            return torch.backends.mkldnn.is_available() and hasattr(torch.ops.onednn, "qlinear_pointwise")
        except (AttributeError, RuntimeError):
            return False

    def pack(self, q, scale, bias, reduce_range):
        weights = torch.ops.onednn.qlinear_prepack(q, [TIMING_TOKENS, q.shape[1]])
        zero_points = torch.zeros(q.shape[0], dtype=torch.long)
        bias = None if bias is None else bias.float()
        return weights, scale.float(), zero_points, bias, reduce_range

    def run(self, packed, x):
        weights, w_scale, w_zero, bias, reduce_range = packed
        scale, zero_point = activation_qparams(x, reduce_range)
        qx = quantize_activation(x, scale, zero_point, reduce_range)
        return torch.ops.onednn.qlinear_pointwise.tensor(
            qx, scale, zero_point, weights, w_scale, w_zero, bias, 1.0, 0, torch.float32, "none", [], ""
        )

    def run_with_epilogue(self, packed, x, activation, residual):
        # oneDNN applies exact GELU or the residual add inside the product, as the float32
        # path does with mkldnn._linear_pointwise.
        if activation is None and residual is None:
            return self.run(packed, x)
        weights, w_scale, w_zero, bias, reduce_range = packed
        scale, zero_point = activation_qparams(x, reduce_range)
        qx = quantize_activation(x, scale, zero_point, reduce_range)
        if residual is None:
            return torch.ops.onednn.qlinear_pointwise.tensor(
                qx, scale, zero_point, weights, w_scale, w_zero, bias, 1.0, 0, torch.float32, "gelu", [], "none"
            )
        return torch.ops.onednn.qlinear_pointwise.binary_tensor(
            qx, scale, zero_point, weights, w_scale, w_zero, residual, bias, 1.0, 0, torch.float32,
            1.0, 0, "add", 1.0, "none", [], ""
        )


_KERNELS = {
    "fbgemm": AoDynamicKernel("fbgemm"),
    "onednn": AoDynamicKernel("onednn"),
    "qlinear": OnednnQLinearKernel(),
    "qnnpack": AoDynamicKernel("qnnpack"),
}


def get_kernel(name: str) -> Kernel:
    return _KERNELS[name]


# ---------------------------------------------------------------------------- probing


@dataclasses.dataclass(frozen=True)
class KernelSetting:
    """A kernel that computes the int8 function correctly here, and how."""

    kernel: str
    reduce_range: bool  # activations in 7 bits (0..127)
    weight_bits: int = 8  # 7: weights narrowed to -63..63 when packed


def narrow_weight(q: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights within [-63, 63]: as they are if they already are (quantized with bits=7, as
    Int8Linear.from_float does where the kernel needs it), else halved with doubled scales
    (rounded twice: e.g. a state dict written on a machine with VNNI)."""
    if int(q.abs().max()) <= 63:
        return q, scale
    return torch.round(q.float() / 2).clamp_(-63, 63).to(torch.int8), scale * 2


def pack(setting: KernelSetting, q: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None):
    """The packed weights of `setting`'s kernel for the int8 weights (q, scale) and bias."""
    if setting.weight_bits == 7:
        q, scale = narrow_weight(q, scale)
    return _KERNELS[setting.kernel].pack(q, scale, bias, setting.reduce_range)


def _probe_operands(in_features: int, out_features: int):
    """Worst case for 16-bit pair saturation: every activation near the top of the uint8
    range, every weight +-127 with the same sign in each pair; plus a random sign pattern."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(16, in_features, generator=g) * 0.1 + 0.9  # all quantize to ~230-255
    signs = torch.where(torch.rand(out_features, in_features, generator=g) < 0.5, -1.0, 1.0)
    weight = signs * 0.05
    weight[: out_features // 2] = 0.05  # rows of all-positive pairs: saturate if anything does
    bias = torch.linspace(-1, 1, out_features)
    return x, weight, bias


def _reference(x, q, scale, bias, setting: KernelSetting) -> torch.Tensor:
    """The int8 function in float64: dequantized activations times dequantized weights."""
    reduce_range = setting.reduce_range
    if setting.weight_bits == 7:
        q, scale = narrow_weight(q, scale)
    x_scale, x_zero = activation_qparams(x, reduce_range)
    qx = quantize_activation(x, x_scale, x_zero, reduce_range)
    dx = (qx.double() - x_zero.double()) * x_scale.double()
    return (dx @ (q.double() * scale.double()[:, None]).t() + bias.double()).float()


_probed: dict = {}  # kernel name -> KernelSetting or None, for the process
PROBE_SHAPE = (256, 64)  # (in, out): saturation is a property of the kernel and the CPU, not the shape


def probe(name: str) -> KernelSetting | None:
    """The setting under which kernel `name` computes the int8 function on this machine
    (full-range activations if it can, 7-bit if full range saturates), or None; once per
    process. One thread: the answer does not depend on it, and a busy machine's other jobs
    stall a parallel region far more than a serial one."""
    if name not in _probed:
        with cpu_choice.threads(1):
            _probed[name] = _probe(name)
    return _probed[name]


def _probe(name: str) -> KernelSetting | None:
    kernel = _KERNELS[name]
    if not kernel.available():
        return None
    x, weight, bias = _probe_operands(*PROBE_SHAPE)
    q, scale = quantize_weight(weight)
    # Full range; else 7-bit weights; else 7-bit activations (see the module docstring).
    for setting in (KernelSetting(name, False), KernelSetting(name, False, 7), KernelSetting(name, True)):
        try:
            with torch.inference_mode():
                out = kernel.run(pack(setting, q, scale, bias), x)
        except (RuntimeError, TypeError, AttributeError, NotImplementedError) as error:
            logger.debug("int8 kernel %s does not run here: %s", name, error)
            return None
        expected = _reference(x, q, scale, bias, setting)
        error = float((out - expected).abs().max() / expected.abs().max())
        if error <= PROBE_TOLERANCE:
            return setting
        logger.debug("int8 kernel %s: %s gives probe error %.2e", name, setting, error)
    return None


# ---------------------------------------------------------------------------- choice


INT8_KERNEL = dispatch.declare(
    "int8_kernel", CHOICES, env_var=KERNEL_ENV_VAR, call_name="int8_kernels.resolve", model_name="the layer's `kernel`"
).name
_settings: dict = {}  # (kernel request, in, out) -> (KernelSetting, why), for the process
_choice_log: list = []  # (in, out, {kernel: seconds}, chosen) of every timed choice


def check_kernel(kernel, argument: str = "kernel") -> str:
    if kernel not in CHOICES:
        raise ValueError(f"`{argument}` must be one of {CHOICES}; got {kernel!r}.")
    return kernel


def default_kernel() -> str:
    return dispatch.get_default(INT8_KERNEL)


def set_default_kernel(kernel: str) -> str:
    """Set the process-wide int8 kernel ('auto' or one of KERNELS); returns the previous one.
    The same as `dispatch.set_default("int8_kernel", ...)`; overrides $ROBERTA_TORCH_INT8_KERNEL
    (read once, at import). Layers already quantized with `kernel='auto'` switch at their next call."""
    return dispatch.set_default(INT8_KERNEL, check_kernel(kernel), source="int8_kernels.set_default_kernel")


def _timing_candidates(settings: list, in_features: int, out_features: int) -> dict:
    """kernel -> a callable running it once at TIMING_TOKENS tokens; a kernel that raises on
    this shape is left out."""
    g = torch.Generator().manual_seed(1)
    weight = torch.randn(out_features, in_features, generator=g) * 0.02
    q, scale = quantize_weight(weight)
    x = torch.randn(TIMING_TOKENS, in_features, generator=g)
    runs = {}
    with torch.inference_mode():
        for setting in settings:
            kernel = _KERNELS[setting.kernel]
            try:
                packed = pack(setting, q, scale, torch.zeros(out_features))
                kernel.run(packed, x)
            except (RuntimeError, TypeError, ValueError) as error:
                logger.debug("int8 kernel %s fails on %dx%d: %s", setting.kernel, in_features, out_features, error)
                continue
            runs[setting.kernel] = lambda kernel=kernel, packed=packed: kernel.run(packed, x)
    return runs


def resolve(kernel: str, in_features: int, out_features: int) -> KernelSetting:
    """The kernel (and its activation range) for a layer of this shape: the forced one, or
    for 'auto' the fastest correct one here, chosen once per shape per process."""
    return resolve_with_reason(kernel, in_features, out_features)[0]


def resolve_with_reason(kernel: str, in_features: int, out_features: int) -> tuple:
    """(KernelSetting, why) for a layer requesting `kernel` ("auto" or a name): the layer's
    request, else dispatch's override / default / environment, else measured."""
    requested, source = dispatch.requested(INT8_KERNEL, model=None if kernel == "auto" else kernel)
    key = (requested, in_features, out_features)
    known = _settings.get(key)
    if known is not None:
        return known
    if requested != "auto":
        setting = probe(requested)
        if setting is None:
            runnable = [name for name in KERNELS if probe(name)]
            raise ValueError(
                f"int8 kernel {requested!r} does not run correctly on this machine (torch {torch.__version__}); "
                f"kernels that do: {runnable or 'none'}. Use kernel='auto'."
            )
        _settings[key] = (setting, source)
        return _settings[key]
    settings = {s.kernel: s for s in (probe(name) for name in KERNELS) if s is not None}
    # Timed on one thread (cpu_choice.TIMING_THREADS): the ranking of these kernels follows
    # the instruction set, not the thread count, so the key holds no thread count.
    with cpu_choice.threads(1):
        runs = _timing_candidates(list(settings.values()), in_features, out_features) if settings else {}
    if not runs:
        raise RuntimeError(
            f"No int8 kernel runs on this machine (torch {torch.__version__}, quantized engines "
            f"{torch.backends.quantized.supported_engines}); int8 needs torch's fbgemm or oneDNN."
        )
    names = tuple(runs)  # in KERNELS order: the first is the preferred default
    measured = cpu_choice.choose(
        INT8_KERNEL, (in_features, out_features, TIMING_TOKENS, "1 thread"), names, lambda: runs,
        default=names[0], margin=CHOICE_MARGIN, repeats=TIMING_REPEATS,
    )
    setting = settings[measured.choice]
    _choice_log.append((in_features, out_features, measured.timings, setting))
    logger.debug(
        "int8 kernel for %dx%d: %s (7-bit activations: %s, weight bits: %d); %s", in_features, out_features,
        setting.kernel, setting.reduce_range, setting.weight_bits, measured.reason,
    )
    _settings[key] = (setting, measured.reason)
    return _settings[key]


def choices() -> list:
    """Every timed choice of this process: (in, out, {kernel: seconds at TIMING_TOKENS}, setting)."""
    return list(_choice_log)


def forget_choices() -> None:
    """Drop the cached choices (tests; or after changing thread counts)."""
    _settings.clear()
    _choice_log.clear()
    _probed.clear()
    cpu_choice.forget(INT8_KERNEL)


# ---------------------------------------------------------------------------- recording


@contextlib.contextmanager
def record_kernels():
    """Within the block, every Int8Linear call appends (kernel, in_features, out_features);
    `dispatch.record("int8_kernel")` gives the same as `Decision`s, with the reason."""
    with dispatch._recording((INT8_KERNEL,), lambda d: (d.choice, *d.case)) as calls:
        yield calls
