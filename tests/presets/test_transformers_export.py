"""save_to_preset(format="transformers"): the real transformers loads what we write (no
missing, unexpected or newly initialized weights) and computes what we compute on
right-padded batches; checkpoints round-trip tensor-for-tensor; writes are atomic."""

import json
import logging

import numpy as np
import pytest
import torch

import roberta_torch
from helpers.keras_fixtures import batches, max_relative_error, preset_dir
from helpers.random_weights import randomize_
from helpers.transformers_models import padded_batch, random_transformers_model
from roberta_torch.presets import transformers_format

transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")

TOLERANCE = 1e-5  # float32, relative to the largest output
BF16_TOLERANCE = 5e-2  # two bfloat16 computations (8-bit mantissas) that differ in summation order
CLASSES = {"roberta": roberta_torch.RobertaBackbone, "xlm-roberta": roberta_torch.XLMRobertaBackbone}
HF_CLASSES = {"roberta": "RobertaModel", "xlm-roberta": "XLMRobertaModel"}
SEQ = 16


def our_model(model_type, dtype="float32", seed=0):
    model = CLASSES[model_type](
        vocabulary_size=61, num_layers=2, num_heads=3, hidden_dim=12, intermediate_dim=20, max_sequence_length=SEQ
    )
    return randomize_(model, seed=seed).to(getattr(torch, dtype)).eval()


def load_in_transformers(directory, caplog, **kwargs):
    """AutoModel.from_pretrained, failing on any missing / unexpected / mismatched key or a
    'newly initialized' report."""
    with caplog.at_level(logging.INFO, logger="transformers"):
        model, info = transformers.AutoModel.from_pretrained(directory, output_loading_info=True, **kwargs)
    assert info["missing_keys"] == set() and info["unexpected_keys"] == set(), info
    assert not info["mismatched_keys"] and not info["error_msgs"], info
    assert "newly initialized" not in caplog.text and "MISSING" not in caplog.text
    return model.eval()


def output_error(ours, hf_model, dtype=torch.float32, lengths=(SEQ, 1, 9, 3)):
    token_ids, mask = padded_batch(ours.vocabulary_size, lengths, SEQ)
    with torch.no_grad():
        mine = ours({"token_ids": token_ids, "padding_mask": mask}).float().numpy()
        theirs = hf_model(input_ids=token_ids, attention_mask=mask).last_hidden_state.float().numpy()
    return max_relative_error(mine, theirs, mask.numpy())


def read_all(directory):
    if (directory / "model.safetensors").exists():
        return safetensors_torch.load_file(directory / "model.safetensors")
    index = json.loads((directory / "model.safetensors.index.json").read_text())
    out = {}
    for shard in sorted(set(index["weight_map"].values())):
        out.update(safetensors_torch.load_file(directory / shard))
    assert set(out) == set(index["weight_map"])
    return out


@pytest.mark.parametrize("model_type", ["roberta", "xlm-roberta"])
@pytest.mark.parametrize("sharded", [False, True], ids=["single", "sharded"])
def test_transformers_loads_our_backbone(tmp_path, caplog, model_type, sharded):
    ours = our_model(model_type)
    options = {"max_shard_size": "2KB"} if sharded else {}
    ours.save_to_preset(tmp_path / "out", format="transformers", **options)
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    if sharded:
        assert "model.safetensors.index.json" in names and "model-00001-of-" in " ".join(names)
        index = json.loads((tmp_path / "out" / "model.safetensors.index.json").read_text())
        sizes = [p.stat().st_size for p in (tmp_path / "out").glob("model-*.safetensors")]
        assert len(sizes) > 3 and index["metadata"]["total_size"] == sum(
            t.numel() * t.element_size() for t in read_all(tmp_path / "out").values()
        )
    else:
        assert names == ["config.json", "model.safetensors"]
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    expected = {
        "model_type": model_type,
        "architectures": [HF_CLASSES[model_type]],
        "vocab_size": 61,
        "hidden_size": 12,
        "num_hidden_layers": 2,
        "num_attention_heads": 3,
        "intermediate_size": 20,
        "max_position_embeddings": SEQ + 2,
        "pad_token_id": 1,
        "bos_token_id": 0,
        "eos_token_id": 2,
        "type_vocab_size": 1,
        "layer_norm_eps": 1e-5,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "dtype": "float32",
    }
    assert {k: config[k] for k in expected} == expected
    hf_model = load_in_transformers(tmp_path / "out", caplog)
    assert type(hf_model).__name__ == HF_CLASSES[model_type]
    error = output_error(ours, hf_model)
    assert error < TOLERANCE, error
    # The same computation transformers does on right-padded rows: positions count from 2.
    assert output_error(ours, hf_model, lengths=(SEQ, SEQ)) < TOLERANCE


