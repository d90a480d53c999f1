"""The extractive answerer: the source sentences (and table rows) that answer the question, each
quoted with its [n].

Run as: a library; the answer path (serve/respond.py) calls `extractive_answer` when no
generative backend is configured.

Staff ask for a fact: a rate, an amount, a period, an age. The sentence that shares the most
words with the question is often a definition or a pointer ("아래 기준금액 이상이면…") rather
than the number asked for, so candidates are scored by word overlap and then:
- a candidate that holds a value of the kind asked for (rate, amount, period, age, count) is preferred,
  one without any is held back; the kind comes from the question's interrogative (몇 년, 얼마 안에,
  몇 시), and in a long question the asking sentence's words count more than the story's;
- a Markdown table row is a candidate of its own, read with its header ("6개월 이상 12개월 미만:
  만기일시지급식 2.60"), and a sentence that points at a table or list quotes its best rows;
- questions (FAQ headings "Q3. …?"), headings and sentences addressed to an assistant are never
  quoted; definitions and worked examples ("예시: 환율이 1,400원이면…") are held back unless one
  was asked for.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from kofin.data_ko.korean import QUESTION_WORDS, asking_sentence, morpheme_terms, morpheme_terms_many, split_sentences
from kofin.serve.answer import LIST_MARKER, MIN_PART_TERMS, NO_ANSWER, STORY_WEIGHT, Source, is_injection
from kofin.serve.followup import topic_names
from kofin.serve.retrieve import Hit, HybridRetriever

# What kind of value a question asks for, and what such a value looks like in a document. The
# interrogative decides, the last one of the asking sentence: "나이에서 빼 주는 병역 기간은 최대 몇
# 년까지요?" asks for a period whatever its topic words say, "몇 살까지" for an age, not the period its
# 까지 suggests. A bare 얼마 takes its kind from the nearest topic word before it ("금리가 얼마" is a
# rate, "금리 적용 기간은 얼마" a period, otherwise an amount); a question with no interrogative from
# its topic words, a search-box question's last word first ("체크카드 한도 증액 적용 시점" asks for the
# 시점). 몇 분 / 몇 주 are minutes and weeks only before a word of time (걸려요, 만에, 후): "가족 몇
# 분까지" counts people, "주식 몇 주" shares. A number asked of a phone line is a phone number.
_TIME_AFTER = r"\s*(걸|만에|안에|이내|후|뒤|동안|전|마다|지나)"
_PHONE = re.compile(
    r"(전화|연락처|콜센터|고객센터|핫라인|번호)\S*\s*(\S+\s+){0,3}?\S*(몇\s*번|뭐|무엇|어디|알려)"
    r"|번호\S*\s*(\S+\s+){0,2}?\S*있"
)
_INTERROGATIVES = [
    ("age", re.compile(r"몇\s*(살|세)")),
    ("rate", re.compile(r"몇\s*(%|퍼센트|프로)")),
    (
        "period",
        re.compile(
            r"몇\s*(일|개월|달|년|시간|영업일|시)|몇\s*(분|주)(?=" + _TIME_AFTER + r")|며칠|언제"
            r"|얼마\s*(쯤|정도)?\s*(동안|만에|안에|뒤|후|이내|지나|있다가)|얼마나\s*(오래|걸|지나|있어야|남|안\s*(쓰|써|하|해|되|돼|받|내|갚|찾|넣))"
        ),
    ),
    ("amount", re.compile(r"몇\s*(원|만원|천만원|억|만\s*원|천\s*원|불|달러)")),
    ("count", re.compile(r"몇\s*(개|명|건|번|회|장|좌|계좌|곳|종류|가지|분|주)")),
    # kind from the topic; not "얼마 전에" (a while ago) nor "얼마나 안전한가요" (a degree)
    ("", re.compile(r"얼마(?!\s*전)(?!나\s*(안전|위험|좋|나쁘|중요|어렵|쉽|편하|복잡|자주))")),
]
_TOPICS = {
    "age": re.compile(r"나이|연령|살\s*(이상|부터|까지)|세\s*(이상|미만|부터)|고령"),
    "period": re.compile(r"기간|기한|시점|시각|마감|걸리|걸려"),
    "rate": re.compile(r"금리|이율|이자율|수수료율|요율|비율|우대율|퍼센트|프로(?!그램|세스|필|모션)|이자\s*얼마"),
    "count": re.compile(r"(계좌|카드|통장|건|횟수|인원)\s*수|개수|횟수"),
    "amount": re.compile(r"금액|한도|수수료|비용|요금|최대|최고|최소|최저"),
}
_FEE = re.compile(r"수수료|보수|위약금|요금")
_TOPIC_ORDER = ("age", "rate", "period", "count", "amount")  # most specific first
FOLLOW_UP_OWN_TERMS = 2
_ASKS_NUMBER = re.compile(r"몇|얼마|%|퍼센트|프로")
# Words that suggest a period only when nothing else is asked ("기간", "만기", "부터", "까지").
_WEAK_PERIOD = re.compile(r"기간|기한|만기|시점|이내|동안|부터|까지|몇\s*회")
_VALUES = {
    # a statute states a share as "100분의 10", "1천분의 5"
    "rate": re.compile(r"\d+(?:\.\d+)?\s*(%|퍼센트|%p)|연\s*\d+(?:\.\d+)?|\d+\.\d+|\d+\s*천?\s*분의\s*\d+"),
    # "5천만원", "1억 5천만 원": units stack
    "amount": re.compile(r"\d[\d,.]*\s*(천|백|만|억|조)*\s*(원|달러|불|USD|위안|엔)|\d+\s*(천|만|억)\b|무료|면제|없음"),
    "period": re.compile(r"\d+\s*(영업일|일|개월|년|주|시간|분|회)|\d{1,2}:\d{2}|(매월|매년|익월|당일|즉시|만기일)"),
    "age": re.compile(r"(만\s*)?\d+\s*세"),
    "count": re.compile(r"\d[\d,]*\s*(천|만)?\s*(개|명|인|건|번|회|장|좌|계좌|곳|종류|가지|주)"),
    "phone": re.compile(r"\+?\d{1,4}-\d{2,4}-\d{3,4}(-\d{4})?|\d{4}-\d{4}"),
}
_DEFINITION = re.compile(r"(이?란|라\s*함은|라고\s*한다)\s.*(말한다|뜻한다|의미한다|이다)|(을|를)\s*말한다[.]?$")
_ASKS_DEFINITION = re.compile(r"뜻|의미|무엇|뭐|뭔|이란|란\s*\??$|개념|정의")
# "다음 사유가 생기면" points at what follows; "다음 달에" is next month
POINTS_AT_LIST = re.compile(
    r"아래|다음과\s*같|다음의|다음\s*(표|각|기준|서류|항목|사유|경우|요건|조건|사항|내용|순서|절차)|(표|목록)와\s*같"
)
_EXAMPLE = re.compile(r"^\(?(예시|예를\s*들어|예컨대|가령|사례)\b|^\(?예\)|^예\s*[:：]")
_ASKS_EXAMPLE = re.compile(r"예시|예를|사례|계산")
# Steps come together, and so do conditions: but "ISA 가입 자격은?" is not answered by the five steps
# of opening an account that its first step's 자격 matches, so conditions need items that read as ones.
_ASKS_STEPS = re.compile(r"절차|순서|어떻게\s*(해야|하면)")
_ASKS_CONDITIONS = re.compile(r"조건|요건|자격|서류")
_CONDITION_ITEM = re.compile(r"(일|할|받을|있을|없을|될)\s*것|이상|이하|미만|초과|경우|서류|증명서|확인서|신분증|사본")
_MARKUP = re.compile(r"\*\*|__|`")
_HEADING = re.compile(r"^(#{1,6}\s|Q\d+[.)]|\d+(\.\d+)*\.?\s+\S{1,20}$)")
# A statute's editorial notes say when a provision changed, not what it says: "<개정 2016.3.29>",
# "3. 삭제 <2012.12.11>", and an article's bare heading "제43조(상환준비금)".
_AMENDMENT_NOTE = re.compile(
    r"<\s*(개정|신설|전문개정|본조신설|제목개정|타법개정)?\s*[\d.,\s]+>|\[(본조신설|전문개정)[^\]]*\]"
)
_NOTE_ONLY = re.compile(r"^(\d+(의\d+)?\.|[①-⑳]|[가-하]\.)?\s*(삭제)?\s*$|^제\d+조(의\d+)?\s*\([^)]*\)\s*$")


@dataclass
class Candidate:
    number: int  # source number [n]
    pos: int  # position in the source (keeps the quoted order readable)
    text: str  # what is quoted
    terms: set[str]
    rows: list[Candidate]  # for a sentence pointing at a table or list: what follows it
    score: float = 0.0
    context: frozenset[str] = frozenset()  # its document's title and section heading
    siblings: list[Candidate] = field(default_factory=list)  # the other items of its short numbered list


def asked_kinds(question: str) -> set[str]:
    """The kind of value asked for (at most one, or amount-or-rate for a fee), from the asking
    sentence's last interrogative, or failing one from its topic words."""
    asking = asking_sentence(question)
    if _PHONE.search(asking):
        return {"phone"}
    # the asking sentence's, else the earlier sentences' ("…계약금은 얼마나 내야 해요? 집이 한 채
    # 있는 사람은 안 돼요?")
    for text in (asking, question):
        found = [(m.start(), kind) for kind, pattern in _INTERROGATIVES for m in pattern.finditer(text)]
        if found:
            break
    if found:
        # the last interrogative; of two at one place ("몇 시간") the more specific, listed first
        at = max(start for start, _ in found)
        interrogative = next(k for start, k in found if start == at)
        if interrogative:
            return {interrogative}
        bare = _nearest_topic(text[:at]) or _topic(text) or _topic(question)
        if bare not in ("rate", "period", "age") and _FEE.search(asking):
            return {"amount", "rate"}  # "환매수수료가 얼마인가요?": a fee is a sum or a share ("이익금의 50%")
        return {bare if bare in ("rate", "period", "age") else "amount"}
    words = asking.split()
    kind = (_topic(words[-1]) if words else None) or _topic(asking) or _topic(question)
    if kind:
        return {kind}
    return {"period"} if _WEAK_PERIOD.search(asking) else set()


