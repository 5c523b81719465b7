"""Choosing CPU paths by measurement (roberta_torch/cpu_choice.py) and `from_preset(quantize=)`.

The chooser is made deterministic with injected timings; candidates are compared against the
plain path on fresh random weights (biases and LayerNorm parameters included)."""

import numpy as np
import pytest
import torch

import roberta_torch
from roberta_torch import int8_kernels, quantization
from helpers.random_weights import randomize_

TINY = dict(vocabulary_size=80, num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=24, max_sequence_length=20)
INT8 = any(int8_kernels.probe(name) is not None for name in int8_kernels.KERNELS)
needs_int8 = pytest.mark.skipif(not INT8, reason="no int8 kernel in this torch build")


def batch(lengths=(20, 13, 4), seq=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 80, (len(lengths), seq), generator=g)
    mask = torch.arange(seq)[None, :] < torch.tensor(lengths)[:, None]
    return {"token_ids": torch.where(mask, ids, torch.ones_like(ids)), "padding_mask": mask}


@pytest.fixture(scope="module")
def backbone_preset(tmp_path_factory):
    directory = tmp_path_factory.mktemp("preset") / "tiny"
    randomize_(roberta_torch.RobertaBackbone(**TINY), seed=0, scale=0.3).save_to_preset(directory, "safetensors")
    return directory


# ---------------------------------------------------------------------------- from_preset(quantize=)


@needs_int8
def test_backbone_from_preset_quantize_int8(backbone_preset):
    float_model = roberta_torch.RobertaBackbone.from_preset(backbone_preset)
    model = roberta_torch.RobertaBackbone.from_preset(backbone_preset, quantize="int8")
    assert quantization.is_quantized(model) and not quantization.is_quantized(float_model)
    assert not any(p.requires_grad for p in model.parameters()) and not model.training
    with torch.no_grad():
        expected, actual = float_model(batch()), model(batch())
    mask = batch()["padding_mask"]
    cosine = torch.nn.functional.cosine_similarity(actual[mask], expected[mask], dim=-1)
    assert cosine.min() > 0.99 and (actual - expected)[mask].abs().max() > 1e-6  # close, really int8


@needs_int8
def test_task_from_preset_quantize_int8(backbone_preset):
    float_task = roberta_torch.RobertaTextClassifier.from_preset(backbone_preset, num_classes=3)
    torch.manual_seed(0)  # the same fresh head twice
    task = roberta_torch.RobertaTextClassifier.from_preset(backbone_preset, num_classes=3, quantize="int8")
    linears = [m for m in task.modules() if isinstance(m, torch.nn.Linear)]
    assert quantization.is_quantized(task) and not linears, f"left float: {linears}"  # the head too
    assert not task.training
    with torch.no_grad():
        assert task(batch()).shape == float_task(batch()).shape == (3, 3)


@needs_int8
def test_text_embedder_from_preset_quantize_int8(tmp_path):
    pytest.importorskip("sentence_transformers")
    from helpers.sentence_transformers_dirs import TEXTS, sentence_transformers_dir

    directory = sentence_transformers_dir(tmp_path, "roberta", pooling="mean", normalize=True)
    expected = roberta_torch.TextEmbedder.from_preset(str(directory)).encode(TEXTS)
    embedder = roberta_torch.TextEmbedder.from_preset(str(directory), quantize="int8")
    assert quantization.is_quantized(embedder)
    actual = embedder.encode(TEXTS)
    assert (actual * expected).sum(1).min() >= 0.999 and np.abs(actual - expected).max() > 1e-5


@pytest.mark.parametrize(
    "load",
    [
        lambda path, **kw: roberta_torch.RobertaBackbone.from_preset(path, **kw),
        lambda path, **kw: roberta_torch.RobertaTextClassifier.from_preset(path, num_classes=2, **kw),
        lambda path, **kw: roberta_torch.TextEmbedder.from_preset(path, **kw),
    ],
    ids=["backbone", "task", "embedder"],
)
def test_from_preset_quantize_is_validated_before_loading(tmp_path, load):
    missing = tmp_path / "does-not-exist"  # loading would raise FileNotFoundError
    with pytest.raises(ValueError, match="`quantize` must be None or one of"):
        load(missing, quantize="int4")
    with pytest.raises(ValueError, match="`quantize` must be None or one of"):
        load(missing, quantize=True)
    with pytest.raises(ValueError, match="runs on CPU only"):
        load(missing, quantize="int8", device="meta")
