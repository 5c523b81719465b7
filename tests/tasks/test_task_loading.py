"""Task loading through the format loaders: the layer count checked before building (issue 22
B1), trained heads found by their tensors when `architectures` does not name them (W2), and
models that survive copy.deepcopy, pickle and whole-model torch.save (issue 20 item 5)."""

import copy
import io
import json
import pickle
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import roberta_torch
from helpers.paths import TINY_PRESET, TOKENIZER_FIXTURES
from helpers.random_weights import randomize_
from helpers.subprocesses import run_python
from helpers.task_fixtures import case_data, case_dir, model_inputs, relative_error
from roberta_torch import tasks

TOLERANCE = 1e-5

# -- B1: hostile task configs are refused before anything is built ------------------------------

HOSTILE_SCRIPT = """
import json, resource, sys, time
import roberta_torch
mapped = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmSize:"))
resource.setrlimit(resource.RLIMIT_AS, (mapped + 3 * 2**30, mapped + 3 * 2**30))
start = time.monotonic()
try:
    roberta_torch.tasks.Task.from_preset(sys.argv[1])
    outcome = "loaded"
except (ValueError, TypeError, FileNotFoundError) as error:
    outcome = type(error).__name__ + ": " + str(error)
print(json.dumps([outcome, time.monotonic() - start]))
"""


@pytest.mark.parametrize("source, case, key", [
    ("keras", "roberta_text_classifier", ("config", "num_layers")),
    ("transformers", "roberta_sequenceclassification", ("num_hidden_layers",)),
])
def test_task_config_claiming_20000_layers_is_refused_fast(tmp_path, source, case, key):
    preset = tmp_path / "preset"
    shutil.copytree(case_dir(source, case), preset)
    config = json.loads((preset / "config.json").read_text())
    target = config
    for part in key[:-1]:
        target = target[part]
    target[key[-1]] = 20_000
    (preset / "config.json").write_text(json.dumps(config))
    outcome, seconds = json.loads(run_python(HOSTILE_SCRIPT, {}, str(preset)).strip().splitlines()[-1])
    assert outcome.startswith("ValueError") and "do not belong together" in outcome, outcome
    assert seconds < 5 and len(outcome) < 2000


# -- W2: a classifier checkpoint whose architectures does not say -------------------------------


@pytest.mark.parametrize("architectures", [None, ["RobertaModel"], ["MyCompanyClassifier"], "not a list"])
@pytest.mark.parametrize("case, cls", [
    ("roberta_sequenceclassification", tasks.RobertaTextClassifier),
    ("roberta_tokenclassification", tasks.RobertaTokenClassifier),
    ("roberta_questionanswering", tasks.RobertaQuestionAnswerer),
])
def test_trained_heads_load_by_the_tensors_present(tmp_path, architectures, case, cls):
    directory = tmp_path / case
    shutil.copytree(case_dir("transformers", case), directory)
    config = json.loads((directory / "config.json").read_text())
    if architectures is None:
        del config["architectures"]
    else:
        config["architectures"] = architectures
    (directory / "config.json").write_text(json.dumps(config))
    kwargs = {"num_classes": 3} if cls is not tasks.RobertaQuestionAnswerer else {}
    model = cls.from_preset(str(directory), **kwargs)
    assert type(model) is cls and type(tasks.Task.from_preset(str(directory))) is cls
    tensors = load_file(directory / "model.safetensors")
    head = {"roberta_sequenceclassification": ("classifier.out_proj.weight", "classifier.out_proj.weight"),
            "roberta_tokenclassification": ("classifier.weight", "classifier.weight"),
            "roberta_questionanswering": ("qa_outputs.weight", "qa_outputs.weight")}[case]
    assert torch.equal(model.state_dict()[head[0]], tensors[head[1]])  # the trained head, not a fresh one
    data = case_data("transformers", case)
    with torch.no_grad():
        out = model(model_inputs(data))
    valid = data["padding_mask"].astype(bool)
    if isinstance(out, tuple):
        assert relative_error(out[0], data["start_logits"], valid) < TOLERANCE
    elif out.dim() == 3:
        assert relative_error(out, data["logits"], valid) < TOLERANCE
    else:
        assert relative_error(out, data["logits"]) < TOLERANCE
    if cls is tasks.RobertaTextClassifier:
        with pytest.raises(ValueError, match=r"num_classes`=4.*head with 3 classes"):
            cls.from_preset(str(directory), num_classes=4)


# -- issue 20 item 5: copy, pickle, whole-model save ---------------------------------------------

TASK_CLASSES = [
    (tasks.RobertaTextClassifier, {"num_classes": 3}),
    (tasks.RobertaMaskedLM, {}),
    (tasks.RobertaTokenClassifier, {"num_classes": 3}),
    (tasks.RobertaQuestionAnswerer, {}),
]