def _nearest_topic(before: str) -> str | None:
    """The kind of the topic word closest before a bare 얼마 ("금리 적용 기간은 얼마" -> period)."""
    last = [(m.end(), kind) for kind in _TOPIC_ORDER for m in _TOPICS[kind].finditer(before)]
    return max(last)[1] if last else None


def _topic(text: str) -> str | None:
    return next((k for k in _TOPIC_ORDER if _TOPICS[k].search(text)), None)


def _table_rows(lines: list[str]) -> list[str]:
    """A Markdown table's data rows, each read with its header: "first cell: header2 cell2, …"."""
    cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines]
    cells = [row for row in cells if not all(re.fullmatch(r":?-{2,}:?", c) or not c for c in row)]
    if len(cells) < 2:
        return [" ".join(c for c in row if c) for row in cells]
    header, rows = cells[0], cells[1:]
    out = []
    for row in rows:
        if len(header) == 2 or len(row) != len(header):
            out.append(": ".join(c for c in row if c))
        else:
            rest = ", ".join(f"{h} {c}" for h, c in zip(header[1:], row[1:], strict=True) if c)
            out.append(f"{row[0]}: {rest}")
    return out


def _pieces(text: str) -> list[tuple[str, bool]]:
    """(sentence or table row, is_list_item) in document order."""
    out: list[tuple[str, bool]] = []
    table: list[str] = []
    for line in text.split("\n") + [""]:
        if line.strip().startswith("|"):
            table.append(line)
            continue
        if table:
            out += [(row, True) for row in _table_rows(table)]
            table = []
        stripped = _AMENDMENT_NOTE.sub("", line).strip()
        if not stripped or _HEADING.match(stripped) or _NOTE_ONLY.match(stripped):
            continue
        item = bool(LIST_MARKER.match(stripped) or re.match(r"^\d+[.)]\s", stripped))
        out += [(_MARKUP.sub("", LIST_MARKER.sub("", s)).strip(), item) for s in split_sentences(stripped)]
    return out


