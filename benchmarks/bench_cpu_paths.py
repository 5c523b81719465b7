"""Which CPU path is fastest on this machine: the measurements behind the per-machine chooser.

Issue 21: the fused oneDNN epilogue path that wins on Intel Sapphire Rapids lost to plain
`F.linear` on an AVX2-only AMD EPYC. This script times every candidate, on this CPU and on
the same CPU with every kernel library capped to AVX2 (`--isas native,avx2`, each ISA in its
own child process, since the caps are read when the libraries load; see cpu_info.ISA_CAPS).

Sections (`--sections`, default all):

dense      roberta-base dense layers (768->2304 qkv, 768->768 + residual, 768->3072 + GELU,
           3072->768 + residual) at M tokens in {128, 1000, 1024, 2048, ~2000 varying: a new
           M on every call, as the padding-free path sees}, float32 and bfloat16. Paths, each
           computing act(x W^T + b) [+ residual]:
             plain         F.linear, then F.gelu / + residual (MKL for float32)
             fused         torch.ops.mkldnn._linear_pointwise, unpacked weight, epilogue fused
                           (roberta_torch's default today)
             packed_fused  the same with the weight prepacked by mkldnn._reorder_linear_weight
                           (what Inductor's freezing does)
             mkl_packed    float32: mkl._mkl_reorder_linear_weight + mkl._mkl_linear, epilogue
                           separate
first_call the cost of the first call at a new M (primitive creation / JIT) per path: median
           of (first call - second call) over fresh token counts.
int8       the same layers (no epilogue) at M in {128, 1024, ~2000 varying}: float32 F.linear
           against every int8 kernel that runs here: roberta_torch's (int8_kernels.py:
           quantized::linear_dynamic on fbgemm and onednn, onednn::qlinear_pointwise), torch.ao
           on its "x86" meta-engine, torchao Int8DynamicActivationInt8WeightConfig (eager) and
           ONNX Runtime's dynamic int8 (one Linear quantized by quantize_dynamic,
           per-channel). Relative error against float32 too, also of the saturation-free
           settings (7-bit weights / activations).
model      6-layer roberta-base size: dense 8x128 and 16x256 at ~50 % padding; default paths,
           oneDNN fusion off, padded vs padding-free, per-sequence vs re-padded attention, 1
           vs 2 threads, with transformers as the reference.

All timings: one process per ISA, paths interleaved (rotating order), medians. Ratios are
the numbers to read; on a shared machine absolute times are noisy.

    python benchmarks/bench_cpu_paths.py --isas native,avx2 --out benchmarks/results
    python benchmarks/bench_cpu_paths.py --quick                   # smoke test, seconds

Writes <out>/cpu_paths.json and prints tables.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

import torch
import torch.nn.functional as F

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import cpu_info  # noqa: E402

# name: (in, out, epilogue)
LAYERS = {
    "qkv 768->2304": (768, 2304, None),
    "attn_out 768->768 +res": (768, 768, "add"),
    "ffn_in 768->3072 +gelu": (768, 3072, "gelu"),
    "ffn_out 3072->768 +res": (3072, 768, "add"),
}
TOKENS = [128, 1000, 1024, 2048, "vary2000"]
INT8_TOKENS = [128, 1024, "vary2000"]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
VARY_BASE = 1900  # "vary2000": M = 1900, 1901, ... a new one on every call (<= 2100)


def interleaved(functions: dict, repeats: int, warmup: int = 1, minima: dict | None = None) -> dict:
    """Median seconds of each function; each round runs all of them in a rotated order.
    `minima`, when given, receives the fastest run of each (less sensitive to a shared
    machine's other jobs than the median)."""
    names = list(functions)
    times = {name: [] for name in names}
    for _ in range(warmup):
        for name in names:
            functions[name]()
    for r in range(repeats):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            start = time.perf_counter()
            functions[name]()
            times[name].append(time.perf_counter() - start)
    if minima is not None:
        minima.update({name: min(t) for name, t in times.items()})
    return {name: statistics.median(t) for name, t in times.items()}


class TokenCounts:
    """Fixed M, or a new M on every call ("vary2000") drawn from a counter shared by all
    paths, so no path ever sees an M another path (or an earlier call) has seen."""

    def __init__(self):
        self.next_varying = VARY_BASE

    def take(self, spec) -> int:
        if spec == "vary2000":
            m = self.next_varying
            self.next_varying += 1
            if self.next_varying > VARY_BASE + 4000:
                raise RuntimeError("ran out of fresh token counts; lower --repeats")
            return m
        return int(spec)


# ---------------------------------------------------------------------------- dense paths


def dense_paths(weight, bias, epilogue, dtype, pack_hint: int) -> dict:
    """name -> f(x, residual) computing act(x W^T + b) [+ residual], for the paths that run."""

    def plain(x, r):
        y = F.linear(x, weight, bias)
        if epilogue == "gelu":
            return F.gelu(y)
        return y + r if epilogue == "add" else y

    paths = {"plain": plain}
    if not torch.backends.mkldnn.is_available():
        return paths
    onednn_ok = dtype == torch.float32 or torch.ops.mkldnn._is_mkldnn_bf16_supported()
    if onednn_ok:
        def fused_with(w):
            def run(x, r):
                if epilogue == "add":
                    return torch.ops.mkldnn._linear_pointwise.binary(x, r, w, bias, "add")
                if epilogue == "gelu":
                    return torch.ops.mkldnn._linear_pointwise(x, w, bias, "gelu", [], "none")
                return torch.ops.mkldnn._linear_pointwise(x, w, bias, "none", [], "")
            return run

        paths["fused"] = fused_with(weight)
        paths["packed_fused"] = fused_with(torch.ops.mkldnn._reorder_linear_weight(weight, pack_hint))
    if dtype == torch.float32 and torch.backends.mkl.is_available():
        packed = torch.ops.mkl._mkl_reorder_linear_weight(weight, pack_hint)

        def mkl_packed(x, r):
            y = torch.ops.mkl._mkl_linear(x, packed, weight, bias, pack_hint)
            if epilogue == "gelu":
                return F.gelu(y)
            return y + r if epilogue == "add" else y

        paths["mkl_packed"] = mkl_packed
    return paths


def run_dense(args) -> list:
    rows = []
    torch.manual_seed(0)
    counts = TokenCounts()
    for dtype_name in args.dtypes:
        dtype = DTYPES[dtype_name]
        for layer, (k, n, epilogue) in LAYERS.items():
            weight = (torch.randn(n, k) * 0.02).to(dtype)
            bias = (torch.randn(n) * 0.02).to(dtype)
            source = torch.randn(VARY_BASE + 4100, k).to(dtype)
            residual = torch.randn(VARY_BASE + 4100, n).to(dtype)
            paths = dense_paths(weight, bias, epilogue, dtype, pack_hint=1024)
            # Every path computes the same function: check it once (float32 rounding level).
            x = source[:300]
            reference = paths["plain"](x, residual[:300]).float()
            errors = {
                name: float((fn(x, residual[:300]).float() - reference).abs().max()) for name, fn in paths.items()
            }
            for spec in args.tokens:
                functions = {}
                for name, fn in paths.items():
                    def call(fn=fn):
                        m = counts.take(spec)
                        return fn(source[:m], residual[:m])
                    functions[name] = call
                repeats = args.repeats if dtype == torch.float32 or cpu_info.active_isa_cap() is None else max(3, args.repeats // 2)
                minima = {}
                with torch.inference_mode():
                    times = interleaved(functions, repeats, minima=minima)
                row = {"section": "dense", "dtype": dtype_name, "layer": layer, "tokens": spec,
                       "ms": {name: 1e3 * t for name, t in times.items()},
                       "min_ms": {name: 1e3 * t for name, t in minima.items()},
                       "max_abs_diff_vs_plain": errors}
                best = min(times, key=times.get)
                row["best"] = best
                row["vs_plain"] = {name: times["plain"] / t for name, t in times.items()}
                rows.append(row)
                print(f"  dense {dtype_name:8s} {layer:24s} M={spec!s:8s} "
                      + "  ".join(f"{name} {1e3 * t:7.2f}ms" for name, t in times.items())
                      + f"  -> {best}", flush=True)
    return rows


def run_first_call(args) -> list:
    """First call at a new M minus the second call at the same M, per path (median)."""
    rows = []
    torch.manual_seed(0)
    next_m = [5000]
    for dtype_name in args.dtypes:
        dtype = DTYPES[dtype_name]
        for layer, (k, n, epilogue) in LAYERS.items():
            weight = (torch.randn(n, k) * 0.02).to(dtype)
            bias = (torch.randn(n) * 0.02).to(dtype)
            source = torch.randn(5000 + 400, k).to(dtype)
            residual = torch.randn(5000 + 400, n).to(dtype)
            paths = dense_paths(weight, bias, epilogue, dtype, pack_hint=1024)
            extra = {name: [] for name in paths}
            steady = {name: [] for name in paths}
            with torch.inference_mode():
                for fn in paths.values():
                    fn(source[:64], residual[:64])
                for _ in range(args.first_call_samples):
                    for name, fn in paths.items():
                        m = 2000 + (next_m[0] % 300)  # around 2000 tokens, unseen so far
                        next_m[0] += 1
                        x, r = source[:m], residual[:m]
                        start = time.perf_counter()
                        fn(x, r)
                        first = time.perf_counter() - start
                        start = time.perf_counter()
                        fn(x, r)
                        second = time.perf_counter() - start
                        extra[name].append(first - second)
                        steady[name].append(second)
            row = {"section": "first_call", "dtype": dtype_name, "layer": layer,
                   "extra_ms": {name: 1e3 * statistics.median(v) for name, v in extra.items()},
                   "steady_ms": {name: 1e3 * statistics.median(v) for name, v in steady.items()}}
            rows.append(row)
            print(f"  first call {dtype_name:8s} {layer:24s} "
                  + "  ".join(f"{name} +{row['extra_ms'][name]:6.2f}ms (of {row['steady_ms'][name]:6.2f})" for name in paths),
                  flush=True)
    return rows


# ---------------------------------------------------------------------------- int8 paths


def ao_x86_path(weight, bias):
    """torch.ao's dynamic linear on the "x86" meta-engine (it picks fbgemm or oneDNN itself)."""
    from roberta_torch.int8_kernels import quantize_weight

    q, scale = quantize_weight(weight)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch 2.13 deprecates quantized tensors
        previous = torch.backends.quantized.engine
        torch.backends.quantized.engine = "x86"
        try:
            qweight = torch._make_per_channel_quantized_tensor(q, scale.double(), torch.zeros_like(scale, dtype=torch.long), 0)
            packed = torch.ops.quantized.linear_prepack(qweight, bias)
        finally:
            torch.backends.quantized.engine = previous
    return lambda x: torch.ops.quantized.linear_dynamic(x, packed, False)


def roberta_torch_int8_path(weight, bias, kernel: str, weight_bits: int = 8, reduce_range: bool = False):
    """One of roberta_torch's int8 kernels (int8_kernels.py), as Int8Linear packs and runs it."""
    from roberta_torch import int8_kernels

    q, scale = int8_kernels.quantize_weight(weight, bits=weight_bits)
    setting = int8_kernels.KernelSetting(kernel, reduce_range, weight_bits)
    packed = int8_kernels.pack(setting, q, scale, bias)
    runner = int8_kernels.get_kernel(kernel)
    return lambda x: runner.run(packed, x)


def torchao_path(weight, bias):
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    linear = torch.nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        linear.weight.copy_(weight)
        linear.bias.copy_(bias)
    quantize_(linear, Int8DynamicActivationInt8WeightConfig())
    return linear


def onnxruntime_path(weight, bias, threads: int, directory: str):
    """One Linear as an ONNX MatMul + Add (what exporters write), quantized by ORT's
    quantize_dynamic with per-channel int8 weights (sentence-transformers' onnx-qint8)."""
    import numpy as np
    import onnx
    import onnxruntime
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization import QuantType, quantize_dynamic

    k = weight.shape[1]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["y"])],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["m", k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["m", weight.shape[0]])],
        [numpy_helper.from_array(weight.t().contiguous().numpy(), "w"), numpy_helper.from_array(bias.numpy(), "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    plain = os.path.join(directory, f"linear_{weight.shape[0]}x{k}.onnx")
    quantized = plain.replace(".onnx", "_qint8.onnx")
    onnx.save(model, plain)
    quantize_dynamic(plain, quantized, per_channel=True, weight_type=QuantType.QInt8)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # ORT's pool spins after each run by default, taking the cores from whatever is timed
    # next; interleaved timing needs it off (bench_backbone does the same).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = onnxruntime.InferenceSession(quantized, options, providers=["CPUExecutionProvider"])

    def run(x):
        return torch.from_numpy(session.run(None, {"x": np.ascontiguousarray(x.numpy())})[0])

    return run


# Settings timed (8-bit weights and activations) and, for accuracy only, the two that avoid
# 16-bit saturation without VNNI: 7-bit weights ("_w7", what the probe picks) and 7-bit
# activations ("_a7", torch.ao's reduce_range). They run the same kernel at the same speed.
ACCURACY_ONLY = ("_w7", "_a7")


def int8_paths(weight, bias, directory: str) -> dict:
    from roberta_torch import int8_kernels

    paths = {"float32": lambda x: F.linear(x, weight, bias)}
    candidates = {}
    for kernel in int8_kernels.KERNELS:
        if int8_kernels.get_kernel(kernel).available():
            candidates[kernel] = lambda k=kernel: roberta_torch_int8_path(weight, bias, k)
            candidates[f"{kernel}_w7"] = lambda k=kernel: roberta_torch_int8_path(weight, bias, k, weight_bits=7)
            candidates[f"{kernel}_a7"] = lambda k=kernel: roberta_torch_int8_path(weight, bias, k, reduce_range=True)
    if "x86" in torch.backends.quantized.supported_engines:
        candidates["ao_x86"] = lambda: ao_x86_path(weight, bias)
    candidates["torchao"] = lambda: torchao_path(weight, bias)
    if cpu_info.active_isa_cap() is None:
        # ONNX Runtime's MLAS picks its kernels from cpuid and has no ISA cap: under the AVX2
        # caps it would still run this CPU's VNNI/AMX code, so it is left out there.
        candidates["onnxruntime"] = lambda: onnxruntime_path(weight, bias, torch.get_num_threads(), directory)
    for name, make in candidates.items():
        try:
            fn = make()
            with torch.inference_mode():
                fn(torch.randn(8, weight.shape[1]))
            paths[name] = fn
        except Exception as error:  # a kernel this build or CPU lacks: say so, go on
            print(f"  int8 path {name} unavailable: {type(error).__name__}: {str(error)[:120]}", flush=True)
    return paths


def run_int8(args) -> list:
    rows = []
    torch.manual_seed(0)
    counts = TokenCounts()
    with tempfile.TemporaryDirectory() as directory, contextlib.redirect_stderr(sys.stdout):
        for layer, (k, n, _) in LAYERS.items():
            weight = torch.randn(n, k) * 0.02
            bias = torch.randn(n) * 0.02
            source = torch.randn(VARY_BASE + 4100, k)
            paths = int8_paths(weight, bias, directory)
            with torch.inference_mode():
                x = source[:1024]
                reference = F.linear(x, weight, bias)
                errors = {
                    name: float((fn(x) - reference).norm() / reference.norm()) for name, fn in paths.items()
                }
            for spec in args.int8_tokens:
                functions = {}
                for name, fn in paths.items():
                    if name.endswith(ACCURACY_ONLY):
                        continue
                    def call(fn=fn):
                        return fn(source[: counts.take(spec)])
                    functions[name] = call
                minima = {}
                with torch.inference_mode():
                    times = interleaved(functions, args.repeats, minima=minima)
                row = {"section": "int8", "layer": layer, "tokens": spec,
                       "ms": {name: 1e3 * t for name, t in times.items()},
                       "min_ms": {name: 1e3 * t for name, t in minima.items()},
                       "vs_float32": {name: times["float32"] / t for name, t in times.items()},
                       "relative_error": errors}
                row["best"] = min(times, key=times.get)
                rows.append(row)
                print(f"  int8 {layer:24s} M={spec!s:8s} "
                      + "  ".join(f"{name} {1e3 * t:6.2f}ms" for name, t in times.items())
                      + f"  -> {row['best']}", flush=True)
    return rows


# ---------------------------------------------------------------------------- whole model


@contextlib.contextmanager
def attention_variant(variant: str):
    """'per_sequence' (eager default: one SDPA call per run of equal lengths) or 'repadded'
    (one key-masked SDPA call over the sequences re-padded to the longest)."""
    from roberta_torch import attention

    if variant == "per_sequence" or not hasattr(attention, "_sdpa_packed"):
        yield variant if variant == "per_sequence" else None
        return
    original = attention._sdpa_packed

    def repadded(q, k, v, layout, dropout_p):
        if dropout_p or layout.seqlens is None or len(set(layout.seqlens)) < 2:
            return original(q, k, v, layout, dropout_p)
        return attention._sdpa_repadded(q, k, v, layout.cu_seqlens.long(), list(layout.seqlens))

    attention._sdpa_packed = repadded
    try:
        yield variant
    finally:
        attention._sdpa_packed = original


def run_model(args) -> list:
    import roberta_torch
    from roberta_torch import dense

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    from bench_backbone import build_models, make_batch

    rows = []
    layers = 6 if not args.quick else 1
    import bench_backbone

    bench_backbone.SIZES["base6"] = (50265, layers, 12, 768, 3072, 512)
    for dtype_name in args.dtypes:
        dtype = DTYPES[dtype_name]
        peer, ours = build_models("base6", dtype, "cpu", train=False)
        for batch, seq, fill in ((8, 128, 1.0), (16, 256, 0.5)):
            if args.quick:
                batch, seq = 2, 32
            ids, mask, lengths = make_batch(batch, seq, fill, 50265, "cpu")
            inputs = {"token_ids": ids, "padding_mask": mask}

            def ours_with(fused=True, padding_free="auto", attention="per_sequence", threads=None):
                def run():
                    previous_fused = dense.set_onednn_enabled(fused)
                    previous_pf = ours.padding_free
                    previous_threads = torch.get_num_threads()
                    ours.padding_free = padding_free
                    if threads:
                        torch.set_num_threads(threads)
                    try:
                        with attention_variant(attention):
                            return ours(inputs)
                    finally:
                        torch.set_num_threads(previous_threads)
                        ours.padding_free = previous_pf
                        dense.set_onednn_enabled(previous_fused)
                return run

            functions = {
                "transformers": lambda: peer(input_ids=ids, attention_mask=mask).last_hidden_state,
                "default": ours_with(),
                "fusion_off": ours_with(fused=False),
                "padded": ours_with(padding_free=False),
                "padded_fusion_off": ours_with(fused=False, padding_free=False),
            }
            if fill < 1.0:
                functions["padding_free"] = ours_with(padding_free=True)
                functions["padding_free_repadded_attention"] = ours_with(padding_free=True, attention="repadded")
                functions["padding_free_repadded_fusion_off"] = ours_with(fused=False, padding_free=True, attention="repadded")
            if torch.get_num_threads() > 1:
                functions["default_1_thread"] = ours_with(threads=1)
                functions["fusion_off_1_thread"] = ours_with(fused=False, threads=1)
            minima = {}
            with torch.inference_mode():
                times = interleaved(functions, args.model_repeats, minima=minima)
            tokens = int(lengths.sum())
            row = {"section": "model", "dtype": dtype_name, "batch": batch, "seq": seq,
                   "fill": round(tokens / (batch * seq), 3), "layers": layers,
                   "ms": {name: 1e3 * t for name, t in times.items()},
                   "min_ms": {name: 1e3 * t for name, t in minima.items()},
                   "vs_transformers": {name: times["transformers"] / t for name, t in times.items()}}
            rows.append(row)
            print(f"  model {dtype_name:8s} {batch}x{seq} fill {row['fill']:.2f}: "
                  + "  ".join(f"{name} {1e3 * t:.0f}ms ({row['vs_transformers'][name]:.2f}x)" for name, t in times.items()),
                  flush=True)
        del peer, ours
    return rows


# ---------------------------------------------------------------------------- summary


def _table(header: list, rows: list) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


FIRST_CALL_PATHS = ("plain", "fused", "packed_fused", "mkl_packed")


def summarize(results: dict, statistic: str = "ms") -> str:
    """Markdown tables from a results JSON: per ISA, the dense paths summed over the four
    layers of one encoder layer (times vs plain), first-call costs, int8 kernels (speed vs
    float32, relative error), whole-model variants. `statistic`: "ms" (medians) or "min_ms"."""
    out = []
    for run in results["runs"]:
        cpu = run["cpu"]
        out.append(f"#### {run['isa']}: {cpu['cpu_model']} [{cpu['cpu_kind']}], {cpu['torch_threads']} thread(s), "
                   f"torch {cpu['torch']}\n")
        dense = [r for r in run["rows"] if r["section"] == "dense"]
        if dense:
            rows, keys = [], sorted({(r["dtype"], str(r["tokens"])) for r in dense}, key=lambda k: (k[0], len(k[1]), k[1]))
            paths = ["plain", "fused", "packed_fused", "mkl_packed"]
            for dtype, tokens in keys:
                subset = [r for r in dense if r["dtype"] == dtype and str(r["tokens"]) == tokens]
                total = {p: sum(r[statistic].get(p, float("nan")) for r in subset) for p in paths}
                present = {p: t for p, t in total.items() if t == t}
                best = min(present, key=present.get)
                label = "~2000, new M each call" if tokens == "vary2000" else tokens
                rows.append([dtype, label, f"{total['plain']:.1f}"]
                            + [f"{total['plain'] / total[p]:.2f}x" if p in present else "-" for p in paths[1:]]
                            + [best])
            out.append("Dense layers of one encoder layer (qkv + attention output + residual, FFN in + GELU, "
                       "FFN out + residual), summed; speed relative to plain:\n")
            out.append(_table(["dtype", "tokens M", "plain ms", "fused", "packed_fused", "mkl_packed", "fastest"], rows))
            out.append("")
        first = [r for r in run["rows"] if r["section"] == "first_call"]
        if first:
            rows = []
            for dtype in sorted({r["dtype"] for r in first}):
                subset = [r for r in first if r["dtype"] == dtype]
                cells = []
                for p in FIRST_CALL_PATHS:
                    if p not in subset[0]["extra_ms"]:
                        cells.append("-")
                        continue
                    extra = sum(r["extra_ms"][p] for r in subset)
                    steady = sum(r["steady_ms"][p] for r in subset)
                    cells.append(f"+{extra:.1f} ms ({100 * extra / steady:.0f} %)")
                rows.append([dtype, *cells])
            out.append("First call at a new token count (~2000), extra over the second call, summed over the "
                       "four layers (share of the steady time):\n")
            out.append(_table(["dtype", *FIRST_CALL_PATHS], rows))
            out.append("")
        int8 = [r for r in run["rows"] if r["section"] == "int8"]
        if int8:
            kernels = [k for k in int8[0]["ms"] if k != "float32"]
            accuracy_only = [k for k in int8[0]["relative_error"] if k not in int8[0]["ms"]]
            rows = []
            for tokens in sorted({str(r["tokens"]) for r in int8}, key=lambda t: (len(t), t)):
                subset = [r for r in int8 if str(r["tokens"]) == tokens]
                fp32 = sum(r[statistic]["float32"] for r in subset)
                cells = []
                for k in kernels:
                    t = sum(r[statistic].get(k, float("nan")) for r in subset)
                    cells.append(f"{fp32 / t:.2f}x" if t == t else "-")
                rows.append([tokens, f"{fp32:.1f}", *cells])
            errors = ["rel. error", "-"] + [f"{max(r['relative_error'].get(k, float('nan')) for r in int8):.4f}" for k in kernels]
            out.append("int8 kernels (fbgemm, onednn, qlinear: roberta_torch's; ao_x86: torch.ao's meta-engine; "
                       "torchao Int8DynamicActivationInt8WeightConfig, eager; onnxruntime: quantize_dynamic), the four "
                       "layers summed, speed relative to float32 F.linear (last row: largest relative error against "
                       "float32):\n")
            out.append(_table(["tokens M", "float32 ms", *kernels], rows + [errors]))
            if accuracy_only:
                out.append("\nRelative error of the saturation-free settings (7-bit weights `_w7`, 7-bit activations "
                           "`_a7`; same kernels, same speed): "
                           + ", ".join(f"{k} {max(r['relative_error'][k] for r in int8):.4f}" for k in accuracy_only))
            out.append("")
        model = [r for r in run["rows"] if r["section"] == "model"]
        if model:
            rows = []
            for r in model:
                cells = ", ".join(f"{name} {r[statistic][name]:.0f} ms ({r[statistic]['transformers'] / r[statistic][name]:.2f}x)"
                                  for name in r[statistic])
                rows.append([r["dtype"], f"{r['batch']}x{r['seq']}", f"{100 * r['fill']:.0f} %", cells])
            out.append(f"Whole model ({model[0]['layers']} layers), time and speed relative to transformers:\n")
            out.append(_table(["dtype", "batch", "fill", "variants"], rows))
            out.append("")
    return "\n".join(out)


SECTIONS = {"dense": run_dense, "first_call": run_first_call, "int8": run_int8, "model": run_model}


def child(args) -> None:
    """Run the sections in this process (its ISA caps were set by the parent)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    record = cpu_info.cpu_record()
    print(f"[{args.isa}] {cpu_info.describe(record)}", flush=True)
    rows = []
    for section in args.sections:
        rows += SECTIONS[section](args)
        # Written after every section: an interrupted run keeps what it measured.
        pathlib.Path(args.child_out).write_text(json.dumps({"isa": args.isa, "cpu": record, "rows": rows}, indent=1))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--isas", default="native,avx2", help="comma list of: " + ",".join(cpu_info.ISA_CAPS))
    parser.add_argument("--sections", default=",".join(SECTIONS))
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--tokens", default=",".join(map(str, TOKENS)))
    parser.add_argument("--int8-tokens", default=",".join(map(str, INT8_TOKENS)))
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--model-repeats", type=int, default=5)
    parser.add_argument("--first-call-samples", type=int, default=7)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and repeats: checks the script runs")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--summarize", type=pathlib.Path, help="print the markdown tables of a results JSON and exit")
    parser.add_argument("--statistic", default="ms", choices=("ms", "min_ms"), help="medians or minima in --summarize")
    parser.add_argument("--isa", help=argparse.SUPPRESS)
    parser.add_argument("--child-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.sections = args.sections.split(",")
    args.dtypes = args.dtypes.split(",")
    args.tokens = [t if t == "vary2000" else int(t) for t in args.tokens.split(",")]
    args.int8_tokens = [t if t == "vary2000" else int(t) for t in args.int8_tokens.split(",")]
    if args.quick:
        args.tokens, args.int8_tokens = [128, "vary2000"], [128]
        args.repeats, args.model_repeats, args.first_call_samples = 2, 1, 2
    if args.summarize:
        print(summarize(json.loads(args.summarize.read_text()), args.statistic))
        return
    if args.child_out:
        child(args)
        return

    results = {"argv": sys.argv[1:] if argv is None else argv, "runs": []}
    for isa in args.isas.split(","):
        env = {k: v for k, v in os.environ.items() if k not in cpu_info.ISA_CAPS["avx2"]}
        env.update(cpu_info.ISA_CAPS[isa])
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
            child_out = handle.name
        command = [sys.executable, __file__, "--isa", isa, "--child-out", child_out,
                   *[a for a in (sys.argv[1:] if argv is None else argv)]]
        done = subprocess.run(command, env=env)
        if pathlib.Path(child_out).stat().st_size:
            results["runs"].append(json.loads(pathlib.Path(child_out).read_text()))
        os.unlink(child_out)
        if done.returncode:
            print(f"the {isa} run failed (exit {done.returncode}); keeping what it measured", flush=True)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / ("cpu_paths_quick.json" if args.quick else "cpu_paths.json")
    path.write_text(json.dumps(results, indent=1))
    print(summarize(results))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
