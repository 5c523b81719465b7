"""Packed input {"token_ids": (total,), "cu_seqlens": (batch + 1,) int32[, "max_seqlen"]}:
each sequence's output equals the padded model's for it, eager and compiled; the collate
helpers build it; every bad packed input is a ValueError naming the argument."""

import pytest
import torch
from torch._dynamo.utils import counters
from torch.utils.data import DataLoader

from helpers.gradients import assert_gradients_close
from helpers.random_weights import randomize_
from roberta_torch import RobertaBackbone, XLMRobertaBackbone, attention, pack_padded_batch, pack_sequences

CONFIG = dict(vocabulary_size=97, num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=32, max_sequence_length=24)


def model(cls=RobertaBackbone, seed=0, **kwargs):
    kwargs.setdefault("dropout", 0.0)
    return randomize_(cls(**CONFIG, **kwargs), seed)


def random_sequences(generator, count=5, longest=24):
    lengths = torch.randint(1, longest + 1, (count,), generator=generator).tolist()
    lengths[1] = 0  # an empty sequence
    lengths[0] = longest
    return [torch.randint(0, 97, (n,), generator=generator) for n in lengths]


def padded(sequences):
    seq = max(len(s) for s in sequences)
    ids = torch.zeros(len(sequences), seq, dtype=torch.int64)
    mask = torch.zeros(len(sequences), seq, dtype=torch.bool)
    for row, s in enumerate(sequences):
        ids[row, : len(s)], mask[row, : len(s)] = s, True
    return {"token_ids": ids, "padding_mask": mask}


def relative_error(actual, expected):
    return float((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-30))


@pytest.mark.parametrize("seed", range(3))
def test_packed_equals_padded_per_sequence(seed):
    g = torch.Generator().manual_seed(seed)
    sequences = random_sequences(g)
    cls = XLMRobertaBackbone if seed % 2 else RobertaBackbone
    net = model(cls, seed).eval()
    batch = padded(sequences)
    with torch.no_grad(), attention.record_dispatch() as calls:
        packed_out = net(pack_sequences(sequences))
    assert set(calls) == {("sdpa", "packed")}
    net.padding_free = False
    with torch.no_grad():
        reference = net(batch)
    assert packed_out.shape == (sum(len(s) for s in sequences), CONFIG["hidden_dim"])
    assert relative_error(packed_out, reference[batch["padding_mask"]]) < 1e-5


def test_pack_padded_batch_matches_pack_sequences_and_works_in_a_dataloader():
    g = torch.Generator().manual_seed(4)
    sequences = random_sequences(g)
    from_padded = pack_padded_batch(padded(sequences))
    direct = pack_sequences([s.tolist() for s in sequences])
    for key in ("token_ids", "cu_seqlens"):
        assert torch.equal(from_padded[key], direct[key]), key
    assert from_padded["max_seqlen"] == direct["max_seqlen"] == 24
    assert direct["cu_seqlens"].dtype == torch.int32
    # As collate functions: samples of lists / dicts with labels; padded samples.
    samples = [{"token_ids": s.tolist(), "label": i} for i, s in enumerate(sequences)]
    batch = next(iter(DataLoader(samples, batch_size=5, collate_fn=pack_sequences)))
    assert torch.equal(batch.pop("label"), torch.arange(5))
    assert torch.equal(batch["token_ids"], direct["token_ids"])
    rows = padded(sequences)
    padded_samples = [{"token_ids": rows["token_ids"][i], "padding_mask": rows["padding_mask"][i]} for i in range(5)]
    batch = next(iter(DataLoader(padded_samples, batch_size=5, collate_fn=pack_padded_batch)))
    assert torch.equal(batch["cu_seqlens"], direct["cu_seqlens"])


def test_packed_training_gradients_match_padded():
    g = torch.Generator().manual_seed(5)
    sequences = random_sequences(g)
    grads = []
    for packed in (True, False):
        net = model().train()
        net.padding_free = False
        if packed:
            out = net(pack_sequences(sequences))
        else:
            batch = padded(sequences)
            out = net(batch)[batch["padding_mask"]]
        out.pow(2).sum().backward()
        grads.append({n: p.grad for n, p in net.named_parameters()})
    assert_gradients_close(grads[0], grads[1])


