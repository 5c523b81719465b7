"""TextEmbedder equals the real sentence-transformers on directories it writes from tiny random
RoBERTa / XLM-R models (every tensor random): each pooling mode, with and without Normalize,
prompts (kept in or left out of pooling), truncation at max_seq_length, any batching."""

import json

import numpy as np
import pytest
import torch

import roberta_torch
from helpers.hub_caches import put_in_hf_cache
from helpers.sentence_transformers_dirs import TEXTS, sentence_transformers_dir

st = pytest.importorskip("sentence_transformers")

TOLERANCE = 1e-5
PROMPTS = {"query": "query: ", "passage": "passage: "}
CASES = [  # (model type, pooling, normalize, include_prompt)
    ("roberta", "mean", False, True),
    ("roberta", "cls", True, False),
    ("roberta", "max", False, False),
    ("roberta", "lasttoken", True, True),
    ("xlm-roberta", "mean", True, False),
    ("xlm-roberta", "weightedmean", False, True),
    ("xlm-roberta", "mean_sqrt_len_tokens", True, True),
    ("xlm-roberta", ("cls", "mean", "max"), False, True),
]


@pytest.fixture(scope="module", params=CASES, ids=lambda c: "-".join([c[0], str(c[1]), f"norm{c[2]}", f"inc{c[3]}"]))
def case(request, tmp_path_factory):
    model_type, pooling, normalize, include_prompt = request.param
    directory = sentence_transformers_dir(tmp_path_factory.mktemp("st"), model_type, pooling=pooling,
                                          normalize=normalize, prompts=PROMPTS, include_prompt=include_prompt)
    return directory, st.SentenceTransformer(str(directory), device="cpu"), roberta_torch.TextEmbedder.from_preset(str(directory))


@pytest.mark.parametrize("prompt_name", [None, "query"])
def test_encode_equals_sentence_transformers(case, prompt_name):
    _, reference, ours = case
    expected = reference.encode(TEXTS, prompt_name=prompt_name, batch_size=3)
    actual = ours.encode(TEXTS, prompt_name=prompt_name, batch_size=3)
    assert actual.shape == expected.shape and actual.dtype == np.float32
    assert np.abs(actual - expected).max() <= TOLERANCE
    # The outputs are not trivially equal across prompts (the prompt changes the text).
    if prompt_name is not None:
        assert np.abs(actual - ours.encode(TEXTS, batch_size=3)).max() > 1e-3


def test_explicit_normalize_and_prompt_text(case):
    _, reference, ours = case
    expected = reference.encode(TEXTS, prompt="passage: ", normalize_embeddings=True)
    actual = ours.encode(TEXTS, prompt="passage: ", normalize=True)
    assert np.abs(actual - expected).max() <= TOLERANCE
    np.testing.assert_allclose(np.linalg.norm(actual, axis=1), 1.0, atol=1e-5)


def test_batching_and_order_do_not_change_results(case):
    _, _, ours = case
    baseline = ours.encode(TEXTS, batch_size=64)
    for batch_size, budget in [(3, 40), (64, 1)]:  # budget 1: one text per batch
        torch.testing.assert_close(ours.encode(TEXTS, batch_size=batch_size, max_tokens_per_batch=budget),
                                   baseline, atol=1e-5, rtol=0)
    reversed_out = ours.encode(TEXTS[::-1], batch_size=4)
    torch.testing.assert_close(reversed_out[::-1].copy(), baseline, atol=1e-5, rtol=0)


def test_truncation_equals_sentence_transformers(case):
    directory, reference, ours = case
    assert ours.max_seq_length == reference.max_seq_length == 24
    long_text = TEXTS[4] * 3  # far past 24 tokens
    rows, _ = ours.tokenize([long_text])
    assert len(rows[0]) == 24 and rows[0] == reference.tokenize([long_text])["input_ids"][0].tolist()


def test_similarity_equals_sentence_transformers(case):
    _, reference, ours = case
    a, b = ours.encode(TEXTS[:3]), ours.encode(TEXTS[3:])
    expected = reference.similarity(torch.from_numpy(a), torch.from_numpy(b))
    torch.testing.assert_close(ours.similarity(a, b), expected, atol=1e-6, rtol=0)


def test_quantized_precisions_equal_sentence_transformers(tmp_path):
    from sentence_transformers.util.quantization import quantize_embeddings

    ours = roberta_torch.TextEmbedder.from_preset(str(sentence_transformers_dir(tmp_path, "roberta", normalize=True)))
    floats = ours.encode(TEXTS)
    for precision in ["int8", "uint8", "binary", "ubinary"]:
        expected = quantize_embeddings(floats, precision=precision)
        actual = ours.encode(TEXTS, precision=precision)
        assert actual.dtype == expected.dtype and np.array_equal(actual, expected), precision
        assert isinstance(ours.encode(TEXTS, precision=precision, convert_to="torch"), torch.Tensor)


HF_SCRIPT = """
import sys, numpy as np, roberta_torch
from helpers.sentence_transformers_dirs import TEXTS
ours = roberta_torch.TextEmbedder.from_preset("hf://someone/tiny-st")
assert ours.config.default_prompt_name == "query" and ours.config.pooling == ("cls",) and ours.config.normalize
np.save(sys.argv[1], ours.encode(TEXTS))
"""


def test_default_prompt_name_and_hf_handle_through_the_hub_cache(tmp_path):
    from helpers.subprocesses import run_python

    directory = sentence_transformers_dir(tmp_path, "xlm-roberta", pooling="cls", normalize=True,
                                          prompts=PROMPTS, default_prompt_name="query")
    reference = st.SentenceTransformer(str(directory), device="cpu").encode(TEXTS)  # with the "query: " prompt
    put_in_hf_cache(tmp_path / "hf_home", "someone/tiny-st", directory)
    run_python(HF_SCRIPT, {"HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1"}, str(tmp_path / "out.npy"))
    assert np.abs(np.load(tmp_path / "out.npy") - reference).max() <= TOLERANCE


def test_legacy_pooling_config_and_sentence_bert_max_length(tmp_path):
    """Directories written by sentence-transformers < 5: `pooling_mode_*_tokens` booleans and
    `max_seq_length` in sentence_bert_config.json."""
    directory = sentence_transformers_dir(tmp_path, "roberta", pooling="max", max_seq_length=None)
    (directory / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": 16, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": False,
         "pooling_mode_max_tokens": True, "pooling_mode_mean_sqrt_len_tokens": False}))
    (directory / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 10, "do_lower_case": False}))
    reference = st.SentenceTransformer(str(directory), device="cpu")
    ours = roberta_torch.TextEmbedder.from_preset(str(directory))
    assert ours.config.pooling == ("max",) and ours.max_seq_length == reference.max_seq_length == 10
    assert np.abs(ours.encode(TEXTS) - reference.encode(TEXTS)).max() <= TOLERANCE
