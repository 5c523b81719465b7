"""CUDA halves of tests/model/test_dtype_casts.py and test_autocast.py (skipped without a GPU):
after a cast or under autocast the attention inputs are float16/bfloat16, so Triton runs."""

import pytest
import torch

from helpers.random_weights import randomize_
from roberta_torch import RobertaBackbone, attention

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

CONFIG = dict(vocabulary_size=101, num_layers=2, num_heads=2, hidden_dim=128, intermediate_dim=256,
              max_sequence_length=64, padding_free=False)


def inputs():
    g = torch.Generator().manual_seed(0)
    token_ids = torch.randint(0, 101, (3, 40), generator=g)
    mask = torch.arange(40)[None, :] < torch.tensor([40, 17, 31])[:, None]
    return {"token_ids": token_ids.cuda(), "padding_mask": mask.cuda()}


def relative_error(out, expected, mask):
    return float((out.float() - expected.float())[mask].abs().max() / expected.float()[mask].abs().max())


@pytest.mark.parametrize("dtype,name", [(torch.float16, "float16"), (torch.bfloat16, "bfloat16")])
def test_cast_on_cuda_runs_triton_and_equals_model_built_with_that_dtype(dtype, name):
    model = randomize_(RobertaBackbone(**CONFIG), seed=0, scale=0.1).eval()
    batch = inputs()
    with torch.no_grad():
        expected32 = model.cuda()(batch)
        model.to("cuda", dtype)
        assert model.get_config()["dtype"] == name
        reference = RobertaBackbone(**CONFIG, dtype=name).eval().cuda()
        reference.load_state_dict(model.state_dict())
        with attention.record_dispatch() as calls:
            out = model(batch)
        torch.testing.assert_close(out, reference(batch), rtol=0, atol=0)
    assert out.dtype == dtype
    assert calls and all(backend == "triton" for backend, _ in calls)
    assert relative_error(out, expected32, batch["padding_mask"]) < 5e-2


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_autocast_runs_triton(dtype):
    model = randomize_(RobertaBackbone(**CONFIG), seed=0, scale=0.1).eval().cuda()
    batch = inputs()
    with torch.no_grad():
        expected = model(batch)
        with torch.autocast("cuda", dtype=dtype), attention.record_dispatch() as calls:
            out = model(batch)
    assert calls and all(backend == "triton" for backend, _ in calls)
    assert relative_error(out, expected, batch["padding_mask"]) < 5e-2
