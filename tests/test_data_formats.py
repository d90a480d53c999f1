"""Readers and normalisers of user data: every shape kofin accepts, and the exact error for bad rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kofin.data_ko.formats import (
    MAX_PROBLEMS,
    DataInputError,
    RowError,
    normalize_instruction,
    normalize_preference,
    read_instructions,
    read_preferences,
    read_records,
)
from kofin.errors import KofinError

EXAMPLES = Path(__file__).resolve().parents[1] / "data_ko" / "examples"


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows), encoding="utf-8"
    )
    return path


def chat(*turns: tuple[str, str]) -> list[dict[str, str]]:
    return [{"role": r, "content": c} for r, c in turns]


# ---------------------------------------------------------------- readers


def test_jsonl_rows_are_named_file_and_line(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [{"x": 1}, "", {"x": 2}])
    assert list(read_records(path)) == [("a.jsonl:1", {"x": 1}), ("a.jsonl:3", {"x": 2})]


def test_malformed_json_names_every_bad_line(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"x": 1}, '{"x": 2', {"x": 3}, "{x: 4}"])
    with pytest.raises(DataInputError) as err:
        list(read_records(path))
    assert isinstance(err.value, KofinError)
    assert [p.split("  ")[0] for p in err.value.problems] == ["bad.jsonl:2", "bad.jsonl:4"]
    assert "not valid JSON" in err.value.problems[0]
    assert str(path) in str(err.value)


def test_json_array_and_its_errors(tmp_path):
    good = tmp_path / "rows.json"
    good.write_text(json.dumps([{"a": 1}, {"a": 2}]), encoding="utf-8")
    assert list(read_records(good)) == [("rows.json[0]", {"a": 1}), ("rows.json[1]", {"a": 2})]
    broken = tmp_path / "broken.json"
    broken.write_text('[\n{"a": 1},\n{"a": }\n]', encoding="utf-8")
    with pytest.raises(DataInputError, match=r"broken\.json:3  not valid JSON"):
        list(read_records(broken))
    not_array = tmp_path / "obj.json"
    not_array.write_text('{"a": 1}', encoding="utf-8")
    with pytest.raises(DataInputError, match="expected a JSON array"):
        list(read_records(not_array))


def test_parquet_rows(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [
        {"messages": chat(("user", "질문"), ("assistant", "답"))},
        {"messages": chat(("user", "둘"), ("assistant", "셋"))},
    ]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    assert read_instructions(tmp_path / "d.parquet") == [
        {"messages": rows[0]["messages"], "source": "d.parquet[0]"},
        {"messages": rows[1]["messages"], "source": "d.parquet[1]"},
    ]


def test_saved_dataset_folder_and_dataset_dict_split(tmp_path):
    import datasets

    rows = [{"instruction": "요약해 주세요", "output": "요약입니다"}]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "single"))
    assert read_instructions(tmp_path / "single") == [
        {"messages": chat(("user", "요약해 주세요"), ("assistant", "요약입니다")), "source": "single[0]"}
    ]
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(rows), "test": datasets.Dataset.from_list(rows)}
    ).save_to_disk(str(tmp_path / "dd"))
    assert [r["source"] for r in read_instructions(tmp_path / "dd", split="test")] == ["dd[test][0]"]
    with pytest.raises(DataInputError, match=r"holds splits \['test', 'train'\]; set split:"):
        read_instructions(tmp_path / "dd")
    with pytest.raises(DataInputError, match="no split 'dev'"):
        read_instructions(tmp_path / "dd", split="dev")


def test_missing_file_and_unknown_extension(tmp_path):
    with pytest.raises(DataInputError, match="no such file"):
        list(read_records(tmp_path / "nope.jsonl"))
    (tmp_path / "x.csv").write_text("a,b\n", encoding="utf-8")
    with pytest.raises(DataInputError, match=r"unsupported file type '\.csv'"):
        list(read_records(tmp_path / "x.csv"))


# ---------------------------------------------------------------- instruction rows


def test_alpaca_row():
    row = {"instruction": "다음을 번역하세요", "input": "deposit", "output": "예금", "system": "번역가"}
    assert normalize_instruction(row, "alpaca") == chat(
        ("system", "번역가"), ("user", "다음을 번역하세요\n\ndeposit"), ("assistant", "예금")
    )
    assert normalize_instruction({"instruction": "질문", "output": "답"}) == chat(("user", "질문"), ("assistant", "답"))


def test_sharegpt_row_maps_speakers():
    row = {
        "conversations": [
            {"from": "system", "value": "S"},
            {"from": "human", "value": "Q"},
            {"from": "gpt", "value": "A"},
        ]
    }
    assert normalize_instruction(row, "sharegpt") == chat(("system", "S"), ("user", "Q"), ("assistant", "A"))


def test_sharegpt_unknown_speaker_is_named():
    row = {"conversations": [{"from": "human", "value": "Q"}, {"from": "bot", "value": "A"}]}
    with pytest.raises(RowError) as err:
        normalize_instruction(row)
    assert str(err.value) == "conversations[1].from: unknown speaker 'bot'; expected one of human, gpt, system"


def test_openai_missing_role_and_wrong_type_are_named():
    with pytest.raises(RowError) as err:
        normalize_instruction(
            {"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}, {"content": "Q2"}]}
        )
    assert err.value.field == "messages[2].role"
    assert str(err.value).startswith("messages[2].role: missing")
    with pytest.raises(RowError, match=r"^messages\[0\]\.content: expected a string, got int$"):
        normalize_instruction({"messages": [{"role": "user", "content": 5}]})
    with pytest.raises(RowError, match=r"^messages: expected a list of messages, got str$"):
        normalize_instruction({"messages": "hello"})
    with pytest.raises(RowError, match=r"^messages\[0\]\.role: unknown role 'tool'"):
        normalize_instruction({"messages": [{"role": "tool", "content": "x"}]})


def test_auto_detects_format_per_row(tmp_path):
    path = write_jsonl(
        tmp_path / "mixed.jsonl",
        [
            {"instruction": "I", "output": "O"},
            {"conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]},
            {"messages": chat(("user", "U"), ("assistant", "B"))},
        ],
    )
    rows = read_instructions(path)
    assert [r["messages"][0]["content"] for r in rows] == ["I", "Q", "U"]
    assert [r["source"] for r in rows] == ["mixed.jsonl:1", "mixed.jsonl:2", "mixed.jsonl:3"]
    with pytest.raises(RowError, match=r"unknown row shape \(keys: prompt, text\)"):
        normalize_instruction({"text": "t", "prompt": "p"})


def test_file_errors_name_line_and_field_and_are_collected(tmp_path):
    path = write_jsonl(
        tmp_path / "inst.jsonl",
        [
            {"messages": chat(("user", "Q"), ("assistant", "A"))},
            {"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}, {"content": "x"}]},
            {"conversations": [{"from": "robot", "value": "A"}]},
            {"instruction": "I"},
        ],
    )
    with pytest.raises(DataInputError) as err:
        read_instructions(path)
    assert err.value.problems == [
        "inst.jsonl:2  messages[2].role: missing; expected one of system, user, assistant",
        "inst.jsonl:3  conversations[0].from: unknown speaker 'robot'; expected one of human, gpt, system",
        "inst.jsonl:4  output: missing",
    ]


def test_problem_collection_stops_after_the_limit(tmp_path):
    path = write_jsonl(tmp_path / "many.jsonl", [{"instruction": "I"}] * (MAX_PROBLEMS + 5))
    with pytest.raises(DataInputError) as err:
        read_instructions(path)
    assert len(err.value.problems) == MAX_PROBLEMS
    assert f"{MAX_PROBLEMS}+ problems" in str(err.value) and "stopped after" in str(err.value)


# ---------------------------------------------------------------- preference rows


def test_explicit_preference_with_strings():
    out = normalize_preference({"prompt": "Q", "chosen": "good", "rejected": "bad", "system": "S"})
    assert out == {
        "prompt": chat(("system", "S"), ("user", "Q")),
        "chosen": chat(("assistant", "good")),
        "rejected": chat(("assistant", "bad")),
    }


def test_explicit_preference_strips_a_repeated_prompt():
    prompt = chat(("user", "Q"))
    out = normalize_preference(
        {"prompt": prompt, "chosen": prompt + chat(("assistant", "A")), "rejected": chat(("assistant", "B"))}
    )
    assert out["chosen"] == chat(("assistant", "A")) and out["rejected"] == chat(("assistant", "B"))


def test_implicit_prompt_single_turn():
    row = {
        "chosen": chat(("user", "Q"), ("assistant", "A")),
        "rejected": chat(("user", "Q"), ("assistant", "B")),
        "chosen_rating": 5,
    }
    assert normalize_preference(row) == {
        "prompt": chat(("user", "Q")),
        "chosen": chat(("assistant", "A")),
        "rejected": chat(("assistant", "B")),
    }


def test_implicit_prompt_multi_turn_keeps_the_whole_history():
    history = chat(("system", "S"), ("user", "Q1"), ("assistant", "A1"), ("user", "Q2"))
    row = {"chosen": history + chat(("assistant", "good")), "rejected": history + chat(("assistant", "bad"))}
    out = normalize_preference(row, "implicit")
    assert out["prompt"] == history
    assert out["chosen"] == chat(("assistant", "good")) and out["rejected"] == chat(("assistant", "bad"))


def test_implicit_prompt_errors():
    with pytest.raises(RowError, match="share no user turn"):
        normalize_preference(
            {"chosen": chat(("user", "Q"), ("assistant", "A")), "rejected": chat(("user", "other"), ("assistant", "B"))}
        )
    with pytest.raises(RowError, match=r"^rejected: identical to chosen"):
        normalize_preference(
            {"chosen": chat(("user", "Q"), ("assistant", "A")), "rejected": chat(("user", "Q"), ("assistant", "A"))}
        )
    # Diverging at a user turn leaves a user turn in the completion: not a preference pair.
    with pytest.raises(RowError, match=r"^chosen\[2\]\.role: expected 'assistant' after the prompt, got 'user'"):
        normalize_preference(
            {
                "chosen": chat(("user", "Q"), ("assistant", "A"), ("user", "X"), ("assistant", "Y")),
                "rejected": chat(("user", "Q"), ("assistant", "B")),
            }
        )
    with pytest.raises(RowError, match=r"^chosen: missing"):
        normalize_preference({"rejected": chat(("user", "Q"), ("assistant", "B"))})


# ---------------------------------------------------------------- shipped examples


@pytest.mark.parametrize(
    "name,fmt",
    [
        ("instructions_alpaca.jsonl", "alpaca"),
        ("instructions_sharegpt.jsonl", "sharegpt"),
        ("instructions_openai.jsonl", "openai"),
    ],
)
def test_example_instruction_files_read_in_their_format(name, fmt):
    rows = read_instructions(EXAMPLES / name, fmt)
    assert len(rows) == 8
    assert rows == read_instructions(EXAMPLES / name, "auto")
    for row in rows:
        assert row["messages"][-1]["role"] == "assistant"


def test_example_preferences_are_dpo_mix_shaped_with_multi_turn_rows():
    rows = read_preferences(EXAMPLES / "preferences_dpo_mix.jsonl", "implicit")
    assert len(rows) == 12
    multi = [r for r in rows if sum(m["role"] == "user" for m in r["prompt"]) > 1]
    assert len(multi) == 3
    for row in multi:
        roles = [m["role"] for m in row["prompt"] if m["role"] != "system"]
        assert roles == ["user", "assistant", "user"]
    assert all(len(r["chosen"]) == 1 and r["chosen"] != r["rejected"] for r in rows)
