"""The one answer path: a question (with its conversation and the asker's groups) -> a cited answer.

Run as: a library. `kofin ask`, the chat (both through `Assistant` in serve/ask.py, which adds
the audit log) and `kofin eval`'s RAG task call `answer_question` / `answer_stream`, so what eval
scores is what staff see: the same rewrite of a follow-up, the same access groups, the same
relevance gate (refusals return no sources), the same answerer and citation checks.

Steps, in order:
1. Clean the question (NFKC, invisible characters, lone surrogates) and, when it is an elliptical
   follow-up, rewrite it with the conversation (serve/followup.py). History only ever changes the
   query text; what may be retrieved is decided by `groups` alone.
2. Retrieve with the groups applied before ranking.
3. Gate (serve/answer.py `evidence`): too little of the question in the best sources -> "nothing
   found"; some but weak -> answer with a caveat and the sources shown.
4. Answer: extractive (serve/extract.py) or generated from the numbered sources.
5. Verify citations; flag sources' sentences that address an assistant; say when the cited
   sources state different values for the same thing (conflicts found at ingest).
"""

from __future__ import annotations

import re
import time
from collections.abc import Generator, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kofin.data_ko.korean import asked_sentences, clean_text
from kofin.serve.answer import NO_ANSWER, Source, build_messages, evidence, suspicious_sentences
from kofin.serve.citations import verify_citations
from kofin.serve.extract import POINTS_AT_LIST, asked_kinds, extractive_answer, value_sibling
from kofin.serve.followup import keeps_earlier_ask, rewrite_question, user_turns
from kofin.serve.retrieve import Hit, HybridRetriever
from kofin.serve.scope import off_topic, unknown_law, unknown_name
from kofin.serve.settings import AnswerSettings

# A document KB has no live data: "오늘 환율" answered from a worked example is wrong, and so is a
# branch's queue "지금" answered from a sentence about shortening waits. A few words may come between
# ("오늘 가람은행 달러 현찰 살때 환율 얼마야?"), but the time word is a word of its own (not 지금까지),
# the quantity is one too and is what is asked (a number wanted, or the question ends there): 주가지수
# 연동 예금, 지수가 떨어지면, 환율이 적용되나요 are about products and rules. A question about which
# rate, discount or basis applies is policy.
_NOW = r"(?<![가-힣])(오늘|지금|현재|실시간|요즘|이번\s*주|금일)(?!까지|껏|날|부터|처럼)\s*(의|자)?\s+(\S+\s+){0,5}?"
_ASKED = r"(은|는|이|가|도)?\s*(얼마|몇|어때|어떻게\s*돼|알려|좀|[?？.]*\s*$)"
_LIVE = re.compile(
    _NOW
    + r"\S*?(환율|매매기준율|시세|주가|금값|코스피|기준금리|시장금리)"
    + _ASKED
    + r"|"
    + _NOW
    + r"\S*?(대기\s*(시간|인원|고객|번호)|혼잡)"
)
# Nor does it hold a customer's own records: "제 적금이 몇 회차까지 들어갔는지 확인해 주실 수 있나요?",
# "제 신용점수 몇 점이에요? 조회해 주세요" ask the assistant to look something up in an account, which
# only the bank's systems can. It takes all three: a word of the asker's own (제 적금, 내 카드), a
# request that the assistant look (조회해 주세요, 확인해 줄래), and a record's value (몇, 얼마, 잔액,
# 내역, 들어갔는지); "제 신용점수로 대출받을 수 있는지 확인해 주세요" asks about a rule.
_MINE = re.compile(r"(?<![가-힣])(제|내|저의|나의|저희)\s+[가-힣A-Za-z]")
_LOOK_UP = re.compile(r"(조회|확인|찾아|알아봐|알아\s*봐|봐)\s*(해|하여)?\s*(주|줄|줘|드리)")
_RECORD_VALUE = re.compile(r"몇|얼마|잔액|잔고|내역|들어갔|빠져나갔|남았|되고\s*있는지|됐는지|되었는지")
_POLICY = re.compile(r"어떤|무슨|종류|우대|스프레드|(?<![가-힣])기준(?!율|금리)|적용|계산|어느|아니면")
_LIST_START = re.compile(r"^(\||[-*•·]\s|\d+[.)]\s)")

WEAK_EVIDENCE = "근거가 약합니다: 아래 출처가 질문에 정확히 답하는지 직접 확인하세요."
SOURCES_DISAGREE = "출처마다 내용이 다릅니다: 각 출처의 시행일을 확인하고 최신 기준을 따르세요."


