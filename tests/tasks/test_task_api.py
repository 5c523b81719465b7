"""Constructors, configs, fresh heads on pretrained backbones, and every bad-input path."""

import json
import shutil

import pytest
import torch

from helpers.paths import TINY_PRESET
from helpers.random_weights import randomize_
from helpers.task_fixtures import case_dir
from roberta_torch import RobertaBackbone, XLMRobertaBackbone, tasks

SMALL = dict(vocabulary_size=30, num_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=16, max_sequence_length=10)


def small_backbone(cls=RobertaBackbone):
    return randomize_(cls(**SMALL), seed=1)


def batch():
    ids = torch.randint(3, 30, (2, 6))
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[1, 4:] = False
    return {"token_ids": ids, "padding_mask": mask}


@pytest.mark.parametrize(
    "build, shape",
    [
        (lambda b: tasks.RobertaTextClassifier(b, num_classes=3, hidden_dim=5), (2, 3)),
        (lambda b: tasks.RobertaTokenClassifier(b, num_classes=4), (2, 6, 4)),
        (lambda b: tasks.RobertaMaskedLM(b), (2, 6, 30)),
    ],
)
def test_output_shapes_and_config_round_trip(build, shape):
    model = build(small_backbone()).eval()
    with torch.no_grad():
        out = model(batch())
    assert out.shape == shape and torch.isfinite(out).all()
    config = model.get_config()
    rebuilt = type(model).from_config(json.loads(json.dumps(config)))
    assert rebuilt.get_config() == config
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}


def test_question_answerer_returns_start_and_end_logits_and_keyword_inputs_work():
    model = tasks.XLMRobertaQuestionAnswerer(small_backbone(XLMRobertaBackbone)).eval()
    inputs = batch()
    with torch.no_grad():
        start, end = model(inputs)
        start_kw, _ = model(token_ids=inputs["token_ids"], padding_mask=inputs["padding_mask"])
    assert start.shape == end.shape == (2, 6)
    torch.testing.assert_close(start, start_kw)


def test_classifier_activation_and_keras_initializers():
    torch.manual_seed(0)
    backbone = RobertaBackbone(**{**SMALL, "hidden_dim": 64, "num_heads": 2})
    model = tasks.RobertaTextClassifier(backbone, num_classes=512, activation="softmax").eval()
    with torch.no_grad():
        probabilities = model(batch())
    torch.testing.assert_close(probabilities.sum(-1), torch.ones(2))
    # keras_hub: pooled_dense glorot_uniform, logits TruncatedNormal(0.02), zero biases.
    limit = (6 / (64 + 64)) ** 0.5
    assert model.pooled_dense.weight.abs().max() <= limit and model.pooled_dense.weight.std() > limit / 3
    assert model.output_dense.weight.abs().max() <= 0.04 and 0.01 < model.output_dense.weight.std() < 0.02
    assert not model.pooled_dense.bias.any() and not model.output_dense.bias.any()


def test_fresh_head_on_a_pretrained_backbone_preset():
    backbone = RobertaBackbone.from_preset(str(TINY_PRESET))
    model = tasks.RobertaTextClassifier.from_preset(str(TINY_PRESET), num_classes=5, dropout=0.1)
    assert model.num_classes == 5 and model.dropout == 0.1 and not model.training
    for key, tensor in backbone.state_dict().items():
        torch.testing.assert_close(model.state_dict()["backbone." + key], tensor, rtol=0, atol=0)
    assert model.output_dense.weight.shape == (5, 32)
    tagger = tasks.RobertaTokenClassifier.from_preset(str(TINY_PRESET), num_classes=7)
    assert tagger.classifier.weight.shape == (7, 32)


def test_a_masked_lm_checkpoint_starts_any_task_with_a_fresh_head(caplog):
    preset = str(case_dir("transformers", "roberta_maskedlm"))
    with caplog.at_level("INFO", logger="roberta_torch.tasks.loading"):
        model = tasks.RobertaQuestionAnswerer.from_preset(preset)
    assert "RobertaMaskedLM head was left unused" in caplog.text
    mlm = tasks.RobertaMaskedLM.from_preset(preset)
    torch.testing.assert_close(
        model.backbone.token_embedding.weight, mlm.backbone.token_embedding.weight, rtol=0, atol=0
    )


def test_load_weights_false_and_backbone_overrides():
    preset = str(case_dir("keras", "roberta_text_classifier"))
    model = tasks.RobertaTextClassifier.from_preset(preset, load_weights=False)
    assert model.num_classes == 3 and model.hidden_dim == 6
    half = tasks.RobertaTextClassifier.from_preset(preset, dtype="bfloat16")
    assert half.output_dense.weight.dtype == torch.bfloat16
    with torch.no_grad():
        assert half(batch()).dtype == torch.bfloat16


# -- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize("num_classes, error", [(0, ValueError), (-2, ValueError), (2.5, TypeError), (True, TypeError)])
def test_num_classes_is_checked(num_classes, error):
    with pytest.raises(error, match="num_classes"):
        tasks.RobertaTextClassifier(small_backbone(), num_classes=num_classes)
    with pytest.raises(error, match="num_classes"):
        tasks.RobertaTokenClassifier(small_backbone(), num_classes=num_classes)


