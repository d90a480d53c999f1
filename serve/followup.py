"""Follow-up questions: "그럼 중도해지하면요?" asked after a question about a deposit means the deposit.

Run as: a library; the answer path (serve/respond.py) calls `rewrite_question` before retrieval.

A question that names a topic of its own (a word few document titles carry, which the conversation
has not used: 리볼빙, ISA, 보이스피싱) is a new question. Otherwise a follow-up is elliptical when it
opens with a connective (그럼, 그러면, 그건 …), is short and ends in a bare "…은요?/는요?", or has
almost no content words of its own; and a fuller one ("군대 다녀온 고객은요?", "거절당하면 언제쯤 다시
넣는 게 좋아요?" say who or what happens, not which product) carries the earlier topic when the
best sources cover it better with it than without. Then:
- extractive backend: the topic of the conversation (content words of the earlier user turns,
  latest first, that the follow-up does not already have) is put in front of the follow-up;
- generative backend: the model is asked to rewrite the follow-up as a standalone question, and
  the extractive rewrite is used when its reply is empty or implausible.
History is text only: it changes the query, never the access groups retrieval applies.
"""

from __future__ import annotations

import re
from itertools import pairwise
from typing import Any

from kofin.data_ko.korean import QUESTION_WORDS, clean_text, morpheme_terms, tokenize

# What was asked about the topic (its rate, limit, period...), not the topic itself: the follow-up
# asks something else about the same thing, so these are not carried over.
_ATTRIBUTE = re.compile(
    r"^(금리|이율|이자|이자율|수수료|수수료율|금액|한도|기간|기한|조건|요건|대상|자격|서류|방법|절차|나이|연령|비용|최대|최소|최고|최저|가입|신청|얼마)$"
)

_CONNECTIVE = re.compile(
    r"^(그럼|그러면|그렇다면|그런데|근데|그건|그거|그것|그게|그때|그\s*경우|이\s*경우|그\s*상품|이\s*상품|이건|이거|그리고|또|또는|"
    r"만약|만일|혹시|그\s*외|그\s*밖|반대로|아니면|그\s*다음|그다음)"
)
# "같은 기한이에요?", "마찬가지예요?": compared with what the conversation said. Not when the
# question names what it compares with ("신용대출과 마찬가지로", "본인과 같은 주소여야").
_ANAPHORA = re.compile(
    r"(?<!과 )(?<!와 )(?<!처럼 )(?<!하고 )(?<!랑 )"
    r"((같은|똑같은|동일한)\s*\S+?(이에요|예요|인가요|이야|일까요|이죠|이지)\s*[?？]"
    r"|마찬가지(예요|에요|인가요|야|죠|일까요)?\s*[?？]|똑같아요\s*[?？]|같아요\s*[?？]|같나요)"
)
_BARE_TAIL = re.compile(r"(은|는|이|가|도|면|이면|라면)?\s*(요|용|여|염)?\s*[?？]*\s*$")
# "중도해지하면요?": a condition with no predicate of its own asks what the earlier question asked
_BARE_CONDITION = re.compile(r"(이면|라면|면|이라면)\s*(요|용|여|염)?\s*[?？]*\s*$")
MAX_TOPIC_TERMS = 6
MAX_HISTORY_TURNS = 3  # earlier user turns read for the topic

REWRITE_PROMPT = (
    "다음 대화의 마지막 질문을 앞의 대화 없이도 이해되는 하나의 완전한 질문으로 다시 쓰세요. "
    "상품명·업무명 등 생략된 대상을 채우고, 질문의 뜻은 바꾸지 마세요. 다시 쓴 질문 한 줄만 출력하세요."
)


# "그 수수료는 얼마예요?", "외국인도 이 통장 만들 수 있어요?": a demonstrative before a noun points at
# what the conversation named, wherever it stands. Kiwi reads a sentence-initial 이 as an
# interjection at times ("이 카드 연회비는?").
_DEMONSTRATIVES = frozenset({"그", "이", "저", "그런", "이런", "저런", "그러한", "이러한"})


def points_back(question: str) -> bool:
    tokens = tokenize(question)
    return any(
        t.form in _DEMONSTRATIVES
        and t.tag in ("MM", "IC")
        and nxt.tag in ("NNG", "NNP", "NNB")
        and nxt.start == t.end + 1
        for t, nxt in pairwise(tokens)
    )


