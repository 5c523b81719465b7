"""`python -m roberta_torch ...`: see roberta_torch/cli.py."""

from .cli import main

raise SystemExit(main())
