"""`labels=`: every task's loss against transformers' RobertaFor* on the same weights (fresh
random ones, biases and LayerNorms included, written by us in transformers' format), the
output type HF Trainer reads, and every bad-label path."""

import pickle

import pytest
import torch

from helpers.random_weights import randomize_
from helpers.task_fixtures import case_dir
from roberta_torch import RobertaBackbone, attention, tasks
from roberta_torch.tasks.outputs import TaskOutput

SMALL = dict(vocabulary_size=30, num_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=16, max_sequence_length=10)
LENGTHS = (12, 7, 4)  # the rows of the batch: one full, two right-padded


def batch(seq=12, vocab=40, seed=0):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (len(LENGTHS), seq), generator=generator)
    mask = torch.arange(seq)[None, :] < torch.tensor(LENGTHS)[:, None]
    ids[~mask] = 1  # transformers' pad id
    return {"token_ids": ids, "padding_mask": mask}


def pair(case: str, tmp_path, seed=3, **task_kwargs):
    """(ours, transformers') on the same random weights, both in eval mode."""
    import transformers

    model = tasks.Task.from_preset(str(case_dir("transformers", case)), **task_kwargs)
    randomize_(model, seed=seed).eval()
    model.save_to_preset(tmp_path / case, format="transformers")
    config = transformers.AutoConfig.from_pretrained(tmp_path / case)
    reference = getattr(transformers, config.architectures[0]).from_pretrained(tmp_path / case).eval()
    return model, reference


def hf(reference, inputs, **labels):
    with torch.no_grad():
        return reference(input_ids=inputs["token_ids"], attention_mask=inputs["padding_mask"].long(), **labels)


@pytest.mark.parametrize(
    "problem_type, labels",
    [
        ("single_label_classification", torch.tensor([2, 0, 1])),
        ("multi_label_classification", torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]])),
        ("regression", torch.tensor([[0.5, -1.0, 2.0], [1.0, 0.0, 0.0], [-0.3, 0.2, 0.1]])),
        (None, torch.tensor([1, 1, 0])),  # inferred from integer labels: single-label
        (None, torch.tensor([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])),  # float: multi-label
    ],
)
def test_classifier_loss_equals_transformers_for_every_problem_type(problem_type, labels, tmp_path):
    model, reference = pair("roberta_sequenceclassification", tmp_path)
    model.problem_type = problem_type
    reference.config.problem_type = problem_type
    inputs = batch()
    with torch.no_grad():
        out = model(inputs, labels=labels)
    expected = hf(reference, inputs, labels=labels)
    assert isinstance(out, TaskOutput) and list(out) == ["loss", "logits"]
    torch.testing.assert_close(out.logits, expected.logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.loss, expected.loss, rtol=1e-5, atol=1e-6)
    with torch.no_grad():  # without labels: keras_hub's plain tensor, the same values
        torch.testing.assert_close(model(inputs), out.logits, rtol=0, atol=0)


def test_single_output_classifier_is_regression_as_in_transformers(tmp_path):
    import transformers

    backbone = tasks.RobertaTextClassifier.from_preset(str(case_dir("transformers", "roberta_sequenceclassification"))).backbone
    model = randomize_(tasks.RobertaTextClassifier(backbone, num_classes=1), seed=4).eval()
    model.save_to_preset(tmp_path, format="transformers")
    reference = transformers.RobertaForSequenceClassification.from_pretrained(tmp_path).eval()
    inputs, labels = batch(), torch.tensor([0.3, -1.2, 2.0])
    with torch.no_grad():
        out = model(**inputs, labels=labels)
    torch.testing.assert_close(out.loss, hf(reference, inputs, labels=labels).loss, rtol=1e-5, atol=1e-6)


