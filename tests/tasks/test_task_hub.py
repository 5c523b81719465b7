"""Task checkpoints through the real huggingface_hub client's cache (offline): `hf://` works
for transformers task repositories (sharded included)."""

import json

from helpers.hub_caches import put_in_hf_cache
from helpers.subprocesses import run_python
from helpers.task_fixtures import case_dir

SCRIPT = r"""
import json, sys
import numpy as np, torch
from roberta_torch import Task
from helpers.task_fixtures import case_data, model_inputs, relative_error
results = {}
for repo, case in [("someone/qa", "xlm_roberta_questionanswering"), ("someone/mlm-sharded", "roberta_maskedlm")]:
    model = Task.from_preset("hf://" + repo)
    data = case_data("transformers", case)
    with torch.no_grad():
        out = model(model_inputs(data, with_mask_positions=False))
    valid = data["padding_mask"]
    if isinstance(out, tuple):
        error = max(relative_error(o, data[k], valid) for o, k in zip(out, ("start_logits", "end_logits")))
    else:
        error = relative_error(out, data["logits"], valid)
    results[repo] = [type(model).__name__, error]
print(json.dumps(results))
"""


def test_transformers_task_repositories_through_the_hf_cache(tmp_path):
    put_in_hf_cache(tmp_path / "home", "someone/qa", case_dir("transformers", "xlm_roberta_questionanswering"))
    put_in_hf_cache(tmp_path / "home", "someone/mlm-sharded", case_dir("transformers", "roberta_maskedlm"))
    out = run_python(SCRIPT, {"HF_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"})
    results = json.loads(out.strip().splitlines()[-1])
    assert results["someone/qa"][0] == "XLMRobertaQuestionAnswerer" and results["someone/qa"][1] < 1e-5
    assert results["someone/mlm-sharded"][0] == "RobertaMaskedLM" and results["someone/mlm-sharded"][1] < 1e-5
