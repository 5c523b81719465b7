"""Dense layers with their epilogue (bias, GELU, residual add) fused on CPU at inference.

On CPU, `F.linear` + `F.gelu` + `+ residual` is three passes over the activations, and
torch's addmm first broadcasts the bias into the output (another pass). oneDNN, which torch
ships and Inductor uses for the same purpose, runs bias, GELU or the residual add inside the
matrix product. Its ops have no autograd formula, so they run only where no gradient is
needed; training and every other device take the plain path. Both paths compute the same
function (float32 differences are at rounding level; see tests/model/test_dense.py).

Which path a call takes is the decision point "dense_epilogue" (see
roberta_torch/dispatch.py): `fused` takes oneDNN wherever it can run, `plain` never does,
and `auto` (the default) lets this machine decide: where oneDNN can run, the paths are timed
once per (dtype, epilogue, weight shape, row-count bucket, threads) by cpu_choice.py, and
the fused one is taken when faster (EPILOGUE_MARGIN). The timing runs what a forward
pass runs: a new row count (padding-free batches and dynamic batching make one per batch,
and oneDNN builds a new primitive for each: ~0.5 ms, measured) followed by
`row_count_reuse(op)` calls with it (the layers of the model share the primitive; above
AMORTIZED_ROWS rows the creation is amortized away and not timed). Timing every call at a
new row count, as this module first did, charged the primitive once per call and ranked
oneDNN 0.6-0.8x where it runs 1.05-1.3x in the model (AMD EPYC Zen 4, benchmarks/README.md).
For bfloat16 and float16 the candidates also include padding the rows to a multiple of
ROW_MULTIPLE (AMX tile rows): fewer distinct shapes, so primitives are reused
(`fused_padded`, `plain_padded`; results equal: rows are independent).
`dispatch.record("dense_epilogue")` shows the choice with the measurement ("measured: fused
1.23x"). Under torch.compile, CPU inference products are the op `roberta_torch::cpu_linear`,
which makes the same choice when it runs (`_compiled_call_decides_at_run_time`); under export
and jit.trace, and in training, the plain path.
"""

from __future__ import annotations

import contextlib
import itertools

import torch
import torch.nn.functional as F

from . import cpu_choice, dispatch
from .tracing import is_compiling, is_exporting

# The process default of the "dense_epilogue" point: auto|fused|plain, or the on/off
# spellings (on = "auto", off = "plain"). Read once, at import.
ONEDNN_ENV_VAR = "ROBERTA_TORCH_ONEDNN"
EPILOGUE_PATHS = ("auto", "fused", "plain", "fused_padded", "plain_padded")
# Padded paths round the row count up to a multiple of this (AMX tiles have 16 rows; oneDNN's
# bfloat16 kernels block rows by up to 128 — the multiple that removed the per-row-count cost).
ROW_MULTIPLE = 128
# The row counts a measurement stands for: power-of-two buckets (lo, hi] up to MAX_TIMING_ROWS,
# timed at row counts just under hi; (MAX_TIMING_ROWS, AMORTIZED_ROWS], timed at
# MAX_TIMING_ROWS with a new row count per forward as below; and everything above
# AMORTIZED_ROWS, timed at MAX_TIMING_ROWS with one row count (there a forward pass does at
# least 4x the timed work per new primitive, so its creation no longer ranks the paths; on
# the machines measured, larger row counts rank the paths the same or more clearly). The cap
# keeps a measurement at ~0.4 s for roberta-base's four shapes on one thread (AMD Zen 4).
MAX_TIMING_ROWS = 64
AMORTIZED_ROWS = 256
# Calls a timing makes with each new row count: the calls a forward pass makes with one
# primitive, counted for a shallow model (MIN_LAYERS) so that it is not misjudged: one per
# layer for each epilogue, three per layer without one (query, key and value share it).
MIN_LAYERS = 4


def row_count_reuse(op: str) -> int:
    """Calls with one primitive per forward pass of a MIN_LAYERS model, for `op`."""
    return MIN_LAYERS * (3 if op == "linear" else 1)


# The fused path replaces the plain one when faster at all: the timing runs what the model
# runs (above), on one thread, and on both machines measured one-thread timings understate
# oneDNN's lead at the model's two threads (Intel SPR: plain first on one thread, fused ~5 %
# ahead on the whole model; AMD Zen 4: 1.00-1.09x on one thread at 64 rows, 1.05-1.3x in the
# model), so a margin would keep the slower path where the two are close.
EPILOGUE_MARGIN = 0.0
TIMING_ROW_COUNTS = 16  # distinct row counts a timing cycles through

