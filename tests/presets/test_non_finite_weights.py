"""Checkpoints holding NaN or infinite weights load with one warning per load naming the
tensors and their files, in every format and for task presets (issue 22 B7)."""

import logging

import pytest
import torch

import roberta_torch
from helpers.task_fixtures import case_dir

SMALL = dict(vocabulary_size=30, num_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=8)
FILES = {"keras": "model.weights.h5", "safetensors": "model.safetensors", "transformers": "model.safetensors"}


def warnings_of(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "NaN or infinite" in r.getMessage()]


@pytest.mark.parametrize("format", ["keras", "safetensors", "transformers"])
def test_non_finite_backbone_weights_are_reported_once(tmp_path, caplog, format):
    model = roberta_torch.RobertaBackbone(**SMALL)
    with torch.no_grad():
        model.layers[0].feedforward.output.weight[0, 0] = float("nan")
        model.embeddings_layer_norm.bias[1] = float("inf")
    model.save_to_preset(tmp_path / "out", format=format)
    with caplog.at_level(logging.WARNING):
        loaded = roberta_torch.Backbone.from_preset(str(tmp_path / "out"))
    found = warnings_of(caplog)
    assert len(found) == 1, found
    assert "2 loaded tensor(s)" in found[0] and FILES[format] in found[0]
    assert "layers.0.feedforward.output.weight" in found[0] and "embeddings_layer_norm.bias" in found[0]
    assert torch.isnan(loaded.layers[0].feedforward.output.weight[0, 0])  # loaded as stored

    caplog.clear()
    with caplog.at_level(logging.WARNING):
        roberta_torch.Backbone.from_preset(str(tmp_path / "out"))
        clean = tmp_path / "clean"
        roberta_torch.RobertaBackbone(**SMALL).save_to_preset(clean, format=format)
        roberta_torch.Backbone.from_preset(str(clean))
    assert len(warnings_of(caplog)) == 1  # once per load; none for finite weights


@pytest.mark.parametrize("format", ["keras", "transformers"])
def test_a_non_finite_task_head_is_reported(tmp_path, caplog, format):
    task = roberta_torch.Task.from_preset(str(case_dir("transformers", "roberta_sequenceclassification")))
    with torch.no_grad():
        task.output_dense.bias[2] = float("-inf")
    task.save_to_preset(tmp_path / "out", format=format)
    with caplog.at_level(logging.WARNING):
        roberta_torch.Task.from_preset(str(tmp_path / "out"))
    found = warnings_of(caplog)
    assert len(found) == 1 and "classifier.out_proj.bias" in found[0], found
    assert ("task.weights.h5" if format == "keras" else "model.safetensors") in found[0]
