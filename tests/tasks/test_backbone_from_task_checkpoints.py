"""`Backbone.from_preset` on any task checkpoint loads the backbone and says which head
tensors it left; the backbone equals the task model's own backbone."""

import pytest
import torch

import roberta_torch
from helpers.task_fixtures import KERAS_CASES, TRANSFORMERS_CASES, case_data, case_dir, model_inputs


@pytest.mark.parametrize("case", TRANSFORMERS_CASES)
def test_transformers_task_checkpoint_loads_as_a_backbone(case, caplog):
    with caplog.at_level("INFO", logger="roberta_torch.presets.loading"):
        backbone = roberta_torch.Backbone.from_preset(str(case_dir("transformers", case)))
    head = {"sequenceclassification": "classifier.", "maskedlm": "lm_head.", "tokenclassification": "classifier.",
            "questionanswering": "qa_outputs."}[case.split("_")[-1]]
    assert "task-head tensors" in caplog.text and head in caplog.text
    task = roberta_torch.tasks.Task.from_preset(str(case_dir("transformers", case)))
    for key, value in task.backbone.state_dict().items():
        assert torch.equal(backbone.state_dict()[key], value), key


@pytest.mark.parametrize("case", KERAS_CASES)
def test_keras_task_preset_loads_as_a_backbone(case):
    backbone = roberta_torch.Backbone.from_preset(str(case_dir("keras", case)))
    task = roberta_torch.tasks.Task.from_preset(str(case_dir("keras", case)))
    inputs = model_inputs(case_data("keras", case), with_mask_positions=False)
    with torch.no_grad():
        assert torch.equal(backbone(inputs), task.backbone(inputs))