def _candidates(src: Source) -> list[Candidate]:
    out: list[Candidate] = []
    pieces = _pieces(src.text)
    # One analysis call for the source's every piece (a call per sentence was a fifth of the answer's time).
    # A table row under "## 2. 가입 대상" of "청년 희망 적금" says "대상: 만 19세 이상": what it is
    # about is in the title and heading, not the row.
    heading, *terms = morpheme_terms_many(
        [f"{src.hit.chunk['title']} {src.hit.chunk['section']}", *(t for t, _ in pieces)]
    )
    context = frozenset(heading)
    asked_here: frozenset[str] = frozenset()  # an FAQ's question, what the answers under it answer
    for pos, (text, _item) in enumerate(pieces):
        if text.rstrip().endswith(("?", "？")) or re.match(r"^Q\d*[.):]", text):
            asked_here = frozenset(terms[pos])
            continue
        if len(text) < 6 or is_injection(text):
            continue
        cand = Candidate(src.number, pos, text, set(terms[pos]), [], context=context | asked_here)
        if POINTS_AT_LIST.search(text):
            # The list may start a sentence or two later ("…아래의 이율을 적용한다. 기본이율은 …").
            j, prose = pos + 1, 0
            while j < len(pieces) and len(cand.rows) < 12:
                follower, is_item = pieces[j]
                if not is_item:
                    prose += 1
                    if cand.rows or prose > 2:
                        break
                elif not is_injection(follower):
                    cand.rows.append(Candidate(src.number, j, follower, set(terms[j]), [], context=context))
                j += 1
        out.append(cand)
    _link_numbered_lists(out)
    return out


