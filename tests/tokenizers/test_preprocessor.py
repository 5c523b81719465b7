"""Preprocessor parity with keras_hub's *TextClassifierPreprocessor (committed fixtures) + API.

Fixtures: tests/fixtures/tokenizers/expected_preprocessors.json, written by
tools/make_tokenizer_fixtures.py from the real keras_hub preprocessors.
"""

import itertools
import json
import os
import pathlib
import shutil

import pytest
import torch

from roberta_torch.preprocessor import (
    Preprocessor,
    RobertaPreprocessor,
    XLMRobertaPreprocessor,
    truncate_longest_first,
    truncate_round_robin,
    truncate_waterfall,
)
from roberta_torch.tokenizers import RobertaTokenizer, XLMRobertaTokenizer

# keras reads its backend once, at first import (keras_hub is imported lazily below).
os.environ.setdefault("KERAS_BACKEND", "torch")

from helpers.paths import REPO_ROOT, TINY_PRESET
from helpers.paths import TOKENIZER_FIXTURES as FIXTURES
EXPECTED = json.loads((FIXTURES / "expected_preprocessors.json").read_text(encoding="utf-8"))
PRESET_DIRS = {"roberta_tiny_random": TINY_PRESET, "xlm_roberta": FIXTURES / "xlm_roberta"}
CASES = [(name, case) for name, cases in EXPECTED.items() for case in cases]


@pytest.fixture(scope="module")
def tokenizers():
    return {
        "roberta_tiny_random": RobertaTokenizer.from_preset(str(TINY_PRESET)),
        "xlm_roberta": XLMRobertaTokenizer.from_preset(str(FIXTURES / "xlm_roberta")),
    }


def case_input(case):
    return tuple(case["x"]) if case["x_is_tuple"] else case["x"]


def as_batch(values):
    """keras_hub returns 1-D rows for a single str; ours are always (B, T)."""
    return values if isinstance(values[0], list) else [values]


@pytest.mark.parametrize("name,case", CASES, ids=[f"{n}-{c['name']}" for n, c in CASES])
def test_matches_keras_hub_padded_to_sequence_length(tokenizers, name, case):
    preprocessor = Preprocessor(
        tokenizers[name], sequence_length=case["sequence_length"], truncate=case["truncate"], pad_to_sequence_length=True
    )
    out = preprocessor(case_input(case))
    assert out["token_ids"].dtype == torch.long and out["padding_mask"].dtype == torch.bool
    assert out["token_ids"].tolist() == as_batch(case["token_ids"])
    assert out["padding_mask"].tolist() == as_batch(case["padding_mask"])


@pytest.mark.parametrize("name,case", CASES, ids=[f"{n}-{c['name']}" for n, c in CASES])
def test_default_pads_to_longest_row_with_keras_ids(tokenizers, name, case):
    preprocessor = Preprocessor(tokenizers[name], sequence_length=case["sequence_length"], truncate=case["truncate"])
    out = preprocessor(case_input(case))
    expected_ids = as_batch(case["token_ids"])
    expected_mask = as_batch(case["padding_mask"])
    width = max(sum(row) for row in expected_mask)
    assert out["token_ids"].shape == (len(expected_ids), width)
    assert out["token_ids"].tolist() == [row[:width] for row in expected_ids]
    assert out["padding_mask"].tolist() == [row[:width] for row in expected_mask]


def test_fixture_cases_exercise_truncation_and_padding():
    by_name = {case["name"]: case for case in EXPECTED["roberta_tiny_random"]}
    truncated = by_name["pairs_round_robin"]
    assert all(all(row) for row in truncated["padding_mask"])  # every row hits sequence_length
    assert by_name["pairs_round_robin"]["token_ids"] != by_name["pairs_waterfall"]["token_ids"]
    assert any(not all(row) for row in by_name["single_long"]["padding_mask"])
    assert by_name["pairs_budget_zero"]["token_ids"][0] == [0, 2, 2, 2]


def test_packing_layout_and_call_forms(tokenizers):
    tokenizer = tokenizers["roberta_tiny_random"]
    preprocessor = Preprocessor(tokenizer, sequence_length=64)
    a, b = tokenizer("first text"), tokenizer("second")
    single = preprocessor("first text")
    assert single["token_ids"].tolist() == [[0, *a, 2]]
    assert single["padding_mask"].all()
    pair = preprocessor(("first text", "second"))
    assert pair["token_ids"].tolist() == [[0, *a, 2, 2, *b, 2]]
    assert preprocessor("first text", "second")["token_ids"].tolist() == pair["token_ids"].tolist()
    batch_of_pairs = preprocessor([("first text", "second"), ("second", "first text")])
    as_columns = preprocessor((["first text", "second"], ["second", "first text"]))
    assert batch_of_pairs["token_ids"].equal(as_columns["token_ids"])
    assert batch_of_pairs["token_ids"][1].tolist() == [0, *b, 2, 2, *a, 2]
    ragged = preprocessor(["first text", "a"])
    assert ragged["token_ids"][1].tolist()[-1] == tokenizer.pad_token_id
    assert ragged["padding_mask"].sum(1).tolist() == [len(a) + 2, len(tokenizer("a")) + 2]


