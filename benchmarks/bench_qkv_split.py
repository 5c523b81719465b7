"""Issue 20 items 1-2: what separate query/key/value modules and the epilogue checks cost.

In one process, on the same weights, interleaved call by call (so a shared machine's load
hits both alike), medians of `--repeats`:

  old  the call graph before issue 20: one fused (3H, H) query/key/value product (the three
       weights concatenated once, as the old `attention.qkv` module held them) and every
       dense layer called with its epilogue directly (`Linear.forward_with_epilogue`, what
       the old `Linear.forward(x, activation, residual)` ran);
  new  the model as it is: three projections, `layers.linear_then` deciding per call
       whether the fused epilogue may run (`layers.epilogue_is_unobservable`).

Inference, float32, roberta-base-size layers (`--layers`, default 6), batch x seq 8x128 and
16x256, dense and about 50 % padding (the padding-free path). Asserts both give the same
outputs first.

    python benchmarks/bench_qkv_split.py --threads 1
"""

from __future__ import annotations

import argparse
import copy
import pathlib
import statistics
import sys
import time
import types

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import cpu_info  # noqa: E402

import roberta_torch  # noqa: E402
from roberta_torch import dense  # noqa: E402
from roberta_torch.attention import self_attention  # noqa: E402


def _old_attention_forward(self, x, mask, backend=None, residual=None):
    qkv = dense.linear(x, self.fused_qkv_weight, self.fused_qkv_bias).unflatten(-1, (3, self.num_heads, self.head_dim))
    q, k, v = qkv.unbind(dim=-3)
    context = self_attention(q, k, v, mask, dropout_p=0.0, backend=backend)
    return self.output.forward_with_epilogue(context.flatten(-2), residual=residual)


def _old_feedforward_forward(self, x, residual=None):
    hidden = self.intermediate.forward_with_epilogue(x, activation="gelu")
    return self.output.forward_with_epilogue(hidden, residual=residual)


def old_call_graph(model):
    """A copy of `model` running the pre-issue-20 call graph (module docstring)."""
    old = copy.deepcopy(model)
    for layer in old.layers:
        attention = layer.attention
        projections = (attention.query, attention.key, attention.value)
        attention.fused_qkv_weight = torch.cat([p.weight for p in projections]).detach()
        attention.fused_qkv_bias = torch.cat([p.bias for p in projections]).detach()
        attention.forward = types.MethodType(_old_attention_forward, attention)
        layer.feedforward.forward = types.MethodType(_old_feedforward_forward, layer.feedforward)
    return old


def batch(size, seq, fill, generator):
    ids = torch.randint(3, 50000, (size, seq), generator=generator)
    mask = torch.ones(size, seq, dtype=torch.bool)
    if fill < 1:
        lengths = torch.linspace(2, seq, size).round().long()  # mean fill about 0.5
        mask = torch.arange(seq)[None] < lengths[:, None]
    return {"token_ids": ids, "padding_mask": mask}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(cpu_info.describe(cpu_info.cpu_record()), flush=True)
    new = roberta_torch.RobertaBackbone(vocabulary_size=50265, num_layers=args.layers, num_heads=12, hidden_dim=768,
                                        intermediate_dim=3072, max_sequence_length=512).eval()
    old = old_call_graph(new)
    generator = torch.Generator().manual_seed(0)
    for size, seq in ((8, 128), (16, 256)):
        for fill in (1.0, 0.5):
            inputs = batch(size, seq, fill, generator)
            times = {"old": [], "new": []}
            with torch.inference_mode():
                torch.testing.assert_close(new(inputs), old(inputs), rtol=1e-4, atol=1e-4)
                for r in range(args.repeats):
                    for name in ("old", "new") if r % 2 else ("new", "old"):
                        model = old if name == "old" else new
                        start = time.perf_counter()
                        model(inputs)
                        times[name].append(time.perf_counter() - start)
            old_s, new_s = statistics.median(times["old"]), statistics.median(times["new"])
            real_fill = inputs["padding_mask"].float().mean().item()
            print(f"threads {args.threads}  {size}x{seq}  fill {real_fill:.2f}  old {old_s * 1e3:7.0f} ms  "
                  f"new {new_s * 1e3:7.0f} ms  new/old time {new_s / old_s:.3f}", flush=True)


if __name__ == "__main__":
    main()
