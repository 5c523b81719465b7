"""bge-m3's dense, sparse and ColBERT outputs and scores against a reference written from
FlagEmbedding's code (FlagEmbedding/finetune/embedder/encoder_only/m3/modeling.py:
`EncoderOnlyEmbedderM3ModelForInference.forward`, `_sparse_embedding`, `_colbert_embedding`,
`compute_*_score`; FlagEmbedding/inference/embedder/encoder_only/m3.py: `M3Embedder.
encode_single_device` (`_process_token_weights`, `_process_colbert_vecs`), `colbert_score`,
`compute_lexical_matching_score`, `compute_score_single_device`), run on transformers'
XLMRobertaModel with the same tiny random weights and heads; the head files' refusals; and
no pickle read without allow_pickle=True (FlagEmbedding's .pt heads are pickles)."""


import numpy as np
import pytest
import torch

import roberta_torch
from helpers.random_weights import randomize_
from helpers.sentence_transformers_dirs import HIDDEN, MAX_POSITIONS, TEXTS, hf_model_dir

transformers = pytest.importorskip("transformers")
COLBERT_DIM = 12
PAIRS = [(TEXTS[0], TEXTS[4]), (TEXTS[6], TEXTS[6] + " and more"), (TEXTS[3], TEXTS[5]), (TEXTS[1], TEXTS[7])]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    directory = hf_model_dir(tmp_path_factory.mktemp("m3"), "xlm-roberta", seed=5)
    heads = torch.nn.ModuleDict({"sparse_linear": torch.nn.Linear(HIDDEN, 1),
                                 "colbert_linear": torch.nn.Linear(HIDDEN, COLBERT_DIM)})
    randomize_(heads, seed=6, scale=0.5)
    for name, linear in heads.items():
        torch.save(linear.state_dict(), directory / f"{name}.pt")
    return directory


class FlagEmbeddingReference:
    """FlagEmbedding's M3 inference semantics on a transformers model (fp32, CPU)."""

    def __init__(self, directory):
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(directory))
        self.model = transformers.XLMRobertaModel.from_pretrained(str(directory), add_pooling_layer=False).eval()
        self.sparse_linear = torch.nn.Linear(HIDDEN, 1)
        self.sparse_linear.load_state_dict(torch.load(directory / "sparse_linear.pt"))
        self.colbert_linear = torch.nn.Linear(HIDDEN, COLBERT_DIM)
        self.colbert_linear.load_state_dict(torch.load(directory / "colbert_linear.pt"))
        t = self.tokenizer
        self.unused = [t.cls_token_id, t.eos_token_id, t.pad_token_id, t.unk_token_id]

    @torch.no_grad()
    def forward(self, texts):
        inputs = self.tokenizer(texts, padding=True, truncation=True, max_length=MAX_POSITIONS, return_tensors="pt")
        hidden = self.model(**inputs).last_hidden_state
        dense = torch.nn.functional.normalize(hidden[:, 0], dim=-1)
        token_weights = torch.relu(self.sparse_linear(hidden))  # (B, T, 1)
        sparse = torch.zeros(len(texts), self.model.config.vocab_size).scatter_reduce(
            -1, inputs["input_ids"], token_weights.squeeze(-1), reduce="amax")
        sparse[:, self.unused] *= 0.0
        colbert = self.colbert_linear(hidden[:, 1:]) * inputs["attention_mask"][:, 1:][:, :, None].float()
        colbert = torch.nn.functional.normalize(colbert, dim=-1)
        return inputs, dense, token_weights.squeeze(-1), sparse, colbert

    def encode(self, texts):
        inputs, dense, token_weights, _, colbert = self.forward(texts)
        lexical, vectors = [], []
        for b in range(len(texts)):
            weights = {}
            for w, idx in zip(token_weights[b].tolist(), inputs["input_ids"][b].tolist()):
                if idx not in self.unused and w > 0 and w > weights.get(str(idx), 0):
                    weights[str(idx)] = w
            lexical.append(weights)
            vectors.append(colbert[b, : int(inputs["attention_mask"][b].sum()) - 1].numpy())
        return dense.numpy(), lexical, vectors

    def compute_score(self, pairs, weights):
        q_inputs, q_dense, _, q_sparse, q_colbert = self.forward([q for q, _ in pairs])
        _, p_dense, _, p_sparse, p_colbert = self.forward([p for _, p in pairs])
        dense = (q_dense @ p_dense.T).diagonal()
        sparse = (q_sparse @ p_sparse.T).diagonal()
        token_scores = torch.einsum("qin,pjn->qipj", q_colbert, p_colbert)
        colbert = (token_scores.max(-1).values.sum(1) / q_inputs["attention_mask"][:, 1:].sum(-1, keepdim=True)).diagonal()
        w = weights
        return {"dense": dense, "sparse": sparse, "colbert": colbert,
                "sparse+dense": (sparse * w[1] + dense * w[0]) / (w[1] + w[0]),
                "colbert+sparse+dense": (colbert * w[2] + sparse * w[1] + dense * w[0]) / sum(w)}


