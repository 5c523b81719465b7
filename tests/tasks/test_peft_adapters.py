"""PEFT adapters across transformers and roberta_torch (roberta_torch.peft).

An adapter trained with PEFT on transformers' RobertaModel / RobertaFor* (random LoRA A and B,
random heads in modules_to_save) loads onto our model loaded from the same checkpoint and gives
transformers + PEFT's outputs (float32, rel 1e-5), merged too; ours saved in PEFT's
transformers layout load into transformers + PEFT and give our outputs; a mismatched adapter
is refused naming key, shapes and file."""

import json

import pytest
import torch

from helpers.random_weights import randomize_
from helpers.task_fixtures import relative_error
from helpers.transformers_models import PAD, padded_batch
from roberta_torch import RobertaBackbone, tasks
from roberta_torch import peft as roberta_peft

TOLERANCE = 1e-5
CONFIG = dict(
    vocab_size=61, hidden_size=12, num_hidden_layers=2, num_attention_heads=3, intermediate_size=20,
    max_position_embeddings=16 + PAD + 1, layer_norm_eps=1e-5, type_vocab_size=1, pad_token_id=PAD,
)
# kind -> (transformers class name, PEFT task_type, our class)
KINDS = {
    "backbone": ("Model", "FEATURE_EXTRACTION", RobertaBackbone),
    "classifier": ("ForSequenceClassification", "SEQ_CLS", tasks.Task),
    "tagger": ("ForTokenClassification", "TOKEN_CLS", tasks.Task),
    "qa": ("ForQuestionAnswering", "QUESTION_ANS", tasks.Task),
}
TARGETS = {"query_value": ["query", "value"], "all_linear": "all-linear"}


def transformers_model(kind: str, model_type: str = "roberta"):
    import transformers

    prefix = "Roberta" if model_type == "roberta" else "XLMRoberta"
    config = getattr(transformers, prefix + "Config")(**CONFIG, num_labels=2 if kind == "qa" else 3)
    torch.manual_seed(0)
    cls = getattr(transformers, prefix + KINDS[kind][0])
    model = cls(config, add_pooling_layer=False) if kind == "backbone" else cls(config)
    model.config._attn_implementation = "eager"
    return randomize_(model, seed=3).eval()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """kind/model_type -> directory of a random transformers checkpoint (saved once)."""
    root, made = tmp_path_factory.mktemp("checkpoints"), {}

    def get(kind, model_type="roberta"):
        if (kind, model_type) not in made:
            made[kind, model_type] = root / f"{model_type}_{kind}"
            transformers_model(kind, model_type).save_pretrained(made[kind, model_type])
        return made[kind, model_type]

    return get


def randomize_adapter_(peft_model, seed: int = 5):
    """Non-zero LoRA A and B and fresh head copies (PEFT starts B at zero)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name or "modules_to_save" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
    return peft_model


def outputs(model, kind, ids, mask):
    """The comparable output of a call in transformers' spellings (ours return dicts too)."""
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask)
    if kind == "backbone":
        return out["last_hidden_state"], mask.bool()
    if kind == "qa":
        return torch.stack([out["start_logits"], out["end_logits"]], -1), mask.bool()
    return out["logits"], (mask.bool() if kind == "tagger" else None)


def batch():
    return padded_batch(CONFIG["vocab_size"], [9, 6, 3], 9, side="right")


def load_transformers(directory, kind, model_type="roberta"):
    import transformers

    prefix = "Roberta" if model_type == "roberta" else "XLMRoberta"
    cls = getattr(transformers, prefix + KINDS[kind][0])
    extra = {"add_pooling_layer": False} if kind == "backbone" else {}  # our backbone has no pooler
    model = cls.from_pretrained(directory, **extra)
    model.config._attn_implementation = "eager"
    return model.eval()


def load_ours(directory, kind):
    return KINDS[kind][2].from_preset(str(directory)).eval()


