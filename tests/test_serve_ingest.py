"""kofin ingest: every format, bad files named and skipped, incremental updates, atomic KB, hash checks."""

from __future__ import annotations

import json
import shutil

import pytest

from kb_fixtures import write_corpus
from kofin.cli import main as kofin
from kofin.serve.ingest import IngestConfig, main as ingest
from kofin.serve.kb import KnowledgeBaseError, load_kb, read_chunks


@pytest.fixture()
def corpus(tmp_path):
    return write_corpus(tmp_path / "docs")


def _chunks_by_doc(kb):
    out: dict[str, list[dict]] = {}
    for c in read_chunks(kb):
        out.setdefault(c["doc_id"], []).append(c)
    return out


def test_every_format_keeps_id_title_section_page_and_groups(corpus, tmp_path):
    kb = tmp_path / "kb"
    report = ingest(IngestConfig(output_dir=kb, inputs=[corpus]))
    assert not report.skipped and report.written
    docs = _chunks_by_doc(kb)
    assert set(docs) == {"guide.md", "notice.txt", "policy.html", "rules.pdf", "fx.docx", "credit.hwpx", "AML-001", "AML-002"}
    pdf = {c["section"]: c for c in docs["rules.pdf"]}
    assert pdf["제2조(시재 한도)"]["page"] == 2 and "3천만원" in pdf["제2조(시재 한도)"]["text"]
    assert docs["rules.pdf"][0]["title"] == "현금 시재 관리 규정"
    assert {c["section"] for c in docs["fx.docx"]} == {"1. 외화예금 개요", "2. 환전 수수료"}
    table = next(c for c in docs["fx.docx"] if c["text"].startswith("|"))
    assert "| JPY | 30% |" in table["text"] and "| 통화 | 우대율 |" in table["text"]  # the table stays whole
    assert any(c["section"] == "제2조(전결 한도)" and "| 본부 | 5천만원 |" in c["text"] for c in docs["credit.hwpx"])
    assert docs["credit.hwpx"][0]["title"] == "여신 전결 규정"
    assert docs["policy.html"][0]["section"] == "제5조(보유 기간)" and "ignore()" not in docs["policy.html"][0]["text"]
    assert docs["guide.md"][0]["section"] == "3. 중도해지"
    assert docs["AML-001"][0]["groups"] == ["compliance"] and docs["AML-002"][0]["groups"] == ["compliance", "branch"]
    assert all(c["page"] is None for c in docs["guide.md"])


def test_bad_files_are_named_and_skipped(corpus, tmp_path):
    (corpus / "broken.pdf").write_bytes(b"%PDF-1.4 this is not really a pdf")
    (corpus / "empty.txt").write_text("", encoding="utf-8")
    (corpus / "sheet.xlsx").write_bytes(b"PK\x03\x04")
    (corpus / "big.txt").write_text("가" * 40000, encoding="utf-8")  # 120 kB
    report = ingest(IngestConfig(output_dir=tmp_path / "kb", inputs=[corpus], max_file_mb=0.1))
    skipped = {p.split("/")[-1]: reason for p, reason in report.skipped}
    assert set(skipped) == {"broken.pdf", "empty.txt", "sheet.xlsx", "big.txt"}
    assert "empty" in skipped["empty.txt"] and "unknown format" in skipped["sheet.xlsx"] and "MB limit" in skipped["big.txt"]
    assert "PDF" in skipped["broken.pdf"]
    assert "rules.pdf" in _chunks_by_doc(tmp_path / "kb")  # the rest is ingested


def test_cli_reports_skipped_file_by_name(corpus, tmp_path, capsys):
    (corpus / "broken.docx").write_bytes(b"not a zip")
    assert kofin(["ingest", "--kb", str(tmp_path / "kb"), str(corpus)]) == 0
    err = capsys.readouterr().err
    assert "skipped" in err and "broken.docx" in err


