"""CrossEncoder equals sentence-transformers' CrossEncoder.predict / rank on tiny random RoBERTa and
XLM-R sequence classifiers (one label with Sigmoid / Identity, several labels with Identity /
Softmax / apply_softmax), reads every place the activation and max length are stored, and
refuses what it cannot score with typed errors."""

import json
import logging
import shutil

import numpy as np
import pytest
import torch

import roberta_torch
from helpers.cross_encoder_dirs import DOCUMENTS, PAIRS, QUERY, classifier_dir, cross_encoder_dir
from helpers.paths import TINY_PRESET
from roberta_torch.presets.preset import open_preset

st = pytest.importorskip("sentence_transformers")  # the reference, and the writer of its directories
ATOL = 1e-5


def reference(directory, **kwargs):
    return st.CrossEncoder(str(directory), device="cpu", **kwargs)


def assert_same_ranking(ours, theirs):
    assert [r["corpus_id"] for r in ours] == [r["corpus_id"] for r in theirs]
    np.testing.assert_allclose([r["score"] for r in ours], [r["score"] for r in theirs], atol=ATOL)


CASES = {
    # name: (model_type, num_labels, how the directory is written)
    "roberta-1-plain-transformers": ("roberta", 1, dict(kind="transformers")),
    "xlmr-1-plain-transformers": ("xlm-roberta", 1, dict(kind="transformers")),
    "roberta-1-identity-maxlen": ("roberta", 1, dict(kind="st", activation_fn=torch.nn.Identity(), max_length=20)),
    "xlmr-1-sigmoid-maxlen": ("xlm-roberta", 1, dict(kind="st", max_length=16)),
    "roberta-3-default": ("roberta", 3, dict(kind="st")),
    "xlmr-3-softmax": ("xlm-roberta", 3, dict(kind="st", activation_fn=torch.nn.Softmax(dim=-1), max_length=24)),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request, tmp_path_factory):
    model_type, num_labels, spec = CASES[request.param]
    spec = dict(spec)
    root = tmp_path_factory.mktemp(request.param)
    if spec.pop("kind") == "transformers":
        directory = classifier_dir(root, model_type, num_labels, seed=1)
    else:
        directory = cross_encoder_dir(root, model_type, num_labels, seed=2, **spec)
    return directory, roberta_torch.CrossEncoder.from_preset(str(directory)), reference(directory)


def test_predict_matches_sentence_transformers(case):
    directory, ours, theirs = case
    assert ours.num_labels == theirs.num_labels
    assert ours.max_length == min(theirs.max_seq_length, ours.classifier.backbone.max_sequence_length)
    expected = theirs.predict(PAIRS, batch_size=5)
    got = ours.predict(PAIRS, batch_size=3)
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=ATOL)
    # A single pair, a list pair, torch output, and an explicit activation / softmax.
    np.testing.assert_allclose(ours.predict(PAIRS[3]), theirs.predict(PAIRS[3]), atol=ATOL)
    np.testing.assert_allclose(ours.predict(list(PAIRS[0])), theirs.predict(list(PAIRS[0])), atol=ATOL)
    assert isinstance(ours.predict(PAIRS, convert_to="torch"), torch.Tensor)
    uncut = ours.score_rows(ours.tokenize(PAIRS), batch_size=64, max_padding_fraction=None).numpy()
    np.testing.assert_allclose(uncut, expected, atol=ATOL)  # one mixed-length batch, as the server runs it
    raw = theirs.predict(PAIRS, activation_fn=torch.nn.Identity())
    np.testing.assert_allclose(ours.predict(PAIRS, activation_fn="identity"), raw, atol=ATOL)
    if ours.num_labels > 1:
        np.testing.assert_allclose(ours.predict(PAIRS, apply_softmax=True), theirs.predict(PAIRS, apply_softmax=True),
                                   atol=ATOL)


