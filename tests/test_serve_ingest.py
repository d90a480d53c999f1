"""kofin ingest: every format, bad files named and skipped, incremental updates, atomic KB, hash checks."""

from __future__ import annotations

import json
import shutil

import pytest
from kb_fixtures import write_corpus

from kofin.cli import main as kofin
from kofin.serve.ingest import IngestConfig
from kofin.serve.ingest import main as ingest
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
    assert set(docs) == {
        "guide.md",
        "notice.txt",
        "policy.html",
        "rules.pdf",
        "fx.docx",
        "credit.hwpx",
        "AML-001",
        "AML-002",
    }
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
    assert (
        "empty" in skipped["empty.txt"]
        and "unknown format" in skipped["sheet.xlsx"]
        and "MB limit" in skipped["big.txt"]
    )
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

    (corpus / "notice.txt").write_text(
        "전산 점검 안내\n\n일요일 오전 6시까지 모바일뱅킹이 중단된다.\n", encoding="utf-8"
    )
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
        "chunks.jsonl",
        "sources.json",
        "kb.json",
        "bm25.npz",
        "bm25_vocab.json",
        "bm25_idf.npy",
        "chars.npz",
        "chars_vocab.json",
        "chars_idf.npy",
        "dense.faiss",
        "svd_components.npy",
        "conflicts.json",
        "config.yaml",
        "manifest.json",
        "COMPLETE",
    }
    manifest = json.loads((kb / "manifest.json").read_text(encoding="utf-8"))
    assert (
        manifest["stage"] == "ingest"
        and "dense.faiss" in manifest["outputs"]
        and "conflicts.json" in manifest["outputs"]
    )
    assert not any(n.endswith((".pkl", ".pickle")) for n in names)
    shutil.rmtree(kb)


# ---------------------------------------------------------------- links and unlabelled documents


def test_symbolic_links_are_refused_and_named(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "deposit.md").write_text(
        "---\ngroups: [all]\n---\n# 정기예금\n\n정기예금 중도해지이율은 기본이율의 30%이다.\n", encoding="utf-8"
    )
    secret = tmp_path / "secret.md"
    secret.write_text("# 내부\n\nroot:x:0:0:root:/root:/bin/bash\n", encoding="utf-8")
    (docs / "passwd-link.md").symlink_to(secret)
    (docs / "inside-link.md").symlink_to(docs / "deposit.md")
    outside_dir = tmp_path / "outside"
    outside_dir.mkdir()
    (outside_dir / "x.md").write_text("# x\n\n밖에 있는 문서 root:x:0:0\n", encoding="utf-8")
    (docs / "linked-dir").symlink_to(outside_dir)
    report = ingest(IngestConfig(output_dir=tmp_path / "kb", inputs=[docs]))
    skipped = dict(report.skipped)
    assert (
        "symbolic link" in skipped[str(docs / "passwd-link.md")]
        and str(secret) in skipped[str(docs / "passwd-link.md")]
    )
    assert "links: inside_root" in skipped[str(docs / "inside-link.md")]
    assert any(p.startswith(str(docs / "linked-dir")) and "symbolic link" in why for p, why in report.skipped)
    text = "".join(c["text"] for c in read_chunks(tmp_path / "kb"))
    assert "root:x:0:0" not in text and "중도해지이율" in text
    # inside_root: the link into the folder is read, the ones leaving it are still refused.
    report = ingest(IngestConfig(output_dir=tmp_path / "kb2", inputs=[docs], links="inside_root"))
    assert {c["doc_id"] for c in read_chunks(tmp_path / "kb2")} == {"deposit.md", "inside-link.md"}
    assert str(docs / "passwd-link.md") in dict(report.skipped)
    assert "root:x:0:0" not in "".join(c["text"] for c in read_chunks(tmp_path / "kb2"))


def test_a_linked_input_is_refused_too(tmp_path):
    real = tmp_path / "real.md"
    real.write_text("---\ngroups: [all]\n---\n# 문서\n\n예금자보호 한도는 1억원이다.\n", encoding="utf-8")
    other = tmp_path / "other.md"
    other.write_text("---\ngroups: [all]\n---\n# 다른 문서\n\n외화 송금 한도는 5만 달러이다.\n", encoding="utf-8")
    (tmp_path / "link.md").symlink_to(real)
    report = ingest(IngestConfig(output_dir=tmp_path / "kb", inputs=[tmp_path / "link.md", other]))
    assert "symbolic link" in dict(report.skipped)[str(tmp_path / "link.md")]
    assert {c["doc_id"] for c in read_chunks(tmp_path / "kb")} == {"other.md"}


def test_unlabelled_documents_get_the_default_groups_never_all(tmp_path):
    from kofin.serve.users import ADMINS_GROUP

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "plain.md").write_text("# 표지 없음\n\n그룹이 없는 문서의 내용이다.\n", encoding="utf-8")
    (docs / "note.txt").write_text("시재 한도 안내\n\n현금 시재는 3천만원을 넘지 않는다.\n", encoding="utf-8")
    (docs / "open.md").write_text("---\ngroups: [all]\n---\n# 공개\n\n모두가 보는 문서이다.\n", encoding="utf-8")
    rows = [
        {"id": "R1", "text": "그룹 없는 기록이다."},
        {"id": "R2", "text": "준법 기록이다.", "groups": ["compliance"]},
    ]
    (docs / "rows.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    first = ingest(IngestConfig(output_dir=tmp_path / "kb", inputs=[docs]))
    # The summary says so, with the fix: statutes ingested with the defaults are otherwise invisible to staff.
    assert (
        "3 documents declared no access groups and got default_groups [admins]: only administrators" in first.summary()
    )
    groups = {c["doc_id"]: c["groups"] for c in read_chunks(tmp_path / "kb")}
    assert groups == {
        "plain.md": [ADMINS_GROUP],
        "note.txt": [ADMINS_GROUP],
        "open.md": ["all"],
        "R1": [ADMINS_GROUP],
        "R2": ["compliance"],
    }
    kb = load_kb(tmp_path / "kb")
    visible = lambda gs: {kb.chunks[i]["doc_id"] for i in range(len(kb)) if kb.allowed(gs)[i]}  # noqa: E731
    assert visible(("branch",)) == {"open.md"} and visible((ADMINS_GROUP,)) == {"plain.md", "note.txt", "open.md", "R1"}
    # A configured default applies to the unlabelled ones only; a changed default re-reads them.
    report = ingest(IngestConfig(output_dir=tmp_path / "kb", inputs=[docs], default_groups=["branch"]))
    groups = {c["doc_id"]: c["groups"] for c in read_chunks(tmp_path / "kb")}
    assert groups["plain.md"] == ["branch"] and groups["R2"] == ["compliance"] and groups["open.md"] == ["all"]
    assert len(report.updated) == 4


def test_administrators_have_the_admins_group():
    from kofin.serve.users import ADMINS_GROUP, User, hash_password

    h = hash_password("long-enough-pw")
    assert ADMINS_GROUP in User(name="a", password_hash=h, admin=True).groups
    assert ADMINS_GROUP not in User(name="t", password_hash=h, groups=["branch"]).groups
