"""Find and mask Korean personal data (resident numbers, phones, cards, bank accounts) in text.

Used by kofin's data validation and for the chat's logs. Pure standard library.

Kinds and how each is recognised:

* ``rrn``: 주민등록번호 / 외국인등록번호, ``YYMMDD-GNNNNNN``. The birth date must be a real,
  non-future date. A hyphen is a strong enough format signal on its own; a bare 13-digit run
  also needs an old-style check digit, a birth date from 2020-10-01 on (such numbers carry no
  check digit), or a context word just before it.
* ``card``: 13-19 digits, contiguous or in the usual groups, Luhn-valid.
* ``phone``: mobile, landline (real area codes only) and 070 numbers, optionally ``+82``.
  Company representative numbers (15xx/16xx/18xx) are not personal and are left alone.
* ``account``: 10-14 digits, hyphenated or bare, only next to a banking context word (before
  it, or just after it: "110-123-456789 계좌로").

Matches never overlap; where candidates collide, rrn > card > phone > account.

Text is matched as a reader sees it: NFKC (full-width ９００１０１ is 900101), zero-width and
bidi control characters dropped (a U+200B inside a number hides nothing), every dash (–, —, −, －)
read as a hyphen, and `.` or a space accepted where a hyphen separates an RRN's halves or a card's
groups. `scrub_pii` replaces the spans of the original text and leaves everything else as it was.

One function masks both training data and logs: `scrub_pii(text, log=True)` is the stricter log
mode, which returns the normalised text and also masks any 13-19 digit run (a mistyped card or
account), e-mail addresses and passport numbers. Data mode keeps look-alikes intact (a card number
that fails Luhn, an RRN with an impossible birth date): training text needs them.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from datetime import date

__all__ = ["LOG_MASKS", "MASKS", "PiiMatch", "find_pii", "reader_view", "scrub_pii"]

MASKS: dict[str, str] = {
    "rrn": "[주민등록번호]",
    "phone": "[전화번호]",
    "card": "[카드번호]",
    "account": "[계좌번호]",
}


# Log mode only: what a log must not keep even where training data needs it precise.
LOG_MASKS: dict[str, str] = {
    "number": "[NUMBER]",
    "email": "[EMAIL]",
    "passport": "[PASSPORT]",
}


@dataclass(frozen=True)
class PiiMatch:
    kind: str  # one of MASKS
    start: int
    end: int
    text: str


# Every pattern refuses to start or end next to a digit, or next to a hyphen that continues a
# digit chain, so that no kind ever matches a slice of a longer number.
_BEFORE = r"(?<!\d)(?<!\d[-.])"
_AFTER = r"(?!\d)(?![-.]\d)"

_RRN = re.compile(
    _BEFORE + r"(?P<yy>\d{2})(?P<mm>\d{2})(?P<dd>\d{2})" + r"(?P<sep> ?[-.] ?| )?" + r"(?P<back>\d{7})" + _AFTER
)

_CARD = re.compile(
    _BEFORE
    + r"(?:\d{13,19}"
    # 4-4-4-4, one separator used throughout.
    + r"|\d{4}(?P<s16>[-. ])\d{4}(?P=s16)\d{4}(?P=s16)\d{4}"
    # 4-6-5 (AmEx) and 4-6-4 (Diners).
    + r"|\d{4}(?P<s15>[-. ])\d{6}(?P=s15)\d{4,5})"
    + _AFTER
)

# After +82 the trunk 0 is dropped (though people often keep it). Area codes are the real
# ones: 02 Seoul, 031-033, 041-044, 051-055, 061-064; 070 is internet telephony. The area
# code may sit in parentheses, as in (02) 123-4567.
_PHONE = re.compile(
    _BEFORE
    + r"(?:\+82[-. ]?0?|\(?0)"
    + r"(?:1[016789]|2|3[1-3]|4[1-4]|5[1-5]|6[1-4]|70)\)?"
    + r"[-. ]?\d{3,4}[-. ]?\d{4}"
    + _AFTER
)

# A number followed by a currency or quantity unit is an amount, not an account.
_ACCOUNT = re.compile(_BEFORE + r"(?:\d{2,6}(?:-\d{1,8}){1,3}|\d{10,14})" + _AFTER + r"(?!\s?[원만억천%])")

_MASK_TOKEN = re.compile("|".join(re.escape(mask) for mask in MASKS.values()))

_RRN_WEIGHTS = (2, 3, 4, 5, 6, 7, 8, 9, 2, 3, 4, 5)
_CENTURY = {
    "1": 1900,
    "2": 1900,
    "5": 1900,
    "6": 1900,
    "3": 2000,
    "4": 2000,
    "7": 2000,
    "8": 2000,
    "9": 1800,
    "0": 1800,
}
# Numbers issued from this date on have a random last digit instead of a check digit.
_NO_CHECK_DIGIT_FROM = date(2020, 10, 1)

_RRN_CONTEXT = ("주민", "주민번호", "주민등록", "외국인등록", "생년월일")
_RRN_WINDOW = 15
# "계좌번호" is covered by "계좌"; bank names mostly end in 은행, the online ones in 뱅크.
_ACCOUNT_CONTEXT = ("계좌", "통장", "입금", "이체", "송금", "예금주", "은행", "뱅크", "농협", "우체국")
_ACCOUNT_WINDOW = 20
_ACCOUNT_AFTER_WINDOW = 6  # "110-123-456789 계좌로", "… 번 통장" : the word right after the number

# Log mode: any 13-19 digit run, e-mail addresses, passport numbers (one or two letters + 7-8 digits).
_LONG_NUMBER = re.compile(r"(?<![\d])\d(?:[ .-]?\d){12,18}(?![\d])")
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_PASSPORT = re.compile(r"(?<![A-Za-z0-9])[A-Za-z]{1,2}\d{7,8}(?![0-9])")

# Characters a reader does not see: zero-width, joiners, soft hyphen, bidi controls and isolates.
_INVISIBLE = re.compile("[\u00ad\u034f\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff]")
_DASHES = str.maketrans(dict.fromkeys("\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe58\ufe63\uff0d", "-"))
_DASH = re.compile("[\u2010-\u2015\u2212\ufe58\ufe63\uff0d]")

_PRIORITY = {"rrn": 0, "card": 1, "phone": 2, "account": 3}


def _digits(s: str) -> str:
    return "".join(ch for ch in s if ch.isdigit())


def _birth_date(m: re.Match[str]) -> date | None:
    """The birth date an RRN candidate encodes, or None if there is no such day."""
    century = _CENTURY[m["back"][0]]
    try:
        return date(century + int(m["yy"]), int(m["mm"]), int(m["dd"]))
    except ValueError:
        return None


def _rrn_check_digit_ok(digits: str) -> bool:
    total = sum(int(d) * w for d, w in zip(digits[:12], _RRN_WEIGHTS, strict=True))
    return (11 - total % 11) % 10 == int(digits[12])


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _context_before(text: str, start: int, masked: list[tuple[int, int, int]], width: int) -> str:
    """The `width` characters before `start` as they read once earlier matches are masked.

    Masks are blanked out so that "[계좌번호]" never counts as the word 계좌, and the window
    is measured on the masked text so that scrubbing a second time sees the very same
    context: that is what makes scrub_pii idempotent. `masked` holds (start, end, mask
    length) for spans ending at or before `start`, sorted by start.
    """
    pieces: list[str] = []
    need = width
    pos = start
    for span_start, span_end, mask_len in reversed(masked):
        gap = text[span_end:pos][-need:]
        pieces.append(gap)
        need -= len(gap)
        if need <= 0:
            break
        blank = "\0" * min(mask_len, need)
        pieces.append(blank)
        need -= len(blank)
        if need <= 0:
            break
        pos = span_start
    else:
        pieces.append(text[max(0, pos - need) : pos])
    return "".join(reversed(pieces))


def _overlaps(a: PiiMatch, b: PiiMatch) -> bool:
    return a.start < b.end and b.start < a.end


def reader_view(text: str) -> tuple[str, list[int] | None]:
    """`text` as a reader sees it (see the module docstring) and, for each of its characters, the
    index of the original character it came from (None: the same text)."""
    if unicodedata.is_normalized("NFKC", text) and not _INVISIBLE.search(text) and not _DASH.search(text):
        return text, None
    out: list[str] = []
    where: list[int] = []
    for i, ch in enumerate(text):
        if _INVISIBLE.match(ch):
            continue
        norm = unicodedata.normalize("NFKC", ch).translate(_DASHES)
        out.append(norm)
        where += [i] * len(norm)
    return "".join(out), where


def find_pii(text: str) -> list[PiiMatch]:
    """All PII spans in `text` (offsets and text of the original): non-overlapping, sorted by start."""
    view, where = reader_view(text)
    matches = _find_in_view(view)
    if where is None:
        return matches
    out = []
    for m in matches:
        start, end = where[m.start], where[m.end - 1] + 1
        out.append(PiiMatch(m.kind, start, end, text[start:end]))
    return out


def _find_in_view(text: str) -> list[PiiMatch]:
    today = date.today()
    certain: list[PiiMatch] = []  # decided by format alone
    contextual: list[PiiMatch] = []  # masked only after a context word

    for m in _RRN.finditer(text):
        born = _birth_date(m)
        if born is None or born > today:
            continue
        match = PiiMatch("rrn", m.start(), m.end(), m.group())
        digits = _digits(m.group())
        if m["sep"] or born >= _NO_CHECK_DIGIT_FROM or _rrn_check_digit_ok(digits):
            certain.append(match)
        else:
            contextual.append(match)
    for m in _CARD.finditer(text):
        digits = _digits(m.group())
        # A run of one repeated digit passes Luhn but is a placeholder, not a card.
        if 13 <= len(digits) <= 19 and len(set(digits)) > 1 and _luhn_ok(digits):
            certain.append(PiiMatch("card", m.start(), m.end(), m.group()))
    for m in _PHONE.finditer(text):
        certain.append(PiiMatch("phone", m.start(), m.end(), m.group()))
    for m in _ACCOUNT.finditer(text):
        if 10 <= len(_digits(m.group())) <= 14:
            contextual.append(PiiMatch("account", m.start(), m.end(), m.group()))

    accepted: list[PiiMatch] = []
    for match in sorted(certain, key=lambda c: (_PRIORITY[c.kind], c.start)):
        if not any(_overlaps(match, other) for other in accepted):
            accepted.append(match)

    # Context is read on the text as it will look once everything before is masked, so
    # these go left to right, after every format-certain match is known.
    literal_masks = [(t.start(), t.end(), t.end() - t.start()) for t in _MASK_TOKEN.finditer(text)]
    for match in sorted(contextual, key=lambda c: (c.start, _PRIORITY[c.kind])):
        clash = [other for other in accepted if _overlaps(match, other)]
        # A bare resident number that happens to pass Luhn is still a resident number when
        # the text says so; every other collision keeps the earlier decision.
        relabel = (
            match.kind == "rrn"
            and len(clash) == 1
            and clash[0].kind == "card"
            and (clash[0].start, clash[0].end) == (match.start, match.end)
        )
        if clash and not relabel:
            continue
        masked = sorted(
            [(o.start, o.end, len(MASKS[o.kind])) for o in accepted if o.end <= match.start]
            + [span for span in literal_masks if span[1] <= match.start]
        )
        words: tuple[str, ...]
        if match.kind == "rrn":
            words, width = _RRN_CONTEXT, _RRN_WINDOW
        else:
            words, width = _ACCOUNT_CONTEXT, _ACCOUNT_WINDOW
        window = _context_before(text, match.start, masked, width)
        after = text[match.end : match.end + _ACCOUNT_AFTER_WINDOW] if match.kind == "account" else ""
        if not any(word in window or word in after for word in words):
            continue
        if relabel:
            accepted.remove(clash[0])
        accepted.append(match)

    return sorted(accepted, key=lambda c: c.start)


def scrub_pii(text: str, *, log: bool = False) -> tuple[str, Counter[str]]:
    """`text` with every PII span replaced by its MASKS entry, and how many of each kind.

    log=True: the stricter mode for logs (module docstring): the normalised text, with
    LOG_MASKS kinds masked too."""
    if log:
        return _scrub_for_log(text)
    counts: Counter[str] = Counter()
    out: list[str] = []
    pos = 0
    for match in find_pii(text):
        out.append(text[pos : match.start])
        out.append(MASKS[match.kind])
        counts[match.kind] += 1
        pos = match.end
    out.append(text[pos:])
    return "".join(out), counts


def _scrub_for_log(text: str) -> tuple[str, Counter[str]]:
    view = reader_view(unicodedata.normalize("NFKC", text))[0]
    out, counts = scrub_pii(view)
    for kind, pattern in (("email", _EMAIL), ("number", _LONG_NUMBER), ("passport", _PASSPORT)):
        out, n = pattern.subn(LOG_MASKS[kind], out)
        if n:
            counts[kind] += n
    return out, counts
