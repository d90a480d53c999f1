"""Shortened names: 비번 is 비밀번호, 주담대 주택담보대출, 금감원 금융감독원, read from the KB's own words.

Run as: a library; retrieval expands a question's word of three or more syllables that no document
uses into the terms of the KB words it shortens, and the scope check knows a name that shortens one.

Korean shortens a name by keeping syllables in order: 서금원 is 서민금융진흥원, and 직판업자 sits
inside 금융상품직접판매업자. So a name of three or more syllables shortens a KB word that holds its
syllables in order within twice its length and one. Two syllables match by chance (부산 in 부동산)
unless they open a compound's two parts (인뱅 = 인터넷 + 뱅킹, 비번 = 비밀 + 번호, 마통 = 마이너스 +
통장). Nothing here is a list of abbreviations: a bank's KB that spells 퇴직연금 makes 퇴연 known.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from kofin.data_ko.korean import QUESTION_WORDS, morpheme_terms, tokenize

_HANGUL = re.compile(r"[가-힣]+")
# A name shortening more distinct terms than this is ambiguous, not a name (금 in half the statutes).
MAX_EXPANSION_TERMS = 6


def shortened_words(kb: Any, name: str) -> list[str]:
    """The KB words (lower-cased, as written) that `name` shortens; empty when none does."""
    if len(name) < 2 or not _HANGUL.fullmatch(name):
        return []
    memo: dict[str, list[str]] = kb.derived("shortened words", dict)
    if name not in memo:
        memo[name] = [w for w in _words_by_syllable(kb).get(name[0], ()) if _shortens(name, w)]
    return memo[name]


def expansion(kb: Any, name: str) -> tuple[str, ...]:
    """The content terms of the words `name` shortens, when it is a name the KB does not use itself
    and the words it shortens agree on few terms (else empty). Two syllables shorten by chance too
    often to search on (이번 would read as 이용자 번호, 지금 as 지표 금리): only longer names expand."""
    if len(name) < 3 or name in kb.bm25_vocab:
        return ()
    memo: dict[str, tuple[str, ...]] = kb.derived("shortened name terms", dict)
    if name not in memo:
        terms: list[str] = []
        for word in shortened_words(kb, name):
            terms += [t for t in morpheme_terms(word) if t not in terms and t not in QUESTION_WORDS and len(t) > 1]
        memo[name] = tuple(terms) if len(terms) <= MAX_EXPANSION_TERMS else ()
    return memo[name]


def _words_by_syllable(kb: Any) -> dict[str, list[str]]:
    def build() -> dict[str, list[str]]:
        by_syllable: dict[str, list[str]] = {}
        for w in kb.words:
            if len(w) >= 3 and _HANGUL.fullmatch(w):
                for ch in set(w):
                    by_syllable.setdefault(ch, []).append(w)
        return by_syllable

    by: dict[str, list[str]] = kb.derived("words by syllable", build)
    return by


def _shortens(name: str, word: str) -> bool:
    if len(name) == 2:
        return word[0] == name[0] and name[1] in word[2:] and _opens_two_parts(name, word)
    for start in (i for i, ch in enumerate(word) if ch == name[0]):
        at = start
        for ch in name[1:]:
            at = word.find(ch, at + 1)
            if at < 0:
                break
        if at >= 0 and len(name) < at - start + 1 <= 2 * len(name) + 1:
            return True
    return False


@lru_cache(maxsize=65536)
def _opens_two_parts(name: str, word: str) -> bool:
    nouns = [t.form for t in tokenize(word) if t.tag in ("NNG", "NNP")]
    return len(nouns) >= 2 and nouns[0].startswith(name[0]) and any(n.startswith(name[1]) for n in nouns[1:])
