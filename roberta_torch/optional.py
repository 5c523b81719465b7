"""Optional dependencies: imported when a feature first needs one, with the remedy named when
it is missing (`import roberta_torch` itself needs only torch, numpy and the core packages)."""

from __future__ import annotations

import importlib


def require(name: str, needed_for: str, install: str | None = None, also: tuple = ()):
    """The module `name` (its submodules `also` imported too), or ImportError
    "<needed_for> needs the `name` package: pip install <install or name>"."""
    try:
        module = importlib.import_module(name)
        for submodule in also:
            importlib.import_module(f"{name}.{submodule}")
    except ImportError as error:
        raise ImportError(f"{needed_for} needs the `{name}` package: pip install {install or name}") from error
    return module
