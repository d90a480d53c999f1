"""The bundled Korean knowledge base: enough documents, well-formed metadata, Korean content."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from kofin.data_ko.corpus import DocumentError, bundled_kb_dir, iter_documents, read_markdown_document, split_sections

DOC_TYPES = {"상품설명서", "약관", "업무지침", "안내문", "용어해설", "FAQ"}
GROUPS = {"all", "branch", "credit", "compliance"}


@pytest.fixture(scope="module")
def docs():
    return list(iter_documents())


def test_size_and_coverage(docs):
    assert len(docs) >= 60
    total = sum(len(d.text.encode()) for d in docs)
    assert 200_000 <= total <= 1_000_000, total
    folders = Counter(d.doc_id.split("/")[0] for d in docs)
    assert set(folders) == {"deposit", "loan", "card", "invest", "fx", "procedure", "glossary"}


def test_metadata_is_complete_and_valid(docs):
    for d in docs:
        assert d.title and d.department, d.doc_id
        assert d.doc_type in DOC_TYPES, (d.doc_id, d.doc_type)
        assert set(d.groups) <= GROUPS, (d.doc_id, d.groups)
        assert re.fullmatch(r"20(25|26)-\d\d-\d\d", d.effective), (d.doc_id, d.effective)
        assert d.text.startswith(f"# {d.title}\n"), d.doc_id


def test_restricted_documents_exist_for_access_control(docs):
    restricted = Counter(g for d in docs for g in d.groups if g != "all")
    assert restricted["compliance"] >= 2 and restricted["credit"] >= 1 and restricted["branch"] >= 2


def test_korean_first_with_tables_and_topics(docs):
    text = "\n".join(d.text for d in docs)
    hangul = len(re.findall(r"[가-힣]", text))
    assert hangul / len(text) > 0.4
    assert sum("\n|" in d.text for d in docs) >= 20  # Markdown tables
    for term in ("LTV", "DSR", "예금자보호", "ELS", "ETF", "기준금리", "보이스피싱", "민원", "고객확인"):
        assert term in text, term


def test_sections_keep_heading_paths():
    text = "# 제목\n서문\n## 1. 개요\n개요 본문\n### 1.1 대상\n대상 본문\n## 2. 금리\n| a | b |\n|---|---|\n"
    secs = split_sections(text, "제목")
    assert [(s.heading, s.path) for s in secs] == [
        ("제목", ("제목",)),
        ("1. 개요", ("제목", "1. 개요")),
        ("1.1 대상", ("제목", "1. 개요", "1.1 대상")),
        ("2. 금리", ("제목", "2. 금리")),
    ]


def test_bad_front_matter_names_file_and_line(tmp_path):
    p = tmp_path / "bad.md"
    p.write_text("---\ntitle: [unclosed\n---\n# x\n", encoding="utf-8")
    with pytest.raises(DocumentError, match=r"bad\.md:\d+: front matter is not valid YAML"):
        read_markdown_document(p, tmp_path)
    p.write_text("---\ntitle: x\n# never closed\n", encoding="utf-8")
    with pytest.raises(DocumentError, match=r"bad\.md:1: front matter opened with '---' is never closed"):
        read_markdown_document(p, tmp_path)


def test_statutes_read_as_documents(laws_dir):
    docs = list(iter_documents(laws_dir / "fin_articles.jsonl"))
    assert len(docs) == 2953
    first = docs[0]
    assert first.doc_id == "여신전문금융업법 제1조" and first.title == "여신전문금융업법 제1조(목적)"


def test_bundled_kb_ships_with_the_package():
    assert (bundled_kb_dir() / "README.md").exists()
