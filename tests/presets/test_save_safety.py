"""Saving whole preset directories safely (issue 22): concurrent saves never replace each
other (D1), a crash during an overwrite never leaves nothing (D2), what dead saves left is
cleaned up and the current directory is refused (B5), long names (B6), and saved files get
the modes a plain open()/mkdir() gives under the user's umask (N1)."""

import os
import pathlib
import stat
import subprocess
import sys

import pytest
import torch

import roberta_torch
from helpers.paths import REPO_ROOT, TESTS_DIR
from roberta_torch.presets import files

SMALL = dict(vocabulary_size=30, num_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=8)


def small_model(seed=0):
    torch.manual_seed(seed)
    model = roberta_torch.RobertaBackbone(**SMALL)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_()
    return model


def weights(directory):
    return roberta_torch.Backbone.from_preset(str(directory)).state_dict()


def same_weights(first, second):
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def start_python(script, *args):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), str(TESTS_DIR), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-c", script, *map(str, args)], env=env, cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# A save in another process; HOOK runs once the staging directory is written, before it
# is moved into place ("wait" for the other process there, or "die" there).
SAVE_SCRIPT = """
import os, pathlib, sys, time
import torch
import roberta_torch
from roberta_torch.presets import saving
try:
    from roberta_torch.presets import renames
except ImportError:  # before renames.py: plain os.rename only
    renames = None
out, seed, hook, arg = sys.argv[1:5]
write = saving.WRITERS["safetensors"]

def write_then_hook(model, directory, **options):
    write(model, directory, **options)
    if hook == "wait":  # a barrier: both processes have written their staging directory
        pathlib.Path(arg, str(os.getpid())).touch()
        while len(os.listdir(arg)) < 2:
            time.sleep(0.01)
    if hook == "die-in-write":
        os._exit(3)

saving.WRITERS["safetensors"] = write_then_hook
if hook == "die-between-renames":  # the portable fallback: old moved aside, then killed
    def unsupported(*args):
        raise renames.Unsupported(38, "not here")
    if renames is not None:
        renames._call = unsupported
    rename = os.rename
    def rename_then_die(source, target):
        if str(source).endswith(".partial"):
            os._exit(3)
        rename(source, target)
    os.rename = rename_then_die
if hook == "die-after-first-rename":  # killed right after the first rename step of the swap
    def then_die(function):
        def wrapped(*args):
            function(*args)
            os._exit(3)
        return wrapped
    os.rename = then_die(os.rename)
    if renames is not None:
        renames.exchange = then_die(renames.exchange)
        renames.rename_noreplace = then_die(renames.rename_noreplace)
torch.manual_seed(int(seed))
model = roberta_torch.RobertaBackbone(vocabulary_size=30, num_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=8)
with torch.no_grad():
    for parameter in model.parameters():
        parameter.normal_()
try:
    model.save_to_preset(out, format="safetensors", overwrite=hook.startswith("die"))
    print("saved", seed)
except ValueError as error:
    print("refused", seed, error)
"""


def test_concurrent_saves_to_one_new_directory_never_replace_each_other(tmp_path):
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    out = tmp_path / "out"
    processes = [start_python(SAVE_SCRIPT, out, seed, "wait", barrier) for seed in (1, 2)]
    results = [p.communicate(timeout=300) for p in processes]
    assert all(p.returncode == 0 for p in processes), [err[-2000:] for _, err in results]
    lines = sorted(out_.strip().splitlines()[-1] for out_, _ in results)
    assert [line.split()[0] for line in lines] == ["refused", "saved"], lines
    assert "not empty" in lines[0] and "while this save ran" in lines[0]
    winner = int(next(line for line in lines if line.startswith("saved")).split()[1])
    assert same_weights(weights(out), small_model(winner).state_dict())  # the winner's preset, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["barrier", "out"]  # no staging left