def test_token_classifier_loss_equals_transformers_with_ignored_labels(tmp_path):
    model, reference = pair("roberta_tokenclassification", tmp_path)
    inputs = batch()
    labels = torch.randint(0, 3, (3, 12), generator=torch.Generator().manual_seed(1))
    labels[~inputs["padding_mask"]] = -100  # what transformers' collators put at padding
    labels[0, 0] = labels[1, 6] = -100
    with torch.no_grad():
        out = model(inputs, labels=labels)
    expected = hf(reference, inputs, labels=labels)
    valid = inputs["padding_mask"]
    torch.testing.assert_close(out.logits[valid], expected.logits[valid], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.loss, expected.loss, rtol=1e-5, atol=1e-6)


def test_masked_lm_loss_equals_transformers_for_every_token_and_for_mask_positions(tmp_path):
    model, reference = pair("xlm_roberta_maskedlm", tmp_path)
    inputs = batch()
    positions = torch.tensor([[1, 5, 9], [0, 2, 6], [3, 1, 0]])
    targets = torch.tensor([[7, 8, 9], [10, 11, 12], [13, 14, -100]])  # the last slot is padding
    labels = torch.full((3, 12), -100)  # the same targets, at their positions
    for (b, m) in (targets != -100).nonzero().tolist():
        labels[b, positions[b, m]] = targets[b, m]
    expected = hf(reference, inputs, labels=labels)
    with torch.no_grad():
        every = model(inputs, labels=labels)
        gathered = model({**inputs, "mask_positions": positions}, labels=targets)
    torch.testing.assert_close(every.loss, expected.loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gathered.loss, expected.loss, rtol=1e-5, atol=1e-6)
    assert every.logits.shape == (3, 12, 40) and gathered.logits.shape == (3, 3, 40)