@dataclass
class AskResult:
    question: str
    answer: str
    sources: list[dict]
    cited: list[int] = field(default_factory=list)
    removed_citations: list[int] = field(default_factory=list)
    flagged: list[dict] = field(default_factory=list)
    found: bool = True
    rewritten_query: str | None = None  # the query retrieval ran when a follow-up was rewritten with its history
    caveat: str | None = None  # shown above the answer when the evidence is weak or the sources disagree
    refusal: str | None = None  # why a question was refused, when a scope rule (not the gate) refused it
    conflicts: list[dict] = field(default_factory=list)  # statements of the cited sources that disagree
    evidence: float = 0.0  # the gate's measure: share of the question found in the best sources
    backend: str = "extractive"
    user: str | None = None
    qid: str | None = None
    seconds: float = 0.0

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if not (k == "qid" and v is None)}


@dataclass
class Retrieved:
    """What retrieval gave, sent before the answer so a caller can audit an answer cut short."""

    query: str
    hits: list[Hit]


def answer_stream(
    retriever: HybridRetriever,
    settings: AnswerSettings,
    question: str,
    groups: tuple[str, ...],
    *,
    backend: Any = None,
    history: list[dict] | None = None,
    top_k: int | None = None,
    conflicts: list | None = None,
) -> Generator[tuple[str, Any], None, None]:
    """("retrieved", Retrieved), then ("delta", text) pieces of the raw answer, then ("done", AskResult).

    `groups` are the asker's access groups, exactly as retrieval applies them (callers add "all").
    `backend` is a generative backend with `stream(messages)`, or None for the extractive answer.
    `conflicts` are the KB's conflicting statements (kofin.serve.conflicts), or None.
    """
    started = time.time()
    question = clean_text(question).strip()
    rewritten = rewrite_question(question, history or [], retriever, backend, groups)
    query = rewritten or question
    hits = retriever.search(query, groups, top_k or settings.retrieval.top_k)
    asked = _asked(question, rewritten, history)  # what kind of value the user wants
    sibling = value_sibling(retriever, query, asked, hits, groups, typed=question if rewritten else None)
    hits = _with_continuations(retriever, hits + ([sibling] if sibling else []))
    yield "retrieved", Retrieved(query, hits)
    sources = [Source(i, h) for i, h in enumerate(hits, 1)]
    result = AskResult(question, NO_ANSWER, [], backend=settings.generation.backend, rewritten_query=rewritten)
    result.evidence = evidence(retriever, query, hits) if hits else 0.0
    gated = result.evidence < settings.min_coverage  # the gate's refusal says nothing more than NO_ANSWER
    result.refusal = None if gated else _scope_refusal(retriever, question, query, hits)
    if not gated and result.refusal is None:
        pieces = []
        if backend is None:
            # Extractive answers are ready at once; sent line by line like generated text.
            raw = extractive_answer(
                retriever, query, sources, settings.max_sentences, asked=asked, typed=question if rewritten else None
            )
            stream: Iterator[str] = iter(raw.splitlines(keepends=True))
        else:
            stream = backend.stream(
                build_messages(question if rewritten is None else f"{query}\n(원래 질문: {question})", sources)
            )
        for piece in stream:
            pieces.append(piece)
            yield "delta", piece
        check = verify_citations("".join(pieces), [s.text for s in sources], settings.min_support)
        result.answer = check.text or NO_ANSWER
        result.cited, result.removed_citations = check.cited, check.removed
        result.flagged = [asdict(f) for f in check.flagged]
        result.found = result.answer != NO_ANSWER
    else:
        result.found = False
    if result.found:
        result.sources = [_source_json(s, s.number in result.cited) for s in sources]
        if result.evidence < settings.confident_coverage:
            result.caveat = WEAK_EVIDENCE
        result.conflicts = _disagreements(conflicts, sources, result.cited)
        if result.conflicts:
            result.caveat = SOURCES_DISAGREE
    result.seconds = round(time.time() - started, 3)
    yield "done", result


def answer_question(
    retriever: HybridRetriever | Path,
    settings: AnswerSettings | None,
    question: str,
    groups: tuple[str, ...],
    *,
    backend: Any = None,
    history: list[dict] | None = None,
    top_k: int | None = None,
    conflicts: list | None = None,
) -> AskResult:
    """The whole answer at once (see `answer_stream`). `retriever` may be a KB folder (opened with
    its conflict list, serve/public.py); `settings` None means the default AnswerSettings."""
    if not isinstance(retriever, HybridRetriever):
        from kofin.serve.public import open_kb

        retriever, found = open_kb(Path(retriever))
        conflicts = found if conflicts is None else conflicts
    settings = settings or AnswerSettings()
    for kind, value in answer_stream(
        retriever, settings, question, groups, backend=backend, history=history, top_k=top_k, conflicts=conflicts
    ):
        if kind == "done":
            return value
    raise AssertionError("answer_stream ended without a result")  # it always ends with "done"


