"""Conflicting statements across documents: a planted contradiction is found with both values,
document ids and effective dates; the same value written differently, a past value and another
product's value are not; the bundled KB reports none (an edited copy of one of its documents is
caught); `kofin ingest` names conflicts in its summary and hashes conflicts.json in the manifest."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from kofin.cli import main as kofin
from kofin.rundir import sha256_file
from kofin.serve.chunking import ChunkingConfig, chunk_document
from kofin.serve.conflicts import (
    CONFLICTS_FILE,
    Conflict,
    Statement,
    conflicts_among,
    describe,
    find_conflicts,
    read_conflicts,
)
from kofin.serve.kb import KnowledgeBaseError, load_kb
from kofin.serve.loaders import load_file
from kofin.serve.statements import korean_number

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "data_ko" / "kb"


def write_doc(root: Path, doc_id: str, title: str, body: str, effective: str) -> Path:
    path = root / doc_id
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"---\ntitle: {title}\ngroups: [all]\neffective: {effective}\n---\n# {title}\n\n{body}\n", encoding="utf-8"
    )
    return path


def chunks_of(*roots: Path) -> list[dict]:
    """Chunks as `kofin ingest` stores them, without building indexes."""
    out = []
    for root in roots:
        for path in sorted(root.rglob("*.md")):
            if path.name.lower() != "readme.md":
                out += [
                    asdict(c)
                    for doc in load_file(path, path.relative_to(root).as_posix())
                    for c in chunk_document(doc, ChunkingConfig())
                ]
    return out


@pytest.fixture()
def two_limits(tmp_path) -> Path:
    docs = tmp_path / "docs"
    write_doc(docs, "deposit/a.md", "예금자보호 안내", "예금자보호 한도는 1인당 5천만원이다.", "2026-01-01")
    write_doc(docs, "deposit/b.md", "예금자보호 제도 요약", "예금자보호 한도는 1인당 1억원이다.", "2025-06-01")
    return docs


def test_planted_conflict_is_reported_with_both_values_documents_and_dates(two_limits):
    [c] = find_conflicts(chunks_of(two_limits))
    assert {s.doc_id: (s.value, s.effective) for s in c.statements} == {
        "deposit/a.md": ("5천만원", "2026-01-01"),
        "deposit/b.md": ("1억원", "2025-06-01"),
    }
    assert "예금자보호 한도" in c.subject and c.kind == "amount"
    assert [s.chunk_id for s in c.statements] == ["deposit/a.md#0", "deposit/b.md#0"]  # newest first
    assert describe(c) == f"{c.subject}: 5천만원 (deposit/a.md, 2026-01-01) vs 1억원 (deposit/b.md, 2025-06-01)"
    assert Conflict.from_json(json.loads(json.dumps(c.to_json()))) == c


def test_the_same_value_written_differently_is_not_a_conflict(tmp_path):
    docs = tmp_path / "docs"
    for i, (limit, rate, days) in enumerate(
        [("5천만원", "연 3.2%", "2주"), ("50,000,000원", "연 3.20%", "14일"), ("5,000만원", "연 3.2퍼센트", "14일")]
    ):
        write_doc(
            docs,
            f"deposit/{i}.md",
            "예금자보호 안내",
            f"예금자보호 한도는 1인당 {limit}이다.\n\n"
            f"가람 정기예금의 기본이율은 {rate}이다.\n\n이의신청 처리 기한은 {days} 이내이다.",
            "2026-01-01",
        )
    assert find_conflicts(chunks_of(docs)) == []
    # ...while a fourth document that really disagrees is caught, on each fact
    write_doc(
        docs,
        "deposit/3.md",
        "예금자보호 안내",
        "예금자보호 한도는 1인당 3천만원이다.\n\n가람 정기예금의 기본이율은 연 2.9%이다.\n\n"
        "이의신청 처리 기한은 30일 이내이다.",
        "2026-02-01",
    )
    found = {c.kind: {s.value for s in c.statements} for c in find_conflicts(chunks_of(docs))}
    assert found == {
        "amount": {"5천만원", "50,000,000원", "5,000만원", "3천만원"},
        "rate": {"연 3.2%", "연 3.20%", "연 3.2퍼센트", "연 2.9%"},
        "period (days)": {"2주 이내", "14일 이내", "30일 이내"},
    }


@pytest.mark.parametrize(
    "text,expected",
    [
        ("5천만", 50_000_000),
        ("5,000만", 50_000_000),
        ("50,000,000", 50_000_000),
        ("1억 1천만", 110_000_000),
        ("2억 5,678만", 256_780_000),
        ("124만 8,640", 1_248_640),
        ("4만 8천", 48_000),
        ("3.5", 3.5),
    ],
)
def test_korean_amounts_are_read_as_numbers(text, expected):
    assert korean_number(text) == expected


def test_a_past_value_and_another_products_value_are_not_conflicts(tmp_path):
    docs = tmp_path / "docs"
    write_doc(
        docs,
        "deposit/now.md",
        "예금자보호 안내",
        "예금자보호 한도는 1인당 1억원이다. 종전 한도는 1인당 5천만원이었다.",
        "2025-09-01",
    )
    write_doc(docs, "deposit/faq.md", "예금 자주 묻는 질문", "예금자보호 한도는 1인당 1억원이다.", "2026-01-01")
    write_doc(
        docs,
        "deposit/term.md",
        "가람 스마트 정기예금 상품설명서",
        "### 우대이율\n\n우대이율은 최고 연 0.30%p이다.",
        "2026-01-01",
    )
    write_doc(
        docs,
        "deposit/savings.md",
        "가람 청년 첫걸음 적금 상품설명서",
        "### 우대이율\n\n우대이율은 최고 연 1.50%p이다.",
        "2026-01-01",
    )
    assert find_conflicts(chunks_of(docs)) == []


def test_two_swift_codes_for_the_same_bank_are_a_conflict(tmp_path):
    docs = tmp_path / "docs"
    write_doc(
        docs,
        "fx/terms.md",
        "외환 용어 해설",
        "## SWIFT 코드\n\n가람은행 본점의 SWIFT 코드는 GARMKRSE이다.",
        "2025-01-01",
    )
    write_doc(
        docs,
        "fx/receive.md",
        "해외송금 수취 안내",
        "| 항목 | 기재 내용 |\n|---|---|\n| SWIFT BIC | GRMBKRSE (가람은행 본점 공통) |",
        "2026-01-01",
    )
    [c] = find_conflicts(chunks_of(docs))
    assert c.kind == "code" and {s.value for s in c.statements} == {"GARMKRSE", "GRMBKRSE"}


def test_bundled_kb_reports_none_but_an_edited_copy_of_one_of_its_rules_is_caught(bundled_kb, tmp_path):
    assert (bundled_kb / CONFLICTS_FILE).is_file() and read_conflicts(bundled_kb) == []
    rules = (BUNDLED / "deposit" / "early-termination-interest-rules.md").read_text(encoding="utf-8")
    edited = rules.replace(
        "| 3개월 이상 6개월 미만 | 기본이율 × 40% | 연 1.12% |", "| 3개월 이상 6개월 미만 | 기본이율 × 45% | 연 1.26% |"
    )
    assert edited != rules
    copy = tmp_path / "copy"
    (copy / "deposit").mkdir(parents=True)
    (copy / "deposit" / "early-termination-v2.md").write_text(
        edited.replace("effective: 2026-01-02", "effective: 2026-04-01"), encoding="utf-8"
    )
    conflicts = find_conflicts(chunks_of(BUNDLED, copy))
    rate = next(c for c in conflicts if any(s.value == "기본이율 × 45%" for s in c.statements))
    by_doc = {s.doc_id: (s.value, s.effective) for s in rate.statements}
    assert by_doc["deposit/early-termination-v2.md"] == ("기본이율 × 45%", "2026-04-01")
    assert by_doc["deposit/early-termination-interest-rules.md"] == ("기본이율 × 40%", "2026-01-02")
    assert all("45%" in c.statements[0].value or "1.26%" in c.statements[0].value for c in conflicts)  # nothing else


def test_kofin_ingest_names_conflicts_and_hashes_conflicts_json(two_limits, tmp_path, capsys):
    kb = tmp_path / "kb"
    assert kofin(["ingest", "--kb", str(kb), str(two_limits)]) == 0
    out = capsys.readouterr().out
    assert "1 conflicting statement (" in out
    assert "5천만원 (deposit/a.md, 2026-01-01) vs 1억원 (deposit/b.md, 2025-06-01)" in out
    manifest = json.loads((kb / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["outputs"][CONFLICTS_FILE]["sha256"] == sha256_file(kb / CONFLICTS_FILE)
    assert manifest["metrics"]["conflicts"] == 1
    assert [s.doc_id for s in read_conflicts(kb)[0].statements] == ["deposit/a.md", "deposit/b.md"]

    assert kofin(["ingest", "--kb", str(kb), str(two_limits)]) == 0  # nothing changed: still listed
    assert "nothing changed" in (out := capsys.readouterr().out) and "1 conflicting statement (" in out

    write_doc(two_limits, "deposit/a.md", "예금자보호 안내", "예금자보호 한도는 1인당 1억원이다.", "2026-01-01")
    assert kofin(["ingest", "--kb", str(kb), str(two_limits)]) == 0  # fixed at the source
    assert "conflicting" not in capsys.readouterr().out and read_conflicts(kb) == []

    stored = (kb / CONFLICTS_FILE).read_text(encoding="utf-8")
    (kb / CONFLICTS_FILE).write_text(stored.replace("[]", "[ ]"), encoding="utf-8")  # hidden from the admin
    with pytest.raises(KnowledgeBaseError, match="conflicts.json does not match its sha256"):
        load_kb(kb)


def test_conflicts_among_keeps_to_the_chunks_given():
    st = lambda doc, value: Statement(doc, f"{doc}#0", doc, "2026-01-01", value, f"한도는 {value}이다.")  # noqa: E731
    conflicts = [
        Conflict("예금자보호 한도", "amount", [st("a", "5천만원"), st("b", "1억원"), st("restricted", "3천만원")])
    ]
    [seen] = conflicts_among(conflicts, {"a#0", "b#0", "other#0"})
    assert [s.doc_id for s in seen.statements] == ["a", "b"]  # the document the user was not shown stays out
    assert conflicts_among(conflicts, {"a#0"}) == []
    assert (
        conflicts_among(
            [Conflict("x", "amount", [st("a", "1억원"), st("b", "1억원"), st("c", "5천만원")])], {"a#0", "b#0"}
        )
        == []
    )
    assert read_conflicts(Path("/nonexistent")) == []


def test_statutes_state_different_periods_for_different_things_without_a_flood(laws_dir):
    chunks = [
        asdict(c)
        for doc in load_file(laws_dir / "fin_articles.jsonl", "fin_articles.jsonl")
        for c in chunk_document(doc, ChunkingConfig())
    ]
    assert len({c["doc_id"] for c in chunks}) == 2953
    # Different articles rule on different things (11 members of one committee, 15 of another):
    # before statute articles were compared only with themselves, 4 such pairs were reported.
    assert find_conflicts(chunks) == []


def test_two_versions_of_one_statute_article_that_disagree_are_a_conflict(tmp_path):
    docs = tmp_path / "docs"
    write_doc(
        docs,
        "old.md",
        "예금자보호법 제32조(보험금의 지급한도)",
        "보험금의 지급한도는 1인당 5천만원으로 한다.",
        "2024-01-01",
    )
    write_doc(
        docs,
        "new.md",
        "예금자보호법 제32조(보험금의 지급한도)",
        "보험금의 지급한도는 1인당 1억원으로 한다.",
        "2025-09-01",
    )
    write_doc(
        docs,
        "other.md",
        "예금자보호법 제33조(보험금의 지급한도 특례)",
        "보험금의 지급한도는 1인당 3억원으로 한다.",
        "2025-09-01",
    )
    [c] = find_conflicts(chunks_of(docs))
    assert {s.doc_id for s in c.statements} == {"old.md", "new.md"}  # the other article is another rule
