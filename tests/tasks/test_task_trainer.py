"""HF Trainer drives every task model as it is: no label_names, no glue. train, evaluate and
predict; compute_metrics gets exactly one prediction per example (16 examples in batches of
3, where a tuple output used to lose one row per batch); gradient_checkpointing=True."""

import numpy as np
import pytest
import torch

from helpers.random_weights import randomize_
from roberta_torch import RobertaBackbone, tasks

SMALL = dict(vocabulary_size=40, num_layers=2, num_heads=2, hidden_dim=8, intermediate_dim=16, max_sequence_length=12)
N, SEQ = 16, 10


def dataset(kind: str, seed: int = 0):
    import datasets

    generator = np.random.default_rng(seed)
    ids = generator.integers(3, 40, (N, SEQ))
    lengths = generator.integers(4, SEQ + 1, N)
    mask = np.arange(SEQ)[None] < lengths[:, None]
    ids[~mask] = 1
    labels = {
        "classifier": generator.integers(0, 3, N),
        "tagger": np.where(mask, ids % 3, -100),
        "mlm": np.where(mask & (generator.random((N, SEQ)) < 0.3), ids, -100),
        "qa": np.stack([lengths // 3, lengths // 2], 1),
    }[kind]
    rows = {"token_ids": ids.tolist(), "padding_mask": mask.astype(np.int64).tolist(), "labels": labels.tolist()}
    rows["an_unused_column"] = ["text"] * N  # Trainer drops it by the forward signature
    return datasets.Dataset.from_dict(rows)


def model_for(kind: str):
    backbone = RobertaBackbone(**SMALL)
    model = {
        "classifier": lambda: tasks.RobertaTextClassifier(backbone, num_classes=3),
        "tagger": lambda: tasks.RobertaTokenClassifier(backbone, num_classes=3),
        "mlm": lambda: tasks.RobertaMaskedLM(backbone),
        "qa": lambda: tasks.RobertaQuestionAnswerer(backbone),
    }[kind]()
    return randomize_(model, seed=1)


def trainer_for(model, kind, tmp_path, seen, **arguments):
    import transformers

    def compute_metrics(prediction):
        seen.append(prediction)
        return {"count": float(len(prediction.label_ids))}

    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=4, per_device_eval_batch_size=3, max_steps=3,
        learning_rate=1e-3, report_to="none", save_strategy="no", use_cpu=True, disable_tqdm=True, **arguments,
    )
    data = dataset(kind)
    return transformers.Trainer(model=model, args=args, train_dataset=data, eval_dataset=data, compute_metrics=compute_metrics)


@pytest.mark.parametrize("kind", ["classifier", "tagger", "mlm", "qa"])
def test_trainer_trains_evaluates_and_predicts_every_task(kind, tmp_path):
    model, seen = model_for(kind), []
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = trainer_for(model, kind, tmp_path, seen)
    assert trainer.label_names == ["labels"]  # found by Trainer itself
    result = trainer.train()
    assert result.global_step == 3 and np.isfinite(result.training_loss)
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters())

    metrics = trainer.evaluate()
    assert np.isfinite(metrics["eval_loss"]) and metrics["eval_count"] == N
    predictions = trainer.predict(dataset(kind))
    expected = dataset(kind)
    labels = np.asarray(expected["labels"])
    np.testing.assert_array_equal(predictions.label_ids, labels)
    outputs = predictions.predictions
    model.eval()
    with torch.no_grad():
        reference = model({"token_ids": torch.tensor(expected["token_ids"]), "padding_mask": torch.tensor(expected["padding_mask"])})
    if kind == "qa":  # (start, end) logits, one row per example, as for transformers' QA models
        assert isinstance(outputs, tuple) and [o.shape for o in outputs] == [(N, SEQ), (N, SEQ)]
        pairs = zip(outputs, reference)
    else:
        assert outputs.shape[0] == N
        pairs = [(outputs, reference)]
    valid = np.asarray(expected["padding_mask"], dtype=bool)
    for got, want in pairs:
        want = want.numpy()
        if kind != "classifier":  # per-token outputs at padding are unspecified
            got, want = got[valid], want[valid]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert len(seen) == 2 and all(len(p.label_ids) == N for p in seen)


@pytest.mark.parametrize("name", ["gradient_checkpointing", "activation_checkpointing"])  # 5.x renamed it
def test_trainer_gradient_checkpointing(name, tmp_path, recwarn):
    model, seen = model_for("classifier"), []
    trainer = trainer_for(model, "classifier", tmp_path, seen, **{name: True, f"{name}_kwargs": {"use_reentrant": False}})
    calls = []
    original = model.backbone._run_checkpointed
    model.backbone._run_checkpointed = lambda *a, **k: calls.append(1) or original(*a, **k)
    trainer.train()
    assert model.is_gradient_checkpointing and calls  # layers went through torch.utils.checkpoint
    # Trainer found activation_checkpointing_enable (no "only defines gradient_checkpointing_enable").
    assert not [w for w in recwarn if "only defines" in str(w.message)]


@pytest.mark.parametrize("kind", ["classifier", "qa"])
def test_predict_without_labels_with_return_dict(kind, tmp_path):
    """Without labels a task returns keras_hub's output (a tensor), which Trainer's prediction
    step squeezes when a batch holds one example (16 = 5 x 3 + 1); `model.return_dict = True`
    makes it a TaskOutput of the logits, as transformers' models return."""
    model, seen = model_for(kind), []
    model.return_dict = True
    trainer = trainer_for(model, kind, tmp_path, seen)
    predictions = trainer.predict(dataset(kind).remove_columns("labels"))
    outputs = predictions.predictions
    assert predictions.label_ids is None
    assert [o.shape[0] for o in (outputs if isinstance(outputs, tuple) else (outputs,))] == [N] * (2 if kind == "qa" else 1)


def test_trainer_saves_checkpoints_and_resumes(tmp_path):
    """Trainer's checkpoint of a plain nn.Module: model.safetensors (our state dict, no tied
    duplicates to drop) + optimizer state; a fresh model resumes from it."""
    import transformers
    from safetensors.torch import load_file

    def arguments(steps, **extra):
        return transformers.TrainingArguments(
            output_dir=str(tmp_path), max_steps=steps, per_device_train_batch_size=4, report_to="none",
            use_cpu=True, disable_tqdm=True, **extra,
        )

    model = model_for("mlm")
    transformers.Trainer(model=model, args=arguments(2, save_strategy="steps", save_steps=2), train_dataset=dataset("mlm")).train()
    saved = load_file(tmp_path / "checkpoint-2" / "model.safetensors")
    assert saved.keys() == model.state_dict().keys()
    for key, tensor in model.state_dict().items():
        torch.testing.assert_close(saved[key], tensor, rtol=0, atol=0)
    fresh = model_for("mlm")
    trainer = transformers.Trainer(model=fresh, args=arguments(3, save_strategy="no"), train_dataset=dataset("mlm"))
    assert trainer.train(resume_from_checkpoint=str(tmp_path / "checkpoint-2")).global_step == 3