@pytest.fixture(scope="module")
def presets(tmp_path_factory):
    """One preset per format: Keras (the shipped tiny one), transformers, native safetensors."""
    root = tmp_path_factory.mktemp("presets")
    backbone = roberta_torch.Backbone.from_preset(str(TINY_PRESET))
    tokenizer = roberta_torch.Tokenizer.from_preset(str(TINY_PRESET))
    for name, format in (("transformers", "transformers"), ("native", "safetensors")):
        backbone.save_to_preset(root / name, format=format)
        tokenizer.save_to_preset(root / name)
    return {"keras": str(TINY_PRESET), "transformers": str(root / "transformers"), "native": str(root / "native")}


def _outputs(model, inputs):
    with torch.no_grad():
        out = model(inputs)
    return out if isinstance(out, tuple) else (out,)


def _assert_copies_compute_the_same(model, inputs):
    expected = _outputs(model, inputs)
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    copies = [copy.deepcopy(model), pickle.loads(pickle.dumps(model)), torch.load(buffer, weights_only=False)]
    for other in copies:
        assert type(other) is type(model)
        for a, b in zip(expected, _outputs(other, inputs)):
            assert torch.equal(a, b)


TINY_INPUTS = {"token_ids": torch.tensor([[0, 35, 61, 2, 1], [0, 9, 2, 1, 1]]),
               "padding_mask": torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]])}


@pytest.mark.parametrize("format", ["keras", "transformers", "native"])
def test_backbones_and_fresh_head_tasks_copy_and_pickle(presets, format):
    backbone = roberta_torch.Backbone.from_preset(presets[format])
    assert (backbone.transformers_source is not None) == (format == "transformers")
    _assert_copies_compute_the_same(backbone, TINY_INPUTS)
    for cls, kwargs in TASK_CLASSES:
        model = cls.from_preset(presets[format], **kwargs)
        _assert_copies_compute_the_same(model, TINY_INPUTS)
        assert copy.deepcopy(model).preset_source is not None  # the saved tokenizer's source survives


@pytest.mark.parametrize("case", ["roberta_sequenceclassification", "roberta_maskedlm", "roberta_tokenclassification",
                                  "roberta_questionanswering", "xlm_roberta_sequenceclassification",
                                  "xlm_roberta_maskedlm", "xlm_roberta_tokenclassification",
                                  "xlm_roberta_questionanswering"])
def test_every_task_class_from_a_transformers_checkpoint_copies_and_pickles(case):
    model = tasks.Task.from_preset(str(case_dir("transformers", case)))
    _assert_copies_compute_the_same(model, model_inputs(case_data("transformers", case)))


@pytest.mark.parametrize("case", ["roberta_text_classifier", "roberta_masked_lm", "xlm_roberta_text_classifier",
                                  "xlm_roberta_masked_lm"])
def test_keras_task_presets_copy_and_pickle(case):
    model = tasks.Task.from_preset(str(case_dir("keras", case)))
    _assert_copies_compute_the_same(model, model_inputs(case_data("keras", case)))


def test_a_copied_keras_task_still_saves_its_tokenizer(tmp_path):
    model = tasks.RobertaTextClassifier.from_preset(str(TINY_PRESET), num_classes=2)
    copied = pickle.loads(pickle.dumps(model))
    copied.save_to_preset(tmp_path / "saved")
    assert (tmp_path / "saved" / "tokenizer.json").is_file() and (tmp_path / "saved" / "preprocessor.json").is_file()


@pytest.mark.parametrize("format", ["keras", "transformers", "native"])
def test_embedders_copy_and_pickle(presets, format):
    embedder = roberta_torch.TextEmbedder.from_preset(presets[format])
    texts = ["a first text", "and a second, longer one"]
    expected = embedder.encode(texts)
    for other in (copy.deepcopy(embedder), pickle.loads(pickle.dumps(embedder))):
        np.testing.assert_array_equal(other.encode(texts), expected)


def test_xlm_roberta_native_backbone_and_task_copy(tmp_path):
    backbone = randomize_(roberta_torch.XLMRobertaBackbone(vocabulary_size=40, num_layers=1, num_heads=2, hidden_dim=8,
                                                          intermediate_dim=16, max_sequence_length=16), seed=3)
    backbone.save_to_preset(tmp_path / "native", format="safetensors")
    shutil.copytree(TOKENIZER_FIXTURES / "xlm_roberta" / "assets", tmp_path / "native" / "assets")
    inputs = {"token_ids": torch.tensor([[0, 5, 6, 2]]), "padding_mask": torch.ones(1, 4, dtype=torch.int32)}
    for cls, kwargs in TASK_CLASSES:
        xlm_cls = getattr(tasks, cls.__name__.replace("Roberta", "XLMRoberta"))
        _assert_copies_compute_the_same(xlm_cls.from_preset(str(tmp_path / "native"), **kwargs), inputs)