def is_elliptical(question: str) -> bool:
    own = [t for t in morpheme_terms(question) if t not in QUESTION_WORDS and len(t) > 1]
    if _CONNECTIVE.match(question.strip()) or _ANAPHORA.search(question) or points_back(question):
        return True
    short = len(question.split()) <= 4
    return len(own) <= 1 or (short and len(own) <= 2 and bool(_BARE_TAIL.search(question)))


def keeps_earlier_ask(question: str) -> bool:
    """Whether a follow-up asks what the earlier question asked: it ends on a bare topic
    ("마이너스통장은요?", "카드론도요?", "체크카드요?") or condition ("중도해지하면요?"), with no
    predicate of its own ("외국인도 돼요?" asks a yes or no of its own)."""
    if _BARE_CONDITION.search(question.strip()):
        return True
    tokens = [t for t in tokenize(question) if t.tag not in ("SF", "SP", "SS", "SE", "SO", "SW")]  # not punctuation
    # past the particles and the polite 요 ("은요", "도요", "이요" read as copula + 요)
    while tokens and (tokens[-1].tag.startswith("J") or tokens[-1].tag == "VCP" or tokens[-1].form in _POLITE):
        tokens.pop()
    return bool(tokens) and tokens[-1].tag in ("NNG", "NNP", "NNB", "NR", "NP", "SL", "SN", "XSN")


_POLITE = frozenset({"요", "용", "여", "염", "에요", "예요", "이에요"})


# A title word is a topic's name when few documents' titles carry it: 가람, 안내, 상품설명서 or a
# statute's 법 name every article repeats name no topic of their own.
MAX_TITLE_SHARE = 0.05
MIN_TITLE_DOCS = 3  # ... but in a small KB a word in up to 3 titles still names its documents


def topic_names(kb: Any) -> frozenset[str]:
    """Content words of the KB's document titles that few titles share (made once per KB)."""
    limit = max(MIN_TITLE_DOCS, MAX_TITLE_SHARE * kb.n_docs)
    return kb.derived(
        "topic names",
        lambda: frozenset(
            t
            for t, n in kb.title_terms.items()
            if n <= limit and len(t) > 1 and t not in QUESTION_WORDS and not _ATTRIBUTE.match(t)
        ),
    )


def new_topics(question: str, history: list[dict], kb: Any) -> set[str]:
    """The document topics (title words) the question names that the conversation has not."""
    earlier = {t for turn in user_turns(history) for t in morpheme_terms(turn)}
    names = topic_names(kb)
    return {t for t in morpheme_terms(question) if t in names and t not in earlier}


def stays_on_topic(retriever: Any, with_topic: str, topic: list[str], named: set[str], groups: tuple[str, ...]) -> bool:
    """Whether, with the conversation's topic, the best source is in the document the conversation
    is about (its topic's best) and names every one of the follow-up's new topics
    (`named`). "외국인은?" after 비대면 계좌개설 finds that document's rules for foreigners; "청년
    적금은요?" after a deposit question finds another product's."""
    joined = retriever.search(with_topic, groups, 1)
    before = retriever.search(" ".join(topic), groups, 1)  # its topic, not its last turn ("미성년자는요?")
    if not joined or not before or joined[0].chunk["doc_id"] != before[0].chunk["doc_id"]:
        return False
    c = joined[0].chunk
    return named <= set(morpheme_terms(f"{c['title']} {c['section']} {c['text']}"))


def topic_keeps_question(
    retriever: Any, question: str, with_topic: str, topic: list[str], groups: tuple[str, ...]
) -> bool:
    """Whether the sources found with the conversation's topic answer the conversation at least as
    well as those found without: both are scored against one target, the follow-up's own words in full and
    the topic's at `STORY_WEIGHT` (a longer query is not penalised for the topic words it adds)."""
    from kofin.serve.answer import STORY_WEIGHT, weighted_coverage  # answer.py does not import this one

    own = set(morpheme_terms(question)) - QUESTION_WORDS
    weights = {t: 1.0 for t in own} | {t: STORY_WEIGHT for t in topic if t not in own}

    def covered(query: str) -> float:
        texts = (
            f"{h.chunk['title']} {h.chunk['section']} {h.chunk['text']}" for h in retriever.search(query, groups, 3)
        )
        return max((weighted_coverage(retriever, weights, text) for text in texts), default=0.0)

    return covered(with_topic) >= covered(question)


