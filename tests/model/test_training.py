"""Training readiness: gradients, dropout sites, checkpointing, torch.compile."""

import pytest
import torch

import roberta_torch
from helpers.random_weights import randomize_
from roberta_torch import RobertaBackbone, layers

SMALL = dict(vocabulary_size=40, num_layers=2, num_heads=2, hidden_dim=8, intermediate_dim=16, max_sequence_length=12)


def random_batch(batch=3, seq=9, vocab=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (batch, seq), generator=g)
    lengths = torch.tensor([seq, max(1, seq // 2), 0][:batch])
    mask = (torch.arange(seq)[None, :] < lengths[:, None]).long()
    return {"token_ids": ids, "padding_mask": mask}


@pytest.mark.parametrize("padding_free", [True, False])
def test_gradients_reach_every_parameter(padding_free):
    model = randomize_(RobertaBackbone(**SMALL, padding_free=padding_free)).train()
    inputs = random_batch()
    out = model(inputs)
    valid = inputs["padding_mask"].bool()
    (out[valid] ** 2).mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        if name != "token_embedding.weight":
            assert p.grad.abs().sum() > 0, name


def test_dropout_only_in_training_and_at_keras_sites(monkeypatch):
    model = randomize_(RobertaBackbone(**SMALL, dropout=0.3))
    inputs = random_batch()
    seen = []
    original = layers.self_attention

    def spy(q, k, v, mask, dropout_p=0.0, backend=None):
        seen.append(dropout_p)
        return original(q, k, v, mask, dropout_p=dropout_p, backend=backend)

    monkeypatch.setattr(layers, "self_attention", spy)
    model.eval()
    with torch.no_grad():
        a, b = model(inputs), model(inputs)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert seen == [0.0, 0.0, 0.0, 0.0]  # probabilities are not dropped at inference
    seen.clear()
    model.train()
    torch.manual_seed(1)
    c = model(inputs)
    assert seen == [0.3, 0.3]  # attention probabilities, every layer
    assert not torch.allclose(a, c)
    # Embedding dropout and both residual-branch dropouts exist with Keras's rate.
    assert model.embeddings_dropout.p == 0.3
    assert all(layer.dropout.p == 0.3 for layer in model.layers)


def test_each_dropout_site_changes_training_output():
    base = randomize_(RobertaBackbone(**SMALL, dropout=0.0)).train()
    inputs = random_batch(batch=2)
    with torch.no_grad():
        reference = base(inputs)
    sites = {
        "embeddings": lambda m: setattr(m.embeddings_dropout, "p", 0.5),
        "residual": lambda m: [setattr(layer.dropout, "p", 0.5) for layer in m.layers],
        "attention_probabilities": lambda m: [setattr(layer.attention, "dropout", 0.5) for layer in m.layers],
    }
    for name, enable in sites.items():
        model = randomize_(RobertaBackbone(**SMALL, dropout=0.0)).train()
        enable(model)
        torch.manual_seed(0)
        with torch.no_grad():
            out = model(inputs)
        assert not torch.allclose(out, reference), name
        model.eval()
        with torch.no_grad():
            torch.testing.assert_close(model(inputs), base.eval()(inputs))
        base.train()


def test_dropout_zero_training_equals_eval():
    model = randomize_(RobertaBackbone(**SMALL, dropout=0.0))
    inputs = random_batch()
    with torch.no_grad():
        torch.testing.assert_close(model.train()(inputs), model.eval()(inputs), rtol=0, atol=0)


@pytest.mark.parametrize("dropout", [0.0, 0.2])
def test_activation_checkpointing_is_equivalent(dropout):
    inputs = random_batch()
    grads = []
    outs = []
    for checkpointing in (False, True):
        model = randomize_(RobertaBackbone(**SMALL, dropout=dropout, gradient_checkpointing=checkpointing)).train()
        torch.manual_seed(123)
        out = model(inputs)
        out.pow(2).sum().backward()
        outs.append(out.detach())
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-6, atol=1e-7, msg=name)


def test_set_gradient_checkpointing_toggles():
    model = RobertaBackbone(**SMALL)
    assert model.set_gradient_checkpointing() is model and model.gradient_checkpointing
    assert not model.set_gradient_checkpointing(False).gradient_checkpointing


def test_torch_compile_fullgraph_forward_and_backward():
    torch._dynamo.reset()
    model = randomize_(RobertaBackbone(**SMALL, dropout=0.0)).train()
    inputs = random_batch()
    valid = inputs["padding_mask"].bool()
    eager = model(inputs)
    eager[valid].sum().backward()  # padded positions are unspecified (zeros padding-free)
    eager_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    compiled = torch.compile(model, fullgraph=True)
    out = compiled(inputs)
    out[valid].sum().backward()
    torch.testing.assert_close(out[valid], eager[valid], rtol=1e-5, atol=1e-5)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, eager_grads[name], rtol=1e-4, atol=1e-5, msg=name)
    # Value checks stay inside the graph as runtime asserts (no graph break).
    bad = dict(inputs, token_ids=inputs["token_ids"] + 100)
    with pytest.raises(RuntimeError, match="vocabulary_size"):
        compiled(bad)
