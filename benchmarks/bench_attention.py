"""Benchmark the Triton FlashAttention kernels against torch SDPA (GPU only).

Counts only useful work: forward FLOPs = 4 * sum_b(len_b^2) * heads * head_dim, backward
= 2.5x that, forward+backward = 3.5x. Implementations:

* `triton_padded`: `flash_attention(q, k, v, key_lengths)` on the padded batch.
* `triton_masked`: `flash_attention(q, k, v, key_padding_mask=mask)`, the path the model
  takes for every padded batch; `mask` is the same right padding (padded batches only).
* `triton_scattered`: the same call with the valid tokens of each row scattered at random
  (same counts, so the same useful work; padded batches only).
* `triton_varlen`: `flash_attention_varlen` on the same tokens packed.
* `sdpa_flash`: SDPA restricted to its flash backend (unpadded batches only: it takes no mask).
* `sdpa_masked`: SDPA with a boolean key-padding mask (padded batches; PyTorch then picks
  its memory-efficient or math backend).

Usage:
    python benchmarks/bench_attention.py --out benchmarks/results/h100
    python benchmarks/bench_attention.py --sweep-configs   # time alternative tile tables
    python benchmarks/bench_attention.py --aot-compile-check  # no GPU needed: ptxas sm_90 resource use

Writes `attention.json` and `attention.png` (matplotlib, Agg) into `--out` and prints a
table plus the pass/fail of the targets listed in benchmarks/README.md.
"""

import argparse
import itertools
import json
import os
import sys
import time

import torch

DTYPE = torch.bfloat16
HEAD_DIM = 64
# `--smoke` runs every implementation once, untimed, on tiny shapes: on the CPU under
# TRITON_INTERPRET=1 it checks the script itself before any GPU time is spent on it.
SMOKE = False


def _device():
    return "cuda" if torch.cuda.is_available() else "cpu"


def _device_name():
    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu (Triton interpreter, smoke run)"


def _lengths(batch, seqlen, padding, generator):
    """Lengths with mean about (1 - padding) * seqlen; the first sequence is full length."""
    if padding == 0:
        return torch.full((batch,), seqlen, dtype=torch.int32)
    low = max(1, round(seqlen * (1 - 2 * padding)))
    lengths = torch.randint(low, seqlen + 1, (batch,), generator=generator, dtype=torch.int32)
    lengths[0] = seqlen
    return lengths


def _make_inputs(batch, seqlen, heads, padding, seed=0):
    generator = torch.Generator().manual_seed(seed)
    lengths = _lengths(batch, seqlen, padding, generator)
    q, k, v = (torch.randn(batch, seqlen, heads, HEAD_DIM, device=_device(), dtype=DTYPE).requires_grad_()
               for _ in range(3))
    return q, k, v, lengths.to(_device())


def _pack(x, lengths):
    valid = torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]
    return x.detach()[valid].requires_grad_()


