"""What a knowledge base can answer about: the statutes it holds and the names it mentions.

Run as: a library; the answer path (serve/respond.py) refuses a question that names a statute
(`unknown_law`) or a proper name (`unknown_name`: a bank, a branch, a product, a company) that the
KB cannot be about, or is mostly about things no document names (`off_topic`), however many of the
question's other words its sources happen to share.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Callable
from typing import Any

from kofin.data_ko.corpus import statute_article
from kofin.data_ko.korean import (
    QUESTION_WORDS,
    asked_sentences,
    asking_sentence,
    is_proper_noun,
    proper_nouns,
    tokenize,
)
from kofin.serve.answer import STORY_WEIGHT
from kofin.serve.kb import WORD
from kofin.serve.retrieve import Hit, HybridRetriever
from kofin.serve.shortnames import shortened_words

# A statute named in the question: "근로기준법상", "도로교통법에서". Everyday words ending in 법
# (방법, 불법 …) are not statutes.
# The basic codes have one-syllable names (상법, 민법, 형법, 헌법) and need a word start before them.
_LAW_NAME = re.compile(
    r"((?<![가-힣])[헌민형상]법|[가-힣]{2,}(?:에\s관한\s법률|법률|법))(?=상|에서|에|은|는|이|의|을|를|으로|로|과|와|도|만|\s|[?.,]|$)"
)
_NOT_A_LAW = frozenset(
    {
        "방법",
        "불법",
        "위법",
        "적법",
        "편법",
        "해법",
        "문법",
        "합법",
        "입법",
        "사법",
        "용법",
        "수법",
        "기법",
        "요법",
        "비법",
        "무법",
        "탈법",
        "준법",
        "관계법",
        "해당법",
        "관련법",
        "특별법",
        "개정법",
    }
)


def _law_names(retriever: HybridRetriever) -> set[str]:
    """The statutes the KB can answer about (cached per KB): those whose articles it holds, and
    those its other documents (manuals, FAQs) mention, with the lexicon's short names for them.

    A statute that is only *cited* by another statute's article is not one the KB can answer
    about: 2,953 articles of 40 financial statutes refer to 상법 and 민법 throughout, but a question
    on 상법's rules for directors needs 상법's own text."""

    def build() -> set[str]:
        names: set[str] = set()
        for c in retriever.kb.chunks:
            held = statute_article(c["title"])
            if held:
                names.add(held[0])
            else:
                names |= {m.group(1) for m in _LAW_NAME.finditer(f"{c['title']} {c['section']} {c['text']}")}
        return names | {short for short, full in retriever.lexicon.aliases.items() if full in names}

    return retriever.kb.derived("law names", build)


def _abbreviates(short: str, full: str) -> bool:
    """Korean statute short names keep syllables of the full name in order from its start:
    여신법 = 여신전문금융업법, 특금법 = 특정 금융거래정보의 보고 및 이용 등에 관한 법률."""
    stem = short.removesuffix("법률").removesuffix("법")
    rest = iter(full.replace(" ", ""))
    return len(stem) >= 2 and full[0] == stem[0] and all(ch in rest for ch in stem)


def unknown_law(retriever: HybridRetriever, question: str) -> str | None:
    """A statute the question names that the KB cannot answer about (serve/answer.py `_law_names`)."""
    known = _law_names(retriever)
    compact = {k.replace(" ", "") for k in known}

    def is_known(name: str) -> bool:
        return name.replace(" ", "") in compact or any(_abbreviates(name, k) for k in known)

    for m in _LAW_NAME.finditer(question):
        name = m.group(1)
        if name in _NOT_A_LAW or any(name.endswith(w) and len(name) - len(w) < 2 for w in _NOT_A_LAW):
            continue
        if is_known(name):
            continue
        # A name written with a space ("증권관련 집단소송법", "개인정보 보호법") is the word before it
        # and this together: known or not as a whole, whatever the last part alone would match.
        before = re.search(r"([가-힣]+)\s+$", question[: m.start()])
        if before and is_known(before.group(1) + name):
            continue
        if before is None and any(name in k for k in compact):
            continue  # part of a known name, nothing before it to tell which
        return f"{before.group(1)} {name}" if before and any(name in k for k in compact) else name
    return None


_MAX_FRAGMENT = 8


def _fragments(retriever: HybridRetriever) -> frozenset[str]:
    """Every piece (2..8 characters, lower-cased) of every word the KB's documents use, cached per
    KB: a name counts as mentioned when it is part of a word (첫걸음 in "첫걸음적금"), whatever
    Kiwi made of that word."""
    return retriever.kb.derived(
        "fragments",
        lambda: frozenset(
            w[i : i + n] for w in retriever.kb.words for n in range(2, _MAX_FRAGMENT + 1) for i in range(len(w) - n + 1)
        ),
    )


_PLAIN_SENTENCE = re.compile(r"[0-9A-Za-z가-힣\s?.!,]*")


def _every_piece_known(sentence: str, pieces: frozenset[str]) -> bool:
    """Whether every 2..8-character piece of every word is in `pieces`. Then no name in the sentence
    can be unknown: a name Kiwi finds in a sentence of plain words is a piece of one of its words."""
    if not _PLAIN_SENTENCE.fullmatch(sentence):
        return False
    for word in WORD.findall(sentence.lower()):
        for n in range(2, min(len(word), _MAX_FRAGMENT) + 1):
            if any(word[i : i + n] not in pieces for i in range(len(word) - n + 1)):
                return False
    return True


def unknown_name(retriever: HybridRetriever, question: str, shown: list[Hit]) -> str | None:
    """A proper name in what the question asks ("국민은행", "강남역지점", "업비트", "케이뱅크") that
    no document of the KB mentions. Statute names are `unknown_law`'s (a short name need not appear
    verbatim); in a question of several sentences only those that ask count (a story's "여의도
    증권사에서 일하다가" is not what is asked about, "해운대 지점 어디있음? 몇시까지 함?" asks twice).
    `shown` are the sources retrieved for it: a compound they spell with spaces is known."""
    pieces = _fragments(retriever)
    for asking in asked_sentences(question):
        if _every_piece_known(asking, pieces):
            continue  # whatever Kiwi calls a name here, the KB mentions it: skip the analysis (~1.5 ms)
        for name in proper_nouns(asking):
            if len(name) < 2 or "법" in name or name in QUESTION_WORDS or len(name) > _MAX_FRAGMENT:
                continue
            if not re.search(r"[가-힣A-Za-z]", name):
                continue  # ㅠㅠ, ㅋㅋ: a feeling, not a name
            bare = _COLLOQUIAL_END.sub("", name) if len(name) > 3 else name  # "직판업자야" asks about 직판업자
            if bare.lower() in pieces or shortened_words(retriever.kb, bare):
                continue
            if is_proper_noun(name):
                return name
        compound = _unknown_compound(asking, pieces, shown)
        if compound:
            return compound
    return None


# Kiwi reads many an institution's or product's name as common nouns (케이 + 뱅크, 오토 + 론, 암 +
# 보험): a compound that ends as such names do, whose first part no document uses, and that the
# sources retrieved for the question do not spell even with spaces ("청년첫걸음적금" is the KB's 청년
# 첫걸음 적금, which the character channel retrieves), names something the KB is not about.
# Two-syllable first parts at least for 론 (결론 is a conclusion); 카드 is left out (statutes say
# 직불카드 where tellers say 체크카드).
_NAMED_COMPOUND = re.compile(
    r"^(?P<first>.{2,})(은행|뱅크|캐피탈|생명|화재|손해보험|페이|금고|론)$"
    r"|^(?P<kind>.+)(보험|적금|예금|대출|통장|계좌|저축|센터|펀드|뱅킹)$"
)


def _unknown_compound(sentence: str, pieces: frozenset[str], shown: list[Hit]) -> str | None:
    def spelled_apart(name: str) -> bool:  # 예·적금, 청년 첫걸음 적금
        return any(
            name in _SEPARATORS.sub("", f"{h.chunk['title']}{h.chunk['section']}{h.chunk['text']}").lower()
            for h in shown
        )

    run: list[Any] = []  # Kiwi tokens of one noun compound
    for t in [*tokenize(sentence), None]:
        if t is not None and t.tag in ("NNG", "NNP", "SL") and (not run or t.start == run[-1].start + run[-1].len):
            run.append(t)
            continue
        name = "".join(x.form for x in run)
        m = _NAMED_COMPOUND.match(name)
        first = m.group("first") or m.group("kind") if m else None
        # 집담보대출 is a 담보대출 of a kind: a word of its first part that the documents use makes it known
        modifiers = [x.form.lower() for x in run if x.start - run[0].start < len(first or "") and len(x.form) > 1]
        if (
            first
            and name.lower() not in pieces
            and first.lower() not in pieces
            and not any(w in pieces for w in modifiers)
            and not spelled_apart(_SEPARATORS.sub("", name.lower()))
        ):
            return name
        run = [t] if t is not None and t.tag in ("NNG", "NNP", "SL") else []
    return None


_SEPARATORS = re.compile(r"[\s·ㆍ・/,]+")


# Kiwi reads a chat ending as part of a name ("직판업자야 대리중개업자야?").
_COLLOQUIAL_END = re.compile(r"(이야|야|이에요|예요|이냐|냐|임|이요|요)$")


# "미역국에 소고기 말고 뭐 넣으면 맛있어요?" shares 넣 and 기간-like words with some article, but most of
# its words that name something are words no document uses: it is about something else. A question
# in the KB's domain, however colloquial, names mostly things its documents name (한도, 카드, 대출),
# even when a few of its words are slang or a story's (동네, 공짜). A word counts as known when any
# noun in it is ("체크카드" to statutes that say 직불카드: 카드). As in the answer's sentence choice, a
# long question's story ("어제 조카 돌잔치에서 금반지를 받았어요.") counts for less than what it asks.
_OFF_TOPIC_SHARE = 0.6
_OFF_TOPIC_MIN_WORDS = 2


def off_topic(retriever: HybridRetriever, question: str) -> list[str] | None:
    """The words of a question that name only things no document uses, when they weigh most of its
    naming words (else None)."""
    known_word = _known(retriever)
    asking = asking_sentence(question)
    at = question.rfind(asking)
    asking_span = (at, at + len(asking)) if at >= 0 else (0, len(question))
    spans = [(m.start(), m.end()) for m in re.finditer(r"\S+", question)]
    starts = [a for a, _ in spans]
    named: dict[int, list[bool]] = {}  # word index -> whether each of its nouns is known
    for t in tokenize(question):
        if t.tag not in ("NNG", "NNP", "SL") or len(t.form) < 2 or t.form in QUESTION_WORDS:
            continue
        word = bisect_right(starts, t.start) - 1
        if word >= 0 and t.start < spans[word][1]:
            named.setdefault(word, []).append(known_word(t.form))
    if len(named) < _OFF_TOPIC_MIN_WORDS:
        return None
    weight = {i: 1.0 if asking_span[0] <= spans[i][0] < asking_span[1] else STORY_WEIGHT for i in named}
    unknown = [i for i, known in named.items() if not any(known)]
    share = sum(weight[i] for i in unknown) / sum(weight.values())
    return [question[spans[i][0] : spans[i][1]] for i in unknown] if share >= _OFF_TOPIC_SHARE else None


def _known(retriever: HybridRetriever) -> Callable[[str], bool]:
    """A test of whether the KB uses a word: as a piece of one of its words (2..8 characters) or,
    longer ("Mastercard", "OpenBanking"), as a whole word."""
    pieces, whole = _fragments(retriever), retriever.kb.words
    return lambda word: word.lower() in pieces or word.lower() in whole