def test_rank_matches_sentence_transformers(case):
    _, ours, theirs = case
    if ours.num_labels != 1:
        with pytest.raises(ValueError, match="one label"):
            ours.rank(QUERY, DOCUMENTS)
        return
    assert_same_ranking(ours.rank(QUERY, DOCUMENTS), theirs.rank(QUERY, DOCUMENTS))
    top = ours.rank(QUERY, DOCUMENTS, top_k=3, return_documents=True, max_tokens_per_batch=64)
    expected = theirs.rank(QUERY, DOCUMENTS, top_k=3, return_documents=True)
    assert_same_ranking(top, expected)
    assert [r["text"] for r in top] == [r["text"] for r in expected]
    assert ours.rank(QUERY, []) == []


def test_long_documents_are_truncated_longest_first(case):
    _, ours, _ = case
    rows = ours.tokenize(PAIRS)
    assert max(len(r) for r in rows) == ours.max_length
    long_query = [r for r, (a, _) in zip(rows, PAIRS) if len(a) > 200][0]
    assert long_query.count(ours.tokenizer.end_token_id) == 3  # <s> A </s></s> B </s>, both kept


@pytest.mark.parametrize("entry, activation", [
    ({"sentence_transformers": {"activation_fn": "torch.nn.modules.linear.Identity"}}, "identity"),
    ({"sbert_ce_default_activation_function": "torch.nn.modules.linear.Identity"}, "identity"),
    ({"sentence_transformers": {"activation_fn": "torch.nn.modules.activation.Tanh"}}, "tanh"),
    ({"sentence_transformers": {"activation_fn": "my_package.CustomActivation"}}, "sigmoid"),  # untrusted
])
def test_activation_stored_in_config_json(tmp_path, entry, activation, caplog):
    directory = classifier_dir(tmp_path, "roberta", 1, seed=3, config_extra=entry)
    with caplog.at_level(logging.WARNING):
        ours = roberta_torch.CrossEncoder.from_preset(str(directory))
    assert ours.activation_name == activation
    if activation == "sigmoid":
        assert "not a torch class" in caplog.text
    np.testing.assert_allclose(ours.predict(PAIRS), reference(directory).predict(PAIRS), atol=ATOL)


def test_prompts(tmp_path):
    directory = cross_encoder_dir(tmp_path, "roberta", 1, prompts={"query": "query: ", "web": "web search: "},
                                  default_prompt_name="query", seed=4)
    ours, theirs = roberta_torch.CrossEncoder.from_preset(str(directory)), reference(directory)
    assert ours.prompts == {"query": "query: ", "web": "web search: "}
    for kwargs in ({}, {"prompt_name": "web"}, {"prompt": "custom: "}):
        np.testing.assert_allclose(ours.predict(PAIRS, **kwargs), theirs.predict(PAIRS, **kwargs), atol=ATOL)
    assert_same_ranking(ours.rank(QUERY, DOCUMENTS, prompt_name="web"), theirs.rank(QUERY, DOCUMENTS, prompt_name="web"))
    with pytest.raises(ValueError, match="prompt_name"):
        ours.predict(PAIRS, prompt_name="nope")


