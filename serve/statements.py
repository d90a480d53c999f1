"""Statements of values in a knowledge base's chunks, read for conflict detection (serve/conflicts.py).

Run as: a library; `find_conflicts` calls `extract_statements` over every chunk of a KB.

A statement is one value in a sentence or a table cell, with what it is said about:
- the value, normalised: 5천만원 = 5,000만원 = 50,000,000원; 연 3.2% = 3.2퍼센트; 0.6%p; 만 65세;
  30일 = 30일, 2주 = 14일, 1년 = 12개월, 3영업일 (business days apart); 650점; 5회; 10%~20%;
  "기본이율 × 30%" keeps its base; a SWIFT BIC next to the word SWIFT/BIC.
- its qualifiers: the numbers it depends on — a table row's label and a column header's numbers
  ("6개월 이상 9개월 미만" = "6~9개월"), numbers before it in its clause ("월 30만원 이상 사용"),
  a worked example's inputs ("1,000만원을 ... 가입하면"), statute references ("제2항제5호의 위원").
- its label (what it is of: the row label and column header, or the words before it in its clause)
  and subject (label, section heading, table header, sentence lead, the words after it), as Kiwi
  content terms (kofin.data_ko.korean) minus the words every bank document or statute uses.
Not statements: clauses about the past (종전, 개정 전), clauses whose subject is elsewhere
("다음 각 호의 어느 하나에 해당하는 자는 ...", "이 경우 ..."), a value followed by 은/는.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

from kofin.data_ko.korean import clean_text, morpheme_terms_many, split_sentences

# ---------------------------------------------------------------- values

_NUM = r"\d+(?:,\d{3})*(?:\.\d+)?"
_KMULT = r"(?:조|억|천만|백만|십만|만|천|백)"
_KNUM = rf"(?:(?:{_NUM}\s*{_KMULT}\s*)+(?:{_NUM})?|{_NUM})"
# Unit -> (kind, factor). Longest first. A lookahead keeps words like 원금, 개인, 주택, 점포, 명의 out.
_UNITS: list[tuple[str, str, str, float]] = [
    ("%p", "", "rate_pt", 1),
    ("%포인트", "", "rate_pt", 1),
    ("퍼센트포인트", "", "rate_pt", 1),
    ("%", "", "rate", 1),
    ("퍼센트", "", "rate", 1),
    ("영업일", "", "days_bd", 1),
    ("개월", "", "months", 1),
    ("년", "(?![도])", "months", 12),
    ("주일", "", "days", 7),
    ("주", "(?![주식택소요민의기체관말가간])", "days", 7),
    ("일", "(?![반시정괄련자치상용원요단])", "days", 1),
    ("시간", "", "hours", 1),
    ("세", "(?![금법액율대])", "age", 1),
    ("점", "(?![포검수])", "score", 1),
    ("원", "(?![금칙화본리장래천가회활])", "money:KRW", 1),
    ("달러", "", "money:USD", 1),
    ("불", "", "money:USD", 1),
    ("엔", "", "money:JPY", 1),
    ("유로", "", "money:EUR", 1),
    ("등급", "", "count:등급", 1),
    ("회", "(?![사원의계신수피복])", "count:회", 1),
    ("건", "(?![강물전설축])", "count:건", 1),
    ("명", "(?![령칭시단])", "count:명", 1),
    ("개", "(?![인설정별시선입])", "count:개", 1),
    ("좌", "", "count:좌", 1),
    ("배", "(?![당상우분정서달])", "count:배", 1),
]
_UNIT_RE = "|".join(f"{re.escape(u)}{la}" for u, la, _, _ in _UNITS)
_UNIT_OF = {u: (kind, factor) for u, _, kind, factor in _UNITS}
_VALUE = re.compile(
    rf"(?:(?P<per>연간|연|월|매월)\s+)?(?P<cur>미화|USD|EUR|JPY)?\s*"
    rf"(?:(?P<lo>{_KNUM})\s*(?P<lounit>{_UNIT_RE})?\s*[~∼～]\s*)?(?P<num>{_KNUM})\s*(?P<unit>{_UNIT_RE})"
)
_COMPARATOR = re.compile(r"\s*(이상|이하|미만|초과|이내|까지)")
# Which way a condition points: "6개월 이상" (>=), "1억원 이하" (<=).
_RANGE_NEXT = re.compile(
    r"\s*(?:을|를|이|가)?\s*(?:(이상|초과|넘|부터|지나|경과|후)|(이하|미만|이내|까지|전|동안|안에))"
)
# After these a value is an input of what the sentence goes on to state ("1,000만원을 ... 가입하면").
_INPUT_NEXT = re.compile(r"\s*(?:[×÷=*]|을|를|에|에서|으로|로|이면|면|인|의|과|와|씩|마다|당|짜리)(?![가-힣])")
_TOPIC_NEXT = re.compile(r"(?:은|는)(?![가-힣])")
# After these the value is what the clause states even when another value follows ("0.70%p이다: ...").
_STATES_NEXT = re.compile(
    r"\s*(?:[()+:]|등(?![가-힣])|이다|이며|이고|입니다|임(?![가-힣])|이었|였"
    r"|로 한다|으로 한다|까지(?:이며|이고|이다|만)?(?![가-힣]))"
)
_BIC = re.compile(r"(?<![A-Za-z0-9])[A-Z]{4}[A-Z]{2}[A-Z0-9]{2}(?:[A-Z0-9]{3})?(?![A-Za-z0-9])")
_BIC_CONTEXT = re.compile(r"SWIFT|BIC", re.I)
# Spans that look like values but are references, dates or amendment notes.
_MASKS = re.compile(
    r"제\s*\d+\s*(?:조|항|호|목|장|절|편|관)(?:의\s*\d+)?|<[^<>]{0,200}>|\[[^\[\]]{0,100}\]"
    r"|\d{4}\s*년(?:\s*\d{1,2}\s*월)?(?:\s*\d{1,2}\s*일)?|\d{1,2}\s*월\s*\d{1,2}\s*일|\d{4}[-.]\d{1,2}(?:[-.]\d{1,2})?\.?"
    r"|매(?:월|년|주)\s*\d+\s*일|\d{1,2}:\d{2}|\d+\s*월(?=\s*(?:말|초|중|[·,]))|\d+(?=·)"
)
_MANNER = re.compile(r"\S+에\s*따라(?:서)?|\S+에\s*따른")
_REFERENCE = re.compile(r"제\s*\d+\s*(?:조|항|호|목)(?:의\s*\d+)?(?:\s*제\s*\d+\s*(?:항|호|목))*")
_PAST = re.compile(r"종전|종래|개정\s*전|변경\s*전|과거에는|이전에는|예전")
# A clause whose subject is elsewhere ("다음 각 호의 어느 하나에 해당하는 자는 ...", "이 경우 ...") states
# nothing that can be compared on its own.
_ELSEWHERE = re.compile(r"다음\s*각\s*(?:호|목)|다음과\s*같|(?<![가-힣])(?:이|그)\s*경우")
# Words that can stand between a clause's start and its value without saying what the value is of.
_NOT_A_SUBJECT = frozenset(
    """일 이 삼 사 오 육 칠 팔 구 십 천만 백만 십만 억 조 만 천 × % p 연 월 약 최대 최고 최저 각각 총