_NUMBERED = re.compile(r"^\d+[.)]\s")
MAX_LISTED_CONDITIONS = 5  # "1. 만 55세 이상일 것 2. 가입 기간이 5년 이상일 것": a short list is one answer


def _link_numbered_lists(cands: list[Candidate]) -> None:
    """Each item of a short numbered list (consecutive pieces "1. …", "2. …") knows the others."""
    runs: list[list[Candidate]] = []
    for cand in cands:
        if _NUMBERED.match(cand.text):
            if runs and runs[-1][-1].pos == cand.pos - 1:
                runs[-1].append(cand)
                continue
            runs.append([cand])
    for run in runs:
        if 2 <= len(run) <= MAX_LISTED_CONDITIONS:
            for cand in run:
                cand.siblings = [c for c in run if c is not cand]


def answer_weights(retriever: HybridRetriever, question: str, typed: str | None = None) -> dict[str, float]:
    """The query's term weights for choosing what answers it: what is asked counts in full, a long
    question's story and a follow-up's carried topic at `STORY_WEIGHT`.

    `question` is the query retrieval ran (a rewritten follow-up includes its topic); `typed` is
    what the user typed when it was rewritten."""
    weights = retriever.query_terms(question)
    own = set(morpheme_terms(typed)) - QUESTION_WORDS if typed else set()
    # "외국인도 돼요?": its one word is a document topic
    names_own_topic = bool(own) and bool(own & topic_names(retriever.kb))
    asking = asking_sentence(question)
    focus = set(morpheme_terms(asking)) - QUESTION_WORDS
    if len(own) >= FOLLOW_UP_OWN_TERMS or names_own_topic:
        # A follow-up's topic ("주택담보대출 최장 기간" + "거치기간은 얼마나?") found the document;
        # which of its sentences answers is for the follow-up's own words to say.
        return {t: w if t in own else w * STORY_WEIGHT for t, w in weights.items()}
    if typed is None and asking != question.strip() and len(focus) >= MIN_PART_TERMS:
        # A story's words ("베트남에 사는 사촌이… 이름 철자가 달라서") match the document's other
        # sentences; what is asked is in the asking sentence, so the rest counts for less.
        # A short one ("몇 시가 기준이에요?") leaves what it is about to the story.
        return {t: w if t in focus else w * STORY_WEIGHT for t, w in weights.items()}
    return weights