def test_a_new_directory_that_appears_during_a_save_is_not_replaced(tmp_path, monkeypatch):
    out = tmp_path / "out"
    small_model(1).save_to_preset(tmp_path / "other", format="safetensors")
    from roberta_torch.presets import saving

    write = saving.WRITERS["safetensors"]

    def write_then_someone_else_saves(model, directory, **options):
        write(model, directory, **options)
        (tmp_path / "other").rename(out)

    monkeypatch.setitem(saving.WRITERS, "safetensors", write_then_someone_else_saves)
    with pytest.raises(ValueError, match="while this save ran"):
        small_model(2).save_to_preset(out, format="safetensors")
    assert same_weights(weights(out), small_model(1).state_dict())
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_a_crash_during_an_overwrite_leaves_a_whole_preset(tmp_path):
    out = tmp_path / "out"
    small_model(1).save_to_preset(out, format="safetensors")
    process = start_python(SAVE_SCRIPT, out, 2, "die-after-first-rename", "")
    _, err = process.communicate(timeout=300)
    assert process.returncode in (0, 3), err[-2000:]
    assert out.is_dir()  # the old or the new preset, whole
    saved = weights(out)
    assert same_weights(saved, small_model(1).state_dict()) or same_weights(saved, small_model(2).state_dict())
    small_model(3).save_to_preset(out, format="safetensors", overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # what the dead save left is gone


def crash_between_the_portable_renames(out, seed):
    process = start_python(SAVE_SCRIPT, out, seed, "die-between-renames", "")
    _, err = process.communicate(timeout=300)
    assert process.returncode == 3, err[-2000:]
    assert not out.exists()  # the fallback's window: the old preset is aside, the new not in yet


def test_the_next_save_or_load_restores_what_a_crash_in_the_portable_swap_moved_aside(tmp_path):
    out = tmp_path / "out"
    small_model(1).save_to_preset(out, format="safetensors")
    crash_between_the_portable_renames(out, 2)
    with pytest.raises(ValueError, match="not empty"):  # the old preset is back: not replaced silently
        small_model(3).save_to_preset(out, format="safetensors")
    assert same_weights(weights(out), small_model(1).state_dict())
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # the dead save's staging is gone too
    crash_between_the_portable_renames(out, 2)
    assert same_weights(weights(out), small_model(1).state_dict())  # a load puts it back too


def test_the_next_save_removes_what_a_killed_save_left_but_not_a_live_one(tmp_path):
    out = tmp_path / "out"
    process = start_python(SAVE_SCRIPT, out, 2, "die-in-write", "")
    _, err = process.communicate(timeout=300)
    assert process.returncode == 3, err[-2000:]
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].endswith(".partial"), left
    live = tmp_path / f".out.{files._HOST_TAG}-{os.getppid()}-0123abcd.partial"  # a live process's save
    live.mkdir()
    small_model(1).save_to_preset(out, format="safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, "out"])


def test_the_portable_fallback_places_replaces_and_refuses(tmp_path, monkeypatch):
    from roberta_torch.presets import renames

    def unsupported(*args):
        raise renames.Unsupported(38, "not here")

    monkeypatch.setattr(renames, "_call", unsupported)
    out = tmp_path / "out"
    out.mkdir()  # an empty destination is fine
    small_model(1).save_to_preset(out, format="safetensors")
    with pytest.raises(ValueError, match="not empty"):
        small_model(2).save_to_preset(out, format="safetensors")
    small_model(2).save_to_preset(out, format="safetensors", overwrite=True)
    assert same_weights(weights(out), small_model(2).state_dict())
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


@pytest.fixture
def read_only_is_enforced(monkeypatch):
    """Entries of a directory without write permission cannot be removed, also when the tests
    run as root (who is exempt): os.unlink/os.rmdir check the directory's mode as for a user."""
    if os.geteuid() != 0:
        return
    for name in ("unlink", "rmdir"):
        original = getattr(os, name)

        def checked(path, *, dir_fd=None, _original=original):
            mode = os.fstat(dir_fd).st_mode if dir_fd is not None else os.stat(os.path.dirname(os.path.abspath(path))).st_mode
            if not mode & stat.S_IWUSR:
                raise PermissionError(13, "Permission denied", path)
            return _original(path, dir_fd=dir_fd)

        monkeypatch.setattr(os, name, checked)


def test_read_only_old_contents_are_removed_by_an_overwrite(tmp_path, read_only_is_enforced):
    out = tmp_path / "out"
    small_model(1).save_to_preset(out, format="keras")
    (out / "assets").mkdir()
    (out / "assets" / "note.txt").write_text("x")
    for path in (out / "assets" / "note.txt", out / "config.json"):
        path.chmod(0o444)
    (out / "assets").chmod(0o555)
    out.chmod(0o555)
    small_model(2).save_to_preset(out, format="keras", overwrite=True)
    assert same_weights(weights(out), small_model(2).state_dict())
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no hidden copy of the old preset


@pytest.mark.parametrize("spelling", [".", "CWD", ".."])
def test_saving_onto_the_current_directory_is_refused_before_writing(tmp_path, monkeypatch, spelling):
    work = tmp_path / "work"
    work.mkdir()
    (work / "keep.txt").write_text("mine")
    monkeypatch.chdir(work)
    target = str(work) if spelling == "CWD" else spelling
    with pytest.raises(ValueError, match="current directory"):
        small_model().save_to_preset(target, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"]
    assert [p.name for p in work.iterdir()] == ["keep.txt"]


@pytest.mark.parametrize("length", [240, 255])
def test_directory_names_up_to_the_file_name_limit(tmp_path, length):
    name = ("é" * length)[: length // 2] + "x" * (length - 2 * (length // 2))  # 2-byte characters
    assert len(os.fsencode(name)) == length
    out = tmp_path / name
    small_model(1).save_to_preset(out, format="transformers")
    small_model(2).save_to_preset(out, format="transformers", overwrite=True)
    assert same_weights(weights(out), small_model(2).state_dict())
    assert [p.name for p in tmp_path.iterdir()] == [name]
    assert files.short_name(name) != files.short_name(name[:-1] + "y")


# -- modes: what a plain open()/mkdir() gives under the umask ------------------------------------


def modes(root: pathlib.Path) -> set:
    found = {(stat.S_IMODE(root.stat().st_mode), "dir")}
    for path in root.rglob("*"):
        found.add((stat.S_IMODE(path.lstat().st_mode), "dir" if path.is_dir() else "file"))
    return found


@pytest.fixture(params=[0o022, 0o077])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def write_every_kind(root: pathlib.Path):
    """Each writer's output directory (or file) under `root`."""
    from roberta_torch.cli import main

    outputs = {}
    model = small_model()
    for format in ("keras", "safetensors", "transformers"):
        model.save_to_preset(root / f"backbone-{format}", format=format)
        outputs[f"backbone-{format}"] = root / f"backbone-{format}"
    classifier = roberta_torch.RobertaTextClassifier.from_preset("roberta_tiny_random", num_classes=2)
    for format in ("keras", "transformers"):
        classifier.save_to_preset(root / f"task-{format}", format=format)
        outputs[f"task-{format}"] = root / f"task-{format}"
    roberta_torch.Tokenizer.from_preset("roberta_tiny_random").save_to_preset(root / "tokenizer")
    outputs["tokenizer"] = root / "tokenizer"
    embedder = roberta_torch.TextEmbedder.from_preset("roberta_tiny_random")
    embedder.save_to_preset(root / "embedder")
    outputs["embedder"] = root / "embedder"
    assert main(["convert", "roberta_tiny_random", str(root / "converted"), "--to", "transformers"]) == 0
    outputs["convert"] = root / "converted"
    (root / "texts.txt").write_text("one\ntwo\n")
    (root / "embed").mkdir()
    for suffix in (".npy", ".jsonl"):
        assert main(["embed", "--preset", str(root / "embedder"), str(root / "texts.txt"), "--out",
                     str(root / "embed" / f"out{suffix}"), "--no-progress"]) == 0
    outputs["embed"] = root / "embed"
    return outputs


def test_saved_files_get_the_umask_modes(tmp_path, umask):
    root = tmp_path / "saves"
    root.mkdir()
    os.chmod(root, 0o777 & ~umask)
    outputs = write_every_kind(root)
    expected = {(0o777 & ~umask, "dir"), (0o666 & ~umask, "file")}
    for kind, path in outputs.items():
        assert modes(pathlib.Path(path)) <= expected, (kind, sorted((oct(m), k) for m, k in modes(pathlib.Path(path))))
