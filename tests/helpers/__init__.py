"""Shared test helpers: paths, one weight randomizer, keras_hub fixtures, hub caches,
the attention kernel's judging helper. Imported as `helpers.<module>` (tests/ is on
sys.path through tests/conftest.py)."""