def _asked(question: str, rewritten: str | None, history: list[dict] | None) -> str:
    """What the user asks for: the question, or for a follow-up that names no kind of value and no
    predicate of its own ("카드론은요?") the earlier question's ("현금서비스 한도는 얼마예요?") too."""
    if rewritten is None or asked_kinds(question) or not keeps_earlier_ask(question):
        return question
    earlier = user_turns(history or [])
    return f"{earlier[-1]} {question}" if earlier else question


def _scope_refusal(retriever: HybridRetriever, question: str, query: str, hits: list[Hit]) -> str | None:
    """Why the KB cannot answer a question its sources seem to cover, said to the user; None if it can.
    A teller told "this KB has no 케이뱅크 documents" knows to look elsewhere, not to rephrase."""
    if asks_live_value(question):
        return (
            "실시간 값(오늘 환율, 현재 금리, 대기 인원 등)은 문서에 없습니다. 고시 화면이나 업무 시스템에서 확인하세요."
        )
    if asks_own_record(question):
        return "고객 개인의 계좌·거래·신용 정보는 문서에 없습니다. 업무 시스템에서 조회하세요."
    law = unknown_law(retriever, query)
    if law:
        return f"이 지식베이스에는 {law}의 조문이 없습니다."
    name = unknown_name(retriever, query, hits)
    if name:
        return f"‘{name}’에 대한 문서가 이 지식베이스에 없습니다 (다른 기관·상품·지점일 수 있습니다)."
    words = off_topic(retriever, question)
    if words:
        return f"이 지식베이스가 다루지 않는 내용입니다: {', '.join(words)}."
    return None


def asks_live_value(question: str) -> bool:
    """Today's exchange rate, the current base rate, a live price: documents hold only examples."""
    return any(_LIVE.search(s) and not _POLICY.search(s) for s in asked_sentences(question))  # not a story's 오늘


def asks_own_record(question: str) -> bool:
    """A request to look up the asker's own account, balance or score: no document holds it."""
    return bool(_MINE.search(question) and _LOOK_UP.search(question) and _RECORD_VALUE.search(question))


def _with_continuations(retriever: HybridRetriever, hits: list[Hit]) -> list[Hit]:
    """Each hit whose text points at a table or list that the chunker put in the next chunk of the
    same document and section ("아래의 중도해지이율을 적용한다." + the table) carries that chunk too,
    which is then not shown again on its own, wherever it ranked."""
    chunks = retriever.kb.chunks

    def continues(h: Hit) -> bool:
        nxt = chunks[h.index + 1] if h.index + 1 < len(chunks) else None
        c = h.chunk
        return (
            nxt is not None
            and nxt["doc_id"] == c["doc_id"]
            and nxt["section"] == c["section"]
            and bool(POINTS_AT_LIST.search(c["text"]))
            and bool(_LIST_START.match(nxt["text"].lstrip()))
        )

    carriers = {h.index for h in hits if continues(h)}
    out: list[Hit] = []
    placed: set[int] = set()
    for h in hits:
        # the pair takes the better rank of the two ("the table" may rank above "아래의 …")
        carrier = h.index if h.index in carriers else h.index - 1 if h.index - 1 in carriers else None
        if carrier is None:
            out.append(h)
        elif carrier not in placed:
            placed.add(carrier)
            c = chunks[carrier]
            out.append(Hit(carrier, h.score, dict(c, text=f"{c['text']}\n{chunks[carrier + 1]['text']}")))
    return out


def _source_json(src: Source, cited: bool) -> dict:
    c = src.hit.chunk
    out = {
        "n": src.number,
        "id": c["doc_id"],
        "chunk_id": c["chunk_id"],
        "title": c["title"],
        "section": c["section"],
        "page": c["page"],
        "effective": c.get("effective"),
        "score": round(src.hit.score, 6),
        "text": c["text"],
        "cited": cited,
    }
    flagged = suspicious_sentences(c["text"])
    if flagged:
        out["suspicious"] = flagged
    return out


def _disagreements(conflicts: list | None, sources: list[Source], cited: list[int]) -> list[dict]:
    """Conflicts with a statement in a cited source and another in any shown source."""
    if not conflicts or not cited:
        return []
    from kofin.serve.conflicts import conflicts_among

    shown = {s.hit.chunk["chunk_id"] for s in sources}
    cited_ids = {sources[n - 1].hit.chunk["chunk_id"] for n in cited}
    return [
        c.to_json() for c in conflicts_among(conflicts, shown) if any(st.chunk_id in cited_ids for st in c.statements)
    ]
