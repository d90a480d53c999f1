"""Validation of built rows: schema and role order, PII, duplicates, token length, split, leakage."""

from __future__ import annotations

import json

import pytest

from kofin.data_ko.cli import run_cli
from kofin.data_ko.config import ValidateConfig
from kofin.data_ko.formats import DataInputError
from kofin.data_ko.validate import (
    check_preference_row,
    check_sft_row,
    load_tokenizer,
    split_by_document,
    token_lengths,
    validate_rows,
)


def chat(*turns: tuple[str, str]) -> list[dict[str, str]]:
    return [{"role": r, "content": c} for r, c in turns]


def sft_row(source: str, question: str, answer: str) -> dict:
    return {"messages": chat(("system", "도우미"), ("user", question), ("assistant", answer)), "source": source}


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    return load_tokenizer(tiny_model)


# ---------------------------------------------------------------- schema


def test_sft_role_order_and_content_problems_are_named():
    assert (
        check_sft_row(
            {"messages": chat(("system", "s"), ("user", "q"), ("assistant", "a"), ("user", "q2"), ("assistant", "a2"))}
        )
        == []
    )
    assert check_sft_row({"messages": chat(("assistant", "a"), ("user", "q"))}) == [
        "messages[0].role: expected 'user' (turns alternate user/assistant, starting with user), got 'assistant'",
    ]
    assert check_sft_row({"messages": chat(("user", "q"), ("user", "q"), ("assistant", "a"))}) == [
        "messages[1].role: expected 'assistant' (turns alternate user/assistant, starting with user), got 'user'",
    ]
    assert check_sft_row({"messages": chat(("user", "q"), ("system", "s"), ("assistant", "a"))}) == [
        "messages[1].role: a system turn may only come first"
    ]
    assert check_sft_row({"messages": chat(("user", "q"), ("assistant", "a"), ("user", "q2"))}) == [
        "messages: the last turn must be 'assistant', got 'user'"
    ]
    assert check_sft_row({"messages": [{"role": "user", "content": "  "}, {"role": "assistant", "content": 3}]}) == [
        "messages[0].content: empty",
        "messages[1].content: expected a string, got int",
    ]
    assert check_sft_row({"text": "x"}) == ["messages: missing"]


def test_preference_row_problems():
    good = {"prompt": chat(("user", "q")), "chosen": chat(("assistant", "a")), "rejected": chat(("assistant", "b"))}
    assert check_preference_row(good) == []
    assert check_preference_row(good | {"prompt": chat(("user", "q"), ("assistant", "a"))}) == [
        "prompt: the last turn must be 'user', got 'assistant'"
    ]
    assert check_preference_row(good | {"rejected": chat(("assistant", "a"))}) == [
        "rejected: identical to chosen; a pair must differ"
    ]
    assert check_preference_row(good | {"chosen": chat(("user", "a"))}) == ["chosen[0].role: expected 'assistant'"]
    assert check_preference_row(good | {"rejected": [{"role": "assistant", "content": ""}]}) == [
        "rejected[0].content: expected a non-empty string"
    ]


def test_schema_errors_stop_the_build_naming_the_row(tokenizer):
    rows = [sft_row("kb:a#1", "q", "a"), {"messages": chat(("user", "q")), "source": "x.jsonl:9"}]
    with pytest.raises(DataInputError, match=r"x\.jsonl:9  messages: the last turn must be 'assistant', got 'user'"):
        validate_rows(rows, "sft", ValidateConfig(), tokenizer)


# ---------------------------------------------------------------- split and leakage


def doc_rows(n_docs: int, per_doc: int) -> list[dict]:
    return [
        sft_row(f"kb:doc{d}#{p}", f"문서 {d}의 {p}번째 질문입니다", f"문서 {d} 단락 {p}의 고유한 답 {d * 1000 + p}")
        for d in range(n_docs)
        for p in range(1, per_doc + 1)
    ]


def test_split_keeps_each_document_on_one_side():
    rows = doc_rows(30, 4) + [sft_row(f"inst.jsonl:{i}", f"질문 {i}", f"답 {i}") for i in range(1, 21)]
    train, evals = split_by_document(rows, 0.2, seed=0)
    assert sorted(train + evals) == list(range(len(rows)))
    groups = lambda idx: {rows[i]["source"].split("#")[0] for i in idx}  # noqa: E731
    assert groups(train).isdisjoint(groups(evals))
    assert abs(len(evals) - 0.2 * len(rows)) <= 4  # whole documents of 4 rows: within one document
    assert (train, evals) == split_by_document(rows, 0.2, seed=0)
    assert split_by_document(rows, 0.2, seed=1) != (train, evals)
    assert split_by_document(rows, 0.0, seed=0) == (list(range(len(rows))), [])


def test_leakage_removes_eval_rows_that_near_duplicate_train(tokenizer):
    rows = doc_rows(20, 2)
    cfg = ValidateConfig(dedupe="none", eval_fraction=0.2, seed=0)
    train_idx, eval_idx = split_by_document(rows, 0.2, 0)
    # Plant a copy of a train row's text into an eval document.
    leaked_into = rows[eval_idx[0]]
    leaked_into["messages"] = [dict(m) for m in rows[train_idx[0]]["messages"]]
    result = validate_rows(rows, "sft", cfg, tokenizer)
    assert result.report["leakage"]["removed_from_eval"] == 1
    assert result.report["leakage"]["examples"] == [
        {"eval": leaked_into["source"], "train": rows[train_idx[0]]["source"]}
    ]
    assert leaked_into["source"] not in {r["source"] for r in result.eval}
    assert len(result.eval) == len(eval_idx) - 1 and len(result.train) == len(train_idx)