def test_question_answering_loss_equals_transformers_with_clamped_positions(tmp_path):
    model, reference = pair("roberta_questionanswering", tmp_path)
    full = {k: v[:1].repeat(3, 1) for k, v in batch().items()}  # unpadded rows
    full["token_ids"][1:, 3] = 5
    starts, ends = torch.tensor([2, -100, 4]), torch.tensor([5, 30, 11])  # -100 -> 0, 30 -> ignored
    expected = hf(reference, full, start_positions=starts, end_positions=ends)
    with torch.no_grad():
        out = model(full, labels=torch.stack([starts, ends], dim=1))
        keywords = model(**full, start_positions=starts, end_positions=ends)
    assert list(out) == ["loss", "start_logits", "end_logits"]
    torch.testing.assert_close(out.start_logits, expected.start_logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.loss, expected.loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(keywords.loss, out.loss, rtol=0, atol=0)


def test_question_answering_loss_on_padded_rows_is_each_rows_own(tmp_path):
    """Padded positions are left out of the softmax: each row's loss is transformers' on that
    row alone, unpadded (whatever path, padded or padding-free, our model takes)."""
    model, reference = pair("roberta_questionanswering", tmp_path)
    inputs = batch()
    starts, ends = torch.tensor([2, 1, 0]), torch.tensor([5, 6, 3])
    rows = []
    for b, length in enumerate(LENGTHS):
        row = {k: v[b : b + 1, :length] for k, v in inputs.items()}
        rows.append(hf(reference, row, start_positions=starts[b : b + 1], end_positions=ends[b : b + 1]).loss)
    for padding_free in (True, False):
        model.backbone.padding_free = padding_free
        with torch.no_grad():
            out = model(inputs, labels=torch.stack([starts, ends], 1))
        torch.testing.assert_close(out.loss, torch.stack(rows).mean(), rtol=1e-5, atol=1e-6)


def test_labels_at_padding_do_not_count():
    model = randomize_(tasks.RobertaTokenClassifier(RobertaBackbone(**SMALL), num_classes=3), seed=1).eval()
    inputs = batch(seq=10, vocab=30)
    inputs["padding_mask"][:, 8:] = False
    labels = torch.randint(0, 3, (3, 10), generator=torch.Generator().manual_seed(0))
    cleaned = labels.masked_fill(~inputs["padding_mask"], -100)
    with torch.no_grad():
        losses = {model(inputs, labels=labels).loss.item() for _ in range(1)}
        losses |= {model(inputs, labels=cleaned).loss.item()}
    assert len(losses) == 1


def test_a_batch_without_any_label_has_zero_loss_and_zero_gradients():
    model = randomize_(tasks.RobertaMaskedLM(RobertaBackbone(**SMALL)), seed=1).train()
    inputs = batch(seq=10, vocab=30)
    out = model(inputs, labels=torch.full((3, 10), -100))
    out.loss.backward()
    assert out.loss.item() == 0.0
    assert all(torch.isfinite(p.grad).all() and not p.grad.any() for p in model.parameters() if p.grad is not None)


def test_task_output_is_a_dict_with_attributes_that_pickles_and_flattens():
    import torch.utils._pytree as pytree

    out = TaskOutput(loss=torch.tensor(1.0), logits=torch.ones(2, 3))
    assert isinstance(out, dict) and out.loss is out["loss"] and out.to_tuple()[1] is out["logits"]
    with pytest.raises(AttributeError, match="holds loss, logits"):
        out.start_logits
    again = pickle.loads(pickle.dumps(out))
    assert type(again) is TaskOutput and list(again) == ["loss", "logits"]
    leaves, spec = pytree.tree_flatten(out)
    assert len(leaves) == 2 and type(pytree.tree_unflatten(leaves, spec)) is TaskOutput


def test_gradients_flow_from_the_loss_and_compile_takes_labels():
    model = randomize_(tasks.RobertaTextClassifier(RobertaBackbone(**SMALL, dropout=0.0), num_classes=3), seed=2).train()
    inputs, labels = batch(seq=10, vocab=30), torch.tensor([0, 2, 1])
    out = model(inputs, labels=labels)
    out.loss.backward()
    eager = {n: p.grad.clone() for n, p in model.named_parameters()}
    assert all(g.abs().sum() > 0 for n, g in eager.items() if n != "backbone.token_embedding.weight")
    model.zero_grad()
    torch._dynamo.reset()
    compiled = torch.compile(model)(inputs, labels=labels)
    assert isinstance(compiled, TaskOutput)
    compiled.loss.backward()
    torch.testing.assert_close(compiled.loss, out.loss, rtol=1e-5, atol=1e-6)
    for name, parameter in model.named_parameters():
        torch.testing.assert_close(parameter.grad, eager[name], rtol=1e-4, atol=1e-5, msg=name)


def test_return_dict_gives_a_task_output_without_labels():
    model = randomize_(tasks.RobertaQuestionAnswerer(RobertaBackbone(**SMALL)), seed=1).eval()
    inputs = batch(seq=10, vocab=30)
    with torch.no_grad():
        start, end = model(inputs)
        out = model(inputs, return_dict=True)
        model.return_dict = True
        default = model(**inputs)
        plain = model(inputs, return_dict=False)
    assert list(out) == list(default) == ["start_logits", "end_logits"]
    torch.testing.assert_close(out.start_logits, start, rtol=0, atol=0)
    torch.testing.assert_close(default.end_logits, end, rtol=0, atol=0)
    assert isinstance(plain, tuple)
    with pytest.raises(TypeError, match="return_dict"):
        model(inputs, return_dict="yes")


# -- one dict-or-keywords rule (issue 22 W1) ---------------------------------------------------


def test_masked_lm_refuses_a_dict_plus_mask_positions_keyword():
    """W1: the keyword was ignored ((B, T, V) instead of (B, M, V)); now it is the backbone's
    rule: a dict or keywords, never both."""
    model = randomize_(tasks.RobertaMaskedLM(RobertaBackbone(**SMALL)), seed=1).eval()
    inputs, positions = batch(seq=10, vocab=30), torch.tensor([[1, 2], [0, 3], [4, 5]])
    with pytest.raises(TypeError, match="either as a dict or as keyword arguments.*mask_positions"):
        model(inputs, mask_positions=positions)
    with torch.no_grad():
        in_dict = model({**inputs, "mask_positions": positions})
        keywords = model(**inputs, mask_positions=positions)
    assert in_dict.shape == keywords.shape == (3, 2, 30)
    torch.testing.assert_close(in_dict, keywords, rtol=0, atol=0)


def test_labels_ride_in_the_dict_or_as_a_keyword_but_not_both():
    model = randomize_(tasks.RobertaTextClassifier(RobertaBackbone(**SMALL), num_classes=3), seed=1).eval()
    inputs, labels = batch(seq=10, vocab=30), torch.tensor([0, 1, 2])
    with torch.no_grad():
        losses = [
            model(inputs, labels=labels).loss,
            model({**inputs, "labels": labels}).loss,
            model(**inputs, labels=labels).loss,
        ]
    assert losses[0] == losses[1] == losses[2]
    with pytest.raises(TypeError, match="`labels` was given twice"):
        model({**inputs, "labels": labels}, labels=labels)
    with pytest.raises(TypeError, match="either as a dict or as keyword"):
        model(inputs, padding_mask=inputs["padding_mask"])
    qa = tasks.RobertaQuestionAnswerer(RobertaBackbone(**SMALL))
    with pytest.raises(TypeError, match="labels.*or as start_positions"):
        qa(inputs, labels=torch.zeros(3, 2, dtype=torch.long), start_positions=torch.zeros(3, dtype=torch.long))
    with pytest.raises(TypeError, match="both start_positions"):
        qa(inputs, start_positions=torch.zeros(3, dtype=torch.long))


# -- bad labels: typed errors before the model runs ---------------------------------------------


@pytest.mark.parametrize(
    "build, labels, error, match",
    [
        (lambda b: tasks.RobertaTextClassifier(b, num_classes=3), torch.tensor([0, 3, 1]), ValueError, r"labels.*\[0, 3\) or -100.*\[3\]"),
        (lambda b: tasks.RobertaTextClassifier(b, num_classes=3), torch.tensor([0, 1]), ValueError, r"labels.*shape \(3,\)"),
        (lambda b: tasks.RobertaTextClassifier(b, num_classes=3), torch.ones(3, 2), ValueError, r"labels.*\(3, 3\)"),
        (lambda b: tasks.RobertaTextClassifier(b, num_classes=3, activation="tanh"), torch.tensor([0, 1, 2]), ValueError, "activation='tanh'"),
        (lambda b: tasks.RobertaTextClassifier(b, num_classes=3, problem_type="ranking"), torch.tensor([0, 1, 2]), ValueError, "problem_type"),
        (lambda b: tasks.RobertaTokenClassifier(b, num_classes=3), torch.zeros(3, 10), TypeError, "labels.*integers"),
        (lambda b: tasks.RobertaTokenClassifier(b, num_classes=3), torch.zeros(3, 9, dtype=torch.long), ValueError, r"labels.*\(3, 10\)"),
        (lambda b: tasks.RobertaMaskedLM(b), torch.full((3, 10), 30), ValueError, r"labels.*\[0, 30\)"),
        (lambda b: tasks.RobertaMaskedLM(b), "no", TypeError, "labels"),
        (lambda b: tasks.RobertaQuestionAnswerer(b), torch.zeros(3, dtype=torch.long), ValueError, r"labels.*\(3, 2\)"),
        (lambda b: tasks.RobertaQuestionAnswerer(b), torch.zeros(3, 2), TypeError, "labels.*integers"),
    ],
)
def test_bad_labels_are_typed_errors_raised_before_the_model_runs(build, labels, error, match):
    model = build(RobertaBackbone(**SMALL)).eval()
    with attention.record_dispatch() as calls, pytest.raises(error, match=match):
        model(batch(seq=10, vocab=30), labels=labels)
    assert calls == []


def test_malformed_inputs_with_labels_get_the_backbones_error():
    model = tasks.RobertaTextClassifier(RobertaBackbone(**SMALL), num_classes=3)
    with pytest.raises(ValueError, match="token_ids.*rank 2"):
        model({"token_ids": torch.ones(10, dtype=torch.long)}, labels=torch.tensor([1]))