def test_xlm_roberta_packing_uses_fairseq_ids(tokenizers):
    tokenizer = tokenizers["xlm_roberta"]
    out = Preprocessor(tokenizer, sequence_length=32, pad_to_sequence_length=True)(("the sea", "a river"))
    row = out["token_ids"][0].tolist()
    a, b = tokenizer("the sea"), tokenizer("a river")
    assert row[: len(a) + len(b) + 4] == [0, *a, 2, 2, *b, 2]
    assert set(row[len(a) + len(b) + 4 :]) == {1}


@pytest.mark.parametrize("lengths", [(0, 0), (5, 0), (3, 9), (9, 3), (4, 4), (1, 7, 2), (6, 6, 6)])
@pytest.mark.parametrize("budget", [0, 1, 2, 5, 8, 30])
def test_truncation_strategies(lengths, budget):
    kept = truncate_round_robin(list(lengths), budget)
    # Reference: keep the `budget` first tokens in round-robin priority order
    # (token i of segment s has priority i * num_segments + s), as tensorflow_text does.
    order = sorted((i * len(lengths) + s, s) for s, n in enumerate(lengths) for i in range(n))
    reference = [0] * len(lengths)
    for _, s in order[:budget]:
        reference[s] += 1
    assert kept == reference
    waterfall = truncate_waterfall(list(lengths), budget)
    remaining = budget
    for n, k in zip(lengths, waterfall):
        assert k == min(n, remaining)
        remaining -= k
    assert sum(kept) == sum(waterfall) == min(budget, sum(lengths))


def test_truncation_round_robin_is_fair():
    for lengths in itertools.product(range(5), repeat=2):
        for budget in range(10):
            kept = truncate_round_robin(list(lengths), budget)
            a, b = kept
            if a < lengths[0]:
                assert b <= a
            if b < lengths[1]:
                assert a <= b + 1


def test_errors_name_the_argument(tokenizers):
    tokenizer = tokenizers["roberta_tiny_random"]
    with pytest.raises(TypeError, match="`tokenizer`"):
        Preprocessor("not a tokenizer")
    with pytest.raises(ValueError, match="`sequence_length`"):
        Preprocessor(tokenizer, sequence_length=1)
    with pytest.raises(ValueError, match="`sequence_length`"):
        Preprocessor(tokenizer, sequence_length=8.0)
    with pytest.raises(ValueError, match="`truncate`"):
        Preprocessor(tokenizer, truncate="longest")
    with pytest.raises(TypeError, match="`pad_to_sequence_length`"):
        Preprocessor(tokenizer, pad_to_sequence_length="yes")
    preprocessor = Preprocessor(tokenizer, sequence_length=8)
    with pytest.raises(TypeError, match="`x`"):
        preprocessor(42)
    with pytest.raises(TypeError, match="`text_pair`"):
        preprocessor("a", 7)
    with pytest.raises(TypeError, match=r"`x\[1\]`"):
        preprocessor(("a", None))
    with pytest.raises(ValueError, match="same length"):
        preprocessor((["a", "b"], ["c"]))
    with pytest.raises(ValueError, match="same length"):
        preprocessor(("a", ["c"]))
    with pytest.raises(ValueError, match="empty"):
        preprocessor([])
    with pytest.raises(ValueError, match="empty"):
        preprocessor(())
    with pytest.raises(TypeError, match="not both"):
        preprocessor(("a", "b"), "c")
    with pytest.raises(ValueError, match="`sequence_length`=4"):
        Preprocessor(tokenizer, sequence_length=4)(("a", "b", "c"))


def test_from_preset(tmp_path):
    shipped = Preprocessor.from_preset("roberta_tiny_random")
    assert isinstance(shipped.tokenizer, RobertaTokenizer)
    assert shipped.sequence_length == 128  # the backbone's max_sequence_length, not 512
    copy = tmp_path / "copy"
    shutil.copytree(TINY_PRESET, copy)
    roberta = RobertaPreprocessor.from_preset(str(copy), sequence_length=16, truncate="waterfall")
    assert (roberta.sequence_length, roberta.truncate) == (16, "waterfall")
    assert roberta("hello there")["token_ids"].equal(shipped("hello there")["token_ids"])
    (copy / "preprocessor.json").write_text(json.dumps({"config": {"sequence_length": 24}}))
    assert Preprocessor.from_preset(str(copy)).sequence_length == 24

    xlm = XLMRobertaPreprocessor.from_preset(str(FIXTURES / "xlm_roberta"))
    assert isinstance(xlm.tokenizer, XLMRobertaTokenizer) and xlm.sequence_length == 512
    assert Preprocessor.from_preset(str(FIXTURES / "xlm_roberta_hf")).sequence_length == 64
    with pytest.raises(ValueError, match="XLMRobertaTokenizer"):
        RobertaPreprocessor.from_preset(str(FIXTURES / "xlm_roberta"))
    with pytest.raises(ValueError, match="RobertaTokenizer"):
        XLMRobertaPreprocessor.from_preset(str(TINY_PRESET))


