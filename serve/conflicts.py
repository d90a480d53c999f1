"""Conflicting statements across a knowledge base's documents: the same rate, limit, threshold,
period or code stated with different values, so that even a perfect retriever could cite a wrong one.

Run as:
    python -m kofin.serve.conflicts runs/kb-demo       # what `kofin ingest` found (the KB's conflicts.json)
    python -m kofin.serve.conflicts data_ko/kb         # detect over a folder of documents, no KB written
`kofin ingest` runs `find_conflicts` on every KB it writes and stores the result as `conflicts.json`
(hashed in the manifest); `read_conflicts` loads it and `conflicts_among` picks, at answer time, the
disagreements between chunks a user was shown. A listing names documents and quotes them: show the
whole list to admins only, and to a user only what `conflicts_among` returns for chunks they may read.

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

Two statements of DIFFERENT documents conflict when their values differ and: same kind of value
and same qualifiers; their subjects share at least 3 specific terms (2 when numbers qualify them)
and their labels at least one; each label is mostly named by the other's subject (weighted by how
rare each term is across documents) and not both name much the other never mentions; they measure
the same thing (not a rate vs a limit) and their words after the value agree; and the documents are
about the same thing: their titles share what the labels say, one title is a subset of the other,
or one statement names what is distinctive in the other's title (a product-specific rate is not
compared with another product's). A copied sentence is compared value by value. Deliberately
conservative: a false alarm costs the admins' trust; the bundled KB reports none.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

from kofin.errors import KofinError
from kofin.data_ko.korean import clean_text, morpheme_terms_many, split_sentences

CONFLICTS_FILE = "conflicts.json"
FORMAT_VERSION = 1

# ---------------------------------------------------------------- values

_NUM = r"\d+(?:,\d{3})*(?:\.\d+)?"
_KMULT = r"(?:조|억|천만|백만|십만|만|천|백)"
_KNUM = rf"(?:(?:{_NUM}\s*{_KMULT}\s*)+(?:{_NUM})?|{_NUM})"
# Unit -> (kind, factor). Longest first. A lookahead keeps words like 원금, 개인, 주택, 점포, 명의 out.
_UNITS: list[tuple[str, str, str, float]] = [
    ("%p", "", "rate_pt", 1), ("%포인트", "", "rate_pt", 1), ("퍼센트포인트", "", "rate_pt", 1),
    ("%", "", "rate", 1), ("퍼센트", "", "rate", 1),
    ("영업일", "", "days_bd", 1), ("개월", "", "months", 1), ("년", "(?![도])", "months", 12),
    ("주일", "", "days", 7), ("주", "(?![주식택소요민의기체관말가간])", "days", 7),
    ("일", "(?![반시정괄련자치상용원요단])", "days", 1), ("시간", "", "hours", 1),
    ("세", "(?![금법액율대])", "age", 1), ("점", "(?![포검수])", "score", 1),
    ("원", "(?![금칙화본리장래천가회활])", "money:KRW", 1), ("달러", "", "money:USD", 1), ("불", "", "money:USD", 1),
    ("엔", "", "money:JPY", 1), ("유로", "", "money:EUR", 1),
    ("등급", "", "count:등급", 1), ("회", "(?![사원의계신수피복])", "count:회", 1), ("건", "(?![강물전설축])", "count:건", 1),
    ("명", "(?![령칭시단])", "count:명", 1), ("개", "(?![인설정별시선입])", "count:개", 1), ("좌", "", "count:좌", 1),
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
_RANGE_NEXT = re.compile(r"\s*(?:을|를|이|가)?\s*(?:(이상|초과|넘|부터|지나|경과|후)|(이하|미만|이내|까지|전|동안|안에))")
# After these a value is an input of what the sentence goes on to state ("1,000만원을 ... 가입하면").
_INPUT_NEXT = re.compile(r"\s*(?:[×÷=*]|을|를|에|에서|으로|로|이면|면|인|의|과|와|씩|마다|당|짜리)(?![가-힣])")
_TOPIC_NEXT = re.compile(r"(?:은|는)(?![가-힣])")
# After these the value is what the clause states even when another value follows ("0.70%p이다: ...").
_STATES_NEXT = re.compile(r"\s*(?:[()+:]|등(?![가-힣])|이다|이며|이고|입니다|임(?![가-힣])|이었|였|로 한다|으로 한다|까지(?:이며|이고|이다|만)?(?![가-힣]))")
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
_NOT_A_SUBJECT = frozenset("""일 이 삼 사 오 육 칠 팔 구 십 천만 백만 십만 억 조 만 천 × % p 연 월 약 최대 최고 최저 각각 총
이상 이하 미만 초과 이내 까지 부터 넘 지나 경과 기간 동안 하 되 있 및 또는 등
개월 영업일 년 주 주일 시간 세 점 원 불 달러 엔 유로 회 건 명 개 좌 배 등급 퍼센트 포인트 미화""".split())
_CLAUSE_END = re.compile(r"[,;，](?=\s)")
_CONDITION = re.compile(r"면(?=[\s,])|경우|때(?=[\s,에])")
# "기본이율 × 30%": the rate is a share of another rate, which belongs to the value, not to its subject.
_BASE = re.compile(r"(\S+?)(?:\s*[×xX*]|의)\s*$")
_RATE_WORDS = frozenset({"이율", "금리"})
# What a value measures; two statements measuring different things are about different things.
_MEASURES = frozenset("한도 금리 이율 수수료 비율 세율 공제 보수 기간 기한 연령 나이 평점 점수 등급 스프레드 환율 이자 이자율 우대 가산 잔액 보호 과태료 벌금 징역".split())
_KNUM_PART = re.compile(rf"({_NUM})|({_KMULT})")
_MULT = {"십": 10, "백": 100, "천": 1_000, "만": 10_000, "십만": 100_000, "백만": 1_000_000, "천만": 10_000_000,
         "억": 100_000_000, "조": 1_000_000_000_000}


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
    base: str = ""       # "기본이율" in "기본이율 × 30%", "총급여" in "총급여의 25%"


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
        if kind == "rate" and (b := _BASE.search(text[:m.start()])):
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
    value: str          # as written ("5천만원", "연 0.20%")
    sentence: str       # the sentence or table row it was read from


@dataclass
class Conflict:
    subject: str        # what the statements are about, as written in one of them
    kind: str           # rate, percentage points, amount, period, age, score, count, code
    statements: list[Statement] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"subject": self.subject, "kind": self.kind, "statements": [asdict(s) for s in self.statements]}

    @classmethod
    def from_json(cls, data: dict) -> "Conflict":
        return cls(data["subject"], data["kind"], [Statement(**s) for s in data.get("statements", [])])


@dataclass
class _Found:  # a statement with what matching needs
    st: Statement
    kind: str
    canon: tuple
    quals: frozenset
    label: str
    texts: dict          # role -> text: title, label (what the value is of), context (heading, header, lead), around
    terms: dict = field(default_factory=dict)  # role -> set of terms, filled in bulk; plus "subject" = all but title
    place: tuple = ()    # (the sentence with its numbers blanked, which statement of it): aligns edited copies


_KIND_NAMES = {"rate": "rate", "rate_pt": "percentage points", "days_bd": "period (business days)", "days": "period (days)",
               "months": "period (months)", "hours": "period (hours)", "age": "age", "score": "score", "code": "code"}
# Words every document of a bank or a statute uses: they say nothing about which fact a value is.
_GENERIC = frozenset("""
가람 가람은행 은행 고객 경우 기준 구분 내용 항목 비고 예시 예 들 참고 정의 안내 안내문 다음 각 호 해당 자 등 확인 사항 유의
직원 자주 묻 질문 답변 문의 고객센터 상품 설명서 상품설명서 약관 지침 업무 절차 용어 해설 요약 기타 관련 대하 따르 위 아래 표
하나 어느 때 및 또는 연 월 일 년 원 만 천 억 조 백 개월 영업일 시간 세 점 회 건 명 개 좌 배 등급 주 불 달러 엔 유로 적용 이용
가능 모두 함께 이 그 저 것 수 중 밖 호의 전 이후 이전 당시 현재 기간 금액 대상 방법 처리 정하 말하 이란 란 보 내 요거
이상 이하 미만 초과 이내 까지 부터 약 총 최소한 각각 따로 별도 다 있 없 않 하 되 같 어떻 무엇 얼마 넘 지나 경과 동안
""".split())
_HEADER_WORDS = frozenset("내용 기준 구분 항목 비고 예시: 참고: 예시 참고".split())
_WORD = re.compile(r"[가-힣A-Za-z]{2,}")
_ONE_CHAR_OK = frozenset("후 돈 집 빚 차 땅 금 율 값 사 팔 받".split())


def _clean_terms(terms) -> set[str]:
    return {t for t in terms if _specific(t)}


@lru_cache(maxsize=200_000)
def _specific(term: str) -> bool:
    return (term not in _GENERIC and (len(term) > 1 or term in _ONE_CHAR_OK)
            and not any(ch.isdigit() for ch in term) and bool(re.search(r"[가-힣a-z]", term)))


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


def _statements_in(text: str, base: dict, context: str, label_prefix: str = "", quals: frozenset = frozenset(),
                   fallback_label: str = "", masked: str | None = None) -> list[_Found]:
    """Statements of one sentence or table cell. `base`: doc_id, chunk_id, title, effective, sentence.

    In each clause, a value followed by 이상/미만/... and then another value is a condition of that
    one (clause-local); a value followed by 을/에/인/...면 is an input of everything the sentence
    states after it (a worked example's numbers); a value followed by 은/는 is what the clause is
    about, not a value it states. The rest are statements. A table row's label is the subject of
    the cell's first statement; a value in brackets right after another explains that one."""
    out: list[_Found] = []
    masked = _masked(text) if masked is None else masked
    plain = _plain(text)  # same length as `masked`, references still in
    inputs: set[str] = set(quals)
    first_in_text = True
    pos = 0
    skeleton = re.sub(r"\d[\d,.]*", "#", base["sentence"])
    for clause in _CLAUSE_END.split(masked):
        raw, pos = plain[pos:pos + len(clause)], pos + len(clause)
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
            after = clause[v.end:nxt.start if nxt else len(clause)]
            if _TOPIC_NEXT.match(after):
                prev_end = v.end
                continue
            if nxt is not None and not _STATES_NEXT.match(after):
                if _INPUT_NEXT.match(after) or _CONDITION.search(after):
                    inputs |= _qualifier_keys(v, after)  # "1,000만원을 ... 가입하면 세전 이자는 약 30만원"
                else:
                    local |= _qualifier_keys(v, after)   # "6개월 이상 9개월 미만 연 1.68%", "5년 혼합형 ... 3억원"
                continue
            before = clause[prev_end:v.start]
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
            st = Statement(base["doc_id"], base["chunk_id"], base["title"], base["effective"], v.surface, base["sentence"])
            out.append(_Found(st, v.kind, v.canon, frozenset(inputs | local), _label(label),
                              {"title": base["title"], "label": label,
                               "context": f"{context} {label_prefix} {manner} {prev_label if aside else ''}",
                               "around": around, "fallback": fallback_label, "base": v.base},
                              place=(skeleton, len(out))))
            prev_end, prev_label, local = v.end, label, set(refs)
    if _BIC_CONTEXT.search(f"{masked} {context} {label_prefix}"):
        for m in _BIC.finditer(masked):
            st = Statement(base["doc_id"], base["chunk_id"], base["title"], base["effective"], m.group(), base["sentence"])
            out.append(_Found(st, "code", (m.group()[4:6],), frozenset(), "SWIFT BIC",
                              {"title": base["title"], "label": f"{label_prefix} {masked}", "context": context, "around": "",
                               "fallback": "", "base": "", "code": m.group()}))
    return out


def _label(text: str) -> str:
    """What a statement is about, for people: its words before the value, particles and brackets off."""
    words = [re.sub(r"(은|는|이|가|을|를|의|에|에서|으로|로|도)$", "", w) if len(w) > 2 else w
             for w in re.sub(r"[()\[\]+:·×=]", " ", text).split() if w not in _HEADER_WORDS]
    return " ".join(w for w in words if w)[-60:].strip() or "같은 항목"


def _extract(chunks: list[dict]) -> list[_Found]:
    found: list[_Found] = []
    seen_headings: set[tuple[str, str]] = set()
    for c in chunks:
        meta = c.get("metadata") or {}
        base = {"doc_id": c["doc_id"], "chunk_id": c["chunk_id"], "title": c.get("title") or c["doc_id"],
                "effective": str(meta["effective"]) if meta.get("effective") else None}
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
                lead = sentence[:first.start()] if first else sentence
                lead_or_prev = lead if _WORD.search(lead) else f"{lead} {prev}"
                found += _statements_in(sentence, base | {"sentence": sentence[:300]}, f"{heading} {lead_or_prev}",
                                        fallback_label=lead_or_prev, masked=masked)
    texts = sorted({_for_kiwi(t) for f in found for t in f.texts.values()})
    analysed = dict(zip(texts, morpheme_terms_many(texts)))
    index = {t: _clean_terms(terms) for t, terms in analysed.items()}
    for f in found:
        f.terms = {role: index[_for_kiwi(t)] for role, t in f.texts.items()}
        if not f.terms["label"] and set(analysed[_for_kiwi(f.texts["label"])]) <= _NOT_A_SUBJECT:
            # "6~9개월 60%", "6개월을 넘으면 연 0.20%": what it is of was said before the first value
            # (but "이자는 2년" is about 이자, whatever Kiwi makes of the word alone)
            f.terms["label"] = f.terms["fallback"]
        f.terms["subject"] = f.terms["label"] | f.terms["context"] | f.terms["around"]
    return found


def _row_statements(payload, heading: str, base: dict) -> list[_Found]:
    """A cell's value is of its column, for the row's label cells (those without values, left of it);
    the numbers in the label cells and in the column header are its qualifiers."""
    header, cells = payload
    out: list[_Found] = []
    labels: list[str] = []
    row_quals: set[str] = set()
    sentence = " | ".join(cells)
    for j, cell in enumerate(cells):
        col = header[j] if j < len(header) else ""
        masked = _masked(cell)
        values = _values(masked)
        if j == 0 or not (values or _BIC.search(masked)):
            labels.append(cell)
            row_quals |= {k for v in values for k in _qualifier_keys(v, masked[v.end:])}
            continue
        col_quals = {k for v in _values(_masked(col)) for k in _qualifier_keys(v, "")}
        out += _statements_in(cell, base | {"sentence": sentence}, f"{heading} {header[0] if header else ''}",
                              label_prefix=f"{' '.join(labels)} {col}".strip(), quals=frozenset(row_quals | col_quals))
    return out


# ---------------------------------------------------------------- matching

MIN_SHARED = 3            # specific subject terms two statements must share (2 when qualifiers match too)
MIN_LABEL_COVER = 0.6     # share of each label's weight the other statement's subject must contain (0.5 qualified)
MAX_UNSHARED = 0.15       # both labels naming this much the other never mentions: two different things
MAX_POSTING = 2000        # statements one label term may pair up before it is too common to find candidates by


def _weights(found: list[_Found]) -> dict[str, float]:
    """Rarity of each term across documents (the words that tell facts apart weigh most)."""
    docs: dict[str, set[str]] = defaultdict(set)
    for f in found:
        docs[f.st.doc_id] |= f.terms["subject"] | f.terms["title"]
    n = len(docs)
    df: dict[str, int] = defaultdict(int)
    for terms in docs.values():
        for t in terms:
            df[t] += 1
    return {t: math.log((n + 1) / d) for t, d in df.items()}


def _cover(part: set[str], whole: set[str], w: dict[str, float]) -> float:
    total = sum(w.get(t, 0.0) for t in part)
    return sum(w.get(t, 0.0) for t in part & whole) / total if total > 0 else 0.0


def _same_subject(a: _Found, b: _Found, w: dict[str, float]) -> bool:
    sa, sb, la, lb = a.terms["subject"], b.terms["subject"], a.terms["label"], b.terms["label"]
    qualified = any(not q.startswith("ref:") for q in a.quals)  # "6개월 이상 9개월 미만": already specific
    if len(sa & sb) < (2 if qualified else MIN_SHARED) or not la & lb:
        return False
    for x, y in ((a, b), (b, a)):  # "총급여의 25%" is not about what never mentions 총급여
        if not y.terms["base"] and not x.terms["base"] & _RATE_WORDS and not x.terms["base"] <= y.terms["subject"]:
            return False
    ma, mb = {t for t in la if t in _MEASURES}, {t for t in lb if t in _MEASURES}
    if ma and mb and not ma & mb:
        return False  # a rate of X is not a limit of X
    ra, rb = a.terms["around"], b.terms["around"]
    if ra and rb and max(_cover(ra, rb, w), _cover(rb, ra, w)) < 0.5:
        return False  # "2개월 이내에 ... 결정" and "6개월 이내의 ... 영업정지": different acts
    need = MIN_LABEL_COVER - (0.1 if qualified else 0.0)
    ca, cb = _cover(la, sb, w), _cover(lb, sa, w)
    if ca < need or cb < need or (1 - ca > MAX_UNSHARED and 1 - cb > MAX_UNSHARED):
        return False
    return _same_topic(a, b, w)


def _same_topic(a: _Found, b: _Found, w: dict[str, float]) -> bool:
    """The two documents are about the same thing: their titles share what the statements are
    about, one title says nothing the other does not, or one statement names the other's topic."""
    ta, tb = a.terms["title"], b.terms["title"]
    shared = ta & tb & (a.terms["label"] | b.terms["label"])
    weight = lambda terms: sum(w.get(t, 0.0) for t in terms)  # noqa: E731
    if shared and weight(shared) >= 0.5 * min(weight(ta), weight(tb)):
        return True
    only_a, only_b = ta - tb, tb - ta
    return not only_a or not only_b or only_b <= a.terms["subject"] or only_a <= b.terms["subject"]


def _same_code_subject(a: _Found, b: _Found) -> bool:
    # Two BICs disagree only when both passages speak of the same place (a shared specific word).
    near = lambda f: f.terms["label"] | f.terms["context"]  # noqa: E731
    return a.canon == b.canon and bool(near(a) & near(b) - {"swift", "bic", "코드"})


def find_conflicts(chunks: list[dict]) -> list[Conflict]:
    """Statements of different documents that give the same subject different values."""
    found = _extract(chunks)
    w = _weights(found)
    blocks: dict[tuple, list[int]] = defaultdict(list)
    for i, f in enumerate(found):
        blocks[(f.kind, f.quals)].append(i)
    parent = list(range(len(found)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    linked: set[int] = set()
    for (kind, _), members in blocks.items():
        by_term: dict[str, list[int]] = defaultdict(list)
        for i in members:
            for t in (found[i].terms["label"] if kind != "code" else {""}):
                by_term[t].append(i)
        for i in members:
            a = found[i]
            keys = a.terms["label"] if kind != "code" else {""}
            # A label word hundreds of statements share tells nothing apart: find candidates through rarer ones.
            postings = [by_term[t] for t in keys if len(by_term[t]) <= MAX_POSTING] or ([] if kind != "code" else [members])
            for j in {j for posting in postings for j in posting if j > i}:
                b = found[j]
                if a.st.doc_id == b.st.doc_id or (a.place[:1] == b.place[:1] and a.place != b.place):
                    continue  # the same sentence in two documents (a copy) is compared value by value
                if kind == "code":
                    match = a.texts["code"] != b.texts["code"] and _same_code_subject(a, b)
                else:
                    match = not _same_value(a, b) and _same_subject(a, b, w)
                if match:
                    parent[root(i)] = root(j)
                    linked |= {i, j}
    groups: dict[int, list[_Found]] = defaultdict(list)
    for i in sorted(linked):
        groups[root(i)].append(found[i])
    out = []
    for members in groups.values():
        statements, seen = [], set()
        for f in sorted(members, key=lambda f: (f.st.effective or "", f.st.doc_id), reverse=True):
            if (f.st.chunk_id, f.st.value) not in seen:  # every chunk saying it: any may be an answer's source
                seen.add((f.st.chunk_id, f.st.value))
                statements.append(f.st)
        kind = members[0].kind.split("/")[0]
        subject = min((f.label for f in members), key=lambda s: (s == "같은 항목", len(s)))
        out.append(Conflict(subject, _KIND_NAMES.get(kind, "amount" if kind.startswith("money") else "count"), statements))
    return sorted(out, key=lambda c: (c.subject, c.statements[0].doc_id))


def _same_value(a: _Found, b: _Found) -> bool:
    """Same numbers and, for a share of something ("기본이율 × 30%"), the same base when both name one."""
    if a.terms["base"] and b.terms["base"] and a.terms["base"] != b.terms["base"]:
        return False
    return all(math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9) for x, y in zip(a.canon, b.canon))


# ---------------------------------------------------------------- reading and answering


def conflicts_json(conflicts: list[Conflict]) -> dict:
    """The document `kofin ingest` writes (through its atomic writer, hashed in the manifest) as KB/conflicts.json."""
    return {"format": FORMAT_VERSION, "conflicts": [c.to_json() for c in conflicts]}


def read_conflicts(kb_dir: Path) -> list[Conflict]:
    """The conflicts `kofin ingest` found in a KB; [] for a KB written before conflicts were found."""
    path = Path(kb_dir) / CONFLICTS_FILE
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return [Conflict.from_json(c) for c in data.get("conflicts", [])]
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise KofinError(f"{path}: not a conflicts file kofin ingest wrote ({err}); re-run `kofin ingest --kb {kb_dir} --rebuild PATHS...`") from None


def conflicts_among(conflicts: list[Conflict], chunk_ids: set[str]) -> list[Conflict]:
    """The disagreements between the given chunks (e.g. an answer's sources): each conflict cut down
    to its statements in those chunks, kept when they still come from 2 chunks and differ in value.
    Statements outside the chunks are dropped, so a user never sees a document they were not shown."""
    out = []
    for c in conflicts:
        inside = [s for s in c.statements if s.chunk_id in chunk_ids]
        if len({s.chunk_id for s in inside}) >= 2 and len({s.value for s in inside}) >= 2:
            out.append(Conflict(c.subject, c.kind, inside))
    return out


def describe(c: Conflict) -> str:
    """One line for a person: '예금자보호 한도: 5천만원 (deposit/a, 2026-01-01) vs 1억원 (deposit/b, 2025-06-01)'."""
    parts = [f"{s.value} ({s.doc_id}, {s.effective or 'no effective date'})" for s in c.statements]
    return f"{c.subject}: " + " vs ".join(dict.fromkeys(parts))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kofin.serve.conflicts", description=__doc__.split("\n\n")[0])
    parser.add_argument("path", type=Path, help="a KB folder (reads conflicts.json) or a folder/file of documents")
    args = parser.parse_args(argv)
    if (args.path / CONFLICTS_FILE).is_file():
        conflicts = read_conflicts(args.path)
    elif (args.path / "chunks.jsonl").is_file():
        from kofin.serve.kb import read_chunks

        conflicts = find_conflicts(read_chunks(args.path))
    else:
        conflicts = find_conflicts(_chunks_of(args.path))
    for c in conflicts:
        print(describe(c))
    print(f"{len(conflicts)} conflicting statement{'s' if len(conflicts) != 1 else ''}", file=sys.stderr)
    return 0


def _chunks_of(path: Path) -> list[dict]:
    from dataclasses import asdict as as_dict

    from kofin.serve.chunking import ChunkingConfig, chunk_document
    from kofin.serve.loaders import SUFFIXES, load_file

    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.suffix.lower() in SUFFIXES and p.name.lower() != "readme.md")
    root = path.parent if path.is_file() else path
    return [as_dict(c) for f in files for doc in load_file(f, f.relative_to(root).as_posix()) for c in chunk_document(doc, ChunkingConfig())]


if __name__ == "__main__":
    sys.exit(main())
