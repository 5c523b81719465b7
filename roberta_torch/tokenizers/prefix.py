"""Tokenize only as much of a text as is kept: the first `max_length` ids, exactly.

Packing keeps at most `sequence_length` ids of a text, so tokenizing all of a 50 MB text
(minutes, gigabytes) is waste. Instead a prefix of the text is tokenized, cut at a *safe cut*:
a position c where the tokenizer provably splits, so that `ids(text[:c])` is exactly the
start of `ids(text)`. If that prefix gives fewer than `max_length` ids, a longer one is
tried (4x), up to the whole text. A text without any safe cut is tokenized whole.

Where a tokenizer splits:

* Byte-level BPE (RoBERTa, GPT-2's pre-tokenizer regex). BPE never merges across the
  regex's pieces, and a piece that holds a non-space character never continues into
  whitespace; a run of letters or digits never continues into punctuation. So c is safe
  before an ASCII whitespace character preceded by a non-space, and before common ASCII/CJK
  punctuation preceded by an ASCII letter or digit, or a CJK, kana or Hangul character
  (blocks whose Unicode categories never change, so the `tokenizers` library's Unicode
  tables and Python's agree). A cut inside an occurrence of a token kept whole ("<mask>")
  is never safe.
* sentencepiece (XLM-R). With whitespace escaped to "▁", a piece boundary is forced before
  a character x when no vocabulary piece holds x after another non-"▁" character (and x is
  itself a piece, so that unknown characters cannot fuse across the cut). This is checked on
  the vocabulary once, for " " (as "▁") and for the punctuation above (after NFKC), so a
  model whose pieces cross words (e.g. trained with split_by_whitespace=False) gets no cuts.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Callable, Iterable

# Characters Python's `str.isspace` and the regex engine of `tokenizers` could classify
# differently across Unicode versions (once whitespace, or never): never next to a cut.
_UNSTABLE_SPACE = "\u180e\u200b\u2060\ufeff"
# A non-whitespace character, in every Unicode version.
_NON_SPACE = rf"[^\s{_UNSTABLE_SPACE}]"
# Letters and digits whose category is stable (ASCII, CJK ideographs, kana, Hangul syllables).
_STABLE_ALNUM = r"[A-Za-z0-9\u3040-\u30ff\u4e00-\u9fff\uac00-\ud7a3]"
CUT_WHITESPACE = " \t\n\r"
CUT_PUNCTUATION = ".,;:!?\u3002\uff0c\u3001\uff01\uff1f\uff1b\uff1a"

# The first text position to try, in characters per kept id, and the growth factor.
CHARS_PER_ID = 8
MIN_CHARS = 64
GROWTH = 4


def _class(characters: str) -> str:
    return "[" + "".join(re.escape(c) for c in characters) + "]"


BYTE_LEVEL_BPE_CUTS = re.compile(
    rf"(?<={_NON_SPACE}){_class(CUT_WHITESPACE)}|(?<={_STABLE_ALNUM}){_class(CUT_PUNCTUATION)}"
)


def sentencepiece_cuts(pieces: Iterable[str]) -> re.Pattern | None:
    """The safe cuts of a sentencepiece vocabulary (module docstring), or None when it has none."""
    pieces = set(pieces)
    candidates = {" ": "\u2581"}
    for character in CUT_PUNCTUATION:
        normalized = unicodedata.normalize("NFKC", character)
        if len(normalized) == 1:
            candidates[character] = normalized
    inside = set()  # characters that some piece holds after another non-"▁" character
    for piece in pieces:
        for previous, character in zip(piece, piece[1:]):
            if previous != "\u2581":
                inside.add(character)
    # A piece that continues past "▁" (or past a space, if whitespace is not escaped) can cross words.
    safe = [c for c, n in candidates.items() if n in pieces and n not in inside and not (c == " " and " " in inside)]
    if not safe:
        return None
    return re.compile(rf"(?<={_NON_SPACE}){_class(''.join(safe))}")


def next_cut(pattern: re.Pattern | None, text: str, start: int, whole_tokens: Iterable[str] = ()) -> int | None:
    """The first safe cut at or after `start` (0 < cut < len(text)), or None.

    `whole_tokens`: strings the tokenizer keeps whole (special tokens); no cut falls inside one.
    """
    if pattern is None:
        return None
    risky = [t for t in whole_tokens if len(t) > 1 and pattern.search(t, 1)]
    position = max(start, 1)
    while True:
        match = pattern.search(text, position)
        if match is None:
            return None
        cut = match.start()
        if not any(text.startswith(t, cut - k) for t in risky for k in range(1, len(t)) if cut - k >= 0):
            return cut
        position = cut + 1


def encode_prefixes(encode: Callable[[list[str]], list[list[int]]], texts: list[str], max_length: int,
                    cut: Callable[[str, int], int | None]) -> list[list[int]]:
    """The first `max_length` ids of each text, equal to `encode([text])[0][:max_length]`.

    `encode` tokenizes a batch of texts; `cut(text, start)` is the tokenizer's next safe cut
    at or after `start` (None: there is none).
    """
    if max_length == 0:
        return [[] for _ in texts]
    out: list = [None] * len(texts)
    pending = list(range(len(texts)))
    limits = dict.fromkeys(pending, CHARS_PER_ID * max_length + MIN_CHARS)
    while pending:
        pieces, whole = [], []
        for index in pending:
            text = texts[index]
            position = None if len(text) <= limits[index] else cut(text, limits[index])
            pieces.append(text if position is None else text[:position])
            whole.append(position is None)
        retry = []
        for index, piece, is_whole, ids in zip(pending, pieces, whole, encode(pieces)):
            if is_whole or len(ids) >= max_length:
                out[index] = ids[:max_length]
            else:  # too few ids in this prefix: try a longer one
                limits[index] = GROWTH * len(piece)
                retry.append(index)
        pending = retry
    return out