def test_outputs_equal_flagembedding(model_dir):
    ours = roberta_torch.TextEmbedder.from_preset(str(model_dir), allow_pickle=True)
    reference = FlagEmbeddingReference(model_dir)
    dense, lexical, colbert = reference.encode(TEXTS)
    out = ours.encode_bge_m3(TEXTS, batch_size=3)
    assert np.abs(out["dense_vecs"] - dense).max() <= 1e-5
    for actual, expected in zip(out["lexical_weights"], lexical):
        assert actual.keys() == expected.keys()
        assert all(abs(actual[k] - expected[k]) <= 1e-5 for k in expected)
    assert sum(len(w) for w in lexical) > 10  # weights survived the relu: the test can fail
    for actual, expected in zip(out["colbert_vecs"], colbert):
        assert actual.shape == expected.shape and np.abs(actual - expected).max() <= 1e-5
    single = ours.encode_bge_m3(TEXTS[0], return_sparse=False)
    assert single["lexical_weights"] is None and single["dense_vecs"].shape == (HIDDEN,)


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0), (0.4, 0.2, 0.4)])
def test_scores_equal_flagembedding(model_dir, weights):
    ours = roberta_torch.TextEmbedder.from_preset(str(model_dir), allow_pickle=True)
    expected = FlagEmbeddingReference(model_dir).compute_score(PAIRS, weights)
    actual = ours.compute_score(PAIRS, weights_for_different_modes=weights)
    for key, values in expected.items():
        np.testing.assert_allclose(actual[key], values.numpy(), atol=1e-5, rtol=1e-5, err_msg=key)
    assert len(set(np.round(actual["colbert"], 4))) > 1


def test_scoring_functions_match_flagembedding_helpers(model_dir):
    ours = roberta_torch.TextEmbedder.from_preset(str(model_dir), allow_pickle=True)
    out = ours.encode_bge_m3(TEXTS[:4])
    matrix = roberta_torch.embedding.lexical_matching_score(out["lexical_weights"], out["lexical_weights"])
    assert matrix.shape == (4, 4)
    w = out["lexical_weights"][0]
    assert matrix[0, 0] == pytest.approx(sum(v * v for v in w.values()), rel=1e-6)
    q, p = out["colbert_vecs"][0], out["colbert_vecs"][3]
    assert roberta_torch.embedding.colbert_score(q, p) == pytest.approx(float((q @ p.T).max(-1).sum() / len(q)), rel=1e-6)


class NotATensor:
    def __reduce__(self):
        return (print, ("unpickled!",))


@pytest.mark.parametrize("content, error, words", [
    (lambda: {"weight": torch.zeros(1, HIDDEN)}, ValueError, "exactly the tensors 'weight' and 'bias'"),
    (lambda: {"weight": torch.zeros(2, HIDDEN), "bias": torch.zeros(2)}, ValueError, "(1, 16)"),
    (lambda: {"weight": torch.zeros(1, HIDDEN), "bias": NotATensor()}, ValueError, "weights_only"),
    (lambda: [torch.zeros(1)], ValueError, "exactly the tensors"),
])
def test_head_files_load_tensors_only(model_dir, tmp_path, content, error, words, capfd):
    import shutil

    directory = tmp_path / "m3"
    shutil.copytree(model_dir, directory)
    torch.save(content(), directory / "sparse_linear.pt")
    with pytest.raises(error) as info:
        roberta_torch.TextEmbedder.from_preset(str(directory), allow_pickle=True)
    assert words in str(info.value) and "sparse_linear.pt" in str(info.value)
    assert "unpickled!" not in capfd.readouterr().out


def test_missing_head_or_heads(model_dir, tmp_path):
    import shutil

    directory = tmp_path / "m3"
    shutil.copytree(model_dir, directory)
    (directory / "colbert_linear.pt").unlink()
    with pytest.raises(FileNotFoundError, match="colbert_linear.pt"):
        roberta_torch.TextEmbedder.from_preset(str(directory), allow_pickle=True)
    (directory / "sparse_linear.pt").unlink()
    plain = roberta_torch.TextEmbedder.from_preset(str(directory), allow_pickle=True)
    assert plain.encode_bge_m3(TEXTS, return_sparse=False, return_colbert_vecs=False)["dense_vecs"].shape == (8, HIDDEN)
    with pytest.raises(ValueError, match="no bge-m3 heads"):
        plain.encode_bge_m3(TEXTS)


def test_pickled_heads_need_the_opt_in_and_saved_heads_need_no_pickle(model_dir, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"sparse_linear.pt .*pickle.*allow_pickle=True"):
        roberta_torch.TextEmbedder.from_preset(str(model_dir))
    embedder = roberta_torch.TextEmbedder.from_preset(str(model_dir), allow_pickle=True)
    embedder.save_to_preset(tmp_path / "saved")
    names = sorted(p.name for p in (tmp_path / "saved").iterdir() if "linear" in p.name)
    # safetensors for roberta_torch, .pt for FlagEmbedding (which torch.loads them)
    assert names == ["colbert_linear.pt", "colbert_linear.safetensors", "sparse_linear.pt", "sparse_linear.safetensors"]
    for name in ("sparse_linear", "colbert_linear"):
        pickled = torch.load(tmp_path / "saved" / f"{name}.pt", weights_only=True)
        assert torch.equal(pickled["weight"], getattr(embedder.heads, name).weight.detach())

    def no_pickle(*args, **kwargs):
        raise AssertionError("a pickle was read without allow_pickle=True")

    monkeypatch.setattr(torch, "load", no_pickle)
    reloaded = roberta_torch.TextEmbedder.from_preset(str(tmp_path / "saved"))
    ours, theirs = embedder.encode_bge_m3(TEXTS[:3]), reloaded.encode_bge_m3(TEXTS[:3])
    assert ours["lexical_weights"] == theirs["lexical_weights"]
    for a, b in zip(ours["colbert_vecs"], theirs["colbert_vecs"]):
        np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("version, refused", [("2.5.1", True), ("2.4.0+cu121", True), ("2.6.0", False), ("2.13.0+cpu", False)])
def test_pickles_are_refused_on_a_torch_whose_weights_only_has_a_known_bypass(version, refused):
    from roberta_torch.presets import files

    if refused:
        with pytest.raises(ValueError, match=r"torch >= 2.6.*CVE-2025-32434"):
            files.check_pickle_loader(version)
    else:
        files.check_pickle_loader(version)