def extractive_answer(
    retriever: HybridRetriever,
    question: str,
    sources: list[Source],
    max_sentences: int = 3,
    asked: str | None = None,
    typed: str | None = None,
) -> str:
    """The candidates that best answer `question`, each as "- text [n]", in source order.

    `question` is the query retrieval ran (a rewritten follow-up includes its topic); `asked` is
    what the user typed, which says what kind of value is wanted (default: `question`).
    """
    kb = retriever.kb
    weights = answer_weights(retriever, question, typed)
    kinds = asked_kinds(asked or question)
    wants_definition = bool(_ASKS_DEFINITION.search(asked or question))
    wants_example = bool(_ASKS_EXAMPLE.search(asked or question))

    def idf(term: str) -> float:
        j = kb.bm25_vocab.get(term)
        return float(kb.bm25_idf[j]) if j is not None else 0.0

    def score(cand: Candidate) -> float:
        overlap = sum(w * idf(t) for t, w in weights.items() if t in cand.terms)
        # The title and heading count at half weight, for the candidate's own words to decide.
        overlap += 0.5 * sum(w * idf(t) for t, w in weights.items() if t in cand.context and t not in cand.terms)
        if overlap <= 0:
            return 0.0
        # Long sentences match more words by chance; sqrt length keeps them from winning on size.
        value = overlap / math.sqrt(max(len(cand.terms), 1))
        if kinds:
            holds = any(_VALUES[k].search(cand.text) for k in kinds) or any(
                _VALUES[k].search(r.text) for r in cand.rows for k in kinds
            )
            # An age, or a rate asked as a number ("몇 %", "금리 얼마"), is unmistakable when present;
            # amounts and periods are everywhere, and "어떤 이율이 적용되나요" may be answered in words.
            specific = kinds in ({"age"}, {"count"}, {"phone"}) or (
                kinds == {"rate"} and bool(_ASKS_NUMBER.search(asked or question))
            )
            value *= (2.5 if specific else 1.5) if holds else (0.4 if specific else 0.6)
        if not wants_definition and _DEFINITION.search(cand.text):
            value *= 0.5
        if not wants_example and _EXAMPLE.search(cand.text):
            value *= 0.4  # an illustration's numbers are not the bank's terms
        return value

    scored = []
    for src in sources:
        for cand in _candidates(src):
            cand.score = score(cand)
            if cand.score > 0:
                scored.append(cand)
    if not scored:
        return NO_ANSWER
    scored.sort(key=lambda c: (-c.score, c.number, c.pos))
    # Filler that shares a word or two with the question is not an answer: keep what scores
    # close to the best.
    best = [c for c in scored[:max_sentences] if c.score >= 0.4 * scored[0].score]
    lines: list[tuple[int, int, str]] = []
    asks_steps = bool(_ASKS_STEPS.search(asked or question))
    asks_conditions = bool(_ASKS_CONDITIONS.search(asked or question))
    for cand in best:
        lines.append((cand.number, cand.pos, cand.text))
        listed = [cand, *cand.siblings]
        if cand.siblings and (asks_steps or (asks_conditions and all(_CONDITION_ITEM.search(c.text) for c in listed))):
            # one item of "1. 만 55세 이상일 것 2. 가입 기간이 5년 이상일 것" is half an answer
            lines += [(s.number, s.pos, s.text) for s in cand.siblings]
        if cand.rows:
            for row in _best_rows(cand.rows, score):
                lines.append((row.number, row.pos, row.text))
    seen: set[str] = set()  # a sentence two sources both hold is quoted once, from the first
    out = []
    for number, _pos, text in sorted(lines):
        if text not in seen:
            seen.add(text)
            out.append(f"- {text} [{number}]")
    return "\n".join(out)


def value_sibling(
    retriever: HybridRetriever,
    query: str,
    asked: str,
    hits: list[Hit],
    groups: tuple[str, ...],
    typed: str | None = None,
) -> Hit | None:
    """When the question asks for a value (an age, a rate, an amount, a period) and the best
    document's retrieved chunks hold none of that kind (for an age: whatever they hold), its other
    chunk that does and shares most of what is asked (a long question's story counts less): a
    product sheet states "가입 대상: 만 19세 이상" once, in a chunk
    that says little else the question says ("몇 살까지 가입돼요?")."""
    kinds = asked_kinds(asked)
    if not kinds or not hits:
        return None
    doc = hits[0].chunk["doc_id"]
    shown = {h.index for h in hits}
    holds = lambda text: any(_VALUES[k].search(text) for k in kinds)  # noqa: E731
    # An age is unmistakable: a chunk stating the product's own (가입 대상 만 50세 이상) is worth
    # showing beside a retrieved one that states another rule's (만 65세 이상 비과세종합저축).
    if kinds != {"age"} and any(holds(h.chunk["text"]) for h in hits if h.chunk["doc_id"] == doc):
        return None
    kb, weights = retriever.kb, answer_weights(retriever, query, typed)
    allowed = kb.allowed(groups)
    best, best_overlap = None, 0.0
    for i in kb.doc_rows(doc):
        chunk = kb.chunks[i]
        if i in shown or not allowed[i] or not holds(chunk["text"]):
            continue
        terms = set(morpheme_terms(f"{chunk['title']} {chunk['section']} {chunk['text']}"))
        overlap = sum(w for t, w in weights.items() if t in terms)
        if overlap > best_overlap:
            best, best_overlap = Hit(i, 0.0, chunk), overlap
    return best


def _best_rows(rows: list[Candidate], score) -> list[Candidate]:
    """All of a short list; of a longer one, the rows that match the question best."""
    if len(rows) <= 4:
        return rows
    ranked = sorted(rows, key=lambda r: -score(r))
    top = [r for r in ranked[:3] if score(r) > 0]
    return top or rows[:8]