@pytest.mark.parametrize("model_type", ["roberta", "xlm-roberta"])
@pytest.mark.parametrize("sharded", [False, True], ids=["single", "sharded"])
def test_bfloat16_backbone_in_transformers(tmp_path, caplog, model_type, sharded):
    ours = our_model(model_type, "bfloat16", seed=1)
    ours.save_to_preset(tmp_path / "out", format="transformers", max_shard_size=1000 if sharded else None)
    assert json.loads((tmp_path / "out" / "config.json").read_text())["dtype"] == "bfloat16"
    tensors = read_all(tmp_path / "out")
    assert {t.dtype for t in tensors.values()} == {torch.bfloat16}
    hf_model = load_in_transformers(tmp_path / "out", caplog, dtype=torch.bfloat16)
    assert hf_model.dtype == torch.bfloat16
    error = output_error(ours, hf_model)
    assert error < BF16_TOLERANCE, error
    # The weights themselves are exactly ours (bfloat16 in, bfloat16 out).
    state = ours.state_dict()
    assert torch.equal(tensors["embeddings.word_embeddings.weight"], state["token_embedding.weight"])
    assert torch.equal(tensors["embeddings.position_embeddings.weight"][2:], state["position_embedding.weight"])


@pytest.mark.parametrize("model_type", ["roberta", "xlm-roberta"])
def test_transformers_checkpoint_round_trip_is_exact(tmp_path, caplog, model_type):
    hf_model = random_transformers_model(model_type, seed=3, type_vocab_size=2)
    with torch.no_grad():
        # A large token type row makes folding it into the positions lose low bits, so
        # (positions + type) - type != positions: the round trip must not rely on subtraction.
        hf_model.embeddings.token_type_embeddings.weight[0] += 1000.0
    pooled = transformers.AutoModel.from_config(hf_model.config)  # with a pooler
    pooled.load_state_dict(hf_model.state_dict(), strict=False)
    with torch.no_grad():
        pooled.pooler.dense.weight.normal_()
        pooled.pooler.dense.bias.normal_()
    pooled.save_pretrained(tmp_path / "hf")
    original = read_all(tmp_path / "hf")
    folded = original["embeddings.position_embeddings.weight"][2:] + original["embeddings.token_type_embeddings.weight"][0]
    assert not torch.equal(folded - original["embeddings.token_type_embeddings.weight"][0], original["embeddings.position_embeddings.weight"][2:])

    ours = roberta_torch.Backbone.from_preset(tmp_path / "hf")
    ours.save_to_preset(tmp_path / "out", format="transformers")
    written = read_all(tmp_path / "out")
    assert set(written) == set(original)  # pooler included
    different = [k for k in original if not torch.equal(original[k], written[k])]
    assert different == []
    config_in = json.loads((tmp_path / "hf" / "config.json").read_text())
    config_out = json.loads((tmp_path / "out" / "config.json").read_text())
    for key in ("model_type", "architectures", "type_vocab_size", "max_position_embeddings", "vocab_size"):
        assert config_out[key] == config_in[key], key
    assert output_error(ours, load_in_transformers(tmp_path / "out", caplog)) < TOLERANCE

    # Trained afterwards: changed position elements are split as value - token type 0, the
    # others stay exact.
    with torch.no_grad():
        ours.position_embedding.weight[3, 4] += 0.5
    ours.save_to_preset(tmp_path / "trained", format="transformers")
    positions = read_all(tmp_path / "trained")["embeddings.position_embeddings.weight"]
    type_zero = original["embeddings.token_type_embeddings.weight"][0]
    changed = torch.zeros_like(positions, dtype=torch.bool)
    changed[3 + 2, 4] = True
    assert torch.equal(positions[~changed], original["embeddings.position_embeddings.weight"][~changed])
    assert positions[5, 4] == ours.position_embedding.weight[3, 4] - type_zero[4]
    assert output_error(ours, load_in_transformers(tmp_path / "trained", caplog)) < TOLERANCE


