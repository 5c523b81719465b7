"""`python -m roberta_torch ...`: see roberta_torch/cli/__init__.py."""

from .cli import main

raise SystemExit(main())
