"""The fine-tuning examples with the ecosystem's trainers run end to end, offline, on the shipped
tiny preset: HF Trainer (examples/fine_tune_trainer.py) and PyTorch Lightning with bf16-mixed
and checkpoints (examples/fine_tune_lightning.py). One thread per child: the models are tiny,
and on a shared 2-core machine a second OpenMP thread only spins."""

import re

import torch

from helpers.paths import EXAMPLES
from test_examples import run


def test_hf_trainer_example_trains_evaluates_predicts_and_saves(tmp_path):
    import roberta_torch

    save = tmp_path / "trained"
    stdout = run(
        [EXAMPLES / "fine_tune_trainer.py", "--steps", "40", "--gradient-checkpointing", "--save", save],
        timeout=300, OMP_NUM_THREADS="1",
    )
    assert "gradient checkpointing True" in stdout
    first, last = map(float, re.search(r"trained 40 steps; training loss ([0-9.]+) -> ([0-9.]+)", stdout).groups())
    assert last < first, stdout
    assert re.search(r"eval loss [0-9.]+; eval accuracy: [0-9.]+ \(\d+/42\)", stdout)
    assert "predict: 42 predictions for 42 rows" in stdout  # one per example
    assert "reloaded, it predicts as the trained model: True" in stdout
    reloaded = roberta_torch.Task.from_preset(str(save))
    assert isinstance(reloaded, roberta_torch.RobertaTextClassifier)
    assert reloaded.num_classes == 3


def test_lightning_example_bf16_mixed_checkpoints_restore_and_resume(tmp_path):
    checkpoints = tmp_path / "checkpoints"
    stdout = run(
        [EXAMPLES / "fine_tune_lightning.py", "--epochs", "2", "--precision", "bf16-mixed", "--gradient-checkpointing",
         "--checkpoints", checkpoints],
        timeout=300, OMP_NUM_THREADS="1",
    )
    assert "precision bf16-mixed, gradient checkpointing True" in stdout
    assert re.search(r"trained 22 steps; val loss [0-9.]+, val accuracy [0-9.]+", stdout), stdout
    assert "checkpoints: epoch=0-step=11.ckpt, epoch=1-step=22.ckpt, last.ckpt" in stdout
    assert "outputs identical: True" in stdout
    assert "resumed at step 22, now at step 33" in stdout
    state = torch.load(checkpoints / "last.ckpt", weights_only=True)["state_dict"]  # a plain state dict
    assert "model.backbone.token_embedding.weight" in state and "model.classifier.out_proj.weight" in state


def test_peft_lora_example_trains_merges_saves_and_reloads(tmp_path):
    import json

    import roberta_torch

    save, adapter = tmp_path / "merged", tmp_path / "adapter"
    stdout = run(
        [EXAMPLES / "fine_tune_peft.py", "--steps", "40", "--save", save, "--adapter", adapter],
        timeout=300, OMP_NUM_THREADS="1",
    )
    assert "LoRA r=8 on ['query', 'value'], head in modules_to_save" in stdout  # PEFT's RoBERTa defaults
    first, last = map(float, re.search(r"trained 40 steps; loss ([0-9.]+) -> ([0-9.]+)", stdout).groups())
    assert last < first, stdout
    error = float(re.search(r"merged: RobertaTextClassifier, relative difference to the adapter's outputs ([0-9.e+-]+)", stdout).group(1))
    assert error < 1e-5, stdout
    assert "reloaded, same outputs: True" in stdout
    reloaded = roberta_torch.Task.from_preset(str(save))
    assert isinstance(reloaded, roberta_torch.RobertaTextClassifier) and not any("lora" in k for k in reloaded.state_dict())
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["modules_to_save"] == ["classifier"] and config["task_type"] == "SEQ_CLS"
