"""Lay out kagglehub's and huggingface_hub's real on-disk caches in a temporary directory,
so the real clients resolve presets offline (layouts: ../shared/FORMATS.md, checked
against kagglehub 1.0 `cache.py` and huggingface_hub 2.x `file_download.py`).
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import shutil


def put_in_kagglehub_cache(cache_root, handle: str, source_dir) -> pathlib.Path:
    """Copy `source_dir` into `$KAGGLEHUB_CACHE` as the complete download of `handle`
    ("owner/model/framework/variation/version", no scheme). Writes the bundle marker
    `<variation>/<version>.complete` and per-file markers
    `<variation>/.complete/<version>/<file>.complete`. Returns the version directory."""
    owner, model, framework, variation, version = handle.split("/")
    variation_dir = pathlib.Path(cache_root, "models", owner, model, framework, variation)
    destination = variation_dir / version
    shutil.copytree(source_dir, destination)
    (variation_dir / f"{version}.complete").touch()
    for path in destination.rglob("*"):
        if path.is_file():
            marker = variation_dir / ".complete" / version / f"{path.relative_to(destination)}.complete"
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
    return destination


def put_in_hf_cache(hf_home, repo_id: str, source_dir, revision: str | None = None) -> pathlib.Path:
    """Copy `source_dir` into `$HF_HOME/hub` as the `main` snapshot of model `repo_id`:
    file contents in `blobs/<sha256>`, `snapshots/<revision>/<file>` relative symlinks to
    them (copies where symlinks are unavailable), `refs/main` holding the revision.
    Returns the snapshot directory."""
    owner, name = repo_id.split("/")
    repo_dir = pathlib.Path(hf_home, "hub", f"models--{owner}--{name}")
    revision = revision or hashlib.sha1(repo_id.encode()).hexdigest()
    snapshot = repo_dir / "snapshots" / revision
    blobs = repo_dir / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    for path in sorted(pathlib.Path(source_dir).rglob("*")):
        if not path.is_file():
            continue
        data = path.read_bytes()
        blob = blobs / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        target = snapshot / path.relative_to(source_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            target.symlink_to(os.path.relpath(blob, target.parent))
        except OSError:
            shutil.copy2(blob, target)
    (repo_dir / "refs").mkdir(exist_ok=True)
    (repo_dir / "refs" / "main").write_text(revision)
    return snapshot