def test_incremental_unchanged_changed_deleted_removed(corpus, tmp_path):
    kb = tmp_path / "kb"
    ingest(IngestConfig(output_dir=kb, inputs=[corpus]))
    manifest = (kb / "manifest.json").read_text(encoding="utf-8")

    again = ingest(IngestConfig(output_dir=kb, inputs=[corpus]))
    assert not again.written and len(again.unchanged) == 7 and not again.added
    assert (kb / "manifest.json").read_text(encoding="utf-8") == manifest  # untouched

    (corpus / "notice.txt").write_text("전산 점검 안내\n\n일요일 오전 6시까지 모바일뱅킹이 중단된다.\n", encoding="utf-8")
    (corpus / "policy.html").unlink()
    changed = ingest(IngestConfig(output_dir=kb, inputs=[corpus]))
    assert [p.split("/")[-1] for p in changed.updated] == ["notice.txt"]
    assert [p.split("/")[-1] for p in changed.removed] == ["policy.html"]
    docs = _chunks_by_doc(kb)
    assert "policy.html" not in docs
    notice = " ".join(c["text"] for c in docs["notice.txt"])
    assert "모바일뱅킹" in notice and "토요일" not in notice  # old chunks replaced, not appended

    removed = ingest(IngestConfig(output_dir=kb, remove=[corpus / "aml.jsonl"]))
    assert removed.written and "AML-001" not in _chunks_by_doc(kb) and "guide.md" in _chunks_by_doc(kb)


def test_interrupted_ingest_leaves_previous_kb_usable(corpus, tmp_path, monkeypatch):
    from kofin.serve import ingest as ingest_module
    from kofin.serve.retrieve import HybridRetriever

    kb = tmp_path / "kb"
    ingest(IngestConfig(output_dir=kb, inputs=[corpus]))
    before = [h.chunk["chunk_id"] for h in HybridRetriever(load_kb(kb)).search("중도해지이율", k=3)]
    (corpus / "guide.md").write_text("---\ntitle: 새 안내\n---\n# 새 안내\n전혀 다른 내용이다.\n", encoding="utf-8")

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the process dies while the new indexes are being built

    monkeypatch.setattr(ingest_module, "build_dense", killed)
    with pytest.raises(KeyboardInterrupt):
        ingest(IngestConfig(output_dir=kb, inputs=[corpus]))
    assert (tmp_path / "kb.partial").exists()
    after = [h.chunk["chunk_id"] for h in HybridRetriever(load_kb(kb)).search("중도해지이율", k=3)]
    assert after == before and before and before[0].startswith("guide.md#")


def test_corrupted_index_is_detected_on_load(corpus, tmp_path):
    kb = tmp_path / "kb"
    ingest(IngestConfig(output_dir=kb, inputs=[corpus]))
    data = bytearray((kb / "dense.faiss").read_bytes())
    data[-5] ^= 0xFF
    (kb / "dense.faiss").write_bytes(bytes(data))
    with pytest.raises(KnowledgeBaseError, match=r"dense\.faiss does not match its sha256"):
        load_kb(kb)
    # ...and incremental ingest refuses it too, pointing at --rebuild, which repairs it
    with pytest.raises(KnowledgeBaseError, match="--rebuild"):
        ingest(IngestConfig(output_dir=kb, inputs=[corpus]))
    ingest(IngestConfig(output_dir=kb, inputs=[corpus], rebuild=True))
    assert len(load_kb(kb)) > 0


def test_kb_without_complete_marker_is_refused(corpus, tmp_path):
    kb = tmp_path / "kb"
    ingest(IngestConfig(output_dir=kb, inputs=[corpus]))
    (kb / "COMPLETE").unlink()
    with pytest.raises(KnowledgeBaseError, match="COMPLETE"):
        load_kb(kb)


def test_kb_files_and_manifest(corpus, tmp_path):
    kb = tmp_path / "kb"
    ingest(IngestConfig(output_dir=kb, inputs=[corpus]))
    names = {p.name for p in kb.iterdir()}
    assert names == {
        "chunks.jsonl", "sources.json", "kb.json", "bm25.npz", "bm25_vocab.json", "bm25_idf.npy", "chars.npz",
        "chars_vocab.json", "chars_idf.npy", "dense.faiss", "svd_components.npy", "conflicts.json", "config.yaml", "manifest.json",
        "COMPLETE",
    }
    manifest = json.loads((kb / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["stage"] == "ingest" and "dense.faiss" in manifest["outputs"] and "conflicts.json" in manifest["outputs"]
    assert not any(n.endswith((".pkl", ".pickle")) for n in names)
    shutil.rmtree(kb)
