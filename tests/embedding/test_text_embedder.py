"""TextEmbedder's edges and refusals: empty input, single texts, builtin embedding presets'
settings, plain backbone presets, bad pooling configs and bad arguments (typed errors that
name the argument or file)."""

import json
import shutil

import numpy as np
import pytest
import torch

import roberta_torch
from helpers.paths import TINY_PRESET
from helpers.sentence_transformers_dirs import TEXTS, sentence_transformers_dir
from roberta_torch.embedding import read_embedding_config
from roberta_torch.embedding.batching import length_sorted_batches

pytest.importorskip("sentence_transformers")  # writes the test directories


@pytest.fixture(scope="module")
def st_dir(tmp_path_factory):
    return sentence_transformers_dir(tmp_path_factory.mktemp("st"), "roberta", pooling="mean", normalize=True,
                                     prompts={"query": "query: "})


@pytest.fixture(scope="module")
def embedder(st_dir):
    return roberta_torch.TextEmbedder.from_preset(str(st_dir))


def test_empty_list_single_text_and_torch_output(embedder):
    assert embedder.encode([]).shape == (0, 16)
    single = embedder.encode("a")
    assert single.shape == (16,)
    np.testing.assert_allclose(single, embedder.encode(["a", "b"])[0], atol=1e-6)
    out = embedder.encode(TEXTS, convert_to="torch")
    assert isinstance(out, torch.Tensor) and out.shape == (len(TEXTS), 16) and out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_plain_backbone_preset_mean_pools_the_valid_tokens():
    embedder = roberta_torch.TextEmbedder.from_preset("roberta_tiny_random")
    assert embedder.config.pooling == ("mean",) and not embedder.config.normalize
    assert embedder.max_seq_length == embedder.backbone.max_sequence_length  # no ST files: the backbone limit
    texts = ["one short line", "a somewhat longer line of text to embed here"]
    backbone, preprocessor = embedder.backbone, roberta_torch.Preprocessor.from_preset("roberta_tiny_random")
    with torch.no_grad():
        for text, actual in zip(texts, embedder.encode(texts)):
            inputs = preprocessor([text])
            expected = backbone(inputs)[0].mean(0)  # one row: no padding
            np.testing.assert_allclose(actual, expected.numpy(), atol=1e-5)


@pytest.mark.parametrize("name, pooling, prompts", [
    ("bge_m3", ("cls",), {}),
    ("multilingual_e5_base", ("mean",), {"query": "query: ", "passage": "passage: "}),
    ("multilingual_e5_large", ("mean",), {"query": "query: ", "passage": "passage: "}),
])
def test_builtin_embedding_presets_settings(name, pooling, prompts):
    config = read_embedding_config(TINY_PRESET, builtin_name=name)  # a Keras preset: no ST files
    assert config.pooling == pooling and config.normalize and config.prompts == prompts


def test_prompts_by_name_and_overrides(st_dir, embedder):
    with_prompt = embedder.encode(TEXTS, prompt_name="query")
    np.testing.assert_allclose(with_prompt, embedder.encode(TEXTS, prompt="query: "), atol=1e-6)
    np.testing.assert_allclose(with_prompt, embedder.encode(["query: " + t for t in TEXTS]), atol=1e-6)
    other = roberta_torch.TextEmbedder.from_preset(str(st_dir), pooling="max", normalize=False, max_seq_length=8,
                                                  prompts={"doc": "doc: "})
    assert other.config.pooling == ("max",) and other.max_seq_length == 8 and other.prompts == {"doc": "doc: "}
    assert max(len(r) for r in other.tokenize(TEXTS)[0]) == 8


@pytest.mark.parametrize("pooling", ["mean", "cls", "weightedmean"])
def test_embed_rows_mixes_prompts_in_one_batch(tmp_path, pooling):
    """Rows tokenized with different prompts (prompt left out of pooling) run in the same batches
    and equal `encode` per prompt: what the server does with query and passage requests."""
    directory = sentence_transformers_dir(tmp_path, "roberta", pooling=pooling, include_prompt=False,
                                          prompts={"query": "query: ", "passage": "a passage: "})
    embedder = roberta_torch.TextEmbedder.from_preset(str(directory))
    rows, lengths, expected = [], [], []
    for name in ("query", "passage", None):
        prompt_rows, prompt_length = embedder.tokenize(TEXTS, embedder.resolve_prompt(name))
        rows += prompt_rows
        lengths += [prompt_length] * len(prompt_rows)
        expected.append(embedder.encode(TEXTS, prompt_name=name))
    assert len(set(lengths)) == 3
    mixed = embedder.embed_rows(rows, lengths, batch_size=64).numpy()
    np.testing.assert_allclose(mixed, np.concatenate(expected), atol=1e-5)
    # One batch of mixed lengths (padding-free), as a server runs them: the same numbers.
    uncut = embedder.embed_rows(rows, lengths, batch_size=64, max_padding_fraction=None).numpy()
    np.testing.assert_allclose(uncut, mixed, atol=1e-5)
    with pytest.raises(ValueError, match="`prompt_lengths`"):
        embedder.embed_rows(rows, lengths[:-1])
    with pytest.raises(ValueError, match="`max_padding_fraction`"):
        embedder.embed_rows(rows, lengths, max_padding_fraction=1.5)