def transformers_adapter(directory, kind, targets, adapter_dir, model_type="roberta"):
    import peft

    config = peft.LoraConfig(task_type=KINDS[kind][1], r=3, lora_alpha=5, target_modules=targets)
    reference = randomize_adapter_(peft.get_peft_model(load_transformers(directory, kind, model_type), config)).eval()
    reference.save_pretrained(adapter_dir)
    return reference


@pytest.mark.parametrize("targets", sorted(TARGETS))
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_transformers_adapter_loads_onto_our_model(kind, targets, checkpoints, tmp_path):
    if kind in ("qa", "tagger") and targets == "all_linear":
        pytest.skip("PEFT 0.21 refuses it on transformers' model itself (the head both targeted and in modules_to_save)")
    directory = checkpoints(kind)
    reference = transformers_adapter(directory, kind, TARGETS[targets], tmp_path / "adapter")
    ours = roberta_peft.load_adapter(load_ours(directory, kind), tmp_path / "adapter")
    assert type(ours).__name__ == type(reference).__name__ and not ours.training
    assert not any(p.requires_grad for p in ours.parameters())  # frozen, as PeftModel.from_pretrained
    ids, mask = batch()
    expected, valid = outputs(reference, kind, ids, mask)
    actual, _ = outputs(ours, kind, ids, mask)
    assert relative_error(actual, expected.numpy(), valid) < TOLERANCE
    # The adapter does something, and merging keeps the outputs (pure Linear modules).
    assert relative_error(outputs(load_ours(directory, kind), kind, ids, mask)[0], expected.numpy(), valid) > 1e-3
    merged = ours.merge_and_unload()
    assert relative_error(outputs(merged, kind, ids, mask)[0], expected.numpy(), valid) < TOLERANCE


def test_xlm_roberta_adapter_loads_trainable(checkpoints, tmp_path):
    directory = checkpoints("classifier", "xlm-roberta")
    reference = transformers_adapter(directory, "classifier", ["query", "value"], tmp_path / "a", "xlm-roberta")
    ours = roberta_peft.load_adapter(tasks.Task.from_preset(str(directory)), tmp_path / "a", is_trainable=True)
    assert type(ours.get_base_model()) is tasks.XLMRobertaTextClassifier
    trainable = sorted(n for n, p in ours.named_parameters() if p.requires_grad)
    assert trainable and all("lora_" in n or "modules_to_save" in n for n in trainable)
    assert any("classifier.modules_to_save.default.dense" in n for n in trainable)
    assert any("classifier.modules_to_save.default.out_proj" in n for n in trainable)
    ours.eval()
    ids, mask = batch()
    assert relative_error(outputs(ours, "classifier", ids, mask)[0], outputs(reference, "classifier", ids, mask)[0].numpy()) < TOLERANCE


OUR_TARGETS = {**TARGETS, "embedding_query": ["token_embedding", "query"]}  # LoRA on the word embedding too


@pytest.mark.parametrize("targets", sorted(OUR_TARGETS))
@pytest.mark.parametrize("kind", ["backbone", "classifier"])
def test_our_adapter_saves_for_transformers(kind, targets, checkpoints, tmp_path):
    import peft

    directory = checkpoints(kind)
    config = peft.LoraConfig(task_type=KINDS[kind][1], r=2, target_modules=OUR_TARGETS[targets])
    ours = randomize_adapter_(peft.get_peft_model(load_ours(directory, kind), config)).eval()
    roberta_peft.save_adapter(ours, tmp_path / "adapter")
    saved = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert saved["modules_to_save"] == (["classifier"] if kind == "classifier" else None)
    assert all(name.startswith(("encoder.", "roberta.encoder.")) for name in saved["target_modules"]
               if "embeddings" not in name)
    assert ("embeddings.word_embeddings" in saved["target_modules"][0]) == (targets == "embedding_query")
    reference = peft.PeftModel.from_pretrained(load_transformers(directory, kind), tmp_path / "adapter").eval()
    ids, mask = batch()
    expected, valid = outputs(ours, kind, ids, mask)
    assert relative_error(outputs(reference, kind, ids, mask)[0], expected.numpy(), valid) < TOLERANCE
    # And back again.
    again = roberta_peft.load_adapter(load_ours(directory, kind), tmp_path / "adapter")
    assert relative_error(outputs(again, kind, ids, mask)[0], expected.numpy(), valid) < TOLERANCE


