"""`kofin` CLI: the subcommand table, a fast --help, and `kofin ask`'s
words (overrides vs the question), odd text (lone surrogates) and users-file formats."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kofin.cli import main

ROOT = Path(__file__).resolve().parents[1]

STAGES = ["data", "sft", "dpo", "merge", "eval", "ingest", "ask", "serve", "audit", "pipeline", "tiny"]


def run_kofin(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kofin.cli", *args], capture_output=True, text=True, **kw)


def test_help_lists_every_stage():
    out = run_kofin("--help")
    assert out.returncode == 0, out.stderr
    for stage in STAGES:
        assert f"    {stage} " in out.stdout, f"{stage} missing from kofin --help"


def test_help_imports_no_heavy_library():
    code = (
        "import sys; from kofin.cli import main; main(['--help']);"
        "heavy = [m for m in ('torch','transformers','pydantic','yaml','numpy','datasets') if m in sys.modules];"
        "print('HEAVY', heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "HEAVY []" in out.stdout, out.stdout + out.stderr


def test_help_answers_under_a_second():
    # Best of three: a busy CI core should not decide this; a stray torch import would (~2 s).
    best = min(_timed(run_kofin, "--help") for _ in range(3))
    assert best < 1.0, f"kofin --help took {best:.2f} s"


def _timed(fn, *args) -> float:
    t = time.perf_counter()
    assert fn(*args).returncode == 0
    return time.perf_counter() - t


def test_unknown_command_is_a_usage_error():
    out = run_kofin("trian")
    assert out.returncode == 2
    assert "invalid choice" in out.stderr


def test_no_top_level_eval_merge_serve_training_modules_installed():
    code = (
        "import importlib.util as u;print([m for m in ('eval','merge','serve','training','data_ko') if u.find_spec(m)])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
    import kofin.data_ko
    import kofin.eval  # noqa: E401,F401


# ---------------------------------------------------------------- kofin ask: words, odd text, users files

DEPOSIT = (
    "---\ntitle: 가람 정기예금 상품설명서\ngroups: [all]\n---\n# 가람 정기예금 상품설명서\n## 4. 중도해지이율\n"
    "만기 전에 해지하면 약정이율 대신 중도해지이율을 적용한다. 가입 후 6개월 미만이면 기본이율의 30%를 적용한다.\n"
)
CREDIT = (
    "---\ntitle: 여신 심사 지침\ngroups: [credit]\n---\n"
    "# 여신 심사 지침\n## 2. LTV\nLTV가 70%를 넘는 주택담보대출은 본부 승인을 받는다.\n"
)
ASK = "정기예금을 만기 전에 해지하면 이자는?"


@pytest.fixture(scope="module")
def ask_kb(tmp_path_factory):
    from kofin.serve.ingest import IngestConfig
    from kofin.serve.ingest import main as ingest

    root = tmp_path_factory.mktemp("ask-cli")
    (root / "docs").mkdir()
    (root / "docs" / "deposit.md").write_text(DEPOSIT, encoding="utf-8")
    (root / "docs" / "credit.md").write_text(CREDIT, encoding="utf-8")
    ingest(IngestConfig(output_dir=root / "kb", inputs=[root / "docs"], default_groups=["all"]))
    return root / "kb"


@pytest.fixture
def kofin_home(tmp_path, monkeypatch):
    monkeypatch.setenv("KOFIN_HOME", str(tmp_path / "home"))


def _ask_json(capsys, *argv: str) -> dict:
    assert main(["ask", *argv, "--json"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def test_ask_answers_and_calibrates_with_the_chats_settings_from_its_serve_config(bundled_kb, capsys):
    """`kofin ask --serve-config configs/serve/demo.yaml` uses the chat's KB, users file and answer
    settings (its gate, 0.25 against ask's default 0.18), so a gate calibrated there is the one the
    chat serves; a serve config given as --config is named as one."""
    import argparse

    from kofin.serve.ask import AskConfig
    from kofin.serve.cli import _ask_config

    demo = ROOT / "configs" / "serve" / "demo.yaml"
    args = argparse.Namespace(serve_config=demo, config=None, overrides=[])
    cfg = _ask_config(args, "kofin ask", [f"kb={bundled_kb}", "retrieval.top_k=3"])
    assert cfg.min_coverage == 0.25 != AskConfig.model_fields["min_coverage"].default
    assert cfg.kb == bundled_kb and cfg.retrieval.top_k == 3
    got = _ask_json(capsys, "--serve-config", str(demo), "--kb", str(bundled_kb), "체크카드 해외 결제 돼요?")
    assert got["found"] and got["sources"][0]["id"].startswith("card/")
    # a scope refusal says why
    assert main(["ask", "--serve-config", str(demo), "--kb", str(bundled_kb), "케이뱅크 정기예금 금리 몇 %예요?"]) == 0
    assert "[사유] ‘케이뱅크’에 대한 문서가" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exited:
        main(["ask", "--config", str(demo), "체크카드 해외 결제 돼요?"])
    assert exited.value.code == 2 and "give it as --serve-config" in capsys.readouterr().err


def test_ask_takes_only_real_config_keys_as_overrides():
    from kofin.serve.ask import AskConfig
    from kofin.serve.cli import _split
    from kofin.serve.ingest import IngestConfig

    words = [
        "LTV=70%이면",
        "대출",
        "한도는?",
        "min_coverage=0.2",
        "retrieval.top_k=3",
        "min_coverag=0.2",
        "DSR=40%",
        "a=b",
        "x.y=1",
    ]
    assert _split(AskConfig, words) == (
        ["min_coverage=0.2", "retrieval.top_k=3", "min_coverag=0.2"],
        ["LTV=70%이면", "대출", "한도는?", "DSR=40%", "a=b", "x.y=1"],
    )
    assert _split(IngestConfig, ["docs/x=1.md", "LTV=1.md", "rebuild=true"]) == (
        ["rebuild=true"],
        ["docs/x=1.md", "LTV=1.md"],
    )


def test_ask_question_with_an_equals_sign_is_asked(ask_kb, kofin_home, capsys):
    out = _ask_json(
        capsys, "--kb", str(ask_kb), "LTV=70%이면 정기예금을 만기 전에 해지하면 이자는?", "min_coverage=0.1"
    )
    assert out["question"].startswith("LTV=70%이면") and out["found"]


def test_ask_mistyped_key_gets_the_nearest_key(ask_kb, kofin_home, capsys):
    with pytest.raises(SystemExit) as exit:
        main(["ask", "--kb", str(ask_kb), "min_coverag=0.2", ASK])
    assert exit.value.code == 2 and "did you mean 'min_coverage'" in capsys.readouterr().err


def test_ask_survives_a_lone_surrogate(ask_kb, kofin_home, capsys, tmp_path):
    out = _ask_json(capsys, "--kb", str(ask_kb), ASK + "\ud800")
    assert out["found"] and "\ud800" not in json.dumps(out)
    assert main(["ask", "--kb", str(ask_kb), "\udcff" + ASK]) == 0  # undecodable argv bytes arrive as \udcXX
    assert "[1]" in capsys.readouterr().out
    questions = tmp_path / "q.jsonl"
    questions.write_text('{"qid": "a", "question": "정기예금을 만기 전에 해지하면 이자는?\\ud800"}\n', encoding="utf-8")
    rc = main(["ask", "--kb", str(ask_kb), "--questions", str(questions), "--out", str(tmp_path / "a.jsonl")])
    err = capsys.readouterr().err
    if rc == 0:  # the answer path cleans questions (data_ko/korean.clean_text)
        assert json.loads((tmp_path / "a.jsonl").read_text(encoding="utf-8"))["found"]
    else:  # or it says what is wrong with which file: never a bare traceback or an empty message
        assert rc == 1 and "q.jsonl" in err and "Unicode" in err


def test_readable_errors_name_the_input():
    from kofin.errors import KofinError
    from kofin.serve.cli import _json_text, _readable_errors

    with pytest.raises(KofinError, match=r"questions file q.jsonl: text that is not valid Unicode .*\\ud800"):
        _readable_errors("questions file q.jsonl", lambda: "\ud800".encode("utf-8"))
    assert json.loads(_json_text({"qid": "a\ud800"})) == {"qid": "a\ufffd"}


def test_ask_users_file_formats(ask_kb, kofin_home, capsys, tmp_path):
    mapping, chat_list, bare_list, rejected = (tmp_path / f"{n}.yaml" for n in ("map", "chat", "list", "bad"))
    mapping.write_text("kim: [credit]\n", encoding="utf-8")
    chat_list.write_text(
        'users:\n  - name: kim\n    password_hash: "scrypt$16384$8$1$c2FsdA$a2V5"\n'
        "    groups: [credit]\n    admin: false\n",
        encoding="utf-8",
    )
    bare_list.write_text("- name: kim\n  groups: credit\n", encoding="utf-8")  # a bare list, one group as a string
    rejected.write_text("kim:\n  level: 3\n", encoding="utf-8")
    for users in (mapping, chat_list, bare_list):
        out = _ask_json(
            capsys, "--kb", str(ask_kb), "--users", str(users), "--user", "kim", "LTV 70% 넘는 주택담보대출은?"
        )
        assert [s["id"] for s in out["sources"] if s["cited"]] == ["credit.md"], users.name
    assert main(["ask", "--kb", str(ask_kb), "--users", str(rejected), "--user", "kim", ASK]) == 1
    err = capsys.readouterr().err
    assert str(rejected) in err and "kim: [branch, credit]" in err and "users:" in err and "- name: kim" in err


def test_ask_calibrate_proposes_a_gate_and_names_a_bad_line(ask_kb, kofin_home, capsys, tmp_path):
    labelled = tmp_path / "dev.jsonl"
    rows = [
        {"question": ASK, "gold": ["deposit.md"]},
        {"question": "6개월 안에 정기예금을 깨면 이율은?", "gold": ["deposit.md"]},
        {"question": "내일 부산 날씨 어때요?", "gold": []},
    ]
    labelled.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    assert main(["ask", "--kb", str(ask_kb), "--calibrate", str(labelled)]) == 0
    out = capsys.readouterr().out
    assert "proposed: min_coverage:" in out and "unanswerable refused 100.0% of 1" in out, out
    labelled.write_text(json.dumps(rows[0], ensure_ascii=False) + '\n{"question": "x"}\n', encoding="utf-8")
    assert main(["ask", "--kb", str(ask_kb), "--calibrate", str(labelled)]) != 0
    assert f"{labelled}:2" in capsys.readouterr().err


def test_ask_gives_no_answer_its_audit_log_cannot_record(ask_kb, kofin_home, capsys, tmp_path):
    log = tmp_path / "ask.jsonl"
    assert main(["ask", "--kb", str(ask_kb), ASK, f"audit_log={log}"]) == 0
    assert main(["ask", "--kb", str(ask_kb), ASK, f"audit_log={log}"]) == 0
    capsys.readouterr()
    log.write_text(
        log.read_text(encoding="utf-8").splitlines(keepends=True)[0], encoding="utf-8"
    )  # the last line cut off
    assert main(["ask", "--kb", str(ask_kb), ASK, f"audit_log={log}"]) != 0
    captured = capsys.readouterr()
    assert "[1]" not in captured.out and captured.err  # no answer, and a reason
    assert main(["audit", "verify", str(log)]) == 1
    # Not one streamed piece of an answer before the refusal (a generative answer streams to the terminal).
    from kofin.serve.ask import AskConfig, Assistant
    from kofin.serve.audit import AuditTampered

    pieces = []
    with pytest.raises(AuditTampered):
        for kind, _ in Assistant(AskConfig(kb=ask_kb, audit_log=log)).stream(ASK):
            pieces.append(kind)
    assert pieces == []


@pytest.mark.parametrize(
    "argv", [["data", "build"], ["sft"], ["dpo"], ["merge"], ["eval"], ["ingest"], ["serve"], ["pipeline"]]
)
def test_each_stages_help_suggests_one_of_its_own_keys_and_lists_allowed_values(argv, capsys):
    import re

    from kofin.cli import COMMANDS, load_target
    from kofin.config import describe_fields
    from kofin.stage_cli import literal_choices

    stage = argv[0]
    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    out = capsys.readouterr().out
    model = load_target(COMMANDS[stage].config)
    keys = {k for k, _, _ in describe_fields(model)}
    suggested = re.search(r"override a config key, e\.g\. ([\w.]+)=", out)
    assert suggested is None or suggested.group(1) in keys, (stage, suggested.group(1))
    for key, values in literal_choices(model).items():
        if key in keys:
            assert f"one of: {' | '.join(values)}" in out.split(f"  {key} ", 1)[1], (stage, key)


def test_ask_and_ingest_flags_are_config_keys_with_the_keys_own_help(capsys):
    from kofin.config import describe_fields
    from kofin.serve.ask import AskConfig
    from kofin.serve.cli import ASK_FLAGS

    with pytest.raises(SystemExit):
        main(["ask", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    described = {key: desc for key, _, desc in describe_fields(AskConfig)}
    for flag, key in ASK_FLAGS.items():
        assert f"config key {key}" in out and " ".join(described[key].split())[:40] in out, (flag, key)
    with pytest.raises(SystemExit):
        main(["ask", "--kb", "x", "--backend", "gpt", "질문"])
    assert "invalid choice: 'gpt'" in capsys.readouterr().err


def test_ask_says_when_no_document_is_open_to_the_asker(kofin_home, capsys, tmp_path):
    from kofin.serve.ingest import IngestConfig
    from kofin.serve.ingest import main as ingest

    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "note.md").write_text(
        "# 시재 한도\n\n현금 시재는 3천만원을 넘지 않는다.\n", encoding="utf-8"
    )  # no groups
    ingest(IngestConfig(output_dir=tmp_path / "kb", inputs=[tmp_path / "docs"]))
    assert main(["ask", "--kb", str(tmp_path / "kb"), "현금 시재 한도는?"]) == 0
    captured = capsys.readouterr()
    assert (
        "찾지 못했습니다" in captured.out
        and "no document of" in captured.err
        and "default_groups='[all]'" in captured.err
    )