def test_keras_preset_to_transformers(tmp_path, caplog):
    ours = roberta_torch.Backbone.from_preset(preset_dir("roberta_1layer"))
    assert ours.transformers_source is None  # a Keras preset: nothing kept beyond the state dict
    ours.save_to_preset(tmp_path / "out", format="transformers")
    tensors = read_all(tmp_path / "out")
    # Keras has no token types and no reserved positions: zeros, with the positions carrying everything.
    assert not tensors["embeddings.token_type_embeddings.weight"].any()
    assert not tensors["embeddings.position_embeddings.weight"][:2].any()
    assert not tensors["pooler.dense.weight"].any() and not tensors["pooler.dense.bias"].any()
    hf_model = load_in_transformers(tmp_path / "out", caplog)
    worst, compared = 0.0, 0
    with torch.no_grad():
        for token_ids, mask, keras_output in batches("roberta_1layer"):
            # transformers numbers positions by counting non-pad ids: only right-padded rows
            # whose valid tokens are not the pad id (1) mean the same thing on both sides.
            rows = (np.diff(mask, axis=1) <= 0).all(axis=1) & ~((token_ids == 1) & (mask == 1)).any(axis=1)
            ids, mask, keras_output = np.where(mask == 1, token_ids, 1)[rows], mask[rows], keras_output[rows]
            if not rows.any():
                continue
            compared += int(mask.sum())
            theirs = hf_model(input_ids=torch.as_tensor(ids), attention_mask=torch.as_tensor(mask)).last_hidden_state
            worst = max(worst, max_relative_error(theirs.numpy(), keras_output, mask))
    assert compared > 10 and worst < TOLERANCE, (compared, worst)
    # And back into roberta_torch: the same state dict.
    again = roberta_torch.Backbone.from_preset(tmp_path / "out")
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in ours.state_dict().items())


def test_shard_sizes_follow_transformers():
    assert transformers_format.parse_shard_size("5GB") == 5 * 10**9
    assert transformers_format.parse_shard_size("10GiB") == 10 * 2**30
    assert transformers_format.parse_shard_size("500MB") == 500 * 10**6
    assert transformers_format.parse_shard_size("1KiB") == 1024
    assert transformers_format.parse_shard_size("8Gb") == 10**9  # bits, as transformers reads them
    assert transformers_format.parse_shard_size(1234) == 1234
    from transformers.utils.hub import convert_file_size_to_int

    for text in ("5GB", "10GiB", "500MB", "1KiB", "8Gb", "3kb"):
        assert transformers_format.parse_shard_size(text) == convert_file_size_to_int(text), text
    for bad in ("5 parsecs", "GB", "", "-5GB", 0, -1):
        with pytest.raises(ValueError, match="max_shard_size"):
            transformers_format.parse_shard_size(bad)
    for bad in (5.0, True, None):
        with pytest.raises(TypeError, match="max_shard_size"):
            transformers_format.parse_shard_size(bad)


def test_sharding_is_huggingface_hubs(tmp_path):
    from huggingface_hub import split_torch_state_dict_into_shards

    model = our_model("roberta")
    tensors = transformers_format.backbone_tensors(model)
    for limit in (100, 1000, 3000, 10**9):
        model.save_to_preset(tmp_path / str(limit), format="transformers", max_shard_size=limit)
        theirs = split_torch_state_dict_into_shards(tensors, max_shard_size=limit)
        if not theirs.is_sharded:
            assert (tmp_path / str(limit) / "model.safetensors").is_file()
            continue
        index = json.loads((tmp_path / str(limit) / "model.safetensors.index.json").read_text())
        assert index["weight_map"] == theirs.tensor_to_filename, limit