def test_text_to_backbone_matches_keras_hub_end_to_end():
    """Text -> our preprocessor + backbone equals keras_hub's on the shipped preset."""
    keras_hub = pytest.importorskip("keras_hub")
    import keras
    import numpy as np

    from roberta_torch import RobertaBackbone

    texts = ["The quick brown fox jumps over the lazy dog.", "Hi.", "emoji 😀 and café, it's 2024"]
    keras_preprocessor = keras_hub.models.RobertaTextClassifierPreprocessor(
        keras_hub.models.RobertaTokenizer.from_preset(str(TINY_PRESET)), sequence_length=32
    )
    keras_backbone = keras_hub.models.Backbone.from_preset(str(TINY_PRESET))
    keras_inputs = keras_preprocessor(texts)
    expected = keras.ops.convert_to_numpy(keras_backbone(keras_inputs))

    inputs = Preprocessor.from_preset(str(TINY_PRESET), sequence_length=32, pad_to_sequence_length=True)(texts)
    assert inputs["token_ids"].tolist() == keras.ops.convert_to_numpy(keras_inputs["token_ids"]).tolist()
    backbone = RobertaBackbone.from_preset(str(TINY_PRESET)).eval()
    with torch.no_grad():
        got = backbone(inputs).numpy()
    mask = inputs["padding_mask"].numpy()
    np.testing.assert_allclose(got[mask], expected[mask], atol=1e-5, rtol=1e-5)


# -- transformers' "longest_first" (what cross-encoders were trained and are served with) -----

PAIR_TEXTS = [
    ("", ""),
    ("a question?", ""),
    ("", "only a document"),
    ("short", "a much longer document that will need to be cut down to size " * 2),
    ("a much longer query that will need to be cut down to size " * 2, "short"),
    ("six words are in this one", "five words in this one"),
    ("Ünïcödé, émojis 🙂 and 漢字", "The quick brown fox jumps over the lazy dog."),
    ("equal length text", "equal length text"),
]


@pytest.mark.parametrize("fixture", ["roberta_whitespace_hf", "xlm_roberta_hf"])
def test_longest_first_pairs_match_transformers(fixture):
    """Packed pair ids equal transformers' `tokenizer(a, b, truncation="longest_first")` at every
    length, empty segments, ties and both orders included."""
    transformers = pytest.importorskip("transformers")
    from roberta_torch import Tokenizer

    reference = transformers.AutoTokenizer.from_pretrained(str(FIXTURES / fixture))
    tokenizer = Tokenizer.from_preset(str(FIXTURES / fixture))
    firsts, seconds = [a for a, _ in PAIR_TEXTS], [b for _, b in PAIR_TEXTS]
    for sequence_length in range(4, 40):
        preprocessor = Preprocessor(tokenizer, sequence_length=sequence_length, truncate="longest_first")
        expected = reference(firsts, seconds, truncation="longest_first", max_length=sequence_length)["input_ids"]
        assert preprocessor.encode_rows(PAIR_TEXTS) == expected, sequence_length
        single = reference(firsts, truncation="longest_first", max_length=sequence_length)["input_ids"]
        assert preprocessor.encode_rows(firsts) == single, sequence_length
    padded = Preprocessor(tokenizer, sequence_length=12, truncate="longest_first")(PAIR_TEXTS)
    expected = reference(firsts, seconds, truncation="longest_first", max_length=12, padding=True, return_tensors="pt")
    assert padded["token_ids"].equal(expected["input_ids"])
    assert padded["padding_mask"].equal(expected["attention_mask"].bool())


def test_longest_first_closed_form():
    # The shorter segment keeps min(its length, budget // 2); a tie counts the first as shorter.
    assert truncate_longest_first([6, 5], 7) == [4, 3]  # not [3, 4], as one-at-a-time cutting gives
    assert truncate_longest_first([5, 5], 7) == [3, 4]
    assert truncate_longest_first([2, 30], 7) == [2, 5]
    assert truncate_longest_first([30, 2], 7) == [5, 2]
    assert truncate_longest_first([3, 4], 7) == [3, 4]
    assert truncate_longest_first([9], 4) == [4]
    for first, second, budget in itertools.product(range(8), range(8), range(12)):
        kept = truncate_longest_first([first, second], budget)
        assert sum(kept) == min(budget, first + second)
        assert kept[0] <= first and kept[1] <= second
    with pytest.raises(ValueError, match="one or two segments"):
        truncate_longest_first([1, 2, 3], 4)


def test_longest_first_is_not_saved_for_keras_hub(tmp_path, tokenizers):
    preprocessor = Preprocessor(tokenizers["roberta_tiny_random"], sequence_length=16, truncate="longest_first")
    with pytest.raises(ValueError, match="longest_first"):
        preprocessor.save_to_preset(tmp_path / "out")
    with pytest.raises(ValueError, match="one or two segments"):
        preprocessor(("a", "b", "c"))