이상 이하 미만 초과 이내 까지 부터 넘 지나 경과 기간 동안 하 되 있 및 또는 등
개월 영업일 년 주 주일 시간 세 점 원 불 달러 엔 유로 회 건 명 개 좌 배 등급 퍼센트 포인트 미화""".split()
)
_CLAUSE_END = re.compile(r"[,;，](?=\s)")
_CONDITION = re.compile(r"면(?=[\s,])|경우|때(?=[\s,에])")
# "기본이율 × 30%": the rate is a share of another rate, which belongs to the value, not to its subject.
_BASE = re.compile(r"(\S+?)(?:\s*[×xX*]|의)\s*$")
RATE_WORDS = frozenset({"이율", "금리"})
# What a value measures; two statements measuring different things are about different things.
MEASURES = frozenset(
    (
        "한도 금리 이율 수수료 비율 세율 공제 보수 기간 기한 연령 나이 평점 점수 등급 "
        "스프레드 환율 이자 이자율 우대 가산 잔액 보호 과태료 벌금 징역"
    ).split()
)
_KNUM_PART = re.compile(rf"({_NUM})|({_KMULT})")
_MULT = {
    "십": 10,
    "백": 100,
    "천": 1_000,
    "만": 10_000,
    "십만": 100_000,
    "백만": 1_000_000,
    "천만": 10_000_000,
    "억": 100_000_000,
    "조": 1_000_000_000_000,
}


def korean_number(text: str) -> float:
    """'1억 1천만' -> 110000000, '5,000만' -> 50000000, '124만 8,640' -> 1248640, '3.5' -> 3.5."""
    total = section = 0.0
    cur: float | None = None
    for num, mult in _KNUM_PART.findall(text):
        if num:
            cur = float(num.replace(",", ""))
            continue
        m = _MULT[mult]
        if m < 10_000:
            section += (1.0 if cur is None else cur) * m
        else:  # 만/억/조 close a group; 천만 = 천 x 만
            if mult in ("십만", "백만", "천만"):
                section += (1.0 if cur is None else cur) * (m // 10_000)
                m = 10_000
            elif cur is not None:
                section += cur
            total += section * m
            section = 0.0
        cur = None
    return total + section + (cur or 0.0)


@dataclass
class _Value:
    start: int
    end: int
    kind: str
    canon: tuple
    surface: str
    base: str = ""  # "기본이율" in "기본이율 × 30%", "총급여" in "총급여의 25%"


def _values(text: str) -> list[_Value]:
    out = []
    for m in _VALUE.finditer(text):
        unit = m.group("unit")
        kind, factor = _UNIT_OF[unit]
        num = korean_number(m.group("num"))
        if kind == "months" and unit == "년" and num >= 1000:
            continue  # a year, not a period
        if m.group("per") in ("월", "매월") and kind.startswith(("money", "rate")):
            kind += "/월"
        if m.group("cur") == "미화" and kind == "money:KRW":
            continue
        hi = round(num * factor, 6)
        lo_unit = _UNIT_OF.get(m.group("lounit") or unit, (kind, factor))[1]
        lo = round(korean_number(m.group("lo")) * lo_unit, 6) if m.group("lo") else hi
        start, base = m.start(), ""
        if kind == "rate" and (b := _BASE.search(text[: m.start()])):
            start, base = b.start(), b.group(1)
        comp = _COMPARATOR.match(text, m.end())
        end = comp.end() if comp else m.end()
        out.append(_Value(start, m.end(), kind, (lo, hi), text[start:end].strip(), base))
    return out


def _qualifier_keys(v: _Value, after: str) -> set[str]:
    """'6개월 이상' -> {months:6>=}; '6~9개월' -> {months:6>=, months:9<=}; '월 30만원' -> {money:KRW/월:300000}."""
    lo, hi = v.canon
    if lo != hi:
        return {f"{v.kind}:{lo:g}>=", f"{v.kind}:{hi:g}<="}
    m = _RANGE_NEXT.match(after)
    way = "" if not m else ">=" if m.group(1) else "<="
    return {f"{v.kind}:{hi:g}{way}"}


# ---------------------------------------------------------------- statements


@dataclass
class Statement:
    doc_id: str
    chunk_id: str
    title: str
    effective: str | None
    value: str  # as written ("5천만원", "연 0.20%")
    sentence: str  # the sentence or table row it was read from


@dataclass
class FoundStatement:  # a statement with what matching needs
    st: Statement
    kind: str
    canon: tuple
    quals: frozenset
    label: str
    texts: dict  # role -> text: title, label (what the value is of), context (heading, header, lead), around
    terms: dict = field(default_factory=dict)  # role -> set of terms, filled in bulk; plus "subject" = all but title
    place: tuple = ()  # (the sentence with its numbers blanked, which statement of it): aligns edited copies


KIND_NAMES = {
    "rate": "rate",
    "rate_pt": "percentage points",
    "days_bd": "period (business days)",
    "days": "period (days)",
    "months": "period (months)",
    "hours": "period (hours)",
    "age": "age",
    "score": "score",
    "code": "code",
}
# Words every document of a bank or a statute uses: they say nothing about which fact a value is.
_GENERIC = frozenset(
    """
