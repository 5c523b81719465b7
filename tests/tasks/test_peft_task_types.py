"""PEFT's task types on our models as on transformers': `model.config` answers what PEFT and
Trainer read (model_type -> PEFT's default RoBERTa targets query/value), transformers' call
spellings (input_ids, attention_mask, token_type_ids, ...) are aliases that return dicts, and
unsupported ones are refused before anything runs; keras_hub's outputs are unchanged."""

import copy
import pickle

import numpy as np
import pytest
import torch

from helpers.random_weights import randomize_
from roberta_torch import RobertaBackbone, XLMRobertaBackbone, tasks
from roberta_torch.tasks import heads

SMALL = dict(vocabulary_size=40, num_layers=2, num_heads=2, hidden_dim=8, intermediate_dim=16, max_sequence_length=12)


def make(kind: str, backbone_cls=RobertaBackbone):
    backbone = backbone_cls(**SMALL)
    model = {
        "backbone": lambda: backbone,
        "classifier": lambda: tasks.RobertaTextClassifier(backbone, num_classes=3, id2label={0: "a", 1: "b", 2: "c"}),
        "tagger": lambda: tasks.RobertaTokenClassifier(backbone, num_classes=3),
        "qa": lambda: tasks.RobertaQuestionAnswerer(backbone),
    }[kind]()
    return randomize_(model, seed=1).eval()


def batch(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 40, (3, 7), generator=generator)
    mask = torch.tensor([[1] * 7, [1] * 5 + [0] * 2, [1] * 3 + [0] * 4])
    return ids.masked_fill(mask == 0, 1), mask


def test_config_speaks_transformers():
    backbone = make("backbone")
    config = backbone.config
    assert (config.model_type, config.hidden_size, config.num_hidden_layers) == ("roberta", 8, 2)
    assert (config.num_attention_heads, config.intermediate_size, config.vocab_size) == (2, 16, 40)
    assert config.architectures == ["RobertaModel"] and config.to_dict()["model_type"] == "roberta"
    assert config.return_dict and not config.tie_word_embeddings and config.get("missing", 7) == 7
    assert XLMRobertaBackbone(**SMALL).config.model_type == "xlm-roberta"
    classifier = make("classifier")
    assert classifier.config.architectures == ["RobertaForSequenceClassification"]
    assert classifier.config.num_labels == 3 and classifier.config.id2label == {"0": "a", "1": "b", "2": "c"}
    # Tools may set what describes no part of the model (Trainer writes use_cache); it stays.
    classifier.config.use_cache = False
    classifier.config.pretraining_tp = 1
    assert classifier.config.use_cache is False and classifier.config.to_dict()["pretraining_tp"] == 1
    with pytest.raises(AttributeError, match="hidden_size.*read-only"):
        classifier.config.hidden_size = 4
    for clone in (copy.deepcopy(classifier), pickle.loads(pickle.dumps(classifier))):
        assert clone.config.use_cache is False and clone.config.num_labels == 3
    assert "config" not in dict(classifier.state_dict())


@pytest.mark.parametrize("kind", ["backbone", "classifier", "tagger", "qa"])
def test_transformers_spellings_are_aliases(kind):
    model, (ids, mask) = make(kind), batch()
    keras = model({"token_ids": ids, "padding_mask": mask})
    theirs = model(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids), output_attentions=False)
    assert isinstance(theirs, dict)  # transformers' spellings: transformers' dict output
    keras = keras if isinstance(keras, tuple) else (keras,)
    assert all(torch.equal(k, t) for k, t in zip(keras, theirs.values()))
    assert not isinstance(model(token_ids=ids, padding_mask=mask), dict)  # keras_hub's, unchanged
    plain = model({"input_ids": ids, "attention_mask": mask}, return_dict=False)  # the dict form too
    assert torch.equal(plain[0] if isinstance(plain, tuple) else plain, keras[0])
    refused = {
        "same input twice": (dict(input_ids=ids, token_ids=ids), "Both `input_ids`"),
        "embeddings": (dict(input_ids=ids, inputs_embeds=torch.zeros(3, 7, 8)), "inputs_embeds"),
        "attentions": (dict(input_ids=ids, output_attentions=True), "output_attentions"),
        "token types": (dict(input_ids=ids, token_type_ids=torch.ones_like(ids)), "token_type_ids"),
    }
    if kind != "backbone":
        refused["hidden states"] = (dict(input_ids=ids, output_hidden_states=True), "model.backbone")
    for arguments, message in refused.values():
        with pytest.raises(ValueError, match=message):
            model(**arguments)
    if kind == "backbone":
        out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        assert len(out.hidden_states) == 3 and torch.equal(out.hidden_states[-1], out.last_hidden_state)