def test_length_sorted_batches_respect_both_budgets():
    lengths = [5, 30, 2, 30, 7, 12, 1]
    batches = length_sorted_batches(lengths, batch_size=3, max_tokens_per_batch=40)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert all(len(b) <= 3 and (len(b) == 1 or len(b) * lengths[b[0]] <= 40) for b in batches)
    assert [lengths[b[0]] for b in batches] == sorted((lengths[b[0]] for b in batches), reverse=True)
    assert length_sorted_batches(lengths, batch_size=100, max_tokens_per_batch=1) == [[1], [3], [5], [4], [0], [2], [6]]
    bounded = length_sorted_batches(lengths, batch_size=100, max_padding_fraction=0.25)
    assert bounded == [[1, 3, 5], [4, 0], [2, 6]]  # padding 20 %, 14 %, 25 %
    for batch in bounded:
        assert 1 - sum(lengths[i] for i in batch) / (len(batch) * lengths[batch[0]]) <= 0.25


def test_run_batches_is_the_one_loop_of_embedder_and_cross_encoder(embedder):
    """run_batches: every row once, longest first, padded on the device, run_fn under inference
    mode; bad arguments fail before anything runs. TextEmbedder.embed_rows is the loop plus pooling."""
    from roberta_torch.embedding import batching

    rows, _ = embedder.tokenize(TEXTS)
    seen, calls = [], []

    def run(inputs):
        calls.append(torch.is_inference_mode_enabled())
        return embedder.backbone(inputs)

    hidden = {}
    for indices, inputs, output in batching.run_batches(rows, run, pad_token_id=embedder.tokenizer.pad_token_id,
                                                         device="cpu", batch_size=3, max_padding_fraction=None):
        assert inputs["token_ids"].shape[0] == len(indices) <= 3
        seen.extend(indices)
        for b, index in enumerate(indices):
            assert inputs["token_ids"][b, : len(rows[index])].tolist() == rows[index]
            hidden[index] = output[b, : len(rows[index])]
    assert sorted(seen) == list(range(len(rows))) and all(calls)
    assert [len(rows[i]) for i in seen] == sorted((len(r) for r in rows), reverse=True)
    pooled = torch.stack([hidden[i].mean(0) for i in range(len(rows))])
    np.testing.assert_allclose(embedder.embed_rows(rows, normalize=False, max_padding_fraction=None), pooled, atol=1e-5)
    ran = len(calls)
    with pytest.raises(TypeError, match="`batch_size`"):
        batching.run_batches(rows, run, pad_token_id=1, device="cpu", batch_size=2.0)
    assert len(calls) == ran  # refused before anything ran


def test_cpu_batches_take_the_padded_attention_path(embedder):
    """On CPU, batches are cut so little padding remains: one masked SDPA call per batch and
    layer instead of the padding-free path's per-sequence calls (same results)."""
    from roberta_torch.attention import record_dispatch

    with record_dispatch() as calls:
        bounded = embedder.encode(TEXTS, batch_size=8)
    assert calls and all(layout != "packed" for _, layout in calls)
    embedder.backbone.padding_free = True
    try:
        with record_dispatch() as calls:
            packed = embedder.encode(TEXTS, batch_size=8)
    finally:
        embedder.backbone.padding_free = "auto"
    assert ("sdpa", "packed") in calls  # (single-text batches have no padding to drop)
    np.testing.assert_allclose(bounded, packed, atol=1e-5)


@pytest.mark.parametrize("kwargs, error, words", [
    ({"batch_size": 0}, ValueError, "batch_size"),
    ({"batch_size": "8"}, TypeError, "batch_size"),
    ({"max_tokens_per_batch": -1}, ValueError, "max_tokens_per_batch"),
    ({"convert_to": "list"}, ValueError, "convert_to"),
    ({"precision": "float16"}, ValueError, "precision"),
    ({"prompt_name": "passage"}, ValueError, "'query'"),
    ({"normalize": "yes"}, TypeError, "normalize"),
])
def test_bad_arguments_are_typed_errors(embedder, kwargs, error, words):
    with pytest.raises(error, match=None) as info:
        embedder.encode(TEXTS, **kwargs)
    assert words in str(info.value)


