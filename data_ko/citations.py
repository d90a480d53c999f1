"""The citation format of kofin's answers, shared by the writer (serve) and the reader (eval).

Run as: a library. An answer cites its numbered sources as `[n]` or `[n, m]` after a sentence;
`kofin ask` verifies every citation with `support` (serve/citations.py) and `kofin eval` scores
citation recall/precision with the same syntax and the same lexical check (eval/metrics.py).

A sentence is *supported* by passages when most of its character bigrams occur in them: Korean
words inflect, so bigrams match 보호하여/보호한다 where whole words would not.
"""

from __future__ import annotations

import re

CITATION = re.compile(r"\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\]")
_NOT_TEXT = re.compile(r"[\s\W_]+", re.UNICODE)


def cited_numbers(text: str) -> list[int]:
    """Source numbers cited in `text`, in order of first use."""
    out: list[int] = []
    for m in CITATION.finditer(text):
        for n in (int(x) for x in m.group(1).split(",")):
            if n not in out:
                out.append(n)
    return out


def bigrams(text: str) -> set[str]:
    s = _NOT_TEXT.sub("", text.lower())
    return {s[i : i + 2] for i in range(len(s) - 1)}


def support(sentence: str, sources: list[str]) -> float:
    """Share of the sentence's bigrams (citations left out) found in `sources`."""
    grams = bigrams(CITATION.sub("", sentence))
    if not grams:
        return 1.0
    pool: set[str] = set()
    for text in sources:
        pool |= bigrams(text)
    return len(grams & pool) / len(grams)
