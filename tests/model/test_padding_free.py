"""The padding-free path (unpad once, dense layers on real tokens, per-sequence attention,
pad once) equals the padded path on every valid position."""

import pytest
import torch

from helpers.random_weights import randomize_
from roberta_torch import RobertaBackbone, XLMRobertaBackbone
from roberta_torch.padding import pad, packed_layout, unpad

CONFIG = dict(vocabulary_size=97, num_layers=3, num_heads=3, hidden_dim=24, intermediate_dim=40, max_sequence_length=64)


def randomized(cls=RobertaBackbone, seed=0, **kwargs):
    return randomize_(cls(**CONFIG, **kwargs), seed).eval()


def random_mask(batch, seq, generator, prefix=True):
    lengths = torch.randint(0, seq + 1, (batch,), generator=generator)
    lengths[0] = seq  # a full row
    if batch > 2:
        lengths[1] = 0  # an empty row
        lengths[2] = 1
    if prefix:
        return torch.arange(seq)[None, :] < lengths[:, None]
    return torch.rand(batch, seq, generator=generator) < 0.6


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("prefix", [True, False])
def test_padding_free_equals_padded(seed, prefix):
    g = torch.Generator().manual_seed(seed)
    batch, seq = 5, int(torch.randint(1, 65, (1,), generator=g))
    ids = torch.randint(0, 97, (batch, seq), generator=g)
    mask = random_mask(batch, seq, g, prefix)
    cls = XLMRobertaBackbone if seed % 2 else RobertaBackbone
    padded_model = randomized(cls, seed, padding_free=False)
    packed_model = randomized(cls, seed, padding_free=True)
    with torch.no_grad():
        padded = padded_model({"token_ids": ids, "padding_mask": mask})
        packed = packed_model({"token_ids": ids, "padding_mask": mask})
    assert torch.isfinite(padded).all() and torch.isfinite(packed).all()
    scale = padded[mask].abs().max() if mask.any() else 1.0
    assert (packed[mask] - padded[mask]).abs().max() / scale < 1e-5
    assert (packed[~mask] == 0).all()  # documented: zeros at padded positions


def test_padding_free_gradients_match_padded():
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(0, 97, (4, 20), generator=g)
    mask = random_mask(4, 20, g)
    grads = []
    for padding_free in (False, True):
        model = randomized(padding_free=padding_free, dropout=0.0).train()
        out = model({"token_ids": ids, "padding_mask": mask})
        out[mask].pow(2).sum().backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-4, atol=1e-5, msg=name)


def test_auto_uses_padding_free_only_when_worth_it(monkeypatch):
    model = randomized()
    calls = []
    import roberta_torch.backbone as backbone_module

    original = backbone_module.packed_layout
    monkeypatch.setattr(backbone_module, "packed_layout", lambda m, **kw: calls.append(1) or original(m, **kw))
    ids = torch.randint(0, 97, (4, 10))
    with torch.no_grad():
        model({"token_ids": ids, "padding_mask": torch.ones(4, 10)})
        assert calls == []
        model({"token_ids": ids})
        assert calls == []
        half = torch.arange(10)[None, :] < torch.tensor([10, 5, 5, 2])[:, None]
        model({"token_ids": ids, "padding_mask": half})
        assert calls == [1]


def test_unpad_pad_round_trip():
    g = torch.Generator().manual_seed(3)
    mask = torch.rand(3, 7, generator=g) < 0.5
    mask[1] = False
    x = torch.randn(3, 7, 5, generator=g)
    layout = packed_layout(mask)
    packed = unpad(x, layout)
    assert packed.shape == (int(mask.sum()), 5)
    assert layout.cu_seqlens.tolist() == [0, *torch.cumsum(mask.sum(1), 0).tolist()]
    assert layout.cu_seqlens.dtype == torch.int32
    assert layout.max_seqlen == int(mask.sum(1).max())
    restored = pad(packed, layout)
    torch.testing.assert_close(restored[mask], x[mask], rtol=0, atol=0)
    assert (restored[~mask] == 0).all()