def test_bad_texts(embedder):
    with pytest.raises(TypeError, match="item 1"):
        embedder.encode(["a", 3])
    with pytest.raises(ValueError, match="at least 2 embeddings"):
        embedder.encode(["a"], precision="int8")


def _copy(st_dir, tmp_path):
    directory = tmp_path / "copy"
    shutil.copytree(st_dir, directory)
    return directory


@pytest.mark.parametrize("change, error, words", [
    (lambda d: (d / "1_Pooling" / "config.json").write_text(json.dumps({"embedding_dimension": 16, "pooling_mode": "avg"})),
     ValueError, "Unknown pooling mode 'avg'"),
    (lambda d: (d / "1_Pooling" / "config.json").unlink(), FileNotFoundError, "1_Pooling"),
    (lambda d: (d / "1_Pooling" / "config.json").write_text("{not json"), ValueError, "not valid JSON"),
    (lambda d: (d / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}])),
     ValueError, "Dense"),
    (lambda d: (d / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}])),
     ValueError, "no Pooling module"),
    (lambda d: (d / "config_sentence_transformers.json").write_text(json.dumps(
        {"prompts": {"query": "q: "}, "default_prompt_name": "passage"})), ValueError, "default_prompt_name"),
    (lambda d: (d / "config_sentence_transformers.json").write_text(json.dumps(
        {"prompts": {}, "similarity_fn_name": "manhattan"})), ValueError, "manhattan"),
])
def test_bad_sentence_transformers_files_are_refused_by_name(st_dir, tmp_path, change, error, words):
    directory = _copy(st_dir, tmp_path)
    change(directory)
    with pytest.raises(error) as info:
        roberta_torch.TextEmbedder.from_preset(str(directory))
    assert words in str(info.value)


def test_bad_pooling_argument(st_dir):
    with pytest.raises(ValueError, match="Unknown pooling mode 'avg'"):
        roberta_torch.TextEmbedder.from_preset(str(st_dir), pooling="avg")
    with pytest.raises(TypeError, match="pooling"):
        roberta_torch.TextEmbedder.from_preset(str(st_dir), pooling=3)


@pytest.fixture(scope="module")
def tiny_keras_xlmr(tmp_path_factory):
    """A tiny XLM-R Keras preset with the sentencepiece fixture tokenizer (random weights)."""
    from helpers.paths import TOKENIZER_FIXTURES
    from helpers.random_weights import randomize_

    tokenizer = roberta_torch.Tokenizer.from_preset(str(TOKENIZER_FIXTURES / "xlm_roberta"))
    backbone = roberta_torch.XLMRobertaBackbone(vocabulary_size=tokenizer.vocabulary_size(), num_layers=2,
                                                num_heads=4, hidden_dim=16, intermediate_dim=24,
                                                max_sequence_length=64)
    randomize_(backbone, seed=11)
    directory = tmp_path_factory.mktemp("keras") / "xlmr"
    backbone.save_to_preset(directory, format="keras")
    shutil.copy(TOKENIZER_FIXTURES / "xlm_roberta" / "tokenizer.json", directory / "tokenizer.json")
    shutil.copytree(TOKENIZER_FIXTURES / "xlm_roberta" / "assets", directory / "assets")
    return directory


@pytest.mark.parametrize("name, handle", [
    ("bge_m3", "keras/bge/keras/bge_m3/1"),
    ("multilingual_e5_base", "keras/multilingual-e5/keras/multilingual_e5_base/1"),
])
def test_builtin_embedding_presets_through_the_kagglehub_cache(tiny_keras_xlmr, tmp_path, monkeypatch, name, handle):
    from helpers.hub_caches import put_in_kagglehub_cache

    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path))
    put_in_kagglehub_cache(tmp_path, handle, tiny_keras_xlmr)
    embedder = roberta_torch.TextEmbedder.from_preset(name)
    backbone = roberta_torch.Backbone.from_preset(str(tiny_keras_xlmr))
    preprocessor = roberta_torch.Preprocessor.from_preset(str(tiny_keras_xlmr))
    prompt = "query: " if name.startswith("multilingual_e5") else ""
    with torch.no_grad():
        for text, actual in zip(TEXTS, embedder.encode(TEXTS, prompt_name="query" if prompt else None)):
            hidden = backbone(preprocessor([prompt + text]))[0]  # one row: every position valid
            expected = hidden[0] if name == "bge_m3" else hidden.mean(0)
            np.testing.assert_allclose(actual, torch.nn.functional.normalize(expected, dim=0).numpy(), atol=1e-5)