DENSE_EPILOGUE = dispatch.declare(
    "dense_epilogue", EPILOGUE_PATHS, env_var=ONEDNN_ENV_VAR, switch=("auto", "plain")
).name


def _onednn_ops_available() -> bool:
    try:
        return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    except (AttributeError, RuntimeError):
        return False


def _supported_dtypes() -> tuple:
    """float32, plus the half types this CPU's oneDNN implements (bfloat16 needs AVX512-BF16
    or AMX, float16 AVX512-FP16 or AMX-FP16; elsewhere oneDNN refuses to build the kernel)."""
    if not _onednn_ops_available():
        return ()
    dtypes = [torch.float32]
    probes = ((torch.bfloat16, "_is_mkldnn_bf16_supported"), (torch.float16, "_is_mkldnn_fp16_supported"))
    for dtype, probe in probes:
        try:
            if getattr(torch.ops.mkldnn, probe)():
                dtypes.append(dtype)
        except (AttributeError, RuntimeError):
            pass
    return tuple(dtypes)


FUSED_DTYPES = _supported_dtypes()
ONEDNN_AVAILABLE = bool(FUSED_DTYPES)


def set_onednn_enabled(enabled: bool) -> bool:
    """Allow (True: "auto") or forbid (False: "plain") the fused CPU path for the process;
    returns the previous setting. The same as `dispatch.set_default("dense_epilogue", ...)`;
    overrides $ROBERTA_TORCH_ONEDNN (which is read once, at import)."""
    if not isinstance(enabled, bool):
        raise TypeError(f"`enabled` must be a bool; got {enabled!r}.")
    previous = dispatch.set_default(
        DENSE_EPILOGUE, "auto" if enabled else "plain", source="set_onednn_enabled"
    )
    return previous != "plain"


def autocast_dtype(device_type: str) -> torch.dtype | None:
    """The dtype `torch.autocast` casts matrix products to on `device_type`, or None when
    autocast is off there."""
    if not torch.is_autocast_enabled(device_type):
        return None
    return torch.get_autocast_dtype(device_type)


def autocast_operands(x: torch.Tensor, *tensors):
    """(x, *tensors) cast to the autocast dtype of x's device when autocast is on there,
    unchanged otherwise (None entries stay None).

    This is what autocast does to `F.linear`'s inputs; doing it ourselves lets the fused
    kernels, which autocast does not know, run in the low precision too, and gives the
    attention backends bfloat16/float16 inputs. float64 is left alone, as autocast does.
    """
    dtype = autocast_dtype(x.device.type)
    if dtype is None or x.dtype == torch.float64 or not x.is_floating_point():
        return (x, *tensors)
    return tuple(t if t is None or t.dtype == dtype else t.to(dtype) for t in (x, *tensors))


def epilogue_path(
    x: torch.Tensor, weight: torch.Tensor, residual: torch.Tensor | None = None, activation: str | None = None
) -> tuple:
    """(path, why) for this call at the "dense_epilogue" point (see the module docstring):
    a forced path where it can run (padded plain runs anywhere); "auto" measures. Paths:
    EPILOGUE_PATHS minus "auto"."""
    requested, source = dispatch.requested(DENSE_EPILOGUE)
    if requested in ("plain", "plain_padded"):
        if requested == "plain_padded" and not is_compiling():
            return requested, source
        return "plain", source
    reason = _fused_unavailable_reason(x, weight, residual)
    if reason is not None:
        return "plain", reason
    if requested != "auto":
        return requested, source
    key = _measurement_key(x, weight, residual, activation)
    names = ("plain", "fused") + (("fused_padded", "plain_padded") if x.dtype in HALF_DTYPES else ())
    measured = cpu_choice.choose(  # timed on one thread (cpu_choice.TIMING_THREADS), keyed by threads
        DENSE_EPILOGUE, key, names, lambda: _candidates(key, names, x.dtype), default="plain",
        margin=EPILOGUE_MARGIN,
    )
    return measured.choice, measured.reason


HALF_DTYPES = (torch.bfloat16, torch.float16)


