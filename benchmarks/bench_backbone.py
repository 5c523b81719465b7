"""roberta_torch against transformers' RobertaModel (attn_implementation="sdpa").

Same weights (the transformers checkpoint is loaded into roberta_torch through its own
converter), same dtype, inference mode (or a training step with --train), one process,
interleaved runs, medians, ratios. Scenarios: batch x seq in (1x128, 8x128, 8x512, 32x256),
dense and padded with uniform lengths whose mean fill is 50 % and 25 %.

Throughput counts real tokens only (padding is not work a user wants). Achieved FLOP/s are
reported against the machine's measured matrix-product peak in the same dtype.

    python benchmarks/bench_backbone.py --device cpu --dtypes float32,bfloat16 --out benchmarks/results
    python benchmarks/bench_backbone.py --device cuda --dtypes bfloat16 --out benchmarks/results_gpu
    python benchmarks/bench_backbone.py --train ...   # forward + backward + AdamW step
    python benchmarks/bench_backbone.py --compile --shapes 8x128,16x256 --fills 1.0,0.5,0.25 ...

--onnx and --int8 (CPU, float32, inference) add interleaved rows for what CPU users pick:
ONNX Runtime float32 and dynamic int8 on the transformers model exported to ONNX
(onnx_peers.py), and roberta_torch after `quantize("int8")`; each row also records how close
their outputs are to roberta_torch float32 (max |difference|, mean-pooled cosine).

    python benchmarks/bench_backbone.py --size base6 --dtypes float32 --shapes 8x128,16x256 \
        --fills 1.0,0.5 --onnx --int8 --repeats 7 --out benchmarks/results

Every CPU result records the CPU model and its kernel flags (cpu_info.py).

--compile times four models interleaved: both eager and both under `torch.compile` (default
mode, dynamic=None, one compiled object per model reused across the scenarios, as a training
loop would), plus roberta_torch compiled on the same batch packed (`pack_padded_batch`). It
reports the first-call time of each compiled model per scenario (compile or recompile
included) and how many graphs dynamo built for it.

Writes <out>/backbone_<device>[_train].json and .png and prints a table.
"""

from __future__ import annotations

import argparse
import copy
import json
import pathlib
import platform
import statistics
import sys
import tempfile
import time

import torch

import roberta_torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import cpu_info  # noqa: E402

SIZES = {
    # name: (vocab, layers, heads, hidden, intermediate, max length)
    "base": (50265, 12, 12, 768, 3072, 512),
    "base6": (50265, 6, 12, 768, 3072, 512),  # issue 21's CPU figures: 6-layer roberta-base size
    "tiny": (1000, 2, 2, 64, 128, 512),  # smoke test of the script itself
}
SHAPES = [(1, 128), (8, 128), (8, 512), (32, 256)]
FILLS = [1.0, 0.5, 0.25]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def build_models(size: str, dtype: torch.dtype, device: str, train: bool):
    from transformers import RobertaConfig, RobertaModel

    vocab, layers, heads, hidden, intermediate, max_len = SIZES[size]
    config = RobertaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        max_position_embeddings=max_len + 2,
        type_vocab_size=1,
        layer_norm_eps=1e-5,
        pad_token_id=1,
        attn_implementation="sdpa",
    )
    torch.manual_seed(0)
    peer = RobertaModel(config, add_pooling_layer=False)
    with tempfile.TemporaryDirectory() as directory:
        peer.save_pretrained(directory)
        ours = roberta_torch.RobertaBackbone.from_preset(directory, dtype=dtype)
    peer = peer.to(device=device, dtype=dtype)
    ours = ours.to(device)
    for model in (peer, ours):
        model.train(train)
    return peer, ours