def test_fresh_head_needs_num_classes():
    with pytest.raises(ValueError, match="num_classes"):
        tasks.RobertaTextClassifier.from_preset(str(TINY_PRESET))


def test_other_arguments_are_checked():
    with pytest.raises(TypeError, match="backbone"):
        tasks.RobertaMaskedLM(torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match="backbone"):
        tasks.XLMRobertaMaskedLM(small_backbone())
    with pytest.raises(ValueError, match="activation"):
        tasks.RobertaTextClassifier(small_backbone(), num_classes=2, activation="swish")
    with pytest.raises(ValueError, match="dropout"):
        tasks.RobertaTokenClassifier(small_backbone(), num_classes=2, dropout=1.5)
    with pytest.raises(ValueError, match="id2label"):
        tasks.RobertaTextClassifier(small_backbone(), num_classes=2, id2label={0: "a"})


@pytest.mark.parametrize(
    "positions, error, match",
    [
        (torch.tensor([[0, 6], [1, 2]]), ValueError, r"mask_positions.*\[0, sequence length=6\)"),
        (torch.tensor([[-1, 2], [1, 2]]), ValueError, "mask_positions"),
        (torch.tensor([[0.0, 1.0], [1.0, 2.0]]), TypeError, "mask_positions.*integer"),
        (torch.tensor([[True, False], [True, True]]), TypeError, "mask_positions"),
        (torch.tensor([0, 1]), ValueError, r"mask_positions.*shape"),
    ],
)
def test_mask_positions_are_checked(positions, error, match):
    model = tasks.RobertaMaskedLM(small_backbone())
    with pytest.raises(error, match=match):
        model({**batch(), "mask_positions": positions})


def test_task_presets_of_another_class_are_refused():
    classifier = str(case_dir("transformers", "roberta_sequenceclassification"))
    with pytest.raises(ValueError, match="preset.*holds a RobertaTextClassifier.*not a question answerer"):
        tasks.RobertaQuestionAnswerer.from_preset(classifier)
    with pytest.raises(ValueError, match="preset.*RobertaTextClassifier"):
        tasks.RobertaMaskedLM.from_preset(str(case_dir("keras", "roberta_text_classifier")))
    with pytest.raises(ValueError, match="preset.*RobertaBackbone"):
        tasks.XLMRobertaTextClassifier.from_preset(classifier)
    with pytest.raises(ValueError, match="preset.*no task head"):
        tasks.Task.from_preset(str(TINY_PRESET))
    with pytest.raises(ValueError, match="preset.*holds a RobertaBackbone.*XLMRobertaMaskedLM"):
        tasks.XLMRobertaMaskedLM.from_preset(str(case_dir("keras", "roberta_masked_lm")))


def test_num_classes_that_disagree_with_the_checkpoint_are_refused():
    with pytest.raises(ValueError, match=r"num_classes`=4.*head with 3 classes"):
        tasks.RobertaTextClassifier.from_preset(str(case_dir("transformers", "roberta_sequenceclassification")), num_classes=4)


def test_an_untied_masked_lm_decoder_is_refused_and_a_tied_copy_accepted(tmp_path):
    from safetensors.torch import load_file, save_file

    source = case_dir("transformers", "xlm_roberta_maskedlm")
    tensors = load_file(source / "model.safetensors")
    for name, decoder in [("tied", tensors["roberta.embeddings.word_embeddings.weight"]), ("untied", None)]:
        directory = tmp_path / name
        shutil.copytree(source, directory)
        decoder = decoder if decoder is not None else torch.randn_like(tensors["roberta.embeddings.word_embeddings.weight"])
        save_file({**tensors, "lm_head.decoder.weight": decoder.clone()}, str(directory / "model.safetensors"))
    assert isinstance(tasks.XLMRobertaMaskedLM.from_preset(str(tmp_path / "tied")), tasks.XLMRobertaMaskedLM)
    with pytest.raises(ValueError, match="lm_head.decoder.weight.*differs"):
        tasks.XLMRobertaMaskedLM.from_preset(str(tmp_path / "untied"))


def test_unused_head_tensors_are_never_dropped(tmp_path):
    from safetensors.torch import load_file, save_file

    directory = tmp_path / "extra"
    shutil.copytree(case_dir("transformers", "roberta_tokenclassification"), directory)
    tensors = load_file(directory / "model.safetensors")
    save_file({**tensors, "pooler.dense.weight": torch.zeros(8, 8)}, str(directory / "model.safetensors"))
    with pytest.raises(ValueError, match=r"pooler.dense.weight.*not used"):
        tasks.RobertaTokenClassifier.from_preset(str(directory))


def test_save_errors(tmp_path):
    tagger = tasks.RobertaTokenClassifier(small_backbone(), num_classes=2)
    with pytest.raises(ValueError, match="format='transformers'"):
        tagger.save_to_preset(tmp_path, format="keras")
    classifier = tasks.RobertaTextClassifier(small_backbone(), num_classes=2, hidden_dim=4)
    with pytest.raises(ValueError, match="hidden_dim=4"):
        classifier.save_to_preset(tmp_path, format="transformers")
    with pytest.raises(ValueError, match="format"):
        classifier.save_to_preset(tmp_path, format="onnx")