가람 가람은행 은행 고객 경우 기준 구분 내용 항목 비고 예시 예 들 참고 정의 안내 안내문
다음 각 호 해당 자 등 확인 사항 유의
직원 자주 묻 질문 답변 문의 고객센터 상품 설명서 상품설명서 약관 지침 업무 절차 용어 해설
요약 기타 관련 대하 따르 위 아래 표
하나 어느 때 및 또는 연 월 일 년 원 만 천 억 조 백 개월 영업일 시간 세 점 회 건 명 개 좌 배
등급 주 불 달러 엔 유로 적용 이용
가능 모두 함께 이 그 저 것 수 중 밖 호의 전 이후 이전 당시 현재 기간 금액 대상 방법 처리 정하 말하 이란 란 보 내 요거
이상 이하 미만 초과 이내 까지 부터 약 총 최소한 각각 따로 별도 다 있 없 않 하 되 같 어떻 무엇 얼마 넘 지나 경과 동안
""".split()
)
_HEADER_WORDS = frozenset("내용 기준 구분 항목 비고 예시: 참고: 예시 참고".split())
_WORD = re.compile(r"[가-힣A-Za-z]{2,}")
_ONE_CHAR_OK = frozenset("후 돈 집 빚 차 땅 금 율 값 사 팔 받".split())


def _clean_terms(terms) -> set[str]:
    return {t for t in terms if _specific(t)}


@lru_cache(maxsize=200_000)
def _specific(term: str) -> bool:
    return (
        term not in _GENERIC
        and (len(term) > 1 or term in _ONE_CHAR_OK)
        and not any(ch.isdigit() for ch in term)
        and bool(re.search(r"[가-힣a-z]", term))
    )


def _plain(text: str) -> str:
    # Circled paragraph marks (①) would read as numbers after NFKC.
    return clean_text(re.sub("[\u2460-\u2473]", " ", text))


def _masked(text: str) -> str:
    """The text with references, dates and notes blanked (same length): they are no values."""
    return _MASKS.sub(lambda m: " " * len(m.group()), _plain(text))


def _for_kiwi(text: str) -> str:
    # Punctuation glued to a word ("요건:", "(NICE") changes its analysis; numbers are not subjects.
    return " ".join(re.sub(r"[^\w%]+", " ", re.sub(r"\d[\d,.]*", " ", text)).split())


def _heading(section: str) -> str:
    return re.sub(r"^\s*(?:#+\s*)?(?:\d+(?:\.\d+)*\.?\s+|[A-Z]\.\s+|Q\d*\.\s*)?", "", section or "")


def _lines(text: str):
    """(kind, payload) for each table row (with its header) and each sentence (with the one before)."""
    lines = text.splitlines()
    header: list[str] | None = None
    for i, raw in enumerate(lines):
        line = raw.strip()
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if all(re.fullmatch(r":?-{2,}:?", c) for c in cells if c):
                continue
            if i + 1 < len(lines) and re.fullmatch(r"\|?\s*:?-{2,}.*", lines[i + 1].strip()):
                header = cells
                continue
            yield "row", (header or [""] * len(cells), cells)
            continue
        header = None
        line = re.sub(r"^(?:[-*>]\s+|\*\*|\d+[.)]\s+)+", "", line).replace("**", "")
        prev = ""
        for sentence in split_sentences(line):
            yield "sentence", (prev, sentence)
            prev = sentence


def _statements_in(
    text: str,
    base: dict,
    context: str,
    label_prefix: str = "",
    quals: frozenset = frozenset(),
    fallback_label: str = "",
    masked: str | None = None,
) -> list[FoundStatement]:
    """Statements of one sentence or table cell. `base`: doc_id, chunk_id, title, effective, sentence.

    In each clause, a value followed by 이상/미만/... and then another value is a condition of that
    one (clause-local); a value followed by 을/에/인/...면 is an input of everything the sentence
    states after it (a worked example's numbers); a value followed by 은/는 is what the clause is
    about, not a value it states. The rest are statements. A table row's label is the subject of
    the cell's first statement; a value in brackets right after another explains that one."""
    out: list[FoundStatement] = []
    masked = _masked(text) if masked is None else masked
    plain = _plain(text)  # same length as `masked`, references still in
    inputs: set[str] = set(quals)
    first_in_text = True
    pos = 0
    skeleton = re.sub(r"\d[\d,.]*", "#", base["sentence"])
    for clause in _CLAUSE_END.split(masked):
        raw, pos = plain[pos : pos + len(clause)], pos + len(clause)
        pos += len(m.group()) if (m := _CLAUSE_END.match(masked, pos)) else 0
        if _PAST.search(clause) or (not label_prefix and _ELSEWHERE.search(clause)):
            continue
        values = _values(clause)
        # "제2항제5호의 위원의 임기" and "제3항제8호의 위원의 임기" are two different things
        refs = {"ref:" + re.sub(r"\s+", "", r) for r in _REFERENCE.findall(raw)}
        local: set[str] = set(refs)
        prev_end, prev_label = 0, ""
        for i, v in enumerate(values):
            nxt = values[i + 1] if i + 1 < len(values) else None
            after = clause[v.end : nxt.start if nxt else len(clause)]
            if _TOPIC_NEXT.match(after):
                prev_end = v.end
                continue
            if nxt is not None and not _STATES_NEXT.match(after):
                if _INPUT_NEXT.match(after) or _CONDITION.search(after):
                    inputs |= _qualifier_keys(v, after)  # "1,000만원을 ... 가입하면 세전 이자는 약 30만원"
                else:
                    local |= _qualifier_keys(v, after)  # "6개월 이상 9개월 미만 연 1.68%", "5년 혼합형 ... 3억원"
                continue
            before = clause[prev_end : v.start]
            aside = before.lstrip().startswith("(") and prev_label  # "15일(청약일부터 30일 이내)"
            if aside:
                label = before
            elif first_in_text:
                label = f"{label_prefix} {before}"
            else:
                label = before
            first_in_text = False
            around = re.split(r"[:(+=×]", after, maxsplit=1)[0]
            manner = " ".join(_MANNER.findall(label))  # "신용도에 따라 10%~20%": how it varies, not what it is of
            label = _MANNER.sub(" ", label)
            st = Statement(
                base["doc_id"], base["chunk_id"], base["title"], base["effective"], v.surface, base["sentence"]
            )
            out.append(
                FoundStatement(
                    st,
                    v.kind,
                    v.canon,
                    frozenset(inputs | local),
                    _label(label),
                    {
                        "title": base["title"],
                        "label": label,
                        "context": f"{context} {label_prefix} {manner} {prev_label if aside else ''}",
                        "around": around,
                        "fallback": fallback_label,
                        "base": v.base,
                    },
                    place=(skeleton, len(out)),
                )
            )
            prev_end, prev_label, local = v.end, label, set(refs)
    if _BIC_CONTEXT.search(f"{masked} {context} {label_prefix}"):
        for m in _BIC.finditer(masked):
            st = Statement(
                base["doc_id"], base["chunk_id"], base["title"], base["effective"], m.group(), base["sentence"]
            )
            out.append(
                FoundStatement(
                    st,
                    "code",
                    (m.group()[4:6],),
                    frozenset(),
                    "SWIFT BIC",
                    {
                        "title": base["title"],
                        "label": f"{label_prefix} {masked}",
                        "context": context,
                        "around": "",
                        "fallback": "",
                        "base": "",
                        "code": m.group(),
                    },
                )
            )
    return out


def _label(text: str) -> str:
    """What a statement is about, for people: its words before the value, particles and brackets off."""
    words = [
        re.sub(r"(은|는|이|가|을|를|의|에|에서|으로|로|도)$", "", w) if len(w) > 2 else w
        for w in re.sub(r"[()\[\]+:·×=]", " ", text).split()
        if w not in _HEADER_WORDS
    ]
    return " ".join(w for w in words if w)[-60:].strip() or "같은 항목"


def extract_statements(chunks: list[dict]) -> list[FoundStatement]:
    found: list[FoundStatement] = []
    seen_headings: set[tuple[str, str]] = set()
    for c in chunks:
        meta = c.get("metadata") or {}
        base = {
            "doc_id": c["doc_id"],
            "chunk_id": c["chunk_id"],
            "title": c.get("title") or c["doc_id"],
            "effective": str(meta["effective"]) if meta.get("effective") else None,
        }
        heading = _heading(c.get("section") or "")
        if heading and (c["doc_id"], heading) not in seen_headings:  # a heading can state a value too
            seen_headings.add((c["doc_id"], heading))
            found += _statements_in(heading, base | {"sentence": heading}, "")
        for kind, payload in _lines(c.get("text") or ""):
            if kind == "row":
                found += _row_statements(payload, heading, base)
            else:
                prev, sentence = payload
                masked = _masked(sentence)
                first = _VALUE.search(masked)
                if not first and not _BIC.search(masked):
                    continue  # nothing to state
                lead = sentence[: first.start()] if first else sentence
                lead_or_prev = lead if _WORD.search(lead) else f"{lead} {prev}"
                found += _statements_in(
                    sentence,
                    base | {"sentence": sentence[:300]},
                    f"{heading} {lead_or_prev}",
                    fallback_label=lead_or_prev,
                    masked=masked,
                )
    texts = sorted({_for_kiwi(t) for f in found for t in f.texts.values()})
    analysed = dict(zip(texts, morpheme_terms_many(texts), strict=True))
    index = {t: _clean_terms(terms) for t, terms in analysed.items()}
    for f in found:
        f.terms = {role: index[_for_kiwi(t)] for role, t in f.texts.items()}
        if not f.terms["label"] and set(analysed[_for_kiwi(f.texts["label"])]) <= _NOT_A_SUBJECT:
            # "6~9개월 60%", "6개월을 넘으면 연 0.20%": what it is of was said before the first value
            # (but "이자는 2년" is about 이자, whatever Kiwi makes of the word alone)
            f.terms["label"] = f.terms["fallback"]
        f.terms["subject"] = f.terms["label"] | f.terms["context"] | f.terms["around"]
    return found


def _row_statements(payload, heading: str, base: dict) -> list[FoundStatement]:
    """A cell's value is of its column, for the row's label cells (those without values, left of it);
    the numbers in the label cells and in the column header are its qualifiers."""
    header, cells = payload
    out: list[FoundStatement] = []
    labels: list[str] = []
    row_quals: set[str] = set()
    sentence = " | ".join(cells)
    for j, cell in enumerate(cells):
        col = header[j] if j < len(header) else ""
        masked = _masked(cell)
        values = _values(masked)
        if j == 0 or not (values or _BIC.search(masked)):
            labels.append(cell)
            row_quals |= {k for v in values for k in _qualifier_keys(v, masked[v.end :])}
            continue
        col_quals = {k for v in _values(_masked(col)) for k in _qualifier_keys(v, "")}
        out += _statements_in(
            cell,
            base | {"sentence": sentence},
            f"{heading} {header[0] if header else ''}",
            label_prefix=f"{' '.join(labels)} {col}".strip(),
            quals=frozenset(row_quals | col_quals),
        )
    return out
