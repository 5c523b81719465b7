"""torch.compile keeps the padding-free path: compiled equals eager (forward and parameter
gradients, float32, relative 1e-5 on valid positions), no graph breaks, bounded recompiles,
dropout, checkpointing and mixed policies. Models are tiny so each compile takes seconds.

Inductor compiles the equality test and one training step; the other tests use the
"aot_eager" backend, which traces exactly what Inductor receives (dynamo graph, fake
implementations with unbacked sizes, the joint forward/backward graph) without code
generation, to keep the suite fast."""

import pytest
import torch
from torch._dynamo.utils import counters

from helpers.gradients import assert_gradients_close
from helpers.random_weights import randomize_
from roberta_torch import RobertaBackbone, attention

CONFIG = dict(vocabulary_size=97, num_layers=1, num_heads=2, hidden_dim=16, intermediate_dim=32, max_sequence_length=64)


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


def model(seed=0, **kwargs):
    kwargs.setdefault("dropout", 0.0)
    config = dict(CONFIG, **kwargs)  # one layer keeps tracing fast; the parity test uses two
    return randomize_(RobertaBackbone(**config), seed).train()


def random_batch(batch, seq, generator, prefix=True):
    ids = torch.randint(0, CONFIG["vocabulary_size"], (batch, seq), generator=generator)
    if prefix:
        lengths = torch.randint(0, seq + 1, (batch,), generator=generator)
        lengths[0], lengths[1] = seq, 0  # a full row and an empty one
        mask = torch.arange(seq)[None, :] < lengths[:, None]
    else:
        mask = torch.rand(batch, seq, generator=generator) < 0.5
        mask[1] = False
    return {"token_ids": ids, "padding_mask": mask}


def relative_error(actual, expected):
    return float((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-30))


def forward_backward(fn, module, inputs, valid):
    out = fn(inputs)
    out[valid].pow(2).sum().backward()
    grads = {name: p.grad.clone() for name, p in module.named_parameters()}
    module.zero_grad(set_to_none=True)
    return out.detach(), grads


@pytest.mark.parametrize("prefix", [True, False], ids=["right-padded", "any-mask"])
def test_compiled_padding_free_equals_eager(prefix):
    g = torch.Generator().manual_seed(1 + prefix)
    inputs = random_batch(4, 12, g, prefix)
    valid = inputs["padding_mask"]
    net = model(num_layers=2)
    eager, eager_grads = forward_backward(net, net, inputs, valid)
    compiled_net = torch.compile(net, fullgraph=True)  # raises on any graph break
    with attention.record_dispatch() as calls:
        compiled, compiled_grads = forward_backward(compiled_net, net, inputs, valid)
    assert calls and set(calls) == {("sdpa", "packed")}  # traced padding-free
    assert not counters["graph_break"]
    assert relative_error(compiled[valid], eager[valid]) < 1e-5
    assert (compiled[~valid] == 0).all()  # padding-free: zeros at padded positions
    for name, grad in eager_grads.items():
        assert torch.isfinite(compiled_grads[name]).all(), name
    assert_gradients_close(compiled_grads, eager_grads)


def test_padding_free_false_keeps_the_masked_path_when_compiled():
    g = torch.Generator().manual_seed(3)
    inputs = random_batch(3, 8, g)
    net = model(padding_free=False).eval()
    with torch.no_grad(), attention.record_dispatch() as calls:
        out = torch.compile(net, fullgraph=True, backend="aot_eager")(inputs)
        expected = net(inputs)
    assert set(calls) == {("sdpa", "masked")}
    valid = inputs["padding_mask"]
    assert relative_error(out[valid], expected[valid]) < 1e-5


def test_twenty_batches_of_varying_shapes_recompile_at_most_twice():
    # Recompiles are decided by dynamo's guards, before the backend runs: aot_eager counts
    # them as Inductor would, in a fraction of the time.
    net = model().eval()
    compiled = torch.compile(net, fullgraph=True, backend="aot_eager")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _ in range(20):
            batch = int(torch.randint(2, 9, (1,), generator=g))
            seq = int(torch.randint(2, 65, (1,), generator=g))
            compiled(random_batch(batch, seq, g))
    graphs = counters["stats"]["unique_graphs"]
    assert 1 <= graphs <= 3, graphs  # the first compile plus at most two recompiles


def test_same_padded_shape_different_lengths_reuse_one_graph():
    net = model().eval()
    compiled = torch.compile(net, fullgraph=True, backend="aot_eager")
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for _ in range(4):
            compiled(random_batch(3, 10, g, prefix=False))
    assert counters["stats"]["unique_graphs"] == 1


@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "checkpointed"])
def test_compiled_training_with_dropout(checkpointing):
    g = torch.Generator().manual_seed(7)
    inputs = random_batch(3, 10, g)
    valid = inputs["padding_mask"]
    net = model(dropout=0.3, gradient_checkpointing=checkpointing)
    compiled = torch.compile(net, fullgraph=True, backend="aot_eager" if checkpointing else "inductor")
    torch.manual_seed(0)
    out, grads = forward_backward(compiled, net, inputs, valid)
    net.eval()
    with torch.no_grad():
        reference = net(inputs)
    assert torch.isfinite(out).all() and (out[~valid] == 0).all()
    assert not torch.allclose(out[valid], reference[valid])  # dropout is on
    for name, grad in grads.items():
        assert torch.isfinite(grad).all(), name
        if name != "token_embedding.weight":
            assert grad.abs().sum() > 0, name


def test_compiled_checkpointing_equals_eager_without_dropout():
    g = torch.Generator().manual_seed(8)
    inputs = random_batch(3, 10, g, prefix=False)
    valid = inputs["padding_mask"]
    net = model(gradient_checkpointing=True)
    eager, eager_grads = forward_backward(net, net, inputs, valid)
    compiled_net = torch.compile(net, fullgraph=True, backend="aot_eager")
    compiled, compiled_grads = forward_backward(compiled_net, net, inputs, valid)
    assert relative_error(compiled[valid], eager[valid]) < 1e-5
    assert_gradients_close(compiled_grads, eager_grads)


@pytest.mark.parametrize("policy", ["mixed_bfloat16"])
def test_compiled_mixed_policies(policy):
    g = torch.Generator().manual_seed(9)
    inputs = random_batch(3, 10, g)
    valid = inputs["padding_mask"]
    net = model(dtype=policy)
    eager, eager_grads = forward_backward(net, net, inputs, valid)
    compiled_net = torch.compile(net, fullgraph=True, backend="aot_eager")
    compiled, compiled_grads = forward_backward(compiled_net, net, inputs, valid)
    assert compiled.dtype == torch.bfloat16
    assert relative_error(compiled[valid].float(), eager[valid].float()) < 3e-2
    for name, grad in eager_grads.items():
        assert grad.dtype == next(p for n, p in net.named_parameters() if n == name).dtype
        assert torch.isfinite(compiled_grads[name]).all(), name


def test_default_compile_has_no_graph_break():
    # Outside fullgraph dynamo would break the graph at a data-dependent size unless the op
    # makes its own unbacked size (see padding._new_dynamic_size).
    g = torch.Generator().manual_seed(11)
    inputs = random_batch(3, 9, g, prefix=False)
    net = model().eval()
    with torch.no_grad():
        out = torch.compile(net, backend="aot_eager")(inputs)
        expected = net(inputs)
    assert not counters["graph_break"]
    assert counters["stats"]["unique_graphs"] == 1
    valid = inputs["padding_mask"]
    assert relative_error(out[valid], expected[valid]) < 1e-5
