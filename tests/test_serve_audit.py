"""The hash-chained audit log: masked questions, answer hashes, and `kofin audit verify` catching edits."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from kofin.cli import main as kofin
from kofin.serve.audit import GENESIS, answer_sha256, audit_record, verify_audit, write_audit


def _log(path: Path, n: int = 4) -> Path:
    for i in range(n):
        write_audit(
            path,
            audit_record(
                user=f"user{i}",
                question=f"질문 {i} 주민번호 900101-1234567",
                answer=f"답변 {i} [1]",
                retrieved=[f"doc#{i}", "doc#9"],
                cited=[f"doc#{i}"],
                backend="extractive",
            ),
        )
    return path


def test_lines_are_masked_hashed_and_chained(tmp_path):
    log = _log(tmp_path / "audit.jsonl")
    rows = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    assert [r["seq"] for r in rows] == [1, 2, 3, 4]
    assert rows[0]["prev"] == GENESIS and all(rows[i]["prev"] == rows[i - 1]["hash"] for i in range(1, 4))
    assert "900101-1234567" not in log.read_text(encoding="utf-8") and "[주민등록번호]" in rows[0]["question"]
    assert rows[2]["answer_sha256"] == answer_sha256("답변 2 [1]") and "answer" not in rows[2]
    assert rows[1]["user"] == "user1" and rows[1]["retrieved"] == ["doc#1", "doc#9"] and rows[1]["cited"] == ["doc#1"]
    assert rows[1]["backend"] == "extractive" and rows[1]["time"].endswith("Z")
    check = verify_audit(log)
    assert check.ok and check.lines == 4 and check.head == rows[-1]["hash"] and check.head_checked


def _rewrite(log: Path, lines: list[str]) -> None:
    log.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def test_an_edited_line_is_named(tmp_path):
    log = _log(tmp_path / "audit.jsonl")
    lines = log.read_text(encoding="utf-8").splitlines()
    row = json.loads(lines[2])
    row["user"] = "someone-else"
    lines[2] = json.dumps(row, ensure_ascii=False)
    _rewrite(log, lines)
    check = verify_audit(log)
    assert not check.ok and check.bad_line == 3 and "edited" in check.problem


def test_an_edit_that_recomputes_the_hash_breaks_the_next_line(tmp_path):
    from kofin.serve.audit import canonical, line_hash

    log = _log(tmp_path / "audit.jsonl")
    lines = log.read_text(encoding="utf-8").splitlines()
    row = json.loads(lines[1])
    row["cited"] = []
    row["hash"] = line_hash(row)
    lines[1] = canonical(row).decode()
    _rewrite(log, lines)
    check = verify_audit(log)
    assert not check.ok and check.bad_line == 3 and "prev hash" in check.problem


def test_a_deleted_line_is_named(tmp_path):
    log = _log(tmp_path / "audit.jsonl")
    lines = log.read_text(encoding="utf-8").splitlines()
    del lines[1]
    _rewrite(log, lines)
    check = verify_audit(log)
    assert not check.ok and check.bad_line == 2 and "deleted" in check.problem


def test_reordered_lines_are_named(tmp_path):
    log = _log(tmp_path / "audit.jsonl")
    lines = log.read_text(encoding="utf-8").splitlines()
    lines[1], lines[2] = lines[2], lines[1]
    _rewrite(log, lines)
    check = verify_audit(log)
    assert not check.ok and check.bad_line == 2 and "reordered" in check.problem


def test_cut_off_lines_at_the_end_are_caught_by_the_head(tmp_path):
    log = _log(tmp_path / "audit.jsonl")
    lines = log.read_text(encoding="utf-8").splitlines()
    _rewrite(log, lines[:-1])
    check = verify_audit(log)
    assert not check.ok and "cut off the end" in check.problem


def test_a_truncated_last_line_is_named(tmp_path):
    log = _log(tmp_path / "audit.jsonl")
    raw = log.read_bytes()
    log.write_bytes(raw[:-20])
    check = verify_audit(log)
    assert not check.ok and check.bad_line == 4 and "cut off" in check.problem


def test_concurrent_writers_keep_one_chain(tmp_path):
    log = tmp_path / "audit.jsonl"
    threads = [threading.Thread(target=_log, args=(log, 10)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    check = verify_audit(log)
    assert check.ok and check.lines == 80


def test_cli_audit_verify_exit_codes(tmp_path, capsys):
    log = _log(tmp_path / "audit.jsonl")
    assert kofin(["audit", "verify", str(log)]) == 0
    assert "intact — 4 lines" in capsys.readouterr().out
    lines = log.read_text(encoding="utf-8").splitlines()
    _rewrite(log, [lines[0], lines[2], lines[1], lines[3]])
    assert kofin(["audit", "verify", str(log)]) == 1
    err = capsys.readouterr().err
    assert "line 2:" in err and "TAMPERED" in err
    assert kofin(["audit", "verify", str(tmp_path / "missing.jsonl")]) == 2
    assert "no such audit log" in capsys.readouterr().err


def test_a_log_from_before_the_chain_is_kept_aside_and_a_new_chain_starts(tmp_path):
    log = tmp_path / "ask.jsonl"
    old = '{"user": "kim", "question": "예전 질문", "answer": "예전 답변", "time": "2026-11-01T09:00:00+0900"}\n'
    log.write_text(old, encoding="utf-8")
    _log(log, 2)
    kept = list(tmp_path.glob("ask.jsonl.pre-chain-*"))
    assert len(kept) == 1 and kept[0].read_text(encoding="utf-8") == old
    check = verify_audit(log)
    assert check.ok and check.lines == 2


def test_a_chained_log_with_its_first_line_stripped_is_not_moved_aside(tmp_path):
    log = _log(tmp_path / "audit.jsonl", 3)
    lines = log.read_text(encoding="utf-8").splitlines()
    lines[0] = json.dumps({"user": "someone", "question": "x"})
    _rewrite(log, lines)
    _log(log, 1)
    assert not list(tmp_path.glob("*.pre-chain-*"))
    check = verify_audit(log)
    assert not check.ok and check.bad_line == 1


def test_a_missing_or_damaged_head_file_is_not_intact(tmp_path):
    log = _log(tmp_path / "audit.jsonl")
    head = log.with_name(log.name + ".head")
    assert head.exists() and verify_audit(log).ok
    _rewrite(log, log.read_text(encoding="utf-8").splitlines()[:-1])
    head.unlink()  # lines cut off the end and the head removed to hide it
    check = verify_audit(log)
    assert not check.ok and "missing" in check.problem
    head.write_text("", encoding="utf-8")
    check = verify_audit(log)
    assert not check.ok and "not the JSON" in check.problem


# ---------------------------------------------------------------- the writer never re-seals a cut log


def _cut_then_append(log: Path, keep: int) -> Exception:
    import pytest

    from kofin.serve.audit import AuditTampered

    _rewrite(log, log.read_text(encoding="utf-8").splitlines()[:keep])
    assert not verify_audit(log).ok
    with pytest.raises(AuditTampered) as err:
        _log(log, 1)
    return err.value


def test_appending_to_a_log_cut_at_the_end_is_refused_and_it_stays_tampered(tmp_path, caplog):
    log = _log(tmp_path / "audit.jsonl")
    with caplog.at_level("CRITICAL", logger="kofin.audit"):
        err = _cut_then_append(log, 2)
    assert "ends at entry 4" in str(err) and "entry 2" in str(err) and "kofin audit verify" in str(err)
    assert any("AUDIT LOG TAMPERED" in r.getMessage() for r in caplog.records)
    assert len(log.read_text(encoding="utf-8").splitlines()) == 2  # nothing was chained onto the cut log
    check = verify_audit(log)
    assert not check.ok and "cut off the end" in check.problem


def test_an_emptied_or_deleted_log_with_a_head_is_tampering(tmp_path):
    import pytest

    from kofin.serve.audit import AuditTampered

    log = _log(tmp_path / "audit.jsonl")
    err = _cut_then_append(log, 0)
    assert "empty or missing" in str(err) and log.read_bytes() == b""
    log.unlink()
    with pytest.raises(AuditTampered, match="empty or missing"):
        _log(log, 1)
    assert not log.exists() or log.read_bytes() == b""


def test_chained_lines_without_a_head_are_not_resealed(tmp_path):
    import pytest

    from kofin.serve.audit import AuditTampered

    log = _log(tmp_path / "audit.jsonl")
    log.with_name(log.name + ".head").unlink()
    with pytest.raises(AuditTampered, match="head is missing"):
        _log(log, 1)
    assert not log.with_name(log.name + ".head").exists() and len(log.read_text(encoding="utf-8").splitlines()) == 4


def test_an_edited_last_line_is_not_chained_onto(tmp_path):
    import pytest

    from kofin.serve.audit import AuditTampered, canonical, line_hash

    log = _log(tmp_path / "audit.jsonl")
    lines = log.read_text(encoding="utf-8").splitlines()
    row = json.loads(lines[-1])
    row["user"] = "someone-else"
    row["hash"] = line_hash(row)  # a consistent line, but not the one the head recorded
    lines[-1] = canonical(row).decode()
    _rewrite(log, lines)
    with pytest.raises(AuditTampered, match="cut off or edited"):
        _log(log, 1)


def test_the_probes_pii_formats_never_reach_the_audit_line(tmp_path):
    questions = [
        "주민번호 900101.1234568 고객",
        "900101\u20131234568 고객의 예금",
        "900101-12\u200b34568 조회",
        "카드 4111.1111.1111.1111 분실",
        "110-123-456789 계좌로 송금",
        "９００１０１　１２３４５６８ 고객",
    ]
    log = tmp_path / "audit.jsonl"
    for q in questions:
        write_audit(
            log, audit_record(user="teller", question=q, answer="", retrieved=[], cited=[], backend="extractive")
        )
    raw = log.read_text(encoding="utf-8")
    for digits in ("1234568", "12\u200b34568", "4111", "456789"):
        assert digits not in raw
    rows = [json.loads(line) for line in raw.splitlines()]
    assert [r["question"].split()[0] for r in rows[1:3]] == ["[주민등록번호]", "[주민등록번호]"] and verify_audit(
        log
    ).ok