@pytest.mark.parametrize(
    "kind, task_type, head",
    [
        ("backbone", "FEATURE_EXTRACTION", None),
        ("classifier", "SEQ_CLS", "classifier"),
        ("tagger", "TOKEN_CLS", "classifier"),
        ("qa", "QUESTION_ANS", "qa_outputs"),
    ],
)
def test_peft_task_types_train_our_models(kind, task_type, head):
    import peft

    model, (ids, mask) = make(kind), batch()
    # No target_modules: PEFT picks its RoBERTa defaults from config.model_type.
    config = peft.LoraConfig(task_type=task_type, r=2)  # the head: PEFT's default `classifier`
    peft_model = peft.get_peft_model(model, config)
    assert type(peft_model).__name__ == peft.MODEL_TYPE_TO_PEFT_MODEL_MAPPING[task_type].__name__
    targeted = peft_model.base_model.targeted_module_names
    assert targeted and all(name.endswith(("attention.query", "attention.value")) for name in targeted)
    labels = {
        "backbone": {},
        "classifier": {"labels": torch.tensor([0, 2, 1])},
        "tagger": {"labels": torch.where(mask.bool(), ids % 3, -100)},
        "qa": {"start_positions": torch.tensor([1, 2, 0]), "end_positions": torch.tensor([3, 2, 1])},
    }[kind]
    peft_model.train()
    out = peft_model(input_ids=ids, attention_mask=mask, **labels)  # as PEFT's forward passes them on
    loss = out["last_hidden_state"].square().mean() if kind == "backbone" else out["loss"]
    loss.backward()
    trained = {n for n, p in peft_model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert any("lora_B" in n for n in trained)
    if head is not None:
        assert any(f"{head}.modules_to_save" in n for n in trained)


def test_seq_cls_defaults_train_the_text_classifier_head_as_on_transformers():
    """LoraConfig(task_type="SEQ_CLS") with nothing else: PEFT finds and trains our head as it
    does transformers' RobertaForSequenceClassification's (the same head tensors, by
    transformers' names), and one optimizer step moves every one of them."""
    import peft
    import transformers

    theirs = transformers.RobertaForSequenceClassification(transformers.RobertaConfig(
        vocab_size=40, hidden_size=8, num_hidden_layers=2, num_attention_heads=2, intermediate_size=16, num_labels=3,
    ))
    to_theirs = {ours: source for source, ours, _ in heads.TRANSFORMERS_TEXT_CLASSIFIER_TABLE}

    def trainable_head(peft_model, rename):
        names = {n.removeprefix("base_model.model.").replace("modules_to_save.default.", "")
                 for n, p in peft_model.named_parameters() if p.requires_grad and "lora_" not in n}
        return {rename.get(n, n) for n in names}

    reference = peft.get_peft_model(theirs, peft.LoraConfig(task_type="SEQ_CLS"))
    peft_model = peft.get_peft_model(make("classifier"), peft.LoraConfig(task_type="SEQ_CLS"))
    head = trainable_head(peft_model, to_theirs)
    assert head == trainable_head(reference, {}) == {row[0] for row in heads.TRANSFORMERS_TEXT_CLASSIFIER_TABLE}
    trained = {n: p for n, p in peft_model.named_parameters() if p.requires_grad and "lora_" not in n}
    before = {n: p.detach().clone() for n, p in trained.items()}
    optimizer = torch.optim.SGD(trained.values(), lr=0.1)
    ids, mask = batch()
    peft_model.train()
    peft_model(input_ids=ids, attention_mask=mask, labels=torch.tensor([0, 2, 1])).loss.backward()
    optimizer.step()
    assert all(not torch.equal(p, before[n]) for n, p in trained.items())
    base = peft_model.get_base_model()  # the alias reaches the trained copy
    copy_key = "base_model.model.classifier.modules_to_save.default.out_proj.weight"
    assert torch.equal(base.output_dense.weight, trained[copy_key])


@pytest.fixture
def fresh_accelerator_state():
    """Trainer sets accelerate's process-wide state (fp32); later tests build their own
    Accelerator (e.g. bf16), which refuses a changed state: reset it afterwards."""
    yield
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)


