"""The text classifier's head is one submodule `classifier` (transformers' layout: dense,
out_proj) computing keras_hub's head; keras_hub's `pooled_dense` / `output_dense` are aliases,
each parameter listed once; state dicts saved with the old keys still load."""

import pytest
import torch

from helpers.random_weights import randomize_
from roberta_torch import RobertaBackbone, tasks
from roberta_torch.tasks import heads

SMALL = dict(vocabulary_size=30, num_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=16, max_sequence_length=10)
HEAD_KEYS = [f"classifier.{module}.{kind}" for module in ("dense", "out_proj") for kind in ("weight", "bias")]


def classifier(seed: int):
    model = tasks.RobertaTextClassifier(RobertaBackbone(**SMALL), num_classes=3, hidden_dim=5, dropout=0.1)
    return randomize_(model, seed=seed).eval()


def batch():
    ids = torch.randint(3, 30, (2, 6), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[1, 4:] = False
    return {"token_ids": ids, "padding_mask": mask}


def old_keys(state: dict) -> dict:
    """`state` as saved before the head moved under `classifier` (keras_hub's module names)."""
    out = {}
    for key, value in state.items():
        for old, new in heads.TEXT_CLASSIFIER_RENAMED_MODULES:
            if key.startswith(new):
                key = old + key[len(new):]
        out[key] = value
    return out


def test_head_is_the_classifier_module_with_keras_aliases():
    model = classifier(seed=1)
    assert model.pooled_dense is model.classifier.dense and model.output_dense is model.classifier.out_proj
    names = [name for name, _ in model.named_parameters()]
    assert [n for n in names if not n.startswith("backbone.")] == HEAD_KEYS  # each parameter once
    assert [k for k in model.state_dict() if not k.startswith("backbone.")] == HEAD_KEYS
    with pytest.raises(AttributeError, match="read-only name of `classifier.out_proj`"):
        model.output_dense = torch.nn.Linear(5, 3)
    # keras_hub's head on the <s> features: tanh(pooled_dense(x)) -> output_dense (eval: no dropout).
    inputs = batch()
    with torch.no_grad():
        first = model.backbone(inputs)[:, 0]
        dense, out = model.pooled_dense, model.output_dense
        expected = torch.tanh(first @ dense.weight.T + dense.bias) @ out.weight.T + out.bias
        assert torch.allclose(model(inputs), expected, rtol=1e-5, atol=1e-6)


def test_old_state_dicts_load():
    source, inputs = classifier(seed=1), batch()
    with torch.no_grad():
        expected = source(inputs)
    old = old_keys(source.state_dict())
    assert "pooled_dense.weight" in old and "output_dense.bias" in old and not any("classifier" in k for k in old)
    model = classifier(seed=2)
    model.load_state_dict(old)  # strict
    with torch.no_grad():
        assert torch.equal(model(inputs), expected)
    # Nested, as Lightning and Trainer checkpoints hold it ("model." prefix).
    wrapper = torch.nn.ModuleDict({"model": classifier(seed=3)})
    wrapper.load_state_dict({"model." + k: v for k, v in old.items()})
    with torch.no_grad():
        assert torch.equal(wrapper["model"](inputs), expected)
    # Old and new keys for one tensor: nothing is dropped silently, strict loading names it.
    both = {**source.state_dict(), "output_dense.bias": torch.zeros(3)}
    with pytest.raises(RuntimeError, match="output_dense.bias"):
        classifier(seed=2).load_state_dict(both)