@pytest.mark.parametrize("checkpointing", [False, True])
def test_packed_dropout_and_checkpointing(checkpointing):
    g = torch.Generator().manual_seed(6)
    inputs = pack_sequences(random_sequences(g))
    net = model(dropout=0.3, gradient_checkpointing=checkpointing).train()
    torch.manual_seed(0)
    out = net(inputs)
    out.pow(2).sum().backward()
    with torch.no_grad():
        reference = net.eval()(inputs)
    assert not torch.allclose(out, reference)
    assert all(torch.isfinite(p.grad).all() for p in net.parameters())


def test_packed_mixed_policy():
    g = torch.Generator().manual_seed(7)
    sequences = random_sequences(g)
    net = model(dtype="mixed_bfloat16").eval()
    with torch.no_grad():
        out = net(pack_sequences(sequences))
        reference = model().eval()(pack_sequences(sequences))
    assert out.dtype == torch.bfloat16
    assert relative_error(out.float(), reference) < 3e-2


def test_compiled_packed_input_dynamic_total_length():
    torch._dynamo.reset()
    counters.clear()
    net = model().train()
    compiled = torch.compile(net, fullgraph=True)
    g = torch.Generator().manual_seed(8)
    for step in range(3):
        inputs = pack_sequences(random_sequences(g))
        inputs["max_seqlen"] = 24  # a fixed bound keeps the graph's ints static
        eager = net(inputs)
        eager.pow(2).sum().backward()
        eager_grads = {n: p.grad.clone() for n, p in net.named_parameters()}
        net.zero_grad(set_to_none=True)
        out = compiled(inputs)
        out.pow(2).sum().backward()
        assert relative_error(out.detach(), eager.detach()) < 1e-5
        assert_gradients_close({n: p.grad for n, p in net.named_parameters()}, eager_grads)
        net.zero_grad(set_to_none=True)
    assert counters["stats"]["unique_graphs"] <= 2  # static, then dynamic total
    assert not counters["graph_break"]
    # Value checks stay in the graph as runtime asserts.
    bad = dict(inputs, cu_seqlens=inputs["cu_seqlens"].flip(0).contiguous())
    with pytest.raises(RuntimeError, match="cu_seqlens"):
        compiled(bad)
    torch._dynamo.reset()


def _bad_inputs():
    ids = torch.randint(0, 97, (10,))
    cu = torch.tensor([0, 4, 10], dtype=torch.int32)
    return {
        "cu_seqlens not starting at 0": ({"token_ids": ids, "cu_seqlens": torch.tensor([1, 4, 10], dtype=torch.int32)}, "cu_seqlens.*start at 0"),
        "decreasing": ({"token_ids": ids, "cu_seqlens": torch.tensor([0, 6, 4, 10], dtype=torch.int32)}, "cu_seqlens.*never decrease"),
        "last != total": ({"token_ids": ids, "cu_seqlens": torch.tensor([0, 4, 9], dtype=torch.int32)}, "cu_seqlens.*end at the number of tokens"),
        "int64": ({"token_ids": ids, "cu_seqlens": cu.long()}, "cu_seqlens.*int32"),
        "rank 2": ({"token_ids": ids, "cu_seqlens": cu[None]}, "cu_seqlens.*rank 1"),
        "too short": ({"token_ids": ids, "cu_seqlens": cu[:1]}, "cu_seqlens.*batch >= 1"),
        "longer than max_sequence_length": (
            {"token_ids": torch.randint(0, 97, (30,)), "cu_seqlens": torch.tensor([0, 25, 30], dtype=torch.int32)},
            "max_sequence_length=24",
        ),
        "max_seqlen too small": ({"token_ids": ids, "cu_seqlens": cu, "max_seqlen": 5}, "max_seqlen.*smaller than the longest"),
        "max_seqlen not an int": ({"token_ids": ids, "cu_seqlens": cu, "max_seqlen": 6.0}, "max_seqlen.*int"),
        "token_ids rank 2": ({"token_ids": ids[None], "cu_seqlens": cu}, "token_ids.*rank 1"),
        "with a padding_mask": ({"token_ids": ids, "cu_seqlens": cu, "padding_mask": torch.ones(10)}, "padding_mask"),
        "id out of range": ({"token_ids": ids + 97, "cu_seqlens": cu}, "token_ids.*vocabulary_size"),
    }


@pytest.mark.parametrize("case", list(_bad_inputs()))
def test_bad_packed_input_is_a_value_error(case):
    inputs, message = _bad_inputs()[case]
    with attention.record_dispatch() as calls, pytest.raises(ValueError, match=message):
        model()(inputs)
    assert calls == []  # raised before any attention kernel ran
