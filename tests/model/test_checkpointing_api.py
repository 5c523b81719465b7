"""The activation-checkpointing calls training libraries make (transformers' signatures), on
the backbone and on every task model."""

import pytest
import torch

from helpers.random_weights import randomize_
from roberta_torch import RobertaBackbone, tasks

SMALL = dict(vocabulary_size=40, num_layers=4, num_heads=2, hidden_dim=8, intermediate_dim=16, max_sequence_length=12)
TASKS = [
    lambda b: b,
    lambda b: tasks.RobertaTextClassifier(b, num_classes=3),
    lambda b: tasks.RobertaTokenClassifier(b, num_classes=3),
    lambda b: tasks.RobertaMaskedLM(b),
    lambda b: tasks.RobertaQuestionAnswerer(b),
]


def batch(seed=0):
    ids = torch.randint(3, 40, (3, 9), generator=torch.Generator().manual_seed(seed))
    return {"token_ids": ids, "padding_mask": (torch.arange(9)[None] < torch.tensor([9, 5, 7])[:, None])}


def scalar(out):
    out = out if isinstance(out, tuple) else (out,)
    return sum(o.float().pow(2).mean() for o in out)


def recomputed_layers(model, inputs):
    """Indices of the encoder layers whose forward ran twice (forward, then recompute)."""
    backbone = getattr(model, "backbone", model)
    calls = []

    def counted(index, forward):  # (module hooks do not fire during the recompute)
        def wrapper(*args, **kwargs):
            calls.append(index)
            return forward(*args, **kwargs)

        return wrapper

    for index, layer in enumerate(backbone.layers):
        layer.forward = counted(index, layer.forward)
    scalar(model(inputs)).backward()
    for layer in backbone.layers:
        del layer.forward
    return sorted(i for i in set(calls) if calls.count(i) == 2)


@pytest.mark.parametrize("build", TASKS)
def test_enable_disable_and_query_on_every_model(build):
    model = randomize_(build(RobertaBackbone(**SMALL, dropout=0.0)), seed=1).train()
    assert model.supports_gradient_checkpointing and not model.is_gradient_checkpointing
    assert recomputed_layers(model, batch()) == []
    assert model.gradient_checkpointing_enable() is model
    assert model.is_gradient_checkpointing and model.is_activation_checkpointing
    assert recomputed_layers(model, batch()) == [0, 1, 2, 3]
    model.activation_checkpointing_enable({"use_reentrant": False}, every_n_layers=2)
    assert recomputed_layers(model, batch()) == [0, 2]
    model.gradient_checkpointing_disable()
    assert not model.is_gradient_checkpointing and recomputed_layers(model, batch()) == []
    model.eval().gradient_checkpointing_enable()
    with torch.no_grad():
        model(batch())  # inference never recomputes (nothing to do)


@pytest.mark.parametrize("kwargs", [{"use_reentrant": False}, {"use_reentrant": True}, {"preserve_rng_state": False}])
def test_checkpointed_gradients_equal_plain_ones(kwargs):
    inputs, grads = batch(), []
    for enable in (False, True):
        model = randomize_(tasks.RobertaTextClassifier(RobertaBackbone(**SMALL, dropout=0.0), num_classes=3), seed=2).train()
        if enable:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        model(inputs, labels=torch.tensor([0, 1, 2])).loss.backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-5, atol=1e-6, msg=name)


def test_reentrant_checkpointing_trains_layers_behind_frozen_embeddings():
    """Reentrant checkpointing back-propagates into a segment only if its input needs a
    gradient; with the embeddings frozen (LoRA-style) the layers would silently get none."""
    model = randomize_(RobertaBackbone(**SMALL, dropout=0.0), seed=3).train()
    for parameter in [model.token_embedding.weight, model.position_embedding.weight, *model.embeddings_layer_norm.parameters()]:
        parameter.requires_grad_(False)
    model.gradient_checkpointing_enable({"use_reentrant": True})
    scalar(model(batch())).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.layers.parameters())


def test_offload_on_cpu_is_a_no_op_and_settings_are_checked():
    model = randomize_(RobertaBackbone(**SMALL, dropout=0.0), seed=3).train()
    model.activation_checkpointing_enable(offload=True)
    scalar(model(batch())).backward()
    with pytest.raises(ValueError, match="gradient_checkpointing_kwargs.*use_rentrant"):
        model.gradient_checkpointing_enable({"use_rentrant": False})
    with pytest.raises(ValueError, match="every_n_layers"):
        model.gradient_checkpointing_enable(every_n_layers=0)
    with pytest.raises(TypeError, match="offload"):
        model.activation_checkpointing_enable(offload="yes")


def test_constructor_flag_and_set_gradient_checkpointing_still_work():
    model = RobertaBackbone(**SMALL, gradient_checkpointing=True)
    assert model.is_gradient_checkpointing
    assert not model.set_gradient_checkpointing(False).is_gradient_checkpointing
