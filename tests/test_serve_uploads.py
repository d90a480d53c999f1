"""Admin uploads: unsafe names, wrong types and oversize files are refused and nothing is written
outside the upload folder; accepted files are ingested with the groups the admin chose."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from kb_fixtures import write_docx, write_pdf
from serve_fixtures import DEMO, PASSWORDS, free_port, running_app

DOCS = {
    "deposit.md": "---\ntitle: 가람 정기예금 상품설명서\ngroups: [all]\n---\n"
    "# 가람 정기예금 상품설명서\n## 4. 중도해지이율\n"
    "만기 전에 해지하면 약정이율 대신 중도해지이율을 적용한다. 가입 후 6개월 미만이면 기본이율의 30%를 적용한다.\n",
    "loan.md": "---\ntitle: 가람 신용대출 상품설명서\ngroups: [all]\n---\n"
    "# 가람 신용대출 상품설명서\n## 3. 중도상환수수료\n"
    "대출 실행 후 3년 이내에 상환하면 중도상환수수료 1.2%를 받는다. 3년이 지나면 면제한다.\n",
}
# Its own front matter says `all`; the admin's choice (compliance) must win.
SECRET_MD = (
    "---\ntitle: 내부 통제 점검 지침\ngroups: [all]\n---\n# 내부 통제 점검 지침\n## 1. 금고 점검\n"
    "영업점 금고는 매월 셋째 주 목요일에 준법감시 담당자가 불시 점검하고 점검표를 보관한다.\n"
)
SECRET_Q = "영업점 금고 불시 점검은 언제 누가 하나요?"
TYPES = [".md", ".txt", ".pdf", ".docx", ".html", ".hwpx", ".jsonl"]


def _config(tmp_path: Path):
    from kofin.config import load_config
    from kofin.serve.serve_config import ServeConfig

    docs = tmp_path / "docs"
    docs.mkdir()
    for name, text in DOCS.items():
        (docs / name).write_text(text, encoding="utf-8")
    return load_config(
        ServeConfig,
        DEMO,
        [
            f"kb={tmp_path / 'kb'}",
            f"output_dir={tmp_path / 'serve'}",
            f'build_from=["{docs}"]',
            "uploads.max_file_mb=0.08",
            f"server_port={free_port()}",
        ],
    )


@pytest.fixture()
def chat(tmp_path):
    from kofin.serve.chat import prepare

    return prepare(_config(tmp_path))


def _tree(root: Path) -> set[str]:
    return {str(p) for p in root.rglob("*")}


@pytest.mark.parametrize(
    "name",
    [
        "../../evil.md",
        "../evil.md",
        "/etc/cron.d/evil.md",
        "sub/evil.md",
        "..\\evil.md",
        "a..md",
        ".hidden.md",
        "evil.md\x00.txt",
        "evil;rm -rf.md",
        "evil.md ",
        "<script>.md",
        "$(id).md",
    ],
)
def test_unsafe_names_are_rejected_and_nothing_is_written(chat, tmp_path, name):
    src = tmp_path / "src.md"
    src.write_text(SECRET_MD, encoding="utf-8")
    before = _tree(tmp_path)
    status = chat.upload([(src, name)], ["compliance"], "admin")
    assert "거부" in status and "저장" not in status
    assert _tree(tmp_path) - before <= {str(chat.cfg.upload_dir), str(chat.cfg.upload_dir / ".lock")}
    assert not (tmp_path / "evil.md").exists() and not Path("/etc/cron.d/evil.md").exists()


def test_wrong_types_and_disguised_files_are_rejected(chat, tmp_path):
    exe = tmp_path / "tool.exe"
    exe.write_bytes(b"MZ\x90\x00" + b"\x00" * 100)
    fake_pdf = tmp_path / "fake.pdf"
    fake_pdf.write_bytes(b"#!/bin/sh\necho hi\n")
    binary_md = tmp_path / "bin.md"
    binary_md.write_bytes(b"\xff\xfe\x00\x00garbage")
    status = chat.upload([(exe, "tool.exe"), (fake_pdf, "fake.pdf"), (binary_md, "bin.md")], ["all"], "admin")
    assert (
        status.count("거부") == 3
        and "허용되지 않는 파일 형식" in status
        and ".pdf 형식이 아닙니다" in status
        and "UTF-8" in status
    )
    assert not list(chat.cfg.upload_dir.glob("*.*"))


def test_oversize_files_are_rejected(chat, tmp_path):
    big = tmp_path / "big.txt"
    big.write_text("가" * 40_000, encoding="utf-8")  # 120 kB > uploads.max_file_mb=0.08 (84 kB)
    status = chat.upload([(big, "big.txt")], ["all"], "admin")
    assert "너무 큽니다" in status and not (chat.cfg.upload_dir / "big.txt").exists()


def test_only_admins_upload_and_groups_must_be_known(chat, tmp_path):
    from kofin.serve.chat import AccessDenied

    src = tmp_path / "ok.md"
    src.write_text(SECRET_MD, encoding="utf-8")
    with pytest.raises(AccessDenied, match="관리자만"):
        chat.upload([(src, "ok.md")], ["all"], "teller")
    with pytest.raises(AccessDenied, match="로그인"):
        chat.upload([(src, "ok.md")], ["all"], None)
    with pytest.raises(AccessDenied, match="알 수 없는 열람 그룹"):
        chat.upload([(src, "ok.md")], ["root"], "admin")
    assert "열람 그룹을 하나 이상" in chat.upload([(src, "ok.md")], [], "admin")
    assert not (chat.cfg.upload_dir / "ok.md").exists()


def _answer(chat, user):
    return list(chat.answer(SECRET_Q, user))[-1][1]


def test_an_upload_is_indexed_with_the_chosen_groups(chat, tmp_path):
    src = tmp_path / "내부 통제 점검 지침.md"
    src.write_text(SECRET_MD, encoding="utf-8")
    assert not _answer(chat, "compliance").found
    status = chat.upload([(src, src.name)], ["compliance"], "admin")
    assert "저장: 내부 통제 점검 지침.md" in status and "색인 완료" in status
    assert (chat.cfg.upload_dir / src.name).read_text(encoding="utf-8") == SECRET_MD
    got = _answer(chat, "compliance")
    assert got.found and got.sources[got.cited[0] - 1]["id"] == src.name and "셋째 주 목요일" in got.answer
    denied = _answer(chat, "teller")
    assert all(s["id"] != src.name for s in denied.sources) and "셋째 주 목요일" not in denied.answer
    # Opening it to everyone is a new upload with other groups: the file is re-read, not left as it was.
    status = chat.upload([(src, src.name)], ["all"], "admin")
    assert any(s["id"] == src.name for s in _answer(chat, "teller").sources)
    assert "re-index" not in status and "색인 완료: 문서 3개" in chat.reindex("admin")


@pytest.mark.parametrize("suffix", [".pdf", ".docx"])
def test_binary_formats_are_accepted_when_their_bytes_match(chat, tmp_path, suffix):
    src = tmp_path / f"guide{suffix}"
    if suffix == ".pdf":
        write_pdf(src, [["영업점 금고는 매월 셋째 주 목요일에 준법감시 담당자가 불시 점검한다."]], title="금고 점검")
    else:
        write_docx(src)
    status = chat.upload([(src, src.name)], ["branch"], "admin")
    assert f"저장: {src.name}" in status and "색인 완료" in status, status


def test_upload_folder_symlink_is_replaced_not_followed(chat, tmp_path):
    outside = tmp_path / "outside.md"
    outside.write_text("원래 내용\n", encoding="utf-8")
    chat.cfg.upload_dir.mkdir(parents=True)
    os.symlink(outside, chat.cfg.upload_dir / "link.md")
    src = tmp_path / "new.md"
    src.write_text(SECRET_MD, encoding="utf-8")
    chat.upload([(src, "link.md")], ["compliance"], "admin")
    assert outside.read_text(encoding="utf-8") == "원래 내용\n"
    assert not (chat.cfg.upload_dir / "link.md").is_symlink()


def test_allowed_types_follow_the_loaders():
    from kofin.serve.loaders import SUFFIXES
    from kofin.serve.serve_config import UploadConfig

    assert set(TYPES) <= set(UploadConfig().types) <= set(SUFFIXES)
    with pytest.raises(ValueError, match="cannot be ingested"):
        UploadConfig(types=[".exe"])


def test_uploads_through_the_api_are_for_admins_and_keep_their_groups(tmp_path):
    from gradio_client import Client, handle_file

    cfg = _config(tmp_path)
    src = tmp_path / "금고 점검.md"
    src.write_text(SECRET_MD, encoding="utf-8")
    with running_app(cfg) as (chat, url):
        login = lambda user: Client(url + "/", auth=(user, PASSWORDS[user]), verbose=False)  # noqa: E731
        # Refused at Gradio's upload route already (serve/guard.py: 403); chat.upload checks again.
        with pytest.raises(Exception, match="403|관리자만"):
            login("teller").predict([handle_file(str(src))], ["all"], api_name="/upload")
        assert not (cfg.upload_dir / src.name).exists()
        status, listing, _ = login("admin").predict([handle_file(str(src))], ["compliance"], api_name="/upload")
        assert "저장: 금고 점검.md" in status and "색인 완료" in status and "compliance" in listing
        assert (cfg.upload_dir / src.name).read_text(encoding="utf-8") == SECRET_MD
        _, _, sources = login("compliance").predict(SECRET_Q, [], api_name="/ask")
        assert "셋째 주 목요일" in sources and src.name in sources
        history, _, sources = login("teller").predict(SECRET_Q, [], api_name="/ask")
        assert "셋째 주 목요일" not in sources + str(history) and src.name not in sources


def test_a_zip_bomb_is_refused_before_it_is_unpacked(chat, tmp_path):
    import zipfile

    from kofin.serve.loaders import LoaderError, load_file

    bomb = tmp_path / "bomb.hwpx"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("mimetype", "application/hwp+zip")
        z.writestr("Contents/section0.xml", "<a>" + "가" * 4_000_000 + "</a>")  # 12 MB of XML, ~12 kB packed
    status = chat.upload([(bomb, "bomb.hwpx")], ["all"], "admin")
    assert "zip bomb" in status and not (chat.cfg.upload_dir / "bomb.hwpx").exists()
    with pytest.raises(LoaderError, match="zip bomb"):
        load_file(bomb, "bomb.hwpx")  # kofin ingest refuses it too


def test_ingesting_the_upload_folder_by_hand_keeps_the_admins_groups(chat, tmp_path):
    from kofin.serve.ingest import IngestConfig
    from kofin.serve.ingest import main as ingest
    from kofin.serve.kb import load_kb

    src = tmp_path / "지침.md"
    src.write_text(SECRET_MD, encoding="utf-8")
    chat.upload([(src, src.name)], ["compliance"], "admin")
    (chat.cfg.upload_dir / "stray.md").write_text(
        "# 기록 없는 문서\n\n업로드 기록이 없는 파일입니다.\n", encoding="utf-8"
    )
    ingest(
        IngestConfig(output_dir=tmp_path / "kb2", inputs=[chat.cfg.upload_dir])
    )  # plain `kofin ingest`, no access rules
    groups = {c["doc_id"]: c["groups"] for c in load_kb(tmp_path / "kb2").chunks}
    assert groups["지침.md"] == ["compliance"] and groups["stray.md"] == ["unassigned-upload"]


def test_the_admin_tab_lists_the_kbs_conflicting_statements(chat, tmp_path):
    from kofin.serve.app import conflicts_listing

    assert conflicts_listing(chat) == "문서 간에 서로 다른 값은 없습니다."
    a, b = tmp_path / "limit-a.md", tmp_path / "limit-b.md"
    a.write_text(
        "---\ntitle: 예금자보호 안내\ngroups: [all]\neffective: 2026-01-01\n---\n"
        "# 예금자보호 안내\n\n예금자보호 한도는 1인당 5천만원이다.\n",
        encoding="utf-8",
    )
    b.write_text(
        "---\ntitle: 예금자보호 요약\ngroups: [all]\neffective: 2025-06-01\n---\n"
        "# 예금자보호 요약\n\n예금자보호 한도는 1인당 1억원이다.\n",
        encoding="utf-8",
    )
    chat.upload([(a, a.name), (b, b.name)], ["all"], "admin")
    listing = conflicts_listing(chat)
    assert listing.startswith("1건") and "5천만원" in listing and "1억원" in listing and "limit\\-a.md" in listing
