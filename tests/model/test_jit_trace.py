"""torch.jit.trace with default settings: it failed on oneDNN's fused op, and a trace taken on
a batch without padding recorded the "no mask" fast path, so the traced model ignored every
later mask. Tracing now records the static padded path (as torch.export does)."""

import warnings

import pytest
import torch

from helpers.random_weights import randomize_
from roberta_torch import RobertaBackbone, dense, dispatch, tasks

SMALL = dict(vocabulary_size=40, num_layers=2, num_heads=2, hidden_dim=8, intermediate_dim=16, max_sequence_length=12)


def inputs(lengths, seq=9, seed=0):
    ids = torch.randint(3, 40, (len(lengths), seq), generator=torch.Generator().manual_seed(seed))
    return {"token_ids": ids, "padding_mask": (torch.arange(seq)[None] < torch.tensor(lengths)[:, None]).long()}


def trace(model, example):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape checks are Python ifs
        traced = torch.jit.trace(model, (example,))
    graph = str(traced.inlined_graph)
    assert "aten::linear" in graph and "mkldnn" not in graph  # oneDNN's fused op stepped aside
    return traced


@pytest.mark.parametrize(
    "build",
    [
        lambda b: b,
        lambda b: tasks.RobertaTextClassifier(b, num_classes=3),
        lambda b: tasks.RobertaTokenClassifier(b, num_classes=3),
        lambda b: tasks.RobertaMaskedLM(b),
        lambda b: tasks.RobertaQuestionAnswerer(b),
    ],
)
def test_a_trace_on_an_unpadded_batch_honours_later_masks(build):
    model = randomize_(build(RobertaBackbone(**SMALL)), seed=1).eval()
    traced = trace(model, inputs([9, 9]))  # no padding while tracing
    padded = inputs([9, 4], seed=1)
    valid = padded["padding_mask"].bool()
    with torch.no_grad():
        expected, got = model(padded), traced(padded)
    for e, g in zip(expected if isinstance(expected, tuple) else (expected,), got if isinstance(got, tuple) else (got,)):
        if e.dim() >= 2 and e.shape[:2] == valid.shape:  # per-token outputs: padded rows are unspecified
            e, g = e[valid], g[valid]
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)


def test_eager_still_takes_the_fused_path_after_a_trace():
    if not dense.ONEDNN_AVAILABLE:
        pytest.skip("this torch has no oneDNN fused linear")
    model = randomize_(RobertaBackbone(**SMALL), seed=1).eval()
    trace(model, inputs([9, 9]))
    with torch.no_grad(), dense.record_paths() as paths, dispatch.override(dense_epilogue="fused"):
        model(inputs([9, 9]))
    assert "fused" in {path for path, _ in paths}