def make_batch(batch: int, seq: int, fill: float, vocab: int, device: str, seed: int = 0):
    """Uniformly spread lengths whose mean is `fill * seq` (every row full when fill == 1)."""
    g = torch.Generator().manual_seed(seed)
    if fill >= 1.0:
        lengths = torch.full((batch,), seq)
    elif batch == 1:
        lengths = torch.tensor([max(1, round(fill * seq))])
    else:
        # Uniform on [1, 2*fill*seq - 1]: mean fill*seq.
        high = max(1.0, 2 * fill * seq - 1)
        lengths = torch.linspace(1, high, batch).round().long()
        lengths = lengths[torch.randperm(batch, generator=g)]
    ids = torch.randint(3, vocab, (batch, seq), generator=g)
    mask = (torch.arange(seq)[None, :] < lengths[:, None]).long()
    ids = torch.where(mask.bool(), ids, torch.ones_like(ids))  # pad id 1, as tokenizers do
    return ids.to(device), mask.to(device), lengths


def model_flops(lengths, layers: int, hidden: int, intermediate: int) -> float:
    """Forward FLOPs on the real tokens: the dense layers plus attention (QK^T and PV)."""
    tokens = float(lengths.sum())
    dense = 2.0 * tokens * layers * (4 * hidden * hidden + 2 * hidden * intermediate)
    attention = 4.0 * float((lengths.double() ** 2).sum()) * hidden * layers
    return dense + attention


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def matmul_peak(dtype: torch.dtype, device: str, n: int = 2048, repeats: int = 5) -> float:
    """Measured FLOP/s of a large square matrix product in `dtype`."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    a @ b
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        synchronize(device)
        times.append(time.perf_counter() - start)
    return 2.0 * n**3 / min(times)


def step_functions(peer, ours, ids, mask, train: bool):
    valid = mask.bool()

    def run_peer():
        return peer(input_ids=ids, attention_mask=mask).last_hidden_state

    def run_ours():
        return ours({"token_ids": ids, "padding_mask": mask})

    if not train:
        return run_peer, run_ours

    optimizers = {id(m): torch.optim.AdamW(m.parameters(), lr=1e-5) for m in (peer, ours)}

    def train_step(model, forward):
        def step():
            optimizer = optimizers[id(model)]
            optimizer.zero_grad(set_to_none=True)
            loss = forward()[valid].float().pow(2).mean()
            loss.backward()
            optimizer.step()
        return step

    return train_step(peer, run_peer), train_step(ours, run_ours)


def time_interleaved(functions, repeats: int, device: str, warmup: int = 1):
    """Median seconds of each function, runs interleaved (ABBA order) to share drift."""
    times = [[] for _ in functions]
    for _ in range(warmup):
        for fn in functions:
            fn()
    synchronize(device)
    for r in range(repeats):
        order = range(len(functions)) if r % 2 == 0 else reversed(range(len(functions)))
        for i in order:
            start = time.perf_counter()
            functions[i]()
            synchronize(device)
            times[i].append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def packed_step_function(ours, ids, mask, train: bool):
    packed = roberta_torch.pack_padded_batch({"token_ids": ids, "padding_mask": mask})
    packed["max_seqlen"] = ids.shape[1]  # the padded length: a bound that needs no sync

    def run_packed():
        return ours(packed)

    if not train:
        return run_packed
    optimizer = torch.optim.AdamW(ours.parameters(), lr=1e-5)

    def step():
        optimizer.zero_grad(set_to_none=True)
        run_packed().float().pow(2).mean().backward()
        optimizer.step()

    return step


def first_call(fn, device: str):
    """(seconds, graphs dynamo built) of one call: the compile or recompile cost."""
    from torch._dynamo.utils import counters

    before = counters["stats"]["unique_graphs"]
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start, counters["stats"]["unique_graphs"] - before


def run_compiled(args) -> dict:
    device = args.device
    results = {
        "device": device,
        "machine": torch.cuda.get_device_name() if device == "cuda" else f"{cpu_name()}, {torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "size": args.size,
        "mode": ("train step (fwd+bwd+AdamW)" if args.train else "inference") + ", compiled",
        "rows": [],
    }
    if device == "cpu":
        results["cpu"] = cpu_info.cpu_record()
    vocab = SIZES[args.size][0]
    shapes = [tuple(int(x) for x in s.split("x")) for s in args.shapes.split(",")] if args.shapes else [(8, 128), (16, 256)]
    fills = [float(f) for f in args.fills.split(",")] if args.fills else [1.0, 0.5, 0.25]
    names = ("transformers", "roberta_torch", "transformers_compiled", "roberta_torch_compiled", "roberta_torch_compiled_packed")
    for dtype_name in args.dtypes.split(","):
        dtype = DTYPES[dtype_name]
        torch._dynamo.reset()
        peer, ours = build_models(args.size, dtype, device, args.train)
        compiled_peer, compiled_ours = torch.compile(peer), torch.compile(ours)
        graphs = dict.fromkeys(names[2:], 0)
        for batch, seq in shapes:
            for fill in fills:
                if fill < 1.0 and (batch, seq) == shapes[0] and len(shapes) > 1:
                    continue  # the small shape runs dense only (keeps the run affordable)
                if fill >= 1.0 and (batch, seq) != shapes[0]:
                    continue
                ids, mask, lengths = make_batch(batch, seq, fill, vocab, device)
                run_peer, run_ours = step_functions(peer, ours, ids, mask, args.train)
                run_cpeer, run_cours = step_functions(compiled_peer, compiled_ours, ids, mask, args.train)
                run_packed = packed_step_function(compiled_ours, ids, mask, args.train)
                functions = (run_peer, run_ours, run_cpeer, run_cours, run_packed)
                grad_mode = torch.enable_grad if args.train else torch.inference_mode
                row = {"dtype": dtype_name, "batch": batch, "seq": seq,
                       "fill": round(int(lengths.sum()) / (batch * seq), 3)}
                with grad_mode():
                    for name, fn in zip(names[2:], functions[2:]):
                        seconds, built = first_call(fn, device)
                        graphs[name] += built
                        row[f"{name}_first_call_s"] = seconds
                        row[f"{name}_graphs_so_far"] = graphs[name]
                    times = time_interleaved(functions, args.repeats, device)
                for name, t in zip(names, times):
                    row[f"{name}_s"] = t
                row["eager_speedup"] = row["transformers_s"] / row["roberta_torch_s"]
                row["compiled_speedup"] = row["transformers_compiled_s"] / row["roberta_torch_compiled_s"]
                row["packed_speedup"] = row["transformers_compiled_s"] / row["roberta_torch_compiled_packed_s"]
                results["rows"].append(row)
                print(
                    f"{dtype_name:9s} {batch:3d}x{seq:<4d} fill {row['fill']:.2f}  "
                    f"eager x{row['eager_speedup']:.2f}  compiled x{row['compiled_speedup']:.2f}  "
                    f"packed x{row['packed_speedup']:.2f}  "
                    + "  ".join(f"{n}: {row[n + '_first_call_s']:.0f}s/{row[n + '_graphs_so_far']}g" for n in names[2:]),
                    flush=True,
                )
        del peer, ours, compiled_peer, compiled_ours
    return results


def cpu_peers(args, peer, ours, dtype_name: str, directory: pathlib.Path) -> dict:
    """The extra float32 CPU rows: ONNX Runtime fp32 / int8 (--onnx) and roberta_torch int8
    (--int8, a quantized copy of `ours`). name -> f(ids, mask) -> last hidden state."""
    extras = {}
    if args.device != "cpu" or dtype_name != "float32":
        return extras
    if args.onnx:
        from onnx_peers import onnx_peers

        extras.update(onnx_peers(peer, directory))
    if args.epilogues:
        for path in ("fused", "plain"):
            extras[f"roberta_torch_{path}"] = lambda ids, mask, path=path: forced_epilogue(ours, path, ids, mask)
    if args.int8:
        quantized = copy.deepcopy(ours).quantize("int8")
        extras["roberta_torch_int8"] = lambda ids, mask: quantized({"token_ids": ids, "padding_mask": mask})
    return extras


def forced_epilogue(model, path: str, ids, mask):
    with roberta_torch.dispatch.override(dense_epilogue=path):
        return model({"token_ids": ids, "padding_mask": mask})


def agreement(actual: torch.Tensor, expected: torch.Tensor, mask: torch.Tensor) -> dict:
    """How close a peer's last hidden state is to roberta_torch float32 on the valid tokens:
    max |difference| and the smallest cosine of the mean-pooled rows."""
    valid = mask.bool()
    weights = valid[..., None].float()
    pooled = [(t.float() * weights).sum(1) / weights.sum(1) for t in (actual, expected)]
    cosine = torch.nn.functional.cosine_similarity(*pooled).min()
    return {"max_abs_diff": float((actual.float() - expected.float())[valid].abs().max()),
            "min_mean_pooled_cosine": float(cosine)}


def run(args) -> dict:
    device = args.device
    results = {
        "device": device,
        "machine": torch.cuda.get_device_name() if device == "cuda" else f"{cpu_name()}, {torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "size": args.size,
        "mode": "train step (fwd+bwd+AdamW)" if args.train else "inference",
        "rows": [],
        "matmul_peak_tflops": {},
    }
    if device == "cpu":
        results["cpu"] = cpu_info.cpu_record()
        results["cpu_choices"] = []  # what "auto" measured (cpu_choice.py), filled at the end
    vocab, layers, _, hidden, intermediate, _ = SIZES[args.size]
    shapes = [tuple(int(x) for x in s.split("x")) for s in args.shapes.split(",")] if args.shapes else SHAPES
    fills = [float(f) for f in args.fills.split(",")] if args.fills else FILLS
    for dtype_name in args.dtypes.split(","):
        dtype = DTYPES[dtype_name]
        peak = matmul_peak(dtype, device)
        results["matmul_peak_tflops"][dtype_name] = peak / 1e12
        peer, ours = build_models(args.size, dtype, device, args.train)
        with tempfile.TemporaryDirectory() as directory:
            extras = {} if args.train else cpu_peers(args, peer, ours, dtype_name, pathlib.Path(directory))
            for batch, seq in shapes:
                for fill in fills:
                    ids, mask, lengths = make_batch(batch, seq, fill, vocab, device)
                    run_peer, run_ours = step_functions(peer, ours, ids, mask, args.train)
                    extra_runs = [lambda fn=fn: fn(ids, mask) for fn in extras.values()]
                    grad_mode = torch.enable_grad() if args.train else torch.inference_mode()
                    with grad_mode:
                        t_peer, t_ours, *t_extras = time_interleaved((run_peer, run_ours, *extra_runs), args.repeats, device)
                        reference = run_ours() if extras else None
                        agreements = {name: agreement(fn(), reference, mask) for name, fn in zip(extras, extra_runs)}
                    tokens = int(lengths.sum())
                    flops = model_flops(lengths, layers, hidden, intermediate) * (3.0 if args.train else 1.0)
                    row = {
                        "dtype": dtype_name,
                        "batch": batch,
                        "seq": seq,
                        "fill": round(tokens / (batch * seq), 3),
                        "transformers_s": t_peer,
                        "roberta_torch_s": t_ours,
                        "transformers_tokens_per_s": tokens / t_peer,
                        "roberta_torch_tokens_per_s": tokens / t_ours,
                        "speedup": t_peer / t_ours,
                        "roberta_torch_tflops": flops / t_ours / 1e12,
                        "fraction_of_matmul_peak": flops / t_ours / peak,
                    }
                    for name, t in zip(extras, t_extras):
                        row[f"{name}_s"] = t
                        row[f"{name}_vs_transformers"] = t_peer / t
                        row[f"{name}_agreement"] = agreements[name]
                    if "onnxruntime_fp32_s" in row:
                        row["roberta_torch_vs_onnxruntime_fp32"] = row["onnxruntime_fp32_s"] / t_ours
                    if "roberta_torch_int8_s" in row:
                        row["int8_vs_float32"] = t_ours / row["roberta_torch_int8_s"]
                        if "onnxruntime_int8_s" in row:
                            row["int8_vs_onnxruntime_int8"] = row["onnxruntime_int8_s"] / row["roberta_torch_int8_s"]
                    results["rows"].append(row)
                    print(
                        f"{dtype_name:9s} {batch:3d}x{seq:<4d} fill {row['fill']:.2f}  "
                        f"transformers {row['transformers_tokens_per_s']:9.0f} tok/s  "
                        f"roberta_torch {row['roberta_torch_tokens_per_s']:9.0f} tok/s  "
                        f"x{row['speedup']:.2f}  {row['roberta_torch_tflops']:.3f} TFLOP/s "
                        f"({100 * row['fraction_of_matmul_peak']:.0f}% of peak)"
                        + "".join(f"  {name} x{row[name + '_vs_transformers']:.2f}" for name in extras),
                        flush=True,
                    )
        del peer, ours, extras
    if device == "cpu":
        from roberta_torch import cpu_choice

        results["cpu_choices"] = [
            {"point": point, "key": list(key), "choice": c.choice, "reason": c.reason,
             "timings_s": c.timings, "measuring_s": spent}
            for point, key, c, spent in cpu_choice.measurements()
        ]
        for entry in results["cpu_choices"]:
            print(f"  {entry['point']} {entry['key']}: {entry['reason']} ({1e3 * entry['measuring_s']:.0f} ms)")
    return results


def plot(results: dict, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["rows"]
    dtypes = sorted({r["dtype"] for r in rows})
    fig, axes = plt.subplots(1, len(dtypes), figsize=(7 * len(dtypes), 4.5), squeeze=False)
    for ax, dtype in zip(axes[0], dtypes):
        subset = [r for r in rows if r["dtype"] == dtype]
        labels = [f"{r['batch']}x{r['seq']}\n{int(100 * r['fill'])}%" for r in subset]
        ax.bar(range(len(subset)), [r["speedup"] for r in subset], color="tab:blue")
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(subset)), labels, fontsize=7)
        ax.set_ylabel("speedup vs transformers (sdpa)")
        ax.set_title(f"{results['mode']}, {dtype}, {results['device']}")
    fig.suptitle(results["machine"], fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--size", default="base", choices=sorted(SIZES))
    parser.add_argument("--shapes", default="", help="e.g. 8x128,32x256 (default: the four scenarios)")
    parser.add_argument("--fills", default="", help="e.g. 1.0,0.5,0.25")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--train", action="store_true", help="time a training step instead")
    parser.add_argument("--compile", action="store_true", help="compiled rows (see above)")
    parser.add_argument("--onnx", action="store_true",
                        help="CPU, float32: add ONNX Runtime fp32 and dynamic-int8 rows (see onnx_peers.py)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch (and ONNX Runtime) threads; default: torch's choice. On a shared machine one "
                             "thread per process keeps ratios stable: a parallel region waits for its slowest thread")
    parser.add_argument("--int8", action="store_true", help="CPU, float32: add roberta_torch quantize('int8') rows")
    parser.add_argument("--epilogues", action="store_true",
                        help="CPU: add roberta_torch rows with the dense epilogue forced fused and plain (the "
                             "roberta_torch row itself is 'auto': measured per machine, cpu_choice.py)")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = run_compiled(args) if args.compile else run(args)
    stem = f"backbone_{args.device}{'_train' if args.train else ''}{'_compiled' if args.compile else ''}"
    stem += "_peers" if (args.onnx or args.int8) else ""
    (out / f"{stem}.json").write_text(json.dumps(results, indent=2))
    if not args.compile:
        try:
            plot(results, out / f"{stem}.png")
        except ImportError:  # matplotlib is optional
            print("matplotlib is not installed: no plot")
    print(f"wrote {out / (stem + '.json')} and {out / (stem + '.png')}")


if __name__ == "__main__":
    main()