def test_trainer_predicts_tokenizer_columns_without_labels(tmp_path, fresh_accelerator_state):
    """A dataset with a tokenizer's columns (input_ids, attention_mask) and no labels: plain
    TrainingArguments, one prediction per example (16 = 5 x 3 + 1: a batch of one included)."""
    import datasets
    import transformers

    generator = np.random.default_rng(0)
    ids = generator.integers(3, 40, (16, 7))
    rows = {"input_ids": ids.tolist(), "attention_mask": np.ones_like(ids).tolist()}
    for kind in ("classifier", "qa"):
        args = transformers.TrainingArguments(
            output_dir=str(tmp_path / kind), per_device_eval_batch_size=3, report_to="none", use_cpu=True,
            disable_tqdm=True,
        )
        trainer = transformers.Trainer(model=make(kind), args=args)
        predictions = trainer.predict(datasets.Dataset.from_dict(rows)).predictions
        predictions = predictions if isinstance(predictions, tuple) else (predictions,)
        assert [p.shape[0] for p in predictions] == [16] * (2 if kind == "qa" else 1)


def test_trainer_drives_a_peft_model(tmp_path, fresh_accelerator_state):
    """Trainer on PEFT's SEQ_CLS wrapper of our classifier: trains (LoRA and head move),
    evaluates and predicts one row per example, labels or not."""
    import datasets
    import peft
    import transformers

    peft_model = peft.get_peft_model(
        make("classifier"), peft.LoraConfig(task_type="SEQ_CLS", r=2)
    )
    before = {n: p.detach().clone() for n, p in peft_model.named_parameters() if p.requires_grad}
    generator = np.random.default_rng(0)
    ids = generator.integers(3, 40, (16, 7))
    data = datasets.Dataset.from_dict(
        {"token_ids": ids.tolist(), "padding_mask": np.ones_like(ids).tolist(), "labels": generator.integers(0, 3, 16).tolist()}
    )
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=4, per_device_eval_batch_size=3, max_steps=3,
        learning_rate=1e-2, report_to="none", use_cpu=True, disable_tqdm=True, save_strategy="no",
    )
    trainer = transformers.Trainer(
        model=peft_model, args=args, train_dataset=data, eval_dataset=data,
        compute_metrics=lambda prediction: {"count": float(len(prediction.predictions))},
    )
    trainer.train()
    assert all(not torch.equal(p, before[n]) for n, p in peft_model.named_parameters() if n in before)
    assert trainer.evaluate()["eval_count"] == 16
    assert trainer.predict(data.remove_columns("labels")).predictions.shape == (16, 3)


def test_adapter_functions_are_reachable_from_the_package():
    """The README's `import roberta_torch` then `roberta_torch.peft.load_adapter(...)`, in a fresh
    interpreter (here other tests have imported the submodule already)."""
    from helpers.subprocesses import run_python

    script = (
        "import roberta_torch; "
        "print(callable(roberta_torch.peft.load_adapter), callable(roberta_torch.peft.save_adapter))"
    )
    assert run_python(script, {}).strip() == "True True"
