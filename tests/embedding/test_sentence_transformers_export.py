"""TextEmbedder.save_to_preset(format="sentence-transformers"): the real sentence-transformers
loads what we write and encodes exactly as roberta_torch does."""

import numpy as np
import pytest
import torch

import roberta_torch
from helpers.random_weights import randomize_
from helpers.sentence_transformers_dirs import TEXTS, sentence_transformers_dir

sentence_transformers = pytest.importorskip("sentence_transformers")


@pytest.mark.parametrize(
    "model_type, pooling, normalize, prompts",
    [
        ("roberta", "mean", True, {"query": "query: "}),
        ("xlm-roberta", "cls", False, {}),
        ("roberta", ["max", "mean"], True, {}),  # sentence-transformers' own order: legacy flags
        ("roberta", ["mean", "cls"], False, {}),  # another order: its pooling_mode list
    ],
)
def test_sentence_transformers_encodes_what_we_write(tmp_path, model_type, pooling, normalize, prompts):
    source = sentence_transformers_dir(tmp_path / "src", model_type, pooling=pooling, normalize=normalize, prompts=prompts)
    embedder = roberta_torch.TextEmbedder.from_preset(str(source))
    randomize_(embedder.backbone, seed=7)  # weights of our own, not the source's
    out = tmp_path / "out"
    embedder.save_to_preset(out)
    reference = sentence_transformers.SentenceTransformer(str(out), device="cpu")
    for prompt_name in [None, *prompts]:
        ours = embedder.encode(TEXTS, prompt_name=prompt_name, batch_size=3)
        theirs = reference.encode(TEXTS, prompt_name=prompt_name, batch_size=3, convert_to_numpy=True)
        assert np.abs(ours - theirs).max() < 1e-5, prompt_name
    assert reference.max_seq_length == embedder.max_seq_length
    reloaded = roberta_torch.TextEmbedder.from_preset(str(out))
    np.testing.assert_allclose(reloaded.encode(TEXTS), embedder.encode(TEXTS), rtol=1e-5, atol=1e-5)


def test_bge_m3_heads_round_trip(tmp_path):
    source = sentence_transformers_dir(tmp_path / "src", "xlm-roberta", pooling="cls", normalize=True)
    embedder = roberta_torch.TextEmbedder.from_preset(str(source))
    hidden = embedder.backbone.hidden_dim
    for name, out in (("sparse_linear.pt", 1), ("colbert_linear.pt", hidden)):
        torch.save({"weight": torch.randn(out, hidden), "bias": torch.randn(out)}, source / name)
    with_heads = roberta_torch.TextEmbedder.from_preset(str(source), allow_pickle=True)  # FlagEmbedding's .pt
    with_heads.save_to_preset(tmp_path / "out")
    reloaded = roberta_torch.TextEmbedder.from_preset(str(tmp_path / "out"))
    ours, theirs = with_heads.encode_bge_m3(TEXTS[:3]), reloaded.encode_bge_m3(TEXTS[:3])
    np.testing.assert_allclose(ours["dense_vecs"], theirs["dense_vecs"], atol=1e-6)
    assert ours["lexical_weights"] == theirs["lexical_weights"]


def test_refusals(tmp_path):
    source = sentence_transformers_dir(tmp_path / "src", "roberta")
    embedder = roberta_torch.TextEmbedder.from_preset(str(source))
    with pytest.raises(ValueError, match="sentence-transformers"):
        embedder.save_to_preset(tmp_path / "x", format="keras")
    with pytest.raises(ValueError, match="not empty"):
        embedder.save_to_preset(source)
