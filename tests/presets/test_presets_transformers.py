"""transformers RobertaModel / XLMRobertaModel checkpoints saved by transformers, every
tensor random, matching transformers' last_hidden_state on right-padded batches (float32,
eval mode) to 1e-5 relative on the valid tokens; and the refusals."""

import json
import pathlib

import numpy as np
import pytest
import torch

import roberta_torch
from helpers.keras_fixtures import max_relative_error
from helpers.transformers_models import random_transformers_model

transformers = pytest.importorskip("transformers")

TOLERANCE = 1e-5
PAD = 1  # pad_token_id of every real RoBERTa / XLM-R checkpoint


def make_hf_model(model_type="roberta", attn_implementation="eager", seed=0, **overrides):
    """Two token types and a pooler, so both are exercised (the pooler is a head tensor)."""
    config = {"type_vocab_size": 2, **overrides}
    return random_transformers_model(model_type, seed, attn_implementation, add_pooling_layer=True, **config)


def right_padded_batch(vocab_size, max_len, seed=0):
    rng = np.random.default_rng(seed)
    lengths = [max_len, 1, max_len // 2, 3]
    token_ids = rng.integers(PAD + 1, vocab_size, size=(len(lengths), max_len))  # valid ids avoid the pad id
    mask = np.zeros_like(token_ids)
    for row, n in enumerate(lengths):
        mask[row, :n] = 1
    token_ids[mask == 0] = PAD
    return token_ids, mask


def hf_and_ours_error(hf_model, ours, max_len):
    token_ids, mask = right_padded_batch(hf_model.config.vocab_size, max_len)
    with torch.no_grad():
        expected = hf_model(
            input_ids=torch.from_numpy(token_ids), attention_mask=torch.from_numpy(mask)
        ).last_hidden_state.numpy()
        out = ours({"token_ids": token_ids, "padding_mask": mask}).numpy()
    return max_relative_error(out, expected, mask)


@pytest.mark.parametrize(
    "model_type,attn,cls",
    [
        ("roberta", "eager", roberta_torch.RobertaBackbone),
        ("roberta", "sdpa", roberta_torch.RobertaBackbone),
        ("xlm-roberta", "eager", roberta_torch.XLMRobertaBackbone),
    ],
)
def test_safetensors_checkpoint_matches_transformers(tmp_path, model_type, attn, cls):
    hf_model = make_hf_model(model_type, attn)
    hf_model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    ours = roberta_torch.Backbone.from_preset(str(tmp_path))
    assert type(ours) is cls
    assert ours.max_sequence_length == 16
    assert hf_and_ours_error(hf_model, ours, 16) < TOLERANCE


def test_sharded_safetensors_checkpoint(tmp_path):
    hf_model = make_hf_model("xlm-roberta", "sdpa", seed=1)
    hf_model.save_pretrained(tmp_path, max_shard_size="4KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    assert len(list(tmp_path.glob("model-*.safetensors"))) > 2
    ours = roberta_torch.XLMRobertaBackbone.from_preset(str(tmp_path))
    assert hf_and_ours_error(hf_model, ours, 16) < TOLERANCE


def test_task_model_with_legacy_names_in_pickle_needs_opt_in(tmp_path):
    """An old-style pytorch_model.bin of RobertaForMaskedLM: `roberta.` prefix, LayerNorm
    gamma/beta, a position_ids buffer, an lm_head: loads only with allow_pickle=True."""
    hf_model = make_hf_model("roberta", seed=2)
    legacy = {}
    for key, value in hf_model.state_dict().items():
        key = "roberta." + key.replace("LayerNorm.weight", "LayerNorm.gamma").replace(
            "LayerNorm.bias", "LayerNorm.beta"
        )
        legacy[key] = value.clone()
    legacy["roberta.embeddings.position_ids"] = torch.arange(18)[None]
    legacy["lm_head.dense.weight"] = torch.randn(12, 12)
    legacy["lm_head.bias"] = torch.randn(61)
    torch.save(legacy, tmp_path / "pytorch_model.bin")
    hf_model.config.to_json_file(tmp_path / "config.json")
    with pytest.raises(ValueError, match=r"holds only pytorch_model.bin .*allow_pickle=True"):
        roberta_torch.Backbone.from_preset(str(tmp_path))
    ours = roberta_torch.Backbone.from_preset(str(tmp_path), allow_pickle=True)
    assert hf_and_ours_error(hf_model, ours, 16) < TOLERANCE


class _TouchOnUnpickle:
    """A pickle payload that runs code when unpickled without weights_only."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.path),))


def test_pickle_is_loaded_with_weights_only(tmp_path):
    marker = tmp_path / "code_ran"
    torch.save({"x": _TouchOnUnpickle(marker)}, tmp_path / "pytorch_model.bin")
    make_hf_model().config.to_json_file(tmp_path / "config.json")
    with pytest.raises(ValueError, match=r"weights_only=True"):
        roberta_torch.Backbone.from_preset(str(tmp_path), allow_pickle=True)
    assert not marker.exists()


def _config_dir(tmp_path, **changes):
    model = make_hf_model()
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config.update(changes)
    (tmp_path / "config.json").write_text(json.dumps(config))
    return str(tmp_path)


@pytest.mark.parametrize(
    "changes,named",
    [
        ({"hidden_act": "gelu_new"}, "hidden_act='gelu_new'"),
        ({"hidden_act": "relu"}, "hidden_act='relu'"),
        ({"position_embedding_type": "relative_key"}, "position_embedding_type='relative_key'"),
        ({"is_decoder": True}, "is_decoder=True"),
        ({"add_cross_attention": True}, "add_cross_attention=True"),
        ({"layer_norm_eps": 1e-12}, "layer_norm_eps=1e-12"),
        ({"attention_probs_dropout_prob": 0.0}, "pass dropout=<rate>"),
        ({"model_type": "roberta-prelayernorm"}, "pre-LayerNorm"),
        ({"model_type": "xlm-roberta-xl"}, "pre-LayerNorm"),
        ({"model_type": "bert"}, "model_type='bert'"),
    ],
)
def test_unrepresentable_configs_are_refused_by_name(tmp_path, changes, named):
    with pytest.raises(ValueError) as info:
        roberta_torch.Backbone.from_preset(_config_dir(tmp_path, **changes))
    assert named in str(info.value)


def test_every_refusal_is_listed_at_once(tmp_path):
    with pytest.raises(ValueError) as info:
        roberta_torch.Backbone.from_preset(
            _config_dir(tmp_path, hidden_act="silu", is_decoder=True, layer_norm_eps=1e-6)
        )
    message = str(info.value)
    assert (
        "hidden_act='silu'" in message and "is_decoder=True" in message and "layer_norm_eps=1e-06" in message
    )
    assert "nothing was loaded" in message


def test_differing_dropouts_load_with_an_explicit_rate(tmp_path):
    directory = _config_dir(tmp_path, attention_probs_dropout_prob=0.0)
    assert roberta_torch.Backbone.from_preset(directory, dropout=0.05).dropout == 0.05


def test_unexpected_and_misshaped_tensors_are_all_listed(tmp_path):
    from safetensors.torch import load_file, save_file

    directory = _config_dir(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    tensors["encoder.layer.1.attention.self.key.weight"] = torch.zeros(12, 11)
    tensors["encoder.layer.0.output.dense.bias"] = torch.zeros(13)
    del tensors["embeddings.LayerNorm.bias"]
    tensors["encoder.layer.9.output.dense.bias"] = torch.zeros(12)
    tensors["pooler.dense.bias"] = torch.zeros(12)  # on the ignore list
    save_file(tensors, tmp_path / "model.safetensors")
    with pytest.raises(ValueError) as info:
        roberta_torch.Backbone.from_preset(directory)
    message = str(info.value)
    assert "model.safetensors" in message
    assert (
        "encoder.layer.1.attention.self.key.weight (in model.safetensors): shape (12, 11) in the file, expected (12, 12)"
        in message
    )
    assert (
        "encoder.layer.0.output.dense.bias (in model.safetensors): shape (13,) in the file, expected (12,)"
        in message
    )
    assert "embeddings.LayerNorm.bias: missing (expected shape (12,)" in message
    assert (
        "encoder.layer.9.output.dense.bias (in model.safetensors): shape (12,), not used by the model"
        in message
    )
    assert "4 problem(s)" in message and "- pooler" not in message


HF_SCRIPT = """
import json, sys
import numpy as np, torch
import roberta_torch
from helpers.keras_fixtures import max_relative_error
data = np.load(sys.argv[1])
results = {}
for repo in ("someone/roberta-hf", "someone/xlmr-hf-sharded"):
    model = roberta_torch.Backbone.from_preset("hf://" + repo)
    with torch.no_grad():
        out = model({"token_ids": data["token_ids"], "padding_mask": data["mask"]}).numpy()
    results[repo] = [type(model).__name__, max_relative_error(out, data[repo], data["mask"])]
for kwargs in ({}, {"allow_pickle": True}):
    try:
        model = roberta_torch.Backbone.from_preset("hf://someone/bin-only", **kwargs)
        results["bin-only" + str(kwargs)] = type(model).__name__
    except FileNotFoundError as error:
        results["bin-only" + str(kwargs)] = str(error)
print(json.dumps(results))
"""


def test_transformers_repos_through_huggingface_hub_cache(tmp_path):
    from helpers.hub_caches import put_in_hf_cache
    from helpers.subprocesses import run_python

    token_ids, mask = right_padded_batch(61, 16)
    expected = {"token_ids": token_ids, "mask": mask}
    for repo, model_type, shard in [
        ("someone/roberta-hf", "roberta", "50GB"),
        ("someone/xlmr-hf-sharded", "xlm-roberta", "4KB"),
    ]:
        hf_model = make_hf_model(model_type, "sdpa", seed=3)
        hf_model.save_pretrained(tmp_path / repo, max_shard_size=shard)
        put_in_hf_cache(tmp_path / "home", repo, tmp_path / repo)
        with torch.no_grad():
            expected[repo] = hf_model(
                input_ids=torch.from_numpy(token_ids), attention_mask=torch.from_numpy(mask)
            ).last_hidden_state.numpy()
    bin_only = tmp_path / "bin-only"
    bin_only.mkdir()
    hf_model.config.to_json_file(bin_only / "config.json")
    torch.save(hf_model.state_dict(), bin_only / "pytorch_model.bin")
    put_in_hf_cache(tmp_path / "home", "someone/bin-only", bin_only)
    np.savez(tmp_path / "expected.npz", **expected)

    out = run_python(
        HF_SCRIPT, {"HF_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"}, str(tmp_path / "expected.npz")
    )
    results = json.loads(out.strip().splitlines()[-1])
    assert (
        results["someone/roberta-hf"][0] == "RobertaBackbone" and results["someone/roberta-hf"][1] < TOLERANCE
    )
    assert results["someone/xlmr-hf-sharded"][0] == "XLMRobertaBackbone"
    assert results["someone/xlmr-hf-sharded"][1] < TOLERANCE
    assert "needs allow_pickle=True" in results["bin-only{}"]
    assert results["bin-only{'allow_pickle': True}"] == "XLMRobertaBackbone"
