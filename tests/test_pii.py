"""Tests for kofin.data_ko.pii: what gets masked, what is left alone, and the counts."""

from __future__ import annotations

from collections import Counter
from itertools import pairwise

import pytest

from kofin.data_ko.pii import MASKS, find_pii, scrub_pii

RRN_WEIGHTS = (2, 3, 4, 5, 6, 7, 8, 9, 2, 3, 4, 5)


def rrn_check_digit(first12: str) -> str:
    total = sum(int(d) * w for d, w in zip(first12, RRN_WEIGHTS, strict=True))
    return str((11 - total % 11) % 10)


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def luhn_complete(body: str) -> str:
    """`body` plus the one last digit that makes it Luhn-valid."""
    return next(body + d for d in "0123456789" if luhn_ok(body + d))


def rrn_valid(first12: str) -> str:
    return first12 + rrn_check_digit(first12)


def rrn_bad(first12: str) -> str:
    """A 13-digit number whose check digit is wrong and which is not Luhn-valid either,
    so nothing but context can make it PII."""
    return next(first12 + d for d in "0123456789" if d != rrn_check_digit(first12) and not luhn_ok(first12 + d))


def hyphen(rrn: str) -> str:
    return f"{rrn[:6]}-{rrn[6:]}"


def kinds(text: str) -> list[str]:
    return [m.kind for m in find_pii(text)]


OLD_RRN = rrn_valid("850101123456")  # born 1985-01-01, old form with a real check digit
BAD_RRN = rrn_bad("850101123456")  # same shape, wrong check digit, pre-2020 birth date
CARD16 = luhn_complete("453201511283036")
AMEX15 = luhn_complete("37828224631000")


def test_each_kind_is_replaced_by_its_korean_token() -> None:
    text = f"주민번호 {hyphen(OLD_RRN)}, 연락처 010-1234-5678, 카드 {CARD16}, 계좌번호 110-123-456789 입니다."
    scrubbed, counts = scrub_pii(text)
    assert all(MASKS[kind] in scrubbed for kind in ("rrn", "phone", "card", "account")), scrubbed
    assert counts == Counter(rrn=1, phone=1, card=1, account=1)
    assert not any(ch.isdigit() for ch in scrubbed), scrubbed


# --- resident registration numbers -------------------------------------------------------


@pytest.mark.parametrize(
    "rrn",
    [
        hyphen(OLD_RRN),
        f"{OLD_RRN[:6]} - {OLD_RRN[6:]}",
        f"{OLD_RRN[:6]}- {OLD_RRN[6:]}",
        f"{OLD_RRN[:6]} -{OLD_RRN[6:]}",
        OLD_RRN,  # bare 13 digits, valid old-style check digit
    ],
)
def test_old_form_rrn_with_check_digit_is_masked(rrn: str) -> None:
    assert scrub_pii(f"신청인 {rrn} 입니다") == ("신청인 [주민등록번호] 입니다", Counter(rrn=1))


@pytest.mark.parametrize(
    "rrn",
    [
        "201015-3123456",  # born 2020-10-15: new-form number, no check digit
        "210301-4987654",
        "230715-3000001",
        "201001-4555555",  # first day of the new form
    ],
)
def test_post_2020_hyphenated_rrn_is_masked_without_check_digit(rrn: str) -> None:
    assert scrub_pii(f"자녀 {rrn}") == ("자녀 [주민등록번호]", Counter(rrn=1))


def test_post_2020_bare_rrn_is_masked_without_context() -> None:
    bare = rrn_bad("210301498765")  # wrong old-style check digit, but born 2021
    assert scrub_pii(f"번호 {bare}") == ("번호 [주민등록번호]", Counter(rrn=1))


def test_bare_rrn_born_just_before_cutoff_needs_check_digit() -> None:
    bare = rrn_bad("200930412345")  # born 2020-09-30: still the old form
    assert find_pii(f"번호 {bare}") == []


@pytest.mark.parametrize(
    "rrn",
    [
        "850101-5234567",  # foreigner, 1900s
        "920715-6234567",
        "050505-7234567",  # foreigner, 2000s
        "110228-8234567",
        rrn_valid("850101523456"),  # bare, foreign, valid check digit
    ],
)
def test_foreigner_registration_numbers_are_masked(rrn: str) -> None:
    assert scrub_pii(f"외국인 {rrn}") == ("외국인 [주민등록번호]", Counter(rrn=1))


def test_century_digit_nine_and_zero_mean_1800s() -> None:
    assert kinds("850101-9234567, 850101-0234567") == ["rrn", "rrn"]


def test_bare_rrn_with_bad_checksum_and_no_context_is_untouched() -> None:
    text = f"참조 {BAD_RRN} 건"
    assert scrub_pii(text) == (text, Counter())


@pytest.mark.parametrize("word", ["주민번호", "주민", "주민등록번호", "외국인등록번호", "생년월일"])
def test_bare_rrn_with_bad_checksum_and_context_is_masked(word: str) -> None:
    assert scrub_pii(f"{word}: {BAD_RRN}") == (f"{word}: [주민등록번호]", Counter(rrn=1))


