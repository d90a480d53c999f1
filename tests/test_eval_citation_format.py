"""Citation-format compliance of generated RAG answers, on hand-made answers."""

from __future__ import annotations

from kofin.data_ko.citations import CITATION
from kofin.eval.metrics import citation_format


def test_every_factual_sentence_cites_a_valid_source():
    ok = citation_format("예금자보호 한도는 1인당 5천만원입니다 [1]. 이 한도는 금융회사별로 적용됩니다 [1, 2].", 2)
    assert ok.compliant and not ok.cites_nothing and ok.out_of_range == [] and ok.factual_sentences == 2
    # A citation written after the full stop belongs to the sentence before it.
    assert citation_format("예금자보호 한도는 1인당 5천만원입니다. [1]", 1).compliant


def test_one_uncited_sentence_breaks_compliance():
    got = citation_format("예금자보호 한도는 5천만원입니다 [1]. 보험금은 예금보험공사가 지급합니다.", 3)
    assert not got.compliant and got.uncited_sentences == 1 and not got.cites_nothing


def test_out_of_range_ids_are_named():
    got = citation_format("한도는 5천만원입니다 [4]. 지급은 공사가 합니다 [1].", 3)
    assert not got.compliant and got.out_of_range == [4]
    # The served answer no longer holds the id: the answer path reports what it stripped.
    stripped = citation_format("한도는 5천만원입니다 [1].", 3, removed_ids=[7])
    assert not stripped.compliant and stripped.out_of_range == [7]


def test_an_answer_citing_nothing():
    got = citation_format("예금자보호 한도는 5천만원입니다.", 2)
    assert got.cites_nothing and not got.compliant
    # Only out-of-range ids: nothing valid is cited either.
    assert citation_format("한도는 5천만원입니다 [3].", 2).cites_nothing
    # A short filler sentence ("네.") states nothing a source must back.
    assert citation_format("네. 한도는 5천만원입니다 [1].", 1).compliant
    # An empty answer states nothing: never compliant.
    assert not citation_format("", 2).compliant


def test_the_syntax_is_the_shared_one():
    # The syntax kofin ask writes: "[1, 2]" is one citation of two sources.
    assert CITATION.fullmatch("[1, 2]") and citation_format("한도는 오천만원입니다 [1, 2].", 2).compliant