def row_bucket(rows: int) -> int:
    """The top of the power-of-two bucket (lo, hi] holding `rows` up to MAX_TIMING_ROWS, then
    AMORTIZED_ROWS for (MAX_TIMING_ROWS, AMORTIZED_ROWS] and AMORTIZED_ROWS + 1 above."""
    if rows > AMORTIZED_ROWS:
        return AMORTIZED_ROWS + 1
    if rows > MAX_TIMING_ROWS:
        return AMORTIZED_ROWS
    return 1 << max(0, rows - 1).bit_length()


def _measurement_key(x, weight, residual, activation) -> tuple:
    """(dtype, op, out_features, in_features, row bucket, threads)."""
    out_features, in_features = weight.shape
    op = "linear+add" if residual is not None else "linear+gelu" if activation == "gelu" else "linear"
    rows = x.numel() // in_features
    return (str(x.dtype).removeprefix("torch."), op, out_features, in_features, row_bucket(rows), torch.get_num_threads())


def _candidates(key: tuple, names: tuple, dtype: torch.dtype) -> dict:
    """name -> a callable running that path on fresh random inputs representative of `key`:
    each call takes a new row count (top of the bucket downwards, at most MAX_TIMING_ROWS;
    above AMORTIZED_ROWS always the same) and runs it `row_count_reuse(op)` times, as a
    forward pass does (see the module docstring and MAX_TIMING_ROWS)."""
    _, op, out_features, in_features, bucket, _ = key
    top = min(bucket, MAX_TIMING_ROWS)
    # Fresh row counts, then the same again (cpu_choice may take more calls than there are).
    sequence = list(range(top, max(top // 2, top - TIMING_ROW_COUNTS), -1))
    if bucket > AMORTIZED_ROWS:
        sequence = [top]  # its primitive is built in the warm-up call
    g = torch.Generator().manual_seed(0)
    weight = (torch.randn(out_features, in_features, generator=g) * in_features**-0.5).to(dtype)
    bias = torch.randn(out_features, generator=g).to(dtype)
    activation = "gelu" if op == "linear+gelu" else None
    inputs = torch.randn(top, in_features, generator=g).to(dtype)  # leading rows: contiguous views
    residuals = torch.randn(top, out_features, generator=g).to(dtype) if op == "linear+add" else None
    reuse = row_count_reuse(op)

    def runner(path):
        calls = itertools.cycle(sequence)

        def run():
            rows = next(calls)
            residual = None if residuals is None else residuals[:rows]
            for _ in range(reuse):
                y = _run_path(path, inputs[:rows], weight, bias, activation, residual)
            return y

        return run

    return {name: runner(name) for name in names}


def _fused_unavailable_reason(x, weight, residual) -> str | None:
    reason = _onednn_unavailable_reason(x, weight, residual)
    if reason is None and is_compiling():
        return "compiling (Inductor fuses on its own)"
    return reason


def _onednn_unavailable_reason(x, weight, residual) -> str | None:
    """Why oneDNN's kernels cannot compute this call (None: they can), tracing aside."""
    if x.device.type != "cpu":
        return "not a CPU tensor"
    if x.dtype not in FUSED_DTYPES:
        return "this CPU's oneDNN has no kernel for this dtype"
    if x.dtype != weight.dtype or (residual is not None and residual.dtype != x.dtype):
        return "mixed dtypes"
    # Autocast casts F.linear's inputs but not oneDNN's: fuse only what it would not cast
    # (layers.Linear casts its operands to the autocast dtype itself).
    if autocast_dtype("cpu") not in (None, x.dtype):
        return "autocast to another dtype"
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        return "gradients needed (oneDNN's ops have no autograd formula)"
    return None


def _compiled_call_decides_at_run_time(x, weight, residual) -> bool:
    """Under torch.compile (not export), whether this product goes into the graph as the op
    `roberta_torch::cpu_linear`, which decides its path when it runs (measured as in eager
    mode), instead of as F.linear: CPU inference where oneDNN could run and nothing forces
    plain. Inductor lowers F.linear to MKL's GEMM, measured 0.69x of the eager model's oneDNN
    products on an AMD EPYC (Zen 4), so compiled models were slower than eager ones there; it
    cannot lower oneDNN's op itself without constant (frozen) weights."""
    if not is_compiling() or is_exporting():
        return False
    if dispatch.requested(DENSE_EPILOGUE)[0] in ("plain", "plain_padded"):
        return False
    return _onednn_unavailable_reason(x, weight, residual) is None


@torch.library.custom_op(
    "roberta_torch::cpu_linear",
    mutates_args=(),
    device_types="cpu",
    schema="(Tensor x, Tensor weight, Tensor bias, str activation, Tensor? residual) -> Tensor",
)
def _cpu_linear_op(x, weight, bias, activation, residual):
    return linear(x, weight, bias, activation=activation or None, residual=residual)


@_cpu_linear_op.register_fake
def _cpu_linear_fake(x, weight, bias, activation, residual):
    return x.new_empty(*x.shape[:-1], weight.shape[0])


def uses_fused_cpu_path(
    x: torch.Tensor, weight: torch.Tensor, residual: torch.Tensor | None = None
) -> bool:
    """True when this call takes oneDNN's fused kernels (padded or not)."""
    return epilogue_path(x, weight, residual)[0].startswith("fused")


@contextlib.contextmanager
def record_paths():
    """Within the block, every `linear` call appends ("fused" or "plain", dtype) to the
    yielded list: whether oneDNN's fused kernel ran, and in which dtype.
    `dispatch.record("dense_epilogue")` gives the same as `Decision`s, with the reason."""
    with dispatch._recording((DENSE_EPILOGUE,), lambda d: (d.choice, d.case)) as calls:
        yield calls


def linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    activation: str | None = None,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """activation(x @ weight.T + bias) [+ residual].

    x: (..., in); weight: (out, in); bias: (out,); residual: (..., out) or None;
    activation: None or "gelu" (exact, erf). Not both activation and residual.
    """
    if _compiled_call_decides_at_run_time(x, weight, residual):
        dispatch.note(DENSE_EPILOGUE, "auto", x.dtype, "compiled: roberta_torch::cpu_linear chooses when it runs")
        return torch.ops.roberta_torch.cpu_linear(x, weight, bias, activation or "", residual)
    path, why = epilogue_path(x, weight, residual, activation)
    dispatch.note(DENSE_EPILOGUE, path, x.dtype, why)
    return _run_path(path, x, weight, bias, activation, residual)


def _run_path(path, x, weight, bias, activation, residual):
    if path.endswith("_padded"):
        return _padded_rows(path.removesuffix("_padded"), x, weight, bias, activation, residual)
    if path == "fused":
        if residual is not None:
            return torch.ops.mkldnn._linear_pointwise.binary(x, residual, weight, bias, "add")
        if activation == "gelu":
            return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "gelu", [], "none")
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
    return _plain(x, weight, bias, activation, residual)


def _padded_rows(path, x, weight, bias, activation, residual):
    """`path` on the rows of x padded with zeros to a multiple of ROW_MULTIPLE, cut back:
    every row of a matrix product is computed independently, so the result is the same."""
    in_features, out_features = weight.shape[1], weight.shape[0]
    rows = x.reshape(-1, in_features)
    padding = -rows.shape[0] % ROW_MULTIPLE
    if padding:
        rows = F.pad(rows, (0, 0, 0, padding))
    extra = None
    if residual is not None:
        extra = residual.reshape(-1, out_features)
        extra = F.pad(extra, (0, 0, 0, padding)) if padding else extra
    y = _run_path(path, rows, weight, bias, activation, extra)
    return y[: y.shape[0] - padding].reshape(*x.shape[:-1], out_features)


def _plain(x, weight, bias, activation, residual):
    y = F.linear(x, weight, bias)
    # y is ours alone (nothing else has seen it): the epilogue may overwrite it, which saves
    # allocating a second output (measured: exact GELU on 2,635 x 3,072 float32 took 3.5 ms
    # into a new tensor and 2.1 ms in place, AMD EPYC Zen 4, 2 threads) — except where
    # autograd needs y's values.
    return apply_epilogue(y, activation, residual, in_place=not (torch.is_grad_enabled() and y.requires_grad))


def apply_epilogue(
    y: torch.Tensor, activation: str | None = None, residual: torch.Tensor | None = None, *, in_place: bool = False
):
    """activation(y) [+ residual], unfused: the plain path's epilogue. The residual is added in
    y's dtype (the autocast dtype under autocast), as the fused kernels add it. `in_place`:
    overwrite y (only for a y nothing else holds and autograd does not need)."""
    if activation == "gelu":
        y = torch.ops.aten.gelu_(y) if in_place else F.gelu(y)
    if residual is not None:
        residual = residual if residual.dtype == y.dtype else residual.to(y.dtype)
        y = y.add_(residual) if in_place and residual.shape == y.shape else y + residual
    return y
