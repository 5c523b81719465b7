"""Prompts (text prepended to an input, e.g. "query: "), chosen by sentence-transformers' rule,
for TextEmbedder and CrossEncoder alike."""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


def check_prompts(prompts) -> dict:
    """A `prompts=` override: a dict of name -> str, copied; TypeError otherwise."""
    if not isinstance(prompts, dict) or not all(isinstance(v, str) for v in prompts.values()):
        raise TypeError(f"`prompts` must be a dict of name -> str; got {prompts!r}.")
    return dict(prompts)


def resolve_prompt(prompts: dict, default_prompt_name: str | None, prompt_name: str | None = None,
                   prompt: str | None = None) -> str | None:
    """The text to prepend: `prompt`, else the named prompt, else the model's default prompt,
    else None; TypeError for a non-str `prompt`, ValueError for an unknown name."""
    if prompt is not None:
        if not isinstance(prompt, str):
            raise TypeError(f"`prompt` must be a str; got {type(prompt).__name__}.")
        if prompt_name is not None:
            logger.warning("Both `prompt` and `prompt_name` given: using `prompt`.")
        return prompt
    name = prompt_name if prompt_name is not None else default_prompt_name
    if name is None:
        return None
    if name not in prompts:
        raise ValueError(
            f"Unknown `prompt_name` {name!r}; this model's prompts are {sorted(prompts)} "
            "(or pass `prompt=` with the text to prepend)."
        )
    return prompts[name]