def test_overrides_and_own_task_preset(tmp_path):
    """Our (keras_hub-format) text-classifier task presets load too: max length from preprocessor.json,
    Sigmoid on one label, scores equal to the classifier on the same packed pairs."""
    classifier = roberta_torch.RobertaTextClassifier.from_preset("roberta_tiny_random", num_classes=1)
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in classifier.parameters():
            parameter.normal_(0, 0.2)
    classifier.save_to_preset(tmp_path / "task")
    preprocessor_json = tmp_path / "task" / "preprocessor.json"
    config = json.loads(preprocessor_json.read_text())
    config["config"]["sequence_length"] = 24
    preprocessor_json.write_text(json.dumps(config))
    ours = roberta_torch.CrossEncoder.from_preset(str(tmp_path / "task"))
    assert ours.max_length == 24 and ours.activation_name == "sigmoid"
    packer = roberta_torch.Preprocessor.from_preset(str(TINY_PRESET), sequence_length=24, truncate="longest_first")
    with torch.no_grad():
        expected = torch.sigmoid(classifier.eval()(packer(PAIRS)))[:, 0].numpy()
    np.testing.assert_allclose(ours.predict(PAIRS), expected, atol=ATOL)
    tanh = roberta_torch.CrossEncoder.from_preset(str(tmp_path / "task"), activation_fn="tanh", max_length=300)
    assert tanh.activation_name == "tanh" and tanh.max_length == classifier.backbone.max_sequence_length  # capped
    full = roberta_torch.Preprocessor.from_preset(str(TINY_PRESET), sequence_length=128, truncate="longest_first")
    with torch.no_grad():
        logits = classifier(full(PAIRS))[:, 0]
    np.testing.assert_allclose(tanh.predict(PAIRS), torch.tanh(logits).numpy(), atol=ATOL)
    np.testing.assert_allclose(tanh.predict(PAIRS, activation_fn=torch.sigmoid), torch.sigmoid(logits).numpy(), atol=ATOL)


def test_refusals_are_typed(tmp_path, case):
    _, ours, _ = case
    with pytest.raises(ValueError, match="sequence-classification head"):
        roberta_torch.CrossEncoder.from_preset("roberta_tiny_random")
    with pytest.raises(TypeError, match=r"`pairs\[1\]`"):
        ours.predict([("a", "b"), "c"])
    with pytest.raises(TypeError, match=r"`pairs\[0\]\[1\]`"):
        ours.predict([("a", 3)])
    with pytest.raises(TypeError, match="`pairs`"):
        ours.predict(42)
    with pytest.raises(TypeError, match="pair"):
        ours.predict([("a", "b", "c")])
    with pytest.raises(ValueError, match="`activation_fn`"):
        ours.predict(PAIRS, activation_fn="relu6")
    with pytest.raises(ValueError, match="`convert_to`"):
        ours.predict(PAIRS, convert_to="list")
    with pytest.raises(TypeError, match="`batch_size`"):
        ours.predict(PAIRS, batch_size=2.5)
    assert ours.predict([]).shape[0] == 0
    if ours.num_labels == 1:
        with pytest.raises(ValueError, match="`top_k`"):
            ours.rank(QUERY, DOCUMENTS, top_k=0)
        with pytest.raises(TypeError, match="`documents`"):
            ours.rank(QUERY, "one document")
        with pytest.raises(TypeError, match=r"`documents\[1\]`"):
            ours.rank(QUERY, ["a", None])
        with pytest.raises(TypeError, match="`query`"):
            ours.rank(["q"], DOCUMENTS)


def test_bad_files_are_refused_by_name(tmp_path):
    source = classifier_dir(tmp_path, "roberta", 1, seed=5)
    bad = tmp_path / "bad"
    shutil.copytree(source, bad)
    (bad / "config_sentence_transformers.json").write_text(
        json.dumps({"activation_fn": "torch.nn.modules.activation.ReLU6"}))
    with pytest.raises(ValueError, match="ReLU6.*config_sentence_transformers.json"):
        roberta_torch.CrossEncoder.from_preset(str(bad))
    (bad / "config_sentence_transformers.json").unlink()
    (bad / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.base.modules.transformer.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Dense", "type": "sentence_transformers.base.modules.dense.Dense"},
    ]))
    with pytest.raises(ValueError, match="modules.json.*Dense"):
        roberta_torch.CrossEncoder.from_preset(str(bad))


HUB_SCRIPT = r"""
import json
import roberta_torch
from helpers.cross_encoder_dirs import PAIRS
out = {}
for repo in ("someone/reranker-st", "someone/reranker-hf"):
    model = roberta_torch.CrossEncoder.from_preset("hf://" + repo)
    out[repo] = [model.activation_name, model.max_length, model.predict(PAIRS).tolist()]
print(json.dumps(out))
"""


