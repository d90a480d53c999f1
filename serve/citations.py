"""Citation checks for generated answers: every `[n]` must name a shown source and be supported.

Run as: a library; `kofin ask` runs `verify_citations` on every generated answer.

- `[n]` outside 1..len(sources) (an id the model invented) is removed from the text and listed.
- A sentence is *supported* when most of its character bigrams occur in the sources it cites
  (`support`, data_ko/citations.py, the same check eval's lexical judge uses). A cited sentence
  below `min_support` is flagged: staff see it marked instead of trusting it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from kofin.data_ko.citations import CITATION as _CITE
from kofin.data_ko.citations import support
from kofin.data_ko.korean import split_sentences

_LEADING_CITES = re.compile(r"(?:\[\d{1,3}(?:\s*,\s*\d{1,3})*\]\s*)+")


@dataclass
class FlaggedSentence:
    sentence: str
    cited: list[int]
    support: float  # share of the sentence's bigrams found in its cited sources
    reason: str


@dataclass
class CitationCheck:
    text: str  # the answer with invalid citations removed
    cited: list[int] = field(default_factory=list)  # valid source numbers, first use order
    removed: list[int] = field(default_factory=list)  # numbers that pointed at no shown source
    flagged: list[FlaggedSentence] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.removed and not self.flagged


def _sentences_with_trailing_citations(text: str) -> list[str]:
    """Sentences, with a citation written after the full stop ("문장이다. [1]") kept on its sentence.

    The splitter ends a sentence at ". ", which puts that "[1]" at the start of the next sentence
    (or alone, at the end), leaving the sentence it cites unchecked.
    """
    out: list[str] = []
    for piece in split_sentences(text):
        lead = _LEADING_CITES.match(piece)
        if out and lead:  # "[1] 다음 문장" : the [1] closes the sentence before
            out[-1] = f"{out[-1]} {lead.group().strip()}"
            piece = piece[lead.end() :]
        if piece.strip():
            out.append(piece)
    return out


def verify_citations(answer: str, sources: list[str], min_support: float = 0.5) -> CitationCheck:
    n = len(sources)
    removed: list[int] = []

    def keep_valid(m: re.Match[str]) -> str:
        ids = [int(x) for x in m.group(1).split(",")]
        good = [i for i in ids if 1 <= i <= n]
        removed.extend(i for i in ids if not 1 <= i <= n)
        return "".join(f"[{i}]" for i in good)

    text = _CITE.sub(keep_valid, answer)
    text = re.sub(r"[ \t]+([.,?!])", r"\1", text)  # "내용 [7]." -> "내용." once [7] is gone
    cited: list[int] = []
    flagged: list[FlaggedSentence] = []
    for sentence in _sentences_with_trailing_citations(text):
        ids = [int(x) for m in _CITE.finditer(sentence) for x in m.group(1).split(",")]
        for i in ids:
            if i not in cited:
                cited.append(i)
        if not ids:
            continue
        score = support(sentence, [sources[i - 1] for i in ids])
        if score < min_support:
            flagged.append(
                FlaggedSentence(sentence, ids, round(score, 3), f"only {score:.0%} of it appears in source(s) {ids}")
            )
    return CitationCheck(text=text.strip(), cited=cited, removed=sorted(set(removed)), flagged=flagged)
