"""`EmbeddingConfig`: how a backbone's token vectors become text embeddings (pooling modes,
normalization, prompts, ...), the record every format loader returns for the embedder, with
sentence-transformers' pooling names and their check."""

from __future__ import annotations

import dataclasses

POOLING_MODES = ("cls", "mean", "max", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
# sentence-transformers' legacy 1_Pooling/config.json booleans -> mode names, in
# sentence-transformers' concatenation order (what legacy flags mean when several are set).
LEGACY_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
SIMILARITY_FUNCTIONS = ("cosine", "dot")


def check_pooling_modes(pooling, argument: str = "pooling") -> tuple[str, ...]:
    """A mode name or a sequence of them -> a non-empty tuple of valid names; typed errors."""
    modes = (pooling,) if isinstance(pooling, str) else pooling
    if not isinstance(modes, (list, tuple)) or not modes:
        raise TypeError(
            f"`{argument}` must be a pooling mode name or a non-empty list of them; got {pooling!r}. "
            f"Modes: {', '.join(POOLING_MODES)}."
        )
    for mode in modes:
        if not isinstance(mode, str):
            raise TypeError(f"`{argument}` holds {mode!r}, not a str. Modes: {', '.join(POOLING_MODES)}.")
        if mode not in POOLING_MODES:
            raise ValueError(f"Unknown pooling mode {mode!r} in `{argument}`. Modes: {', '.join(POOLING_MODES)}.")
    return tuple(modes)


def read_prompts(settings: dict, where: str) -> tuple[dict, str | None]:
    """(prompts, default_prompt_name) of sentence-transformers' config_sentence_transformers.json
    (`settings`, read from `where`), checked: embedders and cross-encoders store them alike."""
    prompts = settings.get("prompts") or {}
    if not isinstance(prompts, dict) or not all(isinstance(v, str) for v in prompts.values()):
        raise ValueError(f"`prompts` in {where!r} must map names to strings; got {prompts!r}.")
    default = settings.get("default_prompt_name")
    if default is not None and default not in prompts:
        raise ValueError(f"default_prompt_name {default!r} in {where!r} is not one of its prompts {sorted(prompts)}.")
    return dict(prompts), default


@dataclasses.dataclass
class EmbeddingConfig:
    """How a backbone's token vectors become text embeddings."""

    pooling: tuple[str, ...] = ("mean",)
    normalize: bool = False
    include_prompt: bool = True
    max_seq_length: int | None = None  # None: the backbone's (capped at it anyway)
    do_lower_case: bool = False
    prompts: dict = dataclasses.field(default_factory=dict)
    default_prompt_name: str | None = None
    similarity: str = "cosine"