def topic_raises_evidence(retriever: Any, question: str, with_topic: str, groups: tuple[str, ...]) -> bool:
    """Whether the best sources cover the follow-up better with the conversation's topic than without
    (the gate's measure, each query against its own sources): a full-form follow-up ("군대 다녀온
    고객은요?") carries the topic only then."""
    from kofin.serve.answer import evidence  # answer.py is the gate's module; it does not import this one

    def covered(query: str) -> float:
        return evidence(retriever, query, retriever.search(query, groups, 3))

    return covered(with_topic) > covered(question)


def user_turns(history: list[dict]) -> list[str]:
    """The earlier user messages, cleaned, the last few, oldest first."""
    turns = [
        clean_text(str(m.get("content") or "")) for m in history if isinstance(m, dict) and m.get("role") == "user"
    ]
    return [t for t in turns if t.strip()][-MAX_HISTORY_TURNS:]


def topic_of(history: list[dict], question: str) -> list[str]:
    """Content words of the earlier user turns (latest first) that the question lacks."""
    have = set(morpheme_terms(question))
    topic: list[str] = []
    for turn in reversed(user_turns(history)):
        for term in morpheme_terms(turn):
            # One-syllable verb stems (받, 넣) carry no topic; nouns and compounds do.
            if (
                len(term) > 1
                and term not in QUESTION_WORDS
                and term not in have
                and term not in topic
                and not _ATTRIBUTE.match(term)
            ):
                topic.append(term)
        if len(topic) >= MAX_TOPIC_TERMS:
            break
    return topic[:MAX_TOPIC_TERMS]


def rewrite_question(
    question: str,
    history: list[dict],
    retriever: Any = None,
    backend: Any = None,
    groups: tuple[str, ...] = ("all",),
) -> str | None:
    """The query to retrieve with when `question` is a follow-up; None to use it as is.

    A question naming a topic of its own (a title word the conversation has not) is a new question,
    unless it is elliptical and, with the topic, finds the conversation's document naming it
    ("외국인은요?"). Otherwise an elliptical one carries the topic; any other carries it only when that
    makes the best sources cover it better. Every search uses the asker's `groups` (history never
    widens what they see)."""
    if not history or not user_turns(history):
        return None
    topic = topic_of(history, question)
    if not topic:
        return None
    extractive = f"{' '.join(topic)} {question}"
    named = new_topics(question, history, retriever.kb) if retriever is not None else set()
    if named:
        # "외국인은?" names a topic yet only changes the earlier question's condition: carried when
        # the topic's best source still names it ("isa 한도는?" after a mortgage question is new)
        if not (
            is_elliptical(question)
            and (
                _BARE_CONDITION.search(question.strip()) or stays_on_topic(retriever, extractive, topic, named, groups)
            )
            and topic_keeps_question(retriever, question, extractive, topic, groups)
        ):
            return None
    elif not is_elliptical(question) and (
        retriever is None or not topic_raises_evidence(retriever, question, extractive, groups)
    ):
        return None
    if backend is None:
        return extractive
    return _generated_rewrite(backend, history, question) or extractive


def _generated_rewrite(backend: Any, history: list[dict], question: str) -> str | None:
    lines = [
        f"{'질문' if m.get('role') == 'user' else '답변'}: {clean_text(str(m.get('content') or ''))[:500]}"
        for m in history[-2 * MAX_HISTORY_TURNS :]
        if isinstance(m, dict) and m.get("role") in ("user", "assistant")
    ]
    messages = [
        {"role": "system", "content": REWRITE_PROMPT},
        {"role": "user", "content": "\n".join(lines) + f"\n마지막 질문: {question}\n다시 쓴 질문:"},
    ]
    try:
        reply = "".join(backend.stream(messages))
    except Exception:  # noqa: BLE001 - a failed rewrite falls back to the extractive one; the answer call reports backend errors
        return None
    first = next((line.strip() for line in reply.splitlines() if line.strip()), "")
    first = re.sub(r"^(다시\s*쓴\s*질문|질문)\s*[:：]\s*", "", first)
    # A rewrite should be a question about as long as the follow-up plus its topic, not an answer.
    if not first or len(first) > 4 * len(question) + 200 or "[" in first:
        return None
    return first
