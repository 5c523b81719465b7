"""Every task class from every loader (keras_hub task presets, transformers checkpoints, our
native safetensors export) survives copy.deepcopy, pickle, whole-model torch.save / torch.load
and torch.optim.swa_utils.AveragedModel (EMA) with identical outputs; state-dict and
meta-device round trips; accelerate drives a task model as it is."""

import copy
import io
import pickle

import pytest
import torch

from helpers.paths import TINY_PRESET
from helpers.task_fixtures import KERAS_CASES, TRANSFORMERS_CASES, case_data, case_dir, model_inputs
from roberta_torch import Backbone, RobertaBackbone, tasks


def _torch_save_load(model):
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


COPIES = {
    "deepcopy": copy.deepcopy,
    "pickle": lambda model: pickle.loads(pickle.dumps(model)),
    "torch.save": _torch_save_load,
    "AveragedModel": lambda model: torch.optim.swa_utils.AveragedModel(model).module,
}


def _outputs(model, inputs):
    with torch.no_grad():
        out = model(inputs)
    return out if isinstance(out, tuple) else (out,)


def _check_copies(model, inputs):
    expected = _outputs(model, inputs)
    for name, make_copy in COPIES.items():
        duplicate = make_copy(model)
        assert type(duplicate) is type(model) and duplicate is not model, name
        for got, want in zip(_outputs(duplicate, inputs), expected):
            torch.testing.assert_close(got, want, rtol=0, atol=0, msg=name)
        # A copy is independent: training it leaves the original alone.
        with torch.no_grad():
            next(duplicate.parameters()).add_(1.0)
        assert not torch.equal(next(duplicate.parameters()), next(model.parameters())), name


@pytest.mark.parametrize("source, case", [("keras", c) for c in KERAS_CASES] + [("transformers", c) for c in TRANSFORMERS_CASES])
def test_task_presets_survive_copies(source, case):
    model = tasks.Task.from_preset(str(case_dir(source, case)))
    _check_copies(model, model_inputs(case_data(source, case)))


@pytest.fixture(scope="module")
def native_presets(tmp_path_factory):
    """Our safetensors export of a RoBERTa and an XLM-R backbone."""
    presets = {}
    for family, case in (("roberta", "roberta_maskedlm"), ("xlm_roberta", "xlm_roberta_maskedlm")):
        directory = tmp_path_factory.mktemp(family)
        Backbone.from_preset(str(case_dir("transformers", case))).save_to_preset(directory, format="safetensors")
        presets[family] = str(directory)
    return presets


@pytest.mark.parametrize("family", ["roberta", "xlm_roberta"])
@pytest.mark.parametrize("kind, kwargs", [("TextClassifier", {"num_classes": 2}), ("TokenClassifier", {"num_classes": 4}), ("MaskedLM", {}), ("QuestionAnswerer", {})])
def test_tasks_on_native_presets_survive_copies(native_presets, family, kind, kwargs):
    cls = getattr(tasks, ("XLMRoberta" if family == "xlm_roberta" else "Roberta") + kind)
    model = cls.from_preset(native_presets[family], **kwargs)
    assert type(model) is cls
    _check_copies(model, model_inputs(case_data("transformers", f"{family}_maskedlm"), with_mask_positions=False))


def test_an_unpickled_task_still_saves_its_tokenizer(tmp_path):
    model = tasks.RobertaTextClassifier.from_preset(str(TINY_PRESET), num_classes=2)
    pickle.loads(pickle.dumps(model)).save_to_preset(tmp_path / "saved")
    assert (tmp_path / "saved" / "tokenizer.json").exists() and (tmp_path / "saved" / "preprocessor.json").exists()


def test_state_dict_and_meta_device_round_trips():
    source = tasks.Task.from_preset(str(case_dir("transformers", "roberta_sequenceclassification")))
    inputs = model_inputs(case_data("transformers", "roberta_sequenceclassification"))
    config = source.backbone.get_config()
    head = {k: v for k, v in source.head_config().items()}
    expected = _outputs(source, inputs)

    fresh = tasks.RobertaTextClassifier(RobertaBackbone(**config), **head).eval()
    fresh.load_state_dict(source.state_dict())  # strict
    on_meta = tasks.RobertaTextClassifier(RobertaBackbone(**config, device="meta"), **head)
    assert all(p.is_meta for p in on_meta.parameters())
    materialized = copy.deepcopy(on_meta).to_empty(device="cpu").eval()
    materialized.load_state_dict(source.state_dict())
    on_meta.load_state_dict(source.state_dict(), assign=True)
    for model in (fresh, materialized, on_meta.eval()):
        torch.testing.assert_close(_outputs(model, inputs)[0], expected[0], rtol=0, atol=0)


@pytest.fixture
def fresh_accelerator_state():
    """accelerate keeps one process-wide AcceleratorState: an HF Trainer test earlier in the
    process fixes it to full precision, and Accelerator(mixed_precision="bf16") then refuses."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def test_accelerate_trains_a_task_model_with_labels(fresh_accelerator_state):
    from accelerate import Accelerator

    torch.manual_seed(0)
    model = tasks.RobertaTokenClassifier.from_preset(str(TINY_PRESET), num_classes=3).train()
    ids = torch.randint(3, 100, (8, 10))
    rows = [{"token_ids": ids[i], "padding_mask": torch.ones(10, dtype=torch.bool), "labels": ids[i] % 3} for i in range(8)]
    loader = torch.utils.data.DataLoader(rows, batch_size=4)
    accelerator = Accelerator(cpu=True, mixed_precision="bf16")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    losses = []
    for _ in range(3):
        for batch in loader:
            out = model(**batch)  # labels ride along: the loss comes back
            accelerator.backward(out.loss)
            optimizer.step()
            optimizer.zero_grad()
            losses.append(out.loss.item())
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
    assert all(not torch.equal(p, before[n]) for n, p in model.named_parameters())
