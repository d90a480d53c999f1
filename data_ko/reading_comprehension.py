"""Turn document passages into reading-comprehension chats, AdaptLLM style.

Cheng et al., "Adapting Large Language Models via Reading Comprehension" (ICLR 2024): training on
raw domain text teaches knowledge but hurts prompting ability; appending tasks mined from the text
itself keeps both. Here each passage (a section of a knowledge-base document, or a statute article)
becomes one multi-turn chat: the first user turn holds an instruction, the passage and the first
task; the other tasks follow as user/assistant turns. Tasks are mined deterministically in Korean:

    summarize  the lead sentence(s), extractive
    title      the section heading (or the statute's "법 제N조(제목)")
    qa         definitional sentences ("X란 …을 말한다", "X는 …이다"), table rows, numeric facts
    fill_in    a cloze: the passage's most salient term blanked out of one sentence
    keywords   top terms by TF-IDF over all passages of the source, josa stripped

No randomness and no dict-order dependence: the same documents give the same chats, byte for byte.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from kofin.data_ko.corpus import Document

# ---------------------------------------------------------------- Korean text helpers

# Longest first, so "에서는" is stripped before "는". Small on purpose: a morphological analyser
# would do better, but the data builder must stay dependency-free and deterministic.
JOSA = tuple(
    sorted(
        (
            "은",
            "는",
            "이",
            "가",
            "을",
            "를",
            "에",
            "의",
            "와",
            "과",
            "도",
            "로",
            "만",
            "란",
            "으로",
            "에서",
            "에게",
            "에는",
            "까지",
            "부터",
            "보다",
            "처럼",
            "이나",
            "이란",
            "이라",
            "과는",
            "와는",
            "으로서",
            "으로써",
            "으로는",
            "에서는",
            "에서도",
            "에게서",
            "이라는",
            "라는",
            "로서",
            "로써",
            "에도",
            "만큼",
            "이며",
            "이고",
            "에만",
        ),
        key=len,
        reverse=True,
    )
)

# Nouns whose last syllable looks like a particle; stripping it would maim them ("한도" -> "한").
JOSA_PROTECTED_ENDINGS = (
    "한도",
    "제도",
    "정도",
    "용도",
    "연도",
    "속도",
    "매도",
    "결과",
    "효과",
    "평가",
    "대가",
    "원가",
    "시가",
    "주가",
    "단가",
    "물가",
    "증가",
    "추가",
    "부가",
    "차이",
    "나이",
    "동의",
    "합의",
    "주의",
    "정의",
    "이의",
)

STOPWORDS = frozenset(
    (
        "경우",
        "이상",
        "이하",
        "미만",
        "초과",
        "이내",
        "다음",
        "각호",
        "해당",
        "관련",
        "따라",
        "대한",
        "대하여",
        "위하여",
        "위한",
        "통하여",
        "또는",
        "그리고",
        "및",
        "등",
        "수",
        "것",
        "때",
        "중",
        "이후",
        "이전",
        "전후",
        "다만",
        "그밖",
        "그",
        "이",
        "저",
        "각",
        "모든",
        "어느",
        "하나",
        "있는",
        "없는",
        "아니",
        "아니한",
        "본인",
        "같다",
        "정한다",
        "말한다",
        "한다",
        "있다",
        "없다",
        "된다",
        "이다",
        "대통령령",
        "기준",
        "관해",
        "관하여",
        "만큼",
        "높고",
        "낮고",
        "빼고",
        "넘겨",
        "더해",
        "함께",
        "모두",
        "이용해",
    )
)

# Nouns that end like a predicate ("제한" ends like "정한"); they stay terms.
NOT_PREDICATES = ("제한", "권한", "기한", "상한", "하한", "시한", "최소한", "분할", "역할")

# Verb and adjective endings: tokens that end so are predicates, not terms.
_PREDICATE_ENDINGS = re.compile(
    r"(?:다|하고|하여|하며|하면|해야|하는|되는|되어|되며|되면|된|한|할|하지|않는|않은|받아|받은|받는|"
    r"있는|없는|이며|이고|이면|려는|려면|으면|면서|지만|거나|도록|어야|아야|습니다|니다|세요|해서|해도|"
    r"기고|되고|지고|받고|주고|내고|두고|하게|되게|없이)$"
)

_ONE_SYLLABLE_NOUN_PARTICLES = set("에을를은는와")
_HANGUL = re.compile(r"[가-힣]")
_TOKEN = re.compile(r"[가-힣A-Za-z0-9]+")
_DIGIT_NAMES_WITH_BATCHIM = set("013678")  # 영 일 삼 육 칠 팔 end in a consonant


def has_batchim(word: str) -> bool:
    """Whether `word` ends in a consonant, read as Korean (digits and acronyms included)."""
    word = re.sub(r"\s*\([^)]*\)\s*$", "", word).rstrip(" \"'”’」』]")
    if not word:
        return False
    last = word[-1]
    if "가" <= last <= "힣":
        return (ord(last) - 0xAC00) % 28 != 0
    if last.isdigit():
        return last in _DIGIT_NAMES_WITH_BATCHIM
    return last.lower() in "lmnr"


def josa(word: str, pair: str) -> str:
    """`word` plus the right particle of `pair` ("은/는", "이/가", "을/를", "과/와", "이란/란")."""
    with_batchim, without = pair.split("/")
    return word + (with_batchim if has_batchim(word) else without)


def strip_josa(token: str) -> str:
    if token.endswith(JOSA_PROTECTED_ENDINGS):
        return token
    for particle in JOSA:
        if token.endswith(particle) and len(token) - len(particle) >= 2:
            return token[: -len(particle)]
    return token


def _is_predicate(token: str) -> bool:
    return bool(_PREDICATE_ENDINGS.search(token)) and not token.endswith(NOT_PREDICATES)


def extract_terms(text: str) -> list[str]:
    """Content terms of `text` in order: josa stripped, predicates, numbers and stopwords dropped."""
    terms = []
    for token in _TOKEN.findall(text):
        if any(ch.isdigit() for ch in token):
            continue
        term = strip_josa(token)
        if _is_predicate(token) or _is_predicate(term):
            continue
        hangul = len(_HANGUL.findall(term))
        if hangul:
            if hangul < 2:
                continue
            if len(term) == 2 and term[-1] in _ONE_SYLLABLE_NOUN_PARTICLES:
                continue  # "번에", "때는": a one-syllable noun and its particle, not a term
        elif len(term) < 2 or not term.isupper():  # Latin: acronyms such as COFIX, DSR only
            continue
        if term not in STOPWORDS and term not in JOSA:
            terms.append(term)
    return terms


# ---------------------------------------------------------------- sentences

# A sentence ends at . ? ! after a letter, %, or a closing bracket, and before whitespace. A
# period after a digit ("1.5%", "2026. 3. 1.") never ends one.
_SENTENCE_END = re.compile(r"(?<=[가-힣A-Za-z%)\]\"”’'」』])[.?!。]+[\"”’'」』)\]]*(?=\s|$)")
_ITEM_MARKER = re.compile(r"^\s*(?:[-*•·]|\d{1,2}[.)]|[①-⑳]|[가-하][.)]|\d+\)|\(\d+\))\s+")
_TABLE_SEPARATOR = re.compile(r"^\|?\s*:?-{2,}")


@dataclass(frozen=True)
class Sentence:
    text: str
    kind: str  # "prose" | "item" | "table"


def split_sentences(text: str) -> list[Sentence]:
    """Sentences of a passage; list items and table rows stay whole lines."""
    out: list[Sentence] = []
    for raw in text.splitlines():
        line = raw.strip().lstrip("> ")
        if not line:
            continue
        if line.startswith("|"):
            if not _TABLE_SEPARATOR.match(line):
                out.append(Sentence(line, "table"))
            continue
        kind = "prose"
        marker = _ITEM_MARKER.match(line)
        if marker:
            line, kind = line[marker.end() :], "item"
        out.extend(Sentence(piece, kind) for piece in _split_at_sentence_ends(line))
    return out


def _split_at_sentence_ends(line: str) -> list[str]:
    pieces, start = [], 0
    for m in _SENTENCE_END.finditer(line):
        pieces.append(line[start : m.end()].strip())
        start = m.end()
    pieces.append(line[start:].strip())
    return [p for p in pieces if len(p) > 1]


def table_rows(sentences: Sequence[Sentence]) -> list[tuple[list[str], list[str]]]:
    """(header cells, row cells) for every body row of every Markdown table, in order."""
    out: list[tuple[list[str], list[str]]] = []
    header: list[str] | None = None
    previous = "prose"
    for s in sentences:
        if s.kind != "table":
            header, previous = None, s.kind
            continue
        cells = [c.strip() for c in s.text.strip().strip("|").split("|")]
        if previous != "table" or header is None:
            header = cells
        else:
            out.append((header, cells))
        previous = "table"
    return out


# ---------------------------------------------------------------- passages

_AMENDMENT_NOTE = re.compile(
    r"\s*(?:<(?:개정|신설|삭제|타법개정|일부개정|전문개정)[^>]*>|<\d{4}\.\s?\d{1,2}\.\s?\d{1,2}\.?>"
    r"|\[(?:전문개정|본조신설|제목개정|본조제목개정|종전|시행일|한정위헌|단순위헌|헌법불합치)[^\]]*\])"
)
_BOLD = re.compile(r"\*\*(.+?)\*\*")
_DELETED_LINE = re.compile(r"^\s*(?:[①-⑳]|\d+\.|[가-하]\.)?\s*삭제\s*$")
_HEADING_NUMBER = re.compile(r"^(?:Q\d+\.|[A-Z]\.|\d+(?:\.\d+)*\.?)\s+")


@dataclass(frozen=True)
class Passage:
    doc_id: str
    doc_title: str
    heading: str  # the section heading without its number, or the document title
    text: str
    index: int  # 1-based position among the document's passages


def clean_passage_text(text: str) -> str:
    """Drop statute amendment notes (<개정 2010.3.12>), deleted items and Markdown bold: noise
    for every task, and answers must be verbatim spans of the text the model reads."""
    lines = []
    for line in _BOLD.sub(r"\1", _AMENDMENT_NOTE.sub("", text)).splitlines():
        if _DELETED_LINE.match(line):
            continue
        lines.append(line.rstrip())
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _cut(text: str, max_chars: int) -> list[str]:
    """Pieces of at most max_chars, cut at line ends, then sentence ends, then anywhere."""
    pieces: list[str] = []
    buf = ""
    for line in text.splitlines():
        units = [line] if len(line) <= max_chars else _split_at_sentence_ends(line) or [line]
        for unit in units:
            while len(unit) > max_chars:
                pieces.append(unit[:max_chars])
                unit = unit[max_chars:]
            if buf and len(buf) + 1 + len(unit) > max_chars:
                pieces.append(buf)
                buf = ""
            buf = f"{buf}\n{unit}" if buf else unit
    if buf:
        pieces.append(buf)
    return [p.strip() for p in pieces if p.strip()]


def extract_passages(doc: Document, min_chars: int, max_chars: int) -> list[Passage]:
    passages: list[Passage] = []
    for section in doc.sections():
        heading = _HEADING_NUMBER.sub("", section.heading).strip() or doc.title
        for piece in _cut(clean_passage_text(section.text), max_chars):
            if len(piece) >= min_chars:
                passages.append(Passage(doc.doc_id, doc.title, heading, piece, len(passages) + 1))
    return passages


# ---------------------------------------------------------------- keyword statistics


class TermStats:
    """Document frequencies of terms over a corpus of passages, for TF-IDF keywords."""

    def __init__(self, passages: Iterable[Passage]):
        self.df: Counter[str] = Counter()
        self.n = 0
        for p in passages:
            self.n += 1
            self.df.update(set(extract_terms(p.text)))

    def keywords(self, text: str, k: int) -> list[str]:
        terms = extract_terms(text)
        tf = Counter(terms)
        first = {t: i for i, t in reversed(list(enumerate(terms)))}
        score = {t: c * (math.log((self.n + 1) / (self.df[t] + 1)) + 1.0) for t, c in tf.items()}
        # Ties break on first position in the text, never on set or dict order.
        return sorted(score, key=lambda t: (-score[t], first[t]))[:k]


# ---------------------------------------------------------------- tasks


@dataclass(frozen=True)
class Task:
    kind: str  # summarize | title | qa | fill_in | keywords
    question: str
    answer: str
    evidence: str  # the passage text the answer rests on (a sentence, table row, term or heading)


_LABEL = re.compile(r"^[가-힣A-Za-z]{1,8}\s*[:：]\s*")
_DEFINITION = re.compile(
    r"^[\"“'‘「]?(?P<term>[^\"”'’」,.:()]{1,30}?)[\"”'’」]?(?:\s*\([^)]{1,40}\))?[\"”'’」]?\s*"
    r"(?:이란|란|이라 함은|라 함은)\s+.+(?:말한다|뜻한다|의미한다|이다)[.)\s]*$"
)
_IS_A = re.compile(r"^(?P<term>[가-힣A-Za-z]{2,}(?: [가-힣A-Za-z]+){0,2})(?:은|는) [^0-9]+[가-힣]{2,}이다\.$")
_NOT_A_DEFINITION_END = re.compile(r"(?:이상|이하|미만|초과|이내|원칙|경우|때문)이다\.$")
NUMBER_WITH_UNIT = re.compile(
    r"\d[\d,.]*\s?(?:%p|%|만원|억원|천원|조원|원|개월|년|일|세|회|배|영업일|시간|분|명|건|bp)"
)
_TOPIC = re.compile(r"^(?P<topic>[^,()\d]{2,20}?)(?:은|는|이|가) ")
_ARTICLE_HEADER = re.compile(r"^제\d+조(?:의\d+)?\([^)]*\)\s*")
_JOSA_AFTER = "|".join(JOSA)
_GENERIC_HEADERS = {"내용", "설명", "값", "비고", "기준", "세부 내용", "주요 내용", "내역"}

SUMMARY_QUESTION = "이 글의 핵심 내용을 한두 문장으로 요약해 주세요."
TITLE_QUESTION = "이 글에 알맞은 제목을 붙여 주세요."
INSTRUCTIONS = (
    "다음 글을 읽고 이어지는 질문에 답하세요.",
    "아래 자료를 읽고 질문에 답해 주세요.",
    "다음은 금융 관련 자료입니다. 내용을 읽고 물음에 답하세요.",
)


def _definition_qa(sentence: str) -> Task | None:
    body = _LABEL.sub("", sentence)
    m = _DEFINITION.match(body)
    # The answer drops a "정의:" style label but stays a verbatim span of the passage.
    if m:
        term = m["term"].strip()
        return Task("qa", f"{josa(term, '이란/란')} 무엇인가요?", body, body)
    m = _IS_A.match(body)
    if m and not _NOT_A_DEFINITION_END.search(body):
        term = m["term"].strip()
        return Task("qa", f"{josa(term, '은/는')} 무엇인가요?", body, body)
    return None


def _numeric_qa(sentence: str) -> Task | None:
    sentence = _LABEL.sub("", sentence)
    if not NUMBER_WITH_UNIT.search(sentence) or not 15 <= len(sentence) <= 300:
        return None
    m = _TOPIC.match(sentence)
    if m is None:
        return None
    topic = m["topic"].strip()
    if not topic or len(topic.split()) > 3 or not extract_terms(topic):
        return None
    # "해당하는 " or "또는 " would pass for a topic plus 는; a topic must end in a noun.
    last_word = m.group(0).split()[-1]
    if _is_predicate(last_word) or last_word in STOPWORDS:
        return None
    return Task("qa", f"이 글에 따르면 {josa(topic, '과/와')} 관련된 수치 기준은 무엇인가요?", sentence, sentence)


def _table_qa(header: list[str], cells: list[str]) -> Task | None:
    if len(cells) < 2 or len(header) != len(cells) or not cells[0]:
        return None
    key = cells[0]
    for column, value in zip(header[1:], cells[1:], strict=True):
        if value in ("", "-", "—", "–"):
            continue
        if column in _GENERIC_HEADERS or not column:
            question = f"표에서 {josa(key, '은/는')} 어떻게 되나요?"
            answer = f"표에 따르면 {josa(key, '은/는')} '{value}'입니다."
        else:
            question = f"표에서 {key}의 {josa(column, '은/는')} 무엇인가요?"
            answer = f"표에 따르면 {key}의 {josa(column, '은/는')} '{value}'입니다."
        return Task("qa", question, answer, value)
    return None


def _round_robin(*groups: list[Task]) -> list[Task]:
    out: list[Task] = []
    for i in range(max((len(g) for g in groups), default=0)):
        out.extend(g[i] for g in groups if i < len(g))
    return out


def _statements(sentences: Sequence[Sentence]) -> list[str]:
    """Sentences that state something: no table rows, questions, bare article headers or
    list introductions ("다음과 같다"); an inline "제N조(제목)" header is cut off."""
    out = []
    for s in sentences:
        text = _ARTICLE_HEADER.sub("", s.text).strip()
        if s.kind == "table" or len(text) < 10 or text.endswith((":", "?")) or "다음과 같다" in text:
            continue
        out.append(text)
    return out


def mine_tasks(passage: Passage, stats: TermStats, tasks: Sequence[str], max_qa: int, num_keywords: int) -> list[Task]:
    """The tasks of `tasks` that this passage supports, in that order."""
    sentences = split_sentences(passage.text)
    statements = _statements(sentences)
    # Questions and clozes want self-contained facts, not "다음 각 호의 …" list lead-ins.
    facts = [t for t in statements if "다음 각 " not in t]
    full = [t for t in statements if t.endswith(".")]
    keywords = stats.keywords(passage.text, max(num_keywords, 10))
    out: list[Task] = []
    for kind in tasks:
        if kind == "summarize" and full:
            lead = full[0] if len(full[0]) >= 60 or len(full) == 1 else " ".join(full[:2])
            if len(lead) <= 400:
                out.append(Task("summarize", SUMMARY_QUESTION, lead, lead))
        elif kind == "title" and len(passage.heading) >= 2:
            answer = (
                passage.heading if passage.heading == passage.doc_title else f"{passage.doc_title} — {passage.heading}"
            )
            out.append(Task("title", TITLE_QUESTION, answer, passage.heading))
        elif kind == "qa":
            definitions = [t for s in facts if (t := _definition_qa(s))]
            tables = [t for h, c in table_rows(sentences) if (t := _table_qa(h, c))]
            used = {t.evidence for t in definitions}
            numbers = [t for s in facts if _LABEL.sub("", s) not in used and (t := _numeric_qa(s))]
            out.extend(_round_robin(definitions, tables, numbers)[:max_qa])
        elif kind == "fill_in":
            cloze = _cloze(facts, keywords)
            if cloze:
                out.append(cloze)
        elif kind == "keywords" and len(keywords) >= 2:
            top = keywords[:num_keywords]
            out.append(
                Task(
                    "keywords",
                    f"이 글의 핵심어 {len(top)}개를 중요한 순서대로 쉼표로 구분해 쓰세요.",
                    ", ".join(top),
                    " ".join(top),
                )
            )
    return out


def _cloze(statements: list[str], keywords: list[str]) -> Task | None:
    for term in keywords:
        # Only whole words (a term optionally followed by a particle): blanking "은행" inside
        # "한국은행법" would make a cloze nobody can answer.
        word = re.compile(rf"(?<![가-힣A-Za-z0-9]){re.escape(term)}(?=(?:{_JOSA_AFTER})?(?![가-힣A-Za-z0-9]))")
        for sentence in statements:
            if word.search(sentence) and 15 <= len(sentence) <= 250 and len(sentence) > 2 * len(term):
                blanked = word.sub("____", sentence)
                question = f"다음 문장의 빈칸(____)에 들어갈 알맞은 말을 이 글에서 찾아 쓰세요.\n{blanked}"
                return Task("fill_in", question, term, term)
    return None


def passage_chat(passage: Passage, tasks: Sequence[Task], source: str) -> list[dict[str, str]]:
    """One chat: instruction + passage + first question, then the other questions turn by turn."""
    # The instruction wording varies with the source label (a stable digest, not hash()).
    pick = int.from_bytes(hashlib.blake2b(source.encode(), digest_size=4).digest(), "big") % len(INSTRUCTIONS)
    first, *rest = tasks
    messages = [
        {"role": "user", "content": f"{INSTRUCTIONS[pick]}\n\n{passage.text}\n\n{first.question}"},
        {"role": "assistant", "content": first.answer},
    ]
    for task in rest:
        messages += [{"role": "user", "content": task.question}, {"role": "assistant", "content": task.answer}]
    return messages