# ---------------------------------------------------------------- duplicates, PII, length


def test_duplicates_are_removed_and_reported(tokenizer):
    rows = doc_rows(10, 2)
    rows.append(sft_row("copy.jsonl:1", rows[3]["messages"][1]["content"], rows[3]["messages"][2]["content"]))
    near = rows[5]["messages"][2]["content"] + "."
    rows.append(sft_row("copy.jsonl:2", rows[5]["messages"][1]["content"], near))
    exact_only = validate_rows(
        [json.loads(json.dumps(r)) for r in rows], "sft", ValidateConfig(dedupe="exact", eval_fraction=0), tokenizer
    )
    assert exact_only.report["duplicates"]["exact"] == 1 and exact_only.report["duplicates"]["near"] == 0
    both = validate_rows(rows, "sft", ValidateConfig(dedupe="near", near_dup_threshold=0.7, eval_fraction=0), tokenizer)
    assert (both.report["duplicates"]["exact"], both.report["duplicates"]["near"]) == (1, 1)
    assert [e["removed"] for e in both.report["duplicates"]["examples"]] == ["copy.jsonl:1", "copy.jsonl:2"]
    assert len(both.train) == 20


def test_pii_is_masked_in_every_message_and_counted(tokenizer):
    rows = [sft_row("a.jsonl:1", "제 번호는 010-2345-6789입니다", "주민등록번호 900101-1234567은 받지 않습니다")]
    result = validate_rows(rows, "sft", ValidateConfig(eval_fraction=0), tokenizer)
    contents = [m["content"] for m in result.train[0]["messages"]]
    assert contents[1:] == ["제 번호는 [전화번호]입니다", "주민등록번호 [주민등록번호]은 받지 않습니다"]
    assert result.report["pii"] == {"rows_changed": 1, "masked": 2, "by_kind": {"phone": 1, "rrn": 1}}


def test_token_lengths_use_the_chat_template(tokenizer):
    row = sft_row("a#1", "질문", "답변")
    rendered = tokenizer.apply_chat_template(row["messages"], tokenize=False)
    assert token_lengths([row], "sft", tokenizer) == [len(tokenizer(rendered, add_special_tokens=False)["input_ids"])]
    pair = {
        "prompt": chat(("user", "질문")),
        "chosen": chat(("assistant", "짧다")),
        "rejected": chat(("assistant", "훨씬 더 길게 쓴 거절 답변입니다 " * 5)),
    }
    longer = token_lengths([{"messages": pair["prompt"] + pair["rejected"]}], "sft", tokenizer)
    assert token_lengths([pair], "dpo", tokenizer) == longer


def test_too_long_rows_are_dropped_or_named(tokenizer):
    rows = doc_rows(6, 1)
    rows.append(sft_row("long.jsonl:4", "긴 질문", "아주 긴 답변입니다. " * 200))
    cfg = ValidateConfig(max_seq_len=256, too_long="drop", eval_fraction=0)
    result = validate_rows([json.loads(json.dumps(r)) for r in rows], "sft", cfg, tokenizer)
    assert result.report["tokens"]["dropped"] == 1 and result.report["tokens"]["over_max_seq_len"] == 1
    assert result.report["tokens"]["dropped_rows"][0].startswith("long.jsonl:4 (")
    assert "long.jsonl:4" not in {r["source"] for r in result.train} and len(result.train) == 6
    with pytest.raises(
        DataInputError, match=r"1 rows exceed validate.max_seq_len=256[\s\S]*long\.jsonl:4 \(\d+ tokens\)"
    ):
        validate_rows(rows, "sft", cfg.model_copy(update={"too_long": "error"}), tokenizer)


# ---------------------------------------------------------------- kofin data validate FILE


def test_validate_command_reports_and_fails_on_schema_errors(tmp_path, tiny_model, capsys):
    good = tmp_path / "good.jsonl"
    good.write_text(
        "\n".join(json.dumps(sft_row(f"kb:d#{i}", f"질문 {i}", f"답 {i}"), ensure_ascii=False) for i in range(3))
        + "\n",
        encoding="utf-8",
    )
    assert run_cli(["validate", str(good), "--tokenizer", str(tiny_model), "--max-seq-len", "512"]) == 0
    out = capsys.readouterr().out
    assert (
        "good.jsonl: 3 sft rows, 3 valid, 0 schema errors" in out and "tokens (" in out and out.rstrip().endswith("OK")
    )

    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        good.read_text(encoding="utf-8") + json.dumps({"messages": chat(("user", "q"), ("user", "q2"))}) + "\n",
        encoding="utf-8",
    )
    assert run_cli(["validate", str(bad), "--no-tokens"]) == 1
    out = capsys.readouterr().out
    assert "bad.jsonl:4  messages[1].role: expected 'assistant'" in out and "FAILED" in out

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        json.dumps(
            {"chosen": chat(("user", "q"), ("assistant", "a")), "rejected": chat(("user", "q"), ("assistant", "a"))}
        )
        + "\n",
        encoding="utf-8",
    )
    assert run_cli(["validate", str(pairs), "--no-tokens"]) == 1
    assert "pairs.jsonl:1  rejected: identical to chosen" in capsys.readouterr().out
