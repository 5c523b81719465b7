"""Every head against the real libraries: transformers task checkpoints and keras_hub task
presets (tests/fixtures/tasks/, written by them), loaded here and written back for them."""

import numpy as np
import pytest
import torch

import roberta_torch

from helpers.task_fixtures import (
    KERAS_CASES,
    TRANSFORMERS_CASES,
    case_data,
    case_dir,
    model_inputs,
    relative_error,
)
from roberta_torch import tasks

TOLERANCE = 1e-5
EXPECTED_CLASS = {
    "sequenceclassification": "TextClassifier",
    "maskedlm": "MaskedLM",
    "tokenclassification": "TokenClassifier",
    "questionanswering": "QuestionAnswerer",
}


def _expected_class(case: str) -> type:
    family, kind = case.rsplit("_", 1)
    prefix = "XLMRoberta" if family == "xlm_roberta" else "Roberta"
    return getattr(tasks, prefix + EXPECTED_CLASS[kind])


def _transformers_error(model, data) -> float:
    valid = data["padding_mask"]
    with torch.no_grad():
        out = model(model_inputs(data))
    if isinstance(out, tuple):
        return max(relative_error(o, data[k], valid) for o, k in zip(out, ("start_logits", "end_logits")))
    if out.dim() == 3:  # per-token logits: compare the valid tokens (HF's positions differ at padding)
        return relative_error(out, data["logits"], valid)
    return relative_error(out, data["logits"])


@pytest.mark.parametrize("case", TRANSFORMERS_CASES)
def test_transformers_task_checkpoints_load_with_their_heads(case):
    data = case_data("transformers", case)
    model = tasks.Task.from_preset(str(case_dir("transformers", case)))
    assert type(model) is _expected_class(case)
    assert not model.training
    assert _transformers_error(model, data) < TOLERANCE
    if "classification" in case:
        assert model.num_classes == 3
        assert model.id2label == {0: "negative", 1: "neutral", 2: "positive"}
        assert model.label2id == {"negative": 0, "neutral": 1, "positive": 2}
    if "sequence" in case:
        assert model.problem_type == "single_label_classification"
        assert model.dropout == 0.2  # classifier_dropout, not hidden_dropout_prob
    # The family class loads it too, and returns the XLM-R subclass for an XLM-R checkpoint.
    base = getattr(tasks, "Roberta" + EXPECTED_CLASS[case.rsplit("_", 1)[1]])
    assert type(base.from_preset(str(case_dir("transformers", case)))) is _expected_class(case)


@pytest.mark.parametrize("case", KERAS_CASES)
def test_keras_task_presets_load_with_their_heads(case):
    data = case_data("keras", case)
    model = tasks.Task.from_preset(str(case_dir("keras", case)))
    assert type(model).keras_class_name == "".join(p.capitalize() for p in case.split("_")).replace("Xlm", "XLM").replace("Lm", "LM")
    with torch.no_grad():
        out = model(model_inputs(data))
    assert out.shape == data["logits"].shape
    assert relative_error(out, data["logits"]) < TOLERANCE


def test_masked_lm_without_positions_scores_every_token_and_head_sees_only_masked_tokens():
    data = case_data("transformers", "roberta_maskedlm")
    model = tasks.RobertaMaskedLM.from_preset(str(case_dir("transformers", "roberta_maskedlm")))
    seen = []
    model.lm_head.dense.register_forward_hook(lambda module, args, out: seen.append(tuple(args[0].shape)))
    with torch.no_grad():
        every = model(model_inputs(data, with_mask_positions=False))  # (B, T, V)
        positions = torch.tensor([[1, 4], [0, 5], [2, 3]])
        masked = model({**model_inputs(data, False), "mask_positions": positions})  # (B, 2, V)
    assert every.shape == (3, 12, 40) and masked.shape == (3, 2, 40)
    assert seen == [(3, 12, 8), (3, 2, 8)]
    gathered = torch.take_along_dim(every, positions[..., None], dim=1)
    torch.testing.assert_close(masked, gathered, rtol=1e-6, atol=1e-6)
    # The decoder is the token embedding itself (tied), not a copy.
    assert not any("decoder" in name for name in model.state_dict())


