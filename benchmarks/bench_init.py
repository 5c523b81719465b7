"""Time of `from_preset(name, load_weights=False)` (a builtin's architecture, no download:
everything is initialization), this checkout against another one.

Each measurement runs in a fresh child process (torch and roberta_torch imported before the
clock starts); the checkouts alternate, and the median of the repeats is reported with the
ratio, so a busy shared machine slows both alike.

    python benchmarks/bench_init.py                                  # roberta_base_en, this checkout
    python benchmarks/bench_init.py --pythonpath /old/checkout       # and an older one
    python benchmarks/bench_init.py --preset xlm_roberta_base_multi --repeats 7
    python benchmarks/bench_init.py --in-process     # ours vs torch's nn.init.trunc_normal_, one process

`--in-process` times the same from_preset in this process with the kernel initializer
swapped between roberta_torch's sampler and torch's `nn.init.trunc_normal_` (what the
previous release called), interleaved: the fairest ratio on a busy machine.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

CHILD = """
import json, sys, time
import torch
import roberta_torch
start = time.perf_counter()
model = roberta_torch.RobertaBackbone.from_preset(sys.argv[1], load_weights=False)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "parameters": model.num_parameters(), "threads": torch.get_num_threads()}))
"""


def measure(pythonpath: pathlib.Path, preset: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    # cwd: `python -c` puts the working directory first on sys.path, ahead of PYTHONPATH.
    out = subprocess.run([sys.executable, "-c", CHILD, preset], env=env, capture_output=True, text=True, check=True,
                         cwd=pythonpath)
    return json.loads(out.stdout.strip().splitlines()[-1])


def in_process(preset: str, repeats: int) -> dict:
    import time

    import torch

    sys.path.insert(0, str(REPO_ROOT))
    import roberta_torch
    from roberta_torch import layers

    ours = layers.truncated_normal_

    def torchs(tensor, std=0.02, **kwargs):
        return torch.nn.init.trunc_normal_(tensor, std=std, a=-2 * std, b=2 * std)

    times = {"roberta_torch": [], "torch.nn.init.trunc_normal_": []}
    for _ in range(repeats):
        for name, sampler in (("roberta_torch", ours), ("torch.nn.init.trunc_normal_", torchs)):
            layers.truncated_normal_ = sampler
            start = time.perf_counter()
            roberta_torch.RobertaBackbone.from_preset(preset, load_weights=False)
            times[name].append(time.perf_counter() - start)
    layers.truncated_normal_ = ours
    medians = {name: statistics.median(values) for name, values in times.items()}
    return {"preset": preset, "threads": torch.get_num_threads(), "median_seconds": medians, "all_seconds": times,
            "speedup": medians["torch.nn.init.trunc_normal_"] / medians["roberta_torch"]}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="roberta_base_en")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--pythonpath", type=pathlib.Path, help="another checkout to compare (e.g. an older commit)")
    parser.add_argument("--json", type=pathlib.Path, help="write the results here")
    parser.add_argument("--in-process", action="store_true", help="ours vs torch's sampler in this process")
    args = parser.parse_args(argv)
    if args.in_process:
        report = in_process(args.preset, args.repeats)
        print(json.dumps(report, indent=2))
        if args.json:
            args.json.write_text(json.dumps(report, indent=2))
        return
    checkouts = {"this": REPO_ROOT} | ({"other": args.pythonpath} if args.pythonpath else {})
    times = {name: [] for name in checkouts}
    for _ in range(args.repeats):
        for name, path in checkouts.items():  # interleaved
            result = measure(path, args.preset)
            times[name].append(result["seconds"])
    report = {"preset": args.preset, "parameters": result["parameters"], "threads": result["threads"],
              "median_seconds": {name: statistics.median(values) for name, values in times.items()},
              "all_seconds": times}
    if args.pythonpath:
        report["speedup"] = report["median_seconds"]["other"] / report["median_seconds"]["this"]
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