def test_hf_repositories_through_the_hub_cache(tmp_path):
    """`hf://` fetches what a reranker needs beyond the classifier (activation, max length)."""
    from helpers.hub_caches import put_in_hf_cache
    from helpers.subprocesses import run_python

    st_dir = cross_encoder_dir(tmp_path, "xlm-roberta", 1, activation_fn=torch.nn.Identity(), max_length=16, seed=6)
    hf_dir = classifier_dir(tmp_path, "xlm-roberta", 1, seed=7)  # bge-reranker-v2-m3's layout
    put_in_hf_cache(tmp_path / "home", "someone/reranker-st", st_dir)
    put_in_hf_cache(tmp_path / "home", "someone/reranker-hf", hf_dir)
    out = run_python(HUB_SCRIPT, {"HF_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"})
    results = json.loads(out.strip().splitlines()[-1])
    assert results["someone/reranker-st"][:2] == ["identity", 16]
    assert results["someone/reranker-hf"][:2] == ["sigmoid", 40]
    np.testing.assert_allclose(results["someone/reranker-st"][2], reference(st_dir).predict(PAIRS), atol=ATOL)
    np.testing.assert_allclose(results["someone/reranker-hf"][2], reference(hf_dir).predict(PAIRS), atol=ATOL)


@pytest.mark.parametrize("model_type, num_labels, activation, prompts", [
    ("roberta", 1, None, None),  # the default: Sigmoid
    ("xlm-roberta", 1, "identity", {"query": "query: "}),
    ("roberta", 3, "softmax", None),
])
def test_save_to_preset_loads_in_sentence_transformers(tmp_path, model_type, num_labels, activation, prompts):
    """save_to_preset writes what sentence-transformers' CrossEncoder loads: the same activation,
    max length, prompts and scores, and ours loads it back equal."""
    source = classifier_dir(tmp_path, model_type, num_labels, seed=8)
    ours = roberta_torch.CrossEncoder.from_preset(str(source), activation_fn=activation, max_length=20,
                                                  prompts=prompts)
    if prompts:
        ours.config.default_prompt_name = "query"
    saved = ours.save_to_preset(tmp_path / "saved")
    theirs = reference(saved)
    assert theirs.max_seq_length == 20 and theirs.num_labels == num_labels
    assert type(theirs.activation_fn).__name__.lower() == ours.activation_name
    expected = ours.predict(PAIRS)
    np.testing.assert_allclose(theirs.predict(PAIRS), expected, atol=ATOL)
    config = open_preset(saved).loader.cross_encoder_config()  # what from_preset reads
    assert (config.activation, config.max_length, config.prompts) == (ours.activation_name, 20, prompts or {})
    back = roberta_torch.CrossEncoder.from_preset(saved)
    assert (back.activation_name, back.max_length, back.prompts) == (ours.activation_name, 20, prompts or {})
    np.testing.assert_allclose(back.predict(PAIRS), expected, atol=ATOL)
    if prompts:
        assert theirs.default_prompt_name == "query"
        np.testing.assert_allclose(theirs.predict(PAIRS, prompt_name="query"), back.predict(PAIRS), atol=ATOL)
    if num_labels == 1:
        assert_same_ranking(back.rank(QUERY, DOCUMENTS), theirs.rank(QUERY, DOCUMENTS))
    with pytest.raises(ValueError, match="overwrite"):
        ours.save_to_preset(saved)


def test_save_to_preset_refusals(tmp_path):
    source = classifier_dir(tmp_path, "roberta", 1, seed=9)
    model = roberta_torch.CrossEncoder.from_preset(str(source), activation_fn=lambda x: x * 2)
    with pytest.raises(ValueError, match="callable"):
        model.save_to_preset(tmp_path / "out")
    model = roberta_torch.CrossEncoder.from_preset(str(source))
    with pytest.raises(ValueError, match="`format`"):
        model.save_to_preset(tmp_path / "out", format="keras")
    assert not (tmp_path / "out").exists()