@pytest.mark.parametrize(
    "case", ["roberta_sequenceclassification", "xlm_roberta_maskedlm", "roberta_tokenclassification", "xlm_roberta_questionanswering"]
)
def test_saved_transformers_checkpoints_load_in_transformers_with_equal_logits(case, tmp_path):
    import transformers

    data = case_data("transformers", case)
    model = tasks.Task.from_preset(str(case_dir("transformers", case)))
    model.save_to_preset(tmp_path, format="transformers")
    config = transformers.AutoConfig.from_pretrained(tmp_path)
    reference = getattr(transformers, config.architectures[0]).from_pretrained(tmp_path).eval()
    with torch.no_grad():
        out = reference(
            input_ids=torch.from_numpy(data["token_ids"]), attention_mask=torch.from_numpy(data["padding_mask"]).long()
        )
    if "questionanswering" in case:
        data = {**data, "start_logits": out.start_logits.numpy(), "end_logits": out.end_logits.numpy()}
    else:
        data = {**data, "logits": out.logits.numpy()}
    if "maskedlm" in case:
        data.pop("mask_positions", None)
    assert _transformers_error(model, data) < TOLERANCE
    if "classification" in case:
        assert config.id2label == {0: "negative", 1: "neutral", 2: "positive"}
        assert config.num_labels == 3
    if "sequence" in case:
        assert config.problem_type == "single_label_classification"
    # And back: our loader reads what we wrote, with the same labels.
    again = tasks.Task.from_preset(str(tmp_path))
    assert again.get_config() == model.get_config()


@pytest.mark.parametrize("case", ["roberta_text_classifier", "xlm_roberta_masked_lm"])
def test_saved_keras_task_presets_load_in_keras_hub_with_equal_outputs(case, tmp_path):
    import keras_hub

    data = case_data("keras", case)
    model = tasks.Task.from_preset(str(case_dir("keras", case)))
    with torch.no_grad():  # a changed head, so the check cannot pass by copying files
        for parameter in model.parameters():
            parameter.mul_(1.5)
        ours = model(model_inputs(data)).numpy()
    model.save_to_preset(tmp_path)
    keras_cls = keras_hub.models.MaskedLM if "masked_lm" in case else keras_hub.models.TextClassifier
    reference = keras_cls.from_preset(str(tmp_path))
    assert type(reference).__name__ == type(model).keras_class_name
    theirs = np.asarray(reference.predict(model_inputs(data), verbose=0))
    assert relative_error(ours, theirs) < TOLERANCE


def test_keras_task_from_a_transformers_checkpoint_round_trips_through_keras_hub(tmp_path):
    """transformers RobertaForSequenceClassification -> ours -> keras_hub task preset."""
    import keras_hub

    data = case_data("transformers", "roberta_sequenceclassification")
    model = tasks.RobertaTextClassifier.from_preset(str(case_dir("transformers", "roberta_sequenceclassification")))
    model.save_to_preset(tmp_path, format="keras")
    reference = keras_hub.models.TextClassifier.from_preset(str(tmp_path))
    theirs = np.asarray(reference.predict(model_inputs(data), verbose=0))
    assert relative_error(theirs, data["logits"]) < TOLERANCE


def test_saved_keras_task_preset_carries_the_tokenizer_and_keras_hub_classifies_raw_text(tmp_path):
    """An XLM-R classifier whose preset had a Keras tokenizer: the saved task preset holds the
    tokenizer and a preprocessor.json, and keras_hub runs it end to end on text."""
    import keras_hub

    from helpers.paths import TOKENIZER_FIXTURES
    from helpers.random_weights import randomize_
    from roberta_torch import XLMRobertaBackbone, XLMRobertaPreprocessor, XLMRobertaTokenizer

    source = TOKENIZER_FIXTURES / "xlm_roberta"
    tokenizer = XLMRobertaTokenizer.from_preset(str(source))
    backbone = XLMRobertaBackbone(
        vocabulary_size=tokenizer.vocabulary_size(), num_layers=1, num_heads=2, hidden_dim=8,
        intermediate_dim=16, max_sequence_length=32,
    )
    model = randomize_(tasks.XLMRobertaTextClassifier(backbone, num_classes=2), seed=5).eval()
    model.preset_source = roberta_torch.open_preset(str(source), require_config=False).source  # what from_preset records
    # save_to_preset saves that preset's tokenizer beside the task
    model.save_to_preset(tmp_path)
    reference = keras_hub.models.TextClassifier.from_preset(str(tmp_path))
    assert type(reference.preprocessor).__name__ == "XLMRobertaTextClassifierPreprocessor"
    texts = ["hello world", "ein kleiner Test"]
    with torch.no_grad():
        ours = model(XLMRobertaPreprocessor.from_preset(str(tmp_path))(texts))
    assert relative_error(ours, np.asarray(reference.predict(texts, verbose=0))) < TOLERANCE