def test_rrn_context_word_too_far_back_does_not_count() -> None:
    text = f"주민번호 관련 문의는 고객센터로 하세요 {BAD_RRN}"
    assert find_pii(text) == []


@pytest.mark.parametrize(
    "rrn",
    [
        "991332-1234567",  # month 13
        "850230-1234567",  # 30 February
        "010230-3234567",  # 30 February, 2000s
        "010229-3234567",  # 29 February 2001: not a leap year
        "000229-1234567",  # 29 February 1900: not a leap year either
        "850100-1234567",  # day 0
        "850431-1234567",  # 31 April
        "991231-3234567",  # 31 December 2099: in the future
    ],
)
def test_impossible_or_future_birth_date_is_not_masked(rrn: str) -> None:
    text = f"주민번호 {rrn}"
    assert scrub_pii(text) == (text, Counter())


def test_leap_day_in_a_leap_year_is_a_real_date() -> None:
    assert scrub_pii("000229-3234567") == ("[주민등록번호]", Counter(rrn=1))


def test_rrn_inside_a_longer_digit_run_is_not_masked() -> None:
    assert find_pii(f"9{OLD_RRN}") == []
    assert find_pii(f"{hyphen(OLD_RRN)}-12") == []


@pytest.mark.parametrize(("remainder", "check"), [(1, "0"), (0, "1")])
def test_check_digit_wraps_ten_and_eleven(remainder: int, check: str) -> None:
    first12 = next(
        f"8501011{n:05d}"
        for n in range(100000)
        if sum(int(d) * w for d, w in zip(f"8501011{n:05d}", RRN_WEIGHTS, strict=True)) % 11 == remainder
    )
    assert kinds(f"번호 {first12}{check}") == ["rrn"]


def test_context_window_is_measured_on_the_masked_text() -> None:
    # 19 raw characters back but 12 once the phone reads as [전화번호]: in reach.
    assert kinds(f"주민번호 010-1234-5678 {BAD_RRN}") == ["phone", "rrn"]
    # 16 characters back even once masked: out of reach.
    assert kinds(f"주민번호 안내 010-1234-5678, {BAD_RRN}") == ["phone"]


def test_bare_rrn_that_also_passes_luhn_counts_as_rrn() -> None:
    first12 = next(f"8501011{n:05d}" for n in range(100000) if luhn_ok(rrn_valid(f"8501011{n:05d}")))
    assert scrub_pii(rrn_valid(first12)) == ("[주민등록번호]", Counter(rrn=1))


def test_luhn_valid_bad_checksum_rrn_is_a_card_unless_context_says_rrn() -> None:
    body = "850101123456"
    number = next(body + d for d in "0123456789" if d != rrn_check_digit(body) and luhn_ok(body + d))
    assert kinds(number) == ["card"]
    assert scrub_pii(f"주민번호 {number}") == ("주민번호 [주민등록번호]", Counter(rrn=1))


# --- phone numbers -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "phone",
    [
        "010-1234-5678",
        "010.1234.5678",
        "010 1234 5678",
        "01012345678",
        "011-123-4567",
        "019-9876-5432",
        "02-123-4567",
        "02-1234-5678",
        "021234567",
        "(02) 123-4567",
        "031-123-4567",
        "051.234.5678",
        "064 712 3456",
        "070-1234-5678",
        "+82 10-1234-5678",
        "+82-10-1234-5678",
        "+82-2-123-4567",
        "+82 010 1234 5678",
    ],
)
def test_personal_phone_numbers_are_masked(phone: str) -> None:
    assert scrub_pii(f"연락처: {phone} 입니다.") == ("연락처: [전화번호] 입니다.", Counter(phone=1))


@pytest.mark.parametrize(
    "text",
    [
        "대표번호 1588-1234",
        "고객센터 1599-3000 으로 연락",
        "ARS 1644-0000",
        "030-123-4567",  # no such area code
        "065-123-4567",
        "010-1234-56789",  # one digit too many
        "12010-1234-5678",  # tail of a longer number
        "010-12-5678",  # middle group too short
    ],
)
def test_non_personal_or_malformed_numbers_are_not_phones(text: str) -> None:
    assert scrub_pii(text) == (text, Counter())


# --- cards -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "card",
    [
        CARD16,
        "-".join(CARD16[i : i + 4] for i in range(0, 16, 4)),
        " ".join(CARD16[i : i + 4] for i in range(0, 16, 4)),
        f"{AMEX15[:4]} {AMEX15[4:10]} {AMEX15[10:]}",
        f"{AMEX15[:4]}-{AMEX15[4:10]}-{AMEX15[10:]}",
        AMEX15,
    ],
)
def test_luhn_valid_cards_are_masked(card: str) -> None:
    assert scrub_pii(f"결제카드 {card} 승인") == ("결제카드 [카드번호] 승인", Counter(card=1))


