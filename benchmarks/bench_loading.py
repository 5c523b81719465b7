"""Peak memory of `Backbone.from_preset` per weights format and model size.

Each load runs in a fresh child process that reports the peak resident set size (ru_maxrss)
before loading (torch and roberta_torch imported: the "torch baseline") and after; the figure
that matters is (peak - baseline) / parameter bytes. Keras .h5 presets (single file and
sharded) are streamed tensor by tensor into the final parameters, safetensors stays
memory-mapped.

    python benchmarks/bench_loading.py                      # roberta-base size
    python benchmarks/bench_loading.py --sizes base large   # and roberta-large size
    python benchmarks/bench_loading.py --python /path/to/other/env/python --pythonpath /old/checkout

`--pythonpath` runs the same measurement against another checkout (e.g. an older commit) to
compare before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SIZES = {
    "base": dict(vocabulary_size=50265, num_layers=12, num_heads=12, hidden_dim=768, intermediate_dim=3072),
    "large": dict(vocabulary_size=50265, num_layers=24, num_heads=16, hidden_dim=1024, intermediate_dim=4096),
}

# Peak RSS from /proc (VmHWM): ru_maxrss would carry the parent's peak over fork + exec.
CHILD = """
import json, sys, time
import torch
import roberta_torch

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024

torch.ones(8) @ torch.ones(8)  # touch the allocator once
# Warm torch's one-time costs (meta-device construction pulls in ~170 MiB of torch code and
# tables the first time): they are torch's, not the loader's.
roberta_torch.RobertaBackbone(10, 1, 1, 4, 4, max_sequence_length=4, device="meta")
baseline = status("VmRSS")
try:
    open("/proc/self/clear_refs", "w").write("5")  # reset the peak to the current RSS
except OSError:
    pass
start = time.perf_counter()
model = roberta_torch.Backbone.from_preset(sys.argv[1])
seconds = time.perf_counter() - start
peak = status("VmHWM")
parameter_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
print(json.dumps({"baseline": baseline, "peak": peak, "parameter_bytes": parameter_bytes, "seconds": seconds,
                  "module": roberta_torch.__file__}))
"""


def write_presets(size: str, root: pathlib.Path) -> dict[str, pathlib.Path]:
    """A random model of `size` saved as a Keras preset, a sharded Keras preset and our
    safetensors export."""
    import h5py
    import torch

    import roberta_torch

    torch.manual_seed(0)
    model = roberta_torch.RobertaBackbone(**SIZES[size], max_sequence_length=512)
    paths = {"keras": root / f"{size}_keras", "safetensors": root / f"{size}_safetensors"}
    model.save_to_preset(paths["keras"])
    model.save_to_preset(paths["safetensors"], format="safetensors")
    # Sharded, as keras_hub writes big presets: model.weights.json + model_NNNNN.weights.h5.
    sharded = paths["keras_sharded"] = root / f"{size}_keras_sharded"
    sharded.mkdir()
    for name in ("config.json", "metadata.json"):
        (sharded / name).write_bytes((paths["keras"] / name).read_bytes())
    weight_map, shard, shard_bytes = {}, 0, 0
    with h5py.File(paths["keras"] / "model.weights.h5", "r") as source:
        groups = []
        source.visititems(lambda name, item: groups.append(name) if isinstance(item, h5py.Group) and name.endswith("vars") else None)
        out = h5py.File(sharded / f"model_{shard:05d}.weights.h5", "w")
        for group in groups:
            size_bytes = sum(d.nbytes for d in source[group].values())
            if shard_bytes and shard_bytes + size_bytes > 200 * 2**20:
                out.close()
                shard, shard_bytes = shard + 1, 0
                out = h5py.File(sharded / f"model_{shard:05d}.weights.h5", "w")
            source.copy(source[group], out.require_group(group.rpartition("/")[0] or "/"), name="vars")
            weight_map["/" + group] = f"model_{shard:05d}.weights.h5"
            shard_bytes += size_bytes
        out.close()
    (sharded / "model.weights.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return paths


def measure(preset: pathlib.Path, python: str, pythonpath: str) -> dict:
    env = {**os.environ, "PYTHONPATH": pythonpath, "OMP_NUM_THREADS": "1"}
    # cwd: `python -c` puts the working directory first on sys.path, which would shadow
    # --pythonpath with whatever checkout the benchmark was started from.
    done = subprocess.run(
        [python, "-c", CHILD, str(preset)], capture_output=True, text=True, env=env, check=True, cwd=preset.parent
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["base"], choices=sorted(SIZES))
    parser.add_argument("--python", default=sys.executable, help="interpreter for the measured loads")
    parser.add_argument("--pythonpath", default=str(REPO_ROOT), help="checkout whose roberta_torch is measured")
    parser.add_argument("--json", type=pathlib.Path, help="also write the rows here")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            for fmt, preset in write_presets(size, pathlib.Path(tmp)).items():
                result = measure(preset, args.python, args.pythonpath)
                above = result["peak"] - result["baseline"]
                rows.append({"size": size, "format": fmt, **result, "ratio": above / result["parameter_bytes"]})
                print(
                    f"{size:6s} {fmt:14s} parameters {result['parameter_bytes'] / 2**20:8.0f} MiB  "
                    f"baseline {result['baseline'] / 2**20:6.0f} MiB  peak {result['peak'] / 2**20:7.0f} MiB  "
                    f"peak - baseline = {above / result['parameter_bytes']:.2f} x parameters  ({result['seconds']:.1f} s)  "
                    f"[{pathlib.Path(result['module']).parents[1]}]",
                    flush=True,
                )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
