"""The backbone's input checks, fuzzed: whatever dtype, shape or values come in, the result
is a typed error (ValueError / TypeError) raised before any kernel runs, or finite outputs."""

import numpy as np
import pytest
import torch

from helpers.random_weights import randomize_
from roberta_torch import RobertaBackbone

VOCAB, MAX_LEN = 37, 12
DTYPES = [torch.int64, torch.int32, torch.int16, torch.uint8, torch.bool, torch.float32, torch.float16, torch.complex64]


@pytest.fixture(scope="module")
def model():
    return randomize_(RobertaBackbone(VOCAB, 1, 2, 8, 8, max_sequence_length=MAX_LEN)).eval()


def random_input(rng: np.random.Generator):
    rank = int(rng.choice([0, 1, 2, 2, 2, 3]))
    shape = tuple(int(rng.integers(0, MAX_LEN + 3)) for _ in range(rank))
    dtype = DTYPES[int(rng.integers(len(DTYPES)))]
    values = torch.from_numpy(rng.integers(-3, VOCAB + 3, size=shape)).to(dtype) if rank else torch.tensor(1, dtype=dtype)
    return values


@pytest.mark.parametrize("seed", range(6))
def test_random_inputs_give_typed_errors_or_finite_outputs(model, seed):
    rng = np.random.default_rng(seed)
    outcomes = set()
    for _ in range(40):
        ids = random_input(rng)
        kind = int(rng.integers(4))
        inputs = {"token_ids": ids}
        if kind >= 1:
            mask = random_input(rng) if kind == 3 else (torch.rand(ids.shape) < 0.7)
            inputs["padding_mask"] = mask
        if kind == 2:
            inputs["token_ids"] = ids.numpy() if ids.dtype != torch.bool else ids.tolist()
        try:
            with torch.no_grad():
                out = model(inputs)
        except (ValueError, TypeError) as error:
            assert str(error), "an error must say what is wrong"
            outcomes.add(type(error).__name__)
            continue
        assert torch.isfinite(out).all()
        outcomes.add("ok")
    assert outcomes & {"ValueError", "TypeError"}


@pytest.mark.parametrize(
    "inputs, error, words",
    [
        ({"token_ids": [[1, 2, 3], [4]]}, ValueError, "ragged"),
        ({"token_ids": [["a", "b"]]}, TypeError, "numbers"),
        ({"token_ids": torch.ones(1, 3, dtype=torch.long, device="meta")}, ValueError, "meta device"),
        ({"token_ids": torch.ones(1, 3, dtype=torch.long), "padding_mask": torch.ones(1, 3, device="meta")}, ValueError, "meta device"),
    ],
)
def test_malformed_inputs_name_the_argument(model, inputs, error, words):
    with pytest.raises(error, match=words):
        model(inputs)


def test_dict_and_keyword_inputs_together_are_refused(model):
    ids = torch.ones(2, 4, dtype=torch.long)
    mask = torch.ones(2, 4, dtype=torch.bool)
    with pytest.raises(TypeError, match="not both"):
        model({"token_ids": ids}, padding_mask=mask)
    with pytest.raises(TypeError, match="not both"):
        model({"token_ids": ids, "padding_mask": mask}, token_ids=ids)
    with torch.no_grad():
        assert torch.equal(model(token_ids=ids, padding_mask=mask), model({"token_ids": ids, "padding_mask": mask}))