def test_mismatched_adapters_are_refused(checkpoints, tmp_path):
    import peft
    from safetensors.torch import load_file, save_file

    directory = checkpoints("classifier")
    transformers_adapter(directory, "classifier", ["query", "value"], tmp_path / "a")
    weights = tmp_path / "a" / roberta_peft.ADAPTER_WEIGHTS_NAME
    good = load_file(weights)
    key = "base_model.model.roberta.encoder.layer.1.attention.self.value.lora_B.weight"

    save_file({**good, key: torch.zeros(12, 4)}, weights)
    with pytest.raises(ValueError, match=r"(?s)value\.lora_B\.weight.*adapter_model\.safetensors.*\(12, 4\).*\(12, 3\)"):
        roberta_peft.load_adapter(load_ours(directory, "classifier"), tmp_path / "a")

    extra = "base_model.model.roberta.embeddings.position_embeddings.lora_embedding_A"
    save_file({**good, extra: torch.zeros(3, 18)}, weights)
    with pytest.raises(ValueError, match=r"position_embeddings.*skip_reserved_positions"):
        roberta_peft.load_adapter(load_ours(directory, "classifier"), tmp_path / "a")

    save_file({k: v for k, v in good.items() if k != key}, weights)
    with pytest.raises(ValueError, match=r"layers\.1\.attention\.value\.lora_B.*does not"):
        roberta_peft.load_adapter(load_ours(directory, "classifier"), tmp_path / "a")

    # Ours the other way: our position table also carries transformers' token types.
    ours = peft.get_peft_model(load_ours(directory, "classifier"), peft.LoraConfig(r=2, target_modules=["position_embedding"]))
    with pytest.raises(ValueError, match=r"position_embedding.*several transformers modules"):
        roberta_peft.save_adapter(ours, tmp_path / "out")

    (tmp_path / "empty").mkdir()
    save_file({**good, "base_model.model.pooler.dense.lora_A.weight": torch.zeros(3, 12)}, weights)
    with pytest.raises(ValueError, match=r"pooler\.dense.*no part of our backbone"):
        roberta_peft.load_adapter(load_ours(directory, "classifier"), tmp_path / "a")

    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        roberta_peft.load_adapter(load_ours(directory, "classifier"), tmp_path / "empty")
    with pytest.raises(TypeError, match="peft.PeftModel"):
        roberta_peft.save_adapter(load_ours(directory, "classifier"), tmp_path / "out")
    assert peft  # the reference library is what wrote every file above


HUB_SCRIPT = r"""
import sys, torch
from roberta_torch import Task
from roberta_torch import peft as roberta_peft
base, local = sys.argv[1], sys.argv[2]
ids = torch.randint(2, 61, (2, 7), generator=torch.Generator().manual_seed(0))
outs = []
for adapter in (local, "hf://someone/lora-adapter"):
    with torch.no_grad():
        outs.append(roberta_peft.load_adapter(Task.from_preset(base), adapter)(input_ids=ids).logits)
print(float((outs[0] - outs[1]).abs().max()), float(outs[0].abs().max()))
"""


def test_adapter_from_the_hf_cache(checkpoints, tmp_path):
    """hf:// adapters resolve through huggingface_hub's own cache, like presets (offline)."""
    from helpers.hub_caches import put_in_hf_cache
    from helpers.subprocesses import run_python

    directory = checkpoints("classifier")
    transformers_adapter(directory, "classifier", ["query", "value"], tmp_path / "adapter")
    put_in_hf_cache(tmp_path / "home", "someone/lora-adapter", tmp_path / "adapter")
    out = run_python(HUB_SCRIPT, {"HF_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"},
                     str(directory), str(tmp_path / "adapter"))
    difference, scale = map(float, out.strip().splitlines()[-1].split())
    assert difference == 0.0 and scale > 0