@pytest.mark.parametrize(
    "card",
    [
        "4111111111111112",
        "4111-1111-1111-1112",
        "4111 1111 1111 1112",
        "0000-0000-0000-0000",  # passes Luhn, but a placeholder
    ],
)
def test_luhn_failing_or_placeholder_card_is_untouched(card: str) -> None:
    text = f"카드 {card}"
    assert scrub_pii(text) == (text, Counter())


def test_card_groups_must_use_one_separator() -> None:
    text = f"카드 {CARD16[:4]}-{CARD16[4:8]} {CARD16[8:12]}-{CARD16[12:]}"
    assert find_pii(text) == []


# --- account numbers ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("계좌 110-123-456789", "계좌 [계좌번호]"),
        ("계좌번호: 1002-345-678901", "계좌번호: [계좌번호]"),
        ("신한은행 123-456789-01-001 으로", "신한은행 [계좌번호] 으로"),
        ("통장 사본의 번호 3333-01-1234567", "통장 사본의 번호 [계좌번호]"),
        ("아래로 입금 바랍니다 1234567890", "아래로 입금 바랍니다 [계좌번호]"),
        ("이체할 곳 12345678901234", "이체할 곳 [계좌번호]"),
        ("송금처 110123456789", "송금처 [계좌번호]"),
        ("예금주 홍길동 110-123-456789", "예금주 홍길동 [계좌번호]"),
        ("카카오뱅크 3333-01-1234567", "카카오뱅크 [계좌번호]"),
    ],
)
def test_account_numbers_with_context_are_masked(text: str, expected: str) -> None:
    assert scrub_pii(text) == (expected, Counter(account=1))


@pytest.mark.parametrize(
    "text",
    [
        "110-123-456789",
        "번호 1002-345-678901",
        "문서번호 123-456789-01-001",
        "1234567890",
        "계좌 관련 안내는 홈페이지를 참고하세요 110-123-456789",  # context too far back
        "계좌 1234-5678",  # 8 digits: too short for an account
        "입금액 1000000000원",  # an amount, not an account
        "[계좌번호] 1234567890",  # a mask is not a context word
    ],
)
def test_account_like_numbers_without_context_are_untouched(text: str) -> None:
    assert scrub_pii(text) == (text, Counter())


def test_phone_after_account_word_is_still_a_phone() -> None:
    assert scrub_pii("계좌 문의 010-1234-5678") == ("계좌 문의 [전화번호]", Counter(phone=1))


# --- whole texts -------------------------------------------------------------------------

MIXED = f"고객 {hyphen(OLD_RRN)}, 휴대폰 010-1234-5678, 카드 {CARD16}, 국민은행 계좌 110-123-456789, 자택 02-123-4567"


def test_mixed_sentence_scrub_and_counts() -> None:
    text, counts = scrub_pii(MIXED)
    assert text == (
        "고객 [주민등록번호], 휴대폰 [전화번호], 카드 [카드번호], 국민은행 계좌 [계좌번호], 자택 [전화번호]"
    )
    assert counts == Counter(rrn=1, phone=2, card=1, account=1)


def test_mixed_sentence_matches_are_exact_sorted_and_disjoint() -> None:
    matches = find_pii(MIXED)
    assert [(m.kind, m.text) for m in matches] == [
        ("rrn", hyphen(OLD_RRN)),
        ("phone", "010-1234-5678"),
        ("card", CARD16),
        ("account", "110-123-456789"),
        ("phone", "02-123-4567"),
    ]
    assert all(MIXED[m.start : m.end] == m.text for m in matches)
    assert all(a.end <= b.start for a, b in pairwise(matches))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "2026-03-01 기준 금리는 연 3.5%입니다.",
        "잔액 1,000,000원, 한도 50,000,000원",
        "자본시장법 제178조 제1항 제2호",
        "2026.03.01 ~ 2026.12.31 이벤트",
        "주문번호 12345, 수량 7개",
        "시간 09:00-18:00, 2024년 4분기",
    ],
)
def test_text_without_pii_is_unchanged(text: str) -> None:
    assert scrub_pii(text) == (text, Counter())
    assert find_pii(text) == []


@pytest.mark.parametrize(
    "text",
    [
        MIXED,
        f"주민번호 {hyphen(OLD_RRN)} {BAD_RRN}",  # context read across an earlier mask
        "계좌번호 110-123-456789, 1002-345-678901",
        f"카드 {CARD16} 결제 후 이체 1234567890",
        "대표 1588-1234, 개인 010 1234 5678",
    ],
)
def test_scrub_is_idempotent(text: str) -> None:
    once, _ = scrub_pii(text)
    twice, counts = scrub_pii(once)
    assert twice == once
    assert counts == Counter()


def test_second_account_in_a_list_shares_the_context() -> None:
    assert scrub_pii("계좌번호 110-123-456789, 1002-345-678901") == (
        "계좌번호 [계좌번호], [계좌번호]",
        Counter(account=2),
    )