def test_refusals_write_nothing(tmp_path):
    ours = our_model("roberta")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    with pytest.raises(ValueError, match="not empty.*overwrite=True"):
        ours.save_to_preset(tmp_path / "full", format="transformers")
    assert sorted(p.name for p in (tmp_path / "full").iterdir()) == ["keep.txt"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        ours.save_to_preset(tmp_path / "file", format="transformers")
    with pytest.raises(ValueError, match="max_shard_size"):
        ours.save_to_preset(tmp_path / "bad", format="transformers", max_shard_size="lots")
    with pytest.raises(TypeError, match="max_shard_size.*'transformers'"):
        ours.save_to_preset(tmp_path / "bad", format="keras", max_shard_size="1GB")
    assert not (tmp_path / "bad").exists()
    ours.save_to_preset(tmp_path / "full", format="transformers", overwrite=True)
    assert sorted(p.name for p in (tmp_path / "full").iterdir()) == ["config.json", "model.safetensors"]


def _interrupt_after(monkeypatch, calls: int):
    """safetensors' save_file writes its file, then the process is interrupted on call `calls`."""
    real = safetensors_torch.save_file
    count = {"n": 0}

    def save_file(*args, **kwargs):
        real(*args, **kwargs)
        count["n"] += 1
        if count["n"] == calls:
            raise KeyboardInterrupt

    monkeypatch.setattr(safetensors_torch, "save_file", save_file)


def test_interrupted_save_leaves_no_config_next_to_partial_weights(tmp_path, monkeypatch):
    ours = our_model("xlm-roberta")
    _interrupt_after(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        ours.save_to_preset(tmp_path / "out", format="transformers", max_shard_size="2KB")
    assert list(tmp_path.iterdir()) == []  # staged: nothing at all, no .partial left either
    # The writer itself (without staging) writes weights first and config.json last.
    _interrupt_after(monkeypatch, 3)
    (tmp_path / "plain").mkdir()
    with pytest.raises(KeyboardInterrupt):
        transformers_format.save(ours, tmp_path / "plain", max_shard_size="2KB")
    names = [p.name for p in (tmp_path / "plain").iterdir()]
    assert names and "config.json" not in names and "model.safetensors.index.json" not in names


def test_task_heads_plug_in_as_rows_and_config(tmp_path, caplog):
    """The hook task models use: head rows + config fields, backbone keys under "roberta."
    (a RobertaForSequenceClassification head built by hand here)."""
    from roberta_torch.presets.mapping import Row

    backbone = our_model("roberta", seed=5)
    head = torch.nn.ModuleDict({"dense": torch.nn.Linear(12, 12), "out_proj": torch.nn.Linear(12, 3)})
    randomize_(head, seed=6)
    labels = {0: "neg", 1: "neutral", 2: "pos"}
    task = transformers_format.TaskExport(
        architecture="RobertaForSequenceClassification",
        rows=tuple(Row(f"classifier.{k}", k) for k in head.state_dict()),
        state_dict=head.state_dict(),
        config={
            "num_labels": 3,
            "id2label": {str(i): n for i, n in labels.items()},
            "label2id": {n: i for i, n in labels.items()},
            "problem_type": "single_label_classification",
        },
        pooler=False,
    )
    (tmp_path / "out").mkdir()
    transformers_format.save(backbone, tmp_path / "out", task=task)
    with caplog.at_level(logging.INFO, logger="transformers"):
        hf, info = transformers.AutoModelForSequenceClassification.from_pretrained(
            tmp_path / "out", output_loading_info=True
        )
    assert info["missing_keys"] == set() and info["unexpected_keys"] == set(), info
    assert "newly initialized" not in caplog.text
    assert type(hf).__name__ == "RobertaForSequenceClassification" and hf.config.id2label == labels
    token_ids, mask = padded_batch(61, (SEQ, 4), SEQ)
    with torch.no_grad():
        first = backbone({"token_ids": token_ids, "padding_mask": mask})[:, 0]
        expected = head["out_proj"](torch.tanh(head["dense"](first)))
        logits = hf.eval()(input_ids=token_ids, attention_mask=mask).logits
    assert max_relative_error(logits.numpy(), expected.numpy(), np.ones(logits.shape[:1])) < TOLERANCE


def test_our_exports_load_without_calling_the_pooler_a_task_head(tmp_path, caplog):
    """RobertaModel's pooler is no task head: loading our own transformers and
    sentence-transformers exports keeps it (to write it back) and says what it is (issue 22 N3)."""
    ours = our_model("roberta")
    ours.save_to_preset(tmp_path / "hf", format="transformers")
    embedder = roberta_torch.TextEmbedder.from_preset("roberta_tiny_random")
    embedder.save_to_preset(tmp_path / "st")
    with caplog.at_level(logging.INFO, logger="roberta_torch"):
        again = roberta_torch.Backbone.from_preset(tmp_path / "hf")
        roberta_torch.TextEmbedder.from_preset(str(tmp_path / "st"))
    assert "task-head" not in caplog.text
    assert "Kept transformers' pooler" in caplog.text and "tanh" in caplog.text
    assert set(again.transformers_source.pooler) == {"pooler.dense.weight", "pooler.dense.bias"}
    again.save_to_preset(tmp_path / "again", format="transformers")
    first, second = read_all(tmp_path / "hf"), read_all(tmp_path / "again")
    assert all(torch.equal(first[k], second[k]) for k in first)
