"""The examples run end to end, as users run them: subprocesses, offline, on the shipped tiny
preset, for a few steps. Children are pinned to the CPU (CUDA_VISIBLE_DEVICES="")."""

import os
import pathlib
import re
import socket
import subprocess
import sys

import pytest
import torch

from helpers.paths import EXAMPLES
from helpers.paths import REPO_ROOT as ROOT
CLASSES = ["food", "sports", "weather"]  # the labels of examples/data/topics.csv, sorted
needs_distributed = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without distributed")


def run(arguments: list, timeout: float = 120, **extra_env) -> str:
    """Run `python <arguments>` from the repository root; return stdout (fail with both streams)."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", **extra_env}
    # The examples import the package from this checkout (after anything already on the path).
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(ROOT)]))
    result = subprocess.run(
        [sys.executable, *map(str, arguments)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"exit code {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result.stdout


def torchrun(arguments: list, processes: int = 2, timeout: float = 180) -> str:
    with socket.socket() as sock:  # a free port for the rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    launcher = ["-m", "torch.distributed.run", f"--nproc_per_node={processes}", f"--master_port={port}"]
    # One thread per process: two processes share CI's two cores.
    return run([*launcher, *arguments], timeout=timeout, OMP_NUM_THREADS="1")


def accuracy_line(stdout: str) -> tuple[float, float]:
    match = re.search(r"eval accuracy: ([0-9.]+) \((\d+)/42\); majority class: ([0-9.]+)", stdout)
    assert match, stdout
    return float(match.group(1)), float(match.group(3))


@pytest.mark.parametrize(
    "script", ["quickstart.py", "fine_tune_classifier.py", "embed.py", "masked_lm_pretraining.py", "question_answering.py"]
)
def test_help(script):
    assert "usage:" in run([EXAMPLES / script, "--help"])


def test_quickstart_runs_with_no_arguments():
    stdout = run([EXAMPLES / "quickstart.py"])
    assert "output: shape (1, 12, 256), dtype torch.float32" in stdout  # keras_hub's docstring example
    assert "'num_layers': 4" in stdout and "parameters: 15,009,536" in stdout
    assert "Preset 'roberta_tiny_random': RobertaBackbone with 2 layers, hidden 32" in stdout
    assert "detokenized: 'The quick brown fox jumps over the lazy dog.'" in stdout
    assert re.search(r"sequence output: shape \(3, \d+, 32\); mean-pooled embeddings: shape \(3, 32\)", stdout)
    rows = re.findall(r"\[\s*([-0-9. ]+)\]", stdout.split("cosine similarity:")[1])
    similarity = torch.tensor([[float(v) for v in row.split()] for row in rows])
    assert similarity.shape == (3, 3)
    torch.testing.assert_close(similarity.diagonal(), torch.ones(3), atol=1e-3, rtol=0)
    torch.testing.assert_close(similarity, similarity.T)


def test_fine_tune_learns_and_saves_a_loadable_task_preset(tmp_path):
    import keras_hub
    import numpy as np

    import roberta_torch

    save = tmp_path / "fine_tuned"
    # ~5 s alone; the timeout leaves room for a shared, loaded CI machine.
    stdout = run([EXAMPLES / "fine_tune_classifier.py", "--bf16", "off", "--save", save], timeout=300)
    assert "1 x cpu" in stdout and "trained 200 steps" in stdout  # 20 epochs x 10 batches
    accuracy, majority = accuracy_line(stdout)
    # The random tiny model learns the three topics from scratch (0.79 with seed 0).
    assert accuracy >= 0.6 and accuracy > majority + 0.15, stdout

    assert sorted(p.name for p in save.iterdir() if p.suffix == ".pt") == []  # no pickles
    classifier = roberta_torch.Task.from_preset(str(save))
    assert isinstance(classifier, roberta_torch.RobertaTextClassifier) and classifier.num_classes == len(CLASSES)
    tuned = classifier.backbone
    original = roberta_torch.Backbone.from_preset("roberta_tiny_random")
    assert tuned.get_config() == original.get_config()
    changed = [k for k, v in tuned.state_dict().items() if not torch.equal(v, original.state_dict()[k])]
    assert "token_embedding.weight" in changed and "layers.1.attention.query.weight" in changed
    batch = roberta_torch.Preprocessor.from_preset(str(save))(["Heavy rain is expected tomorrow."])
    assert tuned(batch).shape == (1, batch["token_ids"].shape[1], 32)
    # The reloaded classifier's predictions (printed by the script) are this file's; keras_hub
    # loads the same preset, preprocessor included, and agrees on raw text.
    predictions = re.findall(r"'([^']+)' -> (\w+)", stdout.split("reloaded, it predicts")[1])
    texts = [text for text, _ in predictions]
    with torch.no_grad():
        logits = classifier(roberta_torch.Preprocessor.from_preset(str(save))(texts))
    assert [CLASSES[i] for i in logits.argmax(-1).tolist()] == [label for _, label in predictions]
    reference = keras_hub.models.TextClassifier.from_preset(str(save))
    np.testing.assert_allclose(np.asarray(reference.predict(texts, verbose=0)), logits.numpy(), rtol=1e-4, atol=1e-5)


def test_fine_tune_gradient_checkpointing_bf16():
    stdout = run([EXAMPLES / "fine_tune_classifier.py", "--steps", "3", "--gradient-checkpointing", "--bf16", "on"])
    assert "bf16 True" in stdout and "gradient checkpointing True" in stdout
    assert "trained 3 steps" in stdout
    accuracy_line(stdout)  # evaluation also runs under bfloat16 autocast


def test_fine_tune_compile():
    # torch.compile (Inductor, C++ on CPU) costs ~20 s here: the slowest test in this file.
    stdout = run([EXAMPLES / "fine_tune_classifier.py", "--steps", "2", "--compile"], timeout=300)
    assert "compile True" in stdout and "trained 2 steps" in stdout
    accuracy_line(stdout)


@needs_distributed
def test_torchrun_two_cpu_processes_stay_in_sync():
    stdout = torchrun([EXAMPLES / "fine_tune_classifier.py", "--steps", "3", "--check-replicas-in-sync"])
    assert "2 x cpu" in stdout and "trained 3 steps" in stdout
    assert "replicas in sync across 2 process(es): max |parameter checksum difference| = 0.000e+00" in stdout
    accuracy_line(stdout)
    assert stdout.count("eval accuracy") == 1  # only rank 0 evaluates


@needs_distributed
def test_replica_check_detects_divergence(tmp_path):
    """The check itself can fail: replicas that differ in one weight by 1e-6 are caught."""
    script = tmp_path / "diverge.py"
    script.write_text(
        "import importlib.util, torch, torch.distributed as dist\n"
        f"spec = importlib.util.spec_from_file_location('ft', {str(EXAMPLES / 'fine_tune_classifier.py')!r})\n"
        "ft = importlib.util.module_from_spec(spec); spec.loader.exec_module(ft)\n"
        "rank, world_size, _ = ft.setup_distributed()\n"
        "torch.manual_seed(0); model = torch.nn.Linear(8, 4)\n"
        "with torch.no_grad(): model.weight[2, 3] += 1e-6 * rank\n"
        "print(f'rank {rank} difference {ft.max_replica_difference(model, world_size):.3e}')\n"
        "dist.destroy_process_group()\n"
    )
    stdout = torchrun([script])
    differences = [float(d) for d in re.findall(r"difference ([0-9.e+-]+)", stdout)]
    assert len(differences) == 2 and all(d > 0 for d in differences), stdout


def test_embed_mean_pooling_does_not_depend_on_batching(tmp_path):
    outputs = {}
    for batch_size in (32, 4):
        path = tmp_path / f"embeddings_{batch_size}.pt"
        stdout = run([EXAMPLES / "embed.py", "--batch-size", batch_size, "--top-k", "3", "--save", path])
        assert "embedded 30 lines from sentences.txt" in stdout and "-> embeddings (30, 32)" in stdout
        scores = [float(s) for s in re.findall(r"^\s+\d\. cosine ([-+0-9.]+) ", stdout, re.MULTILINE)]
        assert len(scores) == 3 and scores == sorted(scores, reverse=True) and all(-1 <= s <= 1 for s in scores)
        outputs[batch_size] = torch.load(path)
    embeddings = outputs[32]["embeddings"]
    assert embeddings.shape == (30, 32) and len(outputs[32]["lines"]) == 30
    torch.testing.assert_close(embeddings.norm(dim=1), torch.ones(30))
    # Rows padded to a batch's longest line give the same embedding as in a batch of other lengths.
    torch.testing.assert_close(outputs[4]["embeddings"], embeddings, atol=1e-5, rtol=1e-5)


def test_embed_first_token_pooling():
    stdout = run([EXAMPLES / "embed.py", "--pooling", "first", "--query", "Snow covered the village.", "--top-k", "5"])
    assert "(first pooling, batches of 32)" in stdout and "query: 'Snow covered the village.'" in stdout
    assert len(re.findall(r"^\s+\d\. cosine [-+0-9.]+ ", stdout, re.MULTILINE)) == 5


def test_masked_lm_pretraining_learns_and_saves_a_keras_task_preset(tmp_path):
    import keras_hub

    import roberta_torch

    save = tmp_path / "mlm"
    stdout = run([EXAMPLES / "masked_lm_pretraining.py", "--steps", "20", "--lr", "3e-3", "--save", save])
    first, last = map(float, re.search(r"masked-token loss ([0-9.]+) -> ([0-9.]+)", stdout).groups())
    assert last < first, stdout
    model = roberta_torch.Task.from_preset(str(save))
    assert isinstance(model, roberta_torch.RobertaMaskedLM)
    assert type(keras_hub.models.MaskedLM.from_preset(str(save))).__name__ == "RobertaMaskedLM"


def test_question_answering_and_token_tags_on_the_tiny_preset():
    stdout = run([EXAMPLES / "question_answering.py"])
    context = "The cat sat on the mat while the dog slept in the garden."
    answer = re.search(r"answer: '(.*)' \(characters (\d+)-(\d+), score", stdout)
    assert answer, stdout
    text, start, end = answer.group(1), int(answer.group(2)), int(answer.group(3))
    assert text and context[start:end] == text
    tags = re.search(r"token tags \((\d+) tokens\): (.*)", stdout)
    assert tags and all(tag.rsplit("/", 1)[1] in ("O", "B-ANIMAL", "I-ANIMAL") for tag in tags.group(2).split())