def _implementations(q, k, v, lengths):
    """name -> callable returning the output; None for combinations that do not apply."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    import torch.nn.functional as F

    from roberta_torch.kernels import flash_attention, flash_attention_varlen

    seqlen = q.shape[1]
    padded = bool((lengths < seqlen).any())
    cu_seqlens = torch.nn.functional.pad(lengths.cumsum(0), (1, 0)).to(torch.int32)
    packed = [_pack(x, lengths) for x in (q, k, v)]
    key_mask = (torch.arange(seqlen, device=q.device)[None, :] < lengths[:, None])[:, None, None, :]

    def sdpa_flash():
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION] if q.is_cuda else [SDPBackend.MATH]):
            return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))

    def sdpa_masked():
        return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                              attn_mask=key_mask)

    scattered = torch.rand(key_mask.shape[0], seqlen, device=q.device).argsort(dim=1) < lengths[:, None]

    return {
        "triton_padded": (lambda: flash_attention(q, k, v, lengths, validate_lengths=False), (q, k, v)),
        "triton_masked": (lambda: flash_attention(q, k, v, key_padding_mask=key_mask[:, 0, 0, :]), (q, k, v))
        if padded else None,
        "triton_scattered": (lambda: flash_attention(q, k, v, key_padding_mask=scattered), (q, k, v))
        if padded else None,
        "triton_varlen": (lambda: flash_attention_varlen(*packed, cu_seqlens, seqlen, validate_lengths=False),
                          packed),
        "sdpa_flash": None if padded else (sdpa_flash, (q, k, v)),
        "sdpa_masked": (sdpa_masked, (q, k, v)) if padded else None,
    }


def _time_ms(run, leaves, mode):
    if SMOKE:  # one untimed call of what would be timed
        out = run()
        if mode != "fwd":
            out.backward(torch.ones_like(out))
        return 1.0
    from triton.testing import do_bench

    if mode == "fwd":
        with torch.no_grad():
            return do_bench(run)
    if mode == "bwd":
        out = run()
        grad = torch.randn_like(out)
        return do_bench(lambda: out.backward(grad, retain_graph=True), grad_to_none=list(leaves))
    grad = torch.randn_like(run())
    return do_bench(lambda: run().backward(grad), grad_to_none=list(leaves))


def _useful_flops(lengths, heads, mode):
    forward = 4.0 * float((lengths.double() ** 2).sum()) * heads * HEAD_DIM
    return forward * {"fwd": 1.0, "bwd": 2.5, "fwd+bwd": 3.5}[mode]


def _check_against_sdpa(q, k, v, lengths):
    """Max |triton - SDPA| over valid rows, right-padded and scattered masks (a smoke test;
    tests/ hold the real checks)."""
    import torch.nn.functional as F

    from roberta_torch.kernels import flash_attention

    seqlen = q.shape[1]
    right = torch.arange(seqlen, device=q.device)[None, :] < lengths[:, None]
    scattered = torch.rand(right.shape, device=q.device).argsort(dim=1) < lengths[:, None]
    errors = []
    with torch.no_grad():
        for valid, ours in ((right, flash_attention(q, k, v, lengths)),
                            (scattered, flash_attention(q, k, v, key_padding_mask=scattered))):
            ref = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                                 attn_mask=valid[:, None, None, :]).transpose(1, 2)
            errors.append((ours.float() - ref.float())[valid].abs().max().item())
    return max(errors)


def run_benchmark(args):
    records = []
    header = f"{'heads':>5} {'seq':>5} {'batch':>5} {'pad%':>4} {'mode':>8} {'impl':>14} {'ms':>8} {'TFLOP/s':>8}"
    print(header)
    for heads, seqlen, padding in itertools.product(args.heads, args.seqlens, args.paddings):
        batch = max(1, args.tokens // seqlen)
        q, k, v, lengths = _make_inputs(batch, seqlen, heads, padding)
        max_error = _check_against_sdpa(q, k, v, lengths)
        for mode in ("fwd", "bwd", "fwd+bwd"):
            for name, entry in _implementations(q, k, v, lengths).items():
                if entry is None:
                    continue
                run, leaves = entry
                ms = _time_ms(run, leaves, mode)
                tflops = _useful_flops(lengths, heads, mode) / (ms * 1e-3) / 1e12
                records.append(dict(heads=heads, seqlen=seqlen, batch=batch, padding=padding, mode=mode, impl=name,
                                    ms=ms, tflops=tflops, valid_tokens=int(lengths.sum()),
                                    max_abs_diff_vs_sdpa=max_error))
                print(f"{heads:>5} {seqlen:>5} {batch:>5} {round(padding * 100):>4} {mode:>8} {name:>14} "
                      f"{ms:>8.3f} {tflops:>8.1f}", flush=True)
        del q, k, v
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return records


def _lookup(records, **where):
    for record in records:
        if all(record[key] == value for key, value in where.items()):
            return record["tflops"]
    return None


def print_targets(records, args):
    """The H100 bf16 targets of benchmarks/README.md, evaluated on these records."""
    checks = []
    for heads, seqlen in itertools.product(args.heads, args.seqlens):
        ours = _lookup(records, heads=heads, seqlen=seqlen, padding=0, mode="fwd", impl="triton_padded")
        sdpa = _lookup(records, heads=heads, seqlen=seqlen, padding=0, mode="fwd", impl="sdpa_flash")
        if seqlen >= 1024 and ours is not None:
            checks.append((f"fwd h{heads} s{seqlen} >= 350 TFLOP/s", ours >= 350, f"{ours:.0f}"))
            if sdpa:
                checks.append((f"fwd h{heads} s{seqlen} >= 0.95x sdpa_flash", ours >= 0.95 * sdpa,
                               f"{ours / sdpa:.2f}x"))
        both = _lookup(records, heads=heads, seqlen=seqlen, padding=0, mode="fwd+bwd", impl="triton_padded")
        if seqlen == 512 and both is not None:
            checks.append((f"fwd+bwd h{heads} s512 >= 200 TFLOP/s", both >= 200, f"{both:.0f}"))
        for padding in args.paddings:
            if padding == 0:
                continue
            dense = _lookup(records, heads=heads, seqlen=seqlen, padding=0, mode="fwd", impl="triton_padded")
            padded = _lookup(records, heads=heads, seqlen=seqlen, padding=padding, mode="fwd", impl="triton_padded")
            masked = _lookup(records, heads=heads, seqlen=seqlen, padding=padding, mode="fwd", impl="sdpa_masked")
            if dense and padded:
                checks.append((f"padded{round(padding * 100)} h{heads} s{seqlen} within 10% of dense",
                               padded >= 0.9 * dense, f"{padded / dense:.2f}x"))
            via_mask = _lookup(records, heads=heads, seqlen=seqlen, padding=padding, mode="fwd", impl="triton_masked")
            if via_mask and padded:
                checks.append((f"masked{round(padding * 100)} h{heads} s{seqlen} >= 0.95x key_lengths",
                               via_mask >= 0.95 * padded, f"{via_mask / padded:.2f}x"))
            if masked and padded:
                checks.append((f"padded{round(padding * 100)} h{heads} s{seqlen} >= 1.5x sdpa_masked",
                               padded >= 1.5 * masked, f"{padded / masked:.2f}x"))
    print("\nTargets (H100, bf16):")
    for label, passed, value in checks:
        print(f"  {'PASS' if passed else 'FAIL'}  {label}: {value}")
    return checks


def plot(records, path, args):
    try:
        import matplotlib
    except ImportError:
        print(f"matplotlib is not installed: no {path} (the JSON holds every number)")
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = ("fwd", "fwd+bwd")
    figure, axes = plt.subplots(len(modes), len(args.paddings), figsize=(5 * len(args.paddings), 8), squeeze=False)
    for row, mode in enumerate(modes):
        for column, padding in enumerate(args.paddings):
            axis = axes[row][column]
            for heads, impl in itertools.product(args.heads, ("triton_padded", "triton_masked", "triton_scattered",
                                                              "triton_varlen", "sdpa_flash", "sdpa_masked")):
                points = [(r["seqlen"], r["tflops"]) for r in records
                          if r["heads"] == heads and r["padding"] == padding and r["mode"] == mode and r["impl"] == impl]
                if points:
                    xs, ys = zip(*sorted(points))
                    axis.plot(xs, ys, marker="o", linestyle="-" if heads == args.heads[0] else "--",
                              label=f"{impl} h{heads}")
            axis.set_xscale("log", base=2)
            axis.set_title(f"{mode}, {round(padding * 100)}% padding")
            axis.set_xlabel("sequence length")
            axis.set_ylabel("useful TFLOP/s")
            axis.grid(True, alpha=0.3)
            axis.legend(fontsize=7)
    figure.suptitle(f"attention, bf16, head_dim {HEAD_DIM}, {_device_name()}")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def sweep_configs(args):
    """Time alternative tiles (BLOCK_M, BLOCK_N, warps, stages) for head dim 64, no dropout,
    each passed to the launchers as a modified copy of the GPU launch table."""
    from roberta_torch.kernels import flash_attn_triton as kernels

    candidates = {
        "forward": [(128, 64, 4, 3), (128, 64, 8, 3), (128, 128, 8, 3), (128, 64, 4, 4), (64, 64, 4, 3)],
        "backward_dkdv": [(32, 128, 8, 3), (32, 128, 4, 4), (64, 128, 8, 3), (16, 128, 8, 3), (32, 64, 4, 3)],
        "backward_dq": [(128, 32, 8, 3), (128, 32, 4, 3), (128, 64, 8, 3), (64, 64, 4, 3)],
    }
    heads, seqlen = args.heads[-1], 1024
    batch = max(1, args.tokens // seqlen)
    q, k, v, lengths = _make_inputs(batch, seqlen, heads, 0.0)
    packed = [x.detach().reshape(batch * seqlen, heads, HEAD_DIM) for x in (q, k, v)]
    bounds = lengths.to(torch.int32)
    layout = (bounds, None, False, batch, seqlen, HEAD_DIM ** -0.5, 0.0, None)
    out, lse_log2 = kernels.attention_forward(*packed, *layout)
    dout = torch.randn_like(out)
    runs = {
        "fwd": lambda table: kernels.attention_forward(*packed, *layout, launch_table=table),
        "bwd": lambda table: kernels.attention_backward(dout, *packed, out, lse_log2, *layout, launch_table=table),
    }
    base = kernels.GPU_LAUNCH_TABLE
    for kernel, configs in candidates.items():
        mode = "fwd" if kernel == "forward" else "bwd"
        for config in configs:
            table = base.replace(kernel, (64, False), config)
            try:
                from triton.testing import do_bench
                ms = do_bench(lambda: runs[mode](table))
                result = f"{_useful_flops(lengths, heads, mode) / (ms * 1e-3) / 1e12:7.1f} TFLOP/s ({mode})"
            except Exception as error:  # out of shared memory etc.: report and go on
                result = f"failed: {type(error).__name__}: {str(error).splitlines()[0][:100]}"
            print(f"{kernel}[(64, False)] = {config}: {result}", flush=True)


def aot_compile_check(head_dims=(32, 64, 80, 128), layouts=("padded", "varlen", "masked"), dropouts=(False, True)):
    """Compile every kernel variant for sm_90 ahead of time (no GPU needed) and report the
    ptxas register count, spill stack and shared memory of the configured tiles."""
    import re
    import subprocess
    import tempfile

    os.environ.pop("TRITON_INTERPRET", None)
    import triton
    from triton.backends.compiler import GPUTarget

    from roberta_torch.kernels import flash_attn_triton as kernels

    cuobjdump = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    kernel_pointers = {
        "forward": (kernels._attention_forward_kernel, ("Q", "K", "V", "Out")),
        "backward_dkdv": (kernels._attention_backward_dkdv_kernel, ("Q", "K", "V", "DOut", "DK", "DV")),
        "backward_dq": (kernels._attention_backward_dq_kernel, ("Q", "K", "V", "DOut", "DQ")),
    }
    table = kernels.GPU_LAUNCH_TABLE
    failures = 0
    for head_dim, layout, has_dropout in itertools.product(head_dims, layouts, dropouts):
        block_d = triton.next_power_of_2(head_dim)
        cells = []
        for table_name, (kernel, pointers) in kernel_pointers.items():
            tile = table.tile(table_name, block_d, has_dropout)
            has_mask = layout == "masked"
            # What a real launch passes: None pointers (no mask, no dropout) become constexprs.
            constexprs = dict(HEAD_DIM=head_dim, BLOCK_D=block_d, BLOCK_M=tile.block_m, BLOCK_N=tile.block_n,
                              IS_VARLEN=layout == "varlen", HAS_LENGTHS=True, HAS_KEY_MASK=has_mask,
                              HAS_DROPOUT=has_dropout, DOT_IN_FP32=False)
            if not has_mask:
                constexprs["KeyMask"] = None
            if not has_dropout:
                constexprs["DropoutSeed"] = None
            signature = {}
            for name in kernel.arg_names:
                if name in constexprs:
                    signature[name] = "constexpr"
                elif name in pointers:
                    signature[name] = "*bf16"
                elif name in ("LseLog2", "Delta"):
                    signature[name] = "*fp32"
                elif name == "SequenceBounds":
                    signature[name] = "*i32"
                elif name == "KeyMask":
                    signature[name] = "*u8"
                elif name == "DropoutSeed":
                    signature[name] = "*i64"
                elif name.startswith("stride") or name in ("total_tokens", "max_seqlen"):
                    signature[name] = "i32"
                else:
                    signature[name] = "fp32"
            # Real launches specialise pointers and strides divisible by 16 the same way.
            attrs = {(index,): [["tt.divisibility", 16]] for index, name in enumerate(kernel.arg_names)
                     if signature[name].startswith("*") or name.startswith("stride")}
            try:
                compiled = triton.compile(
                    triton.compiler.ASTSource(fn=kernel, signature=signature, constexprs=constexprs, attrs=attrs),
                    target=GPUTarget("cuda", 90, 32),
                    options={"num_warps": tile.num_warps, "num_stages": tile.num_stages})
                with tempfile.NamedTemporaryFile(suffix=".cubin") as cubin:
                    cubin.write(compiled.asm["cubin"])
                    cubin.flush()
                    usage = subprocess.run([cuobjdump, "-res-usage", cubin.name], capture_output=True,
                                           text=True).stdout
                registers = re.search(r"REG:(\d+)", usage).group(1)
                stack = re.search(r"STACK:(\d+)", usage).group(1)
                cells.append(f"regs {registers:>3} spill {stack:>3} smem {compiled.metadata.shared // 1024:>3}K")
            except Exception as error:
                failures += 1
                cells.append(f"FAILED {type(error).__name__}: {str(error)[:200]}")
        label = f"d{head_dim} {layout}{' dropout' if has_dropout else ''}"
        print(f"{label:<22} fwd: {cells[0]} | dkdv: {cells[1]} | dq: {cells[2]}", flush=True)
    return failures


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="benchmarks/results", help="directory for attention.json / attention.png")
    parser.add_argument("--heads", type=int, nargs="+", default=[12, 16])
    parser.add_argument("--seqlens", type=int, nargs="+", default=[128, 256, 512, 1024, 2048, 4096])
    parser.add_argument("--paddings", type=float, nargs="+", default=[0.0, 0.25, 0.5])
    parser.add_argument("--tokens", type=int, default=16384, help="batch = tokens // seqlen")
    parser.add_argument("--sweep-configs", action="store_true", help="time alternative launch tiles instead")
    parser.add_argument("--smoke", action="store_true",
                        help="run every implementation once, untimed (CPU: set TRITON_INTERPRET=1, tiny sizes)")
    parser.add_argument("--aot-compile-check", action="store_true",
                        help="compile all kernels for sm_90 without a GPU and report registers/spills")
    args = parser.parse_args()

    if args.aot_compile_check:
        sys.exit(1 if aot_compile_check() else 0)
    if args.smoke:
        global SMOKE
        SMOKE = True
    elif not torch.cuda.is_available():
        sys.exit("bench_attention.py needs a CUDA GPU (none found). The Triton interpreter is for tests only; "
                 "run this on an H100, or use --aot-compile-check to compile the kernels without one.")
    if args.sweep_configs:
        sweep_configs(args)
        return
    started = time.time()
    records = run_benchmark(args)
    checks = print_targets(records, args)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "attention.json"), "w") as handle:
        json.dump({"device": _device_name(), "smoke": SMOKE, "torch": torch.__version__, "dtype": str(DTYPE),
                   "head_dim": HEAD_DIM, "records": records,
                   "targets": [dict(target=label, passed=passed, value=value) for label, passed, value in checks]},
                  handle, indent=1)
    plot(records, os.path.join(args.out, "attention.png"), args)
    print(f"\nwrote {args.out}/attention.json (and .png with matplotlib) in {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
