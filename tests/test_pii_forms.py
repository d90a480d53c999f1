"""kofin.data_ko.pii on text as people paste it: dots, dashes, spaces, full-width digits and
invisible characters inside numbers; data mode keeps look-alikes, log mode masks them too."""

from __future__ import annotations

from collections import Counter

import pytest

from kofin.data_ko.pii import find_pii, scrub_pii

# --- what a reader sees: separators, dashes, full-width and invisible characters -------------------

ISSUE_RRN = "9001011234568"  # the probe's number: 1990-01-01, a valid birth date


@pytest.mark.parametrize(
    "shown",
    [
        "900101.1234568",
        "900101\u20131234568",  # en dash
        "900101\u22121234568",  # minus sign
        "900101-12\u200b34568",  # zero-width space inside the number
        "9001\u200d01-1234\u202e568",  # a joiner and a bidi override
        # full-width digits, full-width hyphen
        "\uff19\uff10\uff10\uff11\uff10\uff11\uff0d\uff11\uff12\uff13\uff14\uff15\uff16\uff18",
        "900101 1234568",  # space-separated
    ],
)
def test_rrn_in_every_separator_and_hidden_form_is_masked_in_data_and_logs(shown: str) -> None:
    text = f"고객 {shown} 문의"
    assert scrub_pii(text) == ("고객 [주민등록번호] 문의", Counter(rrn=1))
    logged, counts = scrub_pii(text, log=True)
    assert logged == "고객 [주민등록번호] 문의" and counts == Counter(rrn=1)
    (match,) = find_pii(text)
    assert match.text == shown and text[match.start : match.end] == shown  # offsets of the original text


@pytest.mark.parametrize(
    "card", ["4111.1111.1111.1111", "4111\u20131111\u20131111\u20131111", "4111 1111 \u200b1111 1111"]
)
def test_cards_with_dots_dashes_or_hidden_characters_are_masked(card: str) -> None:
    assert scrub_pii(f"카드 {card} 결제")[0] == "카드 [카드번호] 결제"
    assert scrub_pii(f"카드 {card} 결제", log=True)[0] == "카드 [카드번호] 결제"


@pytest.mark.parametrize(
    "text", ["110-123-456789 계좌로 보내 주세요", "1002-345-678901 통장에 입금", "3333-01-1234567 번 계좌"]
)
def test_an_account_number_with_its_context_word_after_it_is_masked(text: str) -> None:
    masked, counts = scrub_pii(text)
    assert counts == Counter(account=1) and masked.startswith("[계좌번호]")
    assert scrub_pii(text, log=True)[0] == masked


def test_the_rest_of_the_text_keeps_its_own_characters_in_data_mode() -> None:
    text = "ＡＢＣ 상품\u200b안내: 주민번호 ９００１０１－１２３４５６８ 확인"
    assert scrub_pii(text)[0] == "ＡＢＣ 상품\u200b안내: 주민번호 [주민등록번호] 확인"
    assert scrub_pii(text, log=True)[0] == "ABC 상품안내: 주민번호 [주민등록번호] 확인"  # a log is normalised


@pytest.mark.parametrize(
    "lookalike",
    [
        "4111.1111.1111.1112",  # fails Luhn
        "4111 1111 1111 1112",
        "901301.1234568",  # 13th month: no such birth date
        "900231\u20131234568",  # 31 February
        "993101 1234568",
    ],
)
def test_look_alikes_stay_intact_in_data_but_never_reach_a_log(lookalike: str) -> None:
    text = f"번호 {lookalike} 참고"
    assert scrub_pii(text) == (text, Counter())
    logged, counts = scrub_pii(text, log=True)
    assert lookalike not in logged and counts["number"] == 1 and not any(ch.isdigit() for ch in logged)


def test_log_mode_masks_emails_passports_and_long_runs_but_not_statute_numbers() -> None:
    logged, counts = scrub_pii("hong@bank.co.kr 여권 M12345678, 1234.5678.9012.3456 제5조 100분의 70", log=True)
    assert logged == "[EMAIL] 여권 [PASSPORT], [NUMBER] 제5조 100분의 70"
    assert counts == Counter(email=1, passport=1, number=1)
