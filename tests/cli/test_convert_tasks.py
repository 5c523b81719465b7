"""`convert` and `info` on task presets (issue 22 N2): the head, labels and config survive a
conversion in every direction (checked against transformers' own classes), `info` names the
task; and `convert` checks OUT_DIR before it loads anything (N4)."""

import json

import pytest
import torch

import roberta_torch
from helpers.task_fixtures import case_dir
from roberta_torch.cli import main


def same_state(first, second):
    first, second = first.state_dict(), second.state_dict()
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


@pytest.mark.parametrize(
    "source, case, to",
    [
        ("transformers", "roberta_sequenceclassification", "keras"),
        ("keras", "roberta_masked_lm", "transformers"),
        ("keras", "xlm_roberta_masked_lm", "transformers"),
        ("transformers", "roberta_maskedlm", "keras"),
        ("transformers", "roberta_tokenclassification", "transformers"),
    ],
)
def test_convert_keeps_the_task_head(tmp_path, capsys, source, case, to):
    source_dir = case_dir(source, case)
    original = roberta_torch.Task.from_preset(str(source_dir))
    out = tmp_path / "out"
    assert main(["convert", str(source_dir), str(out), "--to", to]) == 0
    assert type(original).__name__ in capsys.readouterr().out
    converted = roberta_torch.Task.from_preset(str(out))
    assert type(converted) is type(original) and same_state(converted, original)
    transformers_only = ("id2label", "label2id", "problem_type")  # a Keras task.json has no such fields
    expected = {k: v for k, v in original.head_config().items() if to != "keras" or k not in transformers_only}
    assert converted.head_config() == expected


def test_a_converted_classifier_is_transformers_own_with_its_labels(tmp_path):
    import transformers

    source = case_dir("transformers", "roberta_sequenceclassification")
    assert main(["convert", str(source), str(tmp_path / "keras"), "--to", "keras"]) == 0
    assert main(["convert", str(tmp_path / "keras"), str(tmp_path / "hf"), "--to", "transformers"]) == 0
    assert main(["convert", str(source), str(tmp_path / "hf_labels"), "--to", "transformers"]) == 0
    original = transformers.AutoModelForSequenceClassification.from_pretrained(source).eval()
    ids = torch.tensor([[0, 5, 9, 17, 2], [0, 7, 2, 1, 1]])
    mask = (ids != 1).long()
    for name in ("hf", "hf_labels"):
        converted = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / name).eval()
        with torch.no_grad():
            torch.testing.assert_close(converted(input_ids=ids, attention_mask=mask).logits,
                                       original(input_ids=ids, attention_mask=mask).logits, rtol=1e-5, atol=1e-6)
    labels = json.loads((tmp_path / "hf_labels" / "config.json").read_text())
    assert labels["id2label"] == {"0": "negative", "1": "neutral", "2": "positive"}
    assert labels["architectures"] == ["RobertaForSequenceClassification"]


def test_the_safetensors_export_needs_backbone_only_for_a_task(tmp_path, capsys):
    source = case_dir("keras", "roberta_text_classifier")
    assert main(["convert", str(source), str(tmp_path / "out"), "--to", "safetensors"]) == 1
    assert "--backbone-only" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert main(["convert", str(source), str(tmp_path / "out"), "--to", "safetensors", "--backbone-only"]) == 0
    backbone = roberta_torch.Backbone.from_preset(str(tmp_path / "out"))
    assert same_state(backbone, roberta_torch.Task.from_preset(str(source)).backbone)
    keras_head = case_dir("keras", "roberta_text_classifier")  # hidden_dim != hidden_size: not transformers'
    assert main(["convert", str(keras_head), str(tmp_path / "hf"), "--to", "transformers"]) == 1
    assert "Save it with format='keras'" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    question_answerer = case_dir("transformers", "roberta_questionanswering")
    assert main(["convert", str(question_answerer), str(tmp_path / "qa"), "--to", "keras"]) == 1
    assert "keras_hub has no RobertaQuestionAnswerer" in capsys.readouterr().err


@pytest.mark.parametrize("source, case, labels", [
    ("transformers", "roberta_sequenceclassification", ["negative", "neutral", "positive"]),
    ("keras", "roberta_text_classifier", None),
])
def test_info_reports_the_task(capsys, source, case, labels):
    directory = case_dir(source, case)
    model = roberta_torch.Task.from_preset(str(directory))
    assert main(["info", "--json", str(directory)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["class_name"] == "RobertaTextClassifier" and report["backbone_class_name"] == "RobertaBackbone"
    assert report["task"]["num_classes"] == model.num_classes and report["task"]["labels"] == labels
    assert report["parameters"] == sum(p.numel() for p in model.parameters())
    assert main(["info", str(directory)]) == 0
    out = capsys.readouterr().out
    assert "class:      RobertaTextClassifier" in out and "backbone:   RobertaBackbone" in out
    assert f"num_classes: {model.num_classes}" in out


def test_convert_checks_out_dir_before_loading(tmp_path, capsys, monkeypatch):
    from roberta_torch.presets import preset as preset_module

    def no_loading(*args, **kwargs):
        raise AssertionError("the source was opened before OUT_DIR was checked")

    monkeypatch.setattr(preset_module, "open_preset", no_loading)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["convert", "roberta_tiny_random", str(out), "--to", "keras"]) == 1
    assert "not empty" in capsys.readouterr().err
    assert main(["convert", "roberta_tiny_random", str(tmp_path / "x"), "--to", "keras", "--max-shard-size", "1GB"]) == 1
    assert "--max-shard-size applies to --to transformers only" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and not (tmp_path / "x").exists()
