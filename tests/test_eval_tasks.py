"""Eval tasks are data: bundled task YAMLs load, each loader reads its public format, bad rows are named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kofin.config import ConfigError
from kofin.data_ko.formats import DataInputError
from kofin.eval.tasks import TaskError, TaskSpec, bundled_tasks, load_examples, load_task, prompt_for

ROOT = Path(__file__).resolve().parents[1]


def test_every_bundled_task_loads_its_example_file():
    names = bundled_tasks()
    assert {
        "fin_mcq_fmmlu",
        "fin_mcq_kmmlu",
        "fin_sentiment",
        "fin_numeric_qa",
        "general_mcq_ko",
        "general_gsm8k_ko",
        "fin_xbrl_extraction",
        "kb_rag",
        "fin_sentiment_fiqa",
        "fin_headline",
        "fin_ner_cls",
    } <= set(names)
    for name in names:
        spec = load_task(name)
        assert spec.path.is_absolute() and spec.path.parent.name == "examples"
        examples = load_examples(spec)
        assert len(examples) >= 4
        assert len({e.id for e in examples}) == len(examples), f"{name}: example ids must be unique (resume keys)"


def test_financial_mmlu_ko_conversation_format():
    ex = load_examples(load_task("fin_mcq_fmmlu"))
    first = ex[0]
    assert first.id == "kofin_fmmlu_0"
    assert first.question == "정기예금을 만기 전에 해지할 때 일반적으로 적용되는 이율은?"
    assert first.choices[1] == "약정이율보다 낮은 중도해지이율" and len(first.choices) == 4
    assert first.answer == 1  # gpt answered "2": the second option, index 1
    assert prompt_for(load_task("fin_mcq_fmmlu"), first).endswith(
        "B. 약정이율보다 낮은 중도해지이율\nC. 기준금리와 같은 이율\nD. 이자가 전혀 지급되지 않는다\n정답:"
    )


def test_kmmlu_csv_keeps_only_the_finance_categories():
    ex = load_examples(load_task("fin_mcq_kmmlu"))
    assert [e.meta["category"] for e in ex] == ["Accounting", "Economics", "Taxation", "Real Estate", "Management"]
    assert ex[0].answer == 2 and ex[0].choices[2] == "자본"
    assert ex[0].where == "kmmlu_finance.csv:2"


def test_sentiment_maps_labels_to_label_words():
    spec = load_task("fin_sentiment")
    ex = load_examples(spec)
    assert [e.choices[e.answer] for e in ex[:3]] == ["긍정", "부정", "중립"]
    assert "선택지: 긍정, 부정, 중립" in prompt_for(spec, ex[0])


def test_finlora_context_target_rows_and_their_answers_match():
    from kofin.eval.metrics import exact_match

    ex = load_examples(load_task("fin_xbrl_extraction"))
    assert [e.answer for e in ex] == ["1,250,000,000,000", "-32000000000", "ifrs-full:CashAndCashEquivalents", "150%"]
    assert ex[0].question.startswith("다음 XBRL 문서에서") and "ifrs-full:Revenue" in ex[0].question
    assert exact_match("답: -320억", ex[1].answer) and exact_match("1조 2,500억 원", ex[0].answer)
    assert not exact_match("ifrs-full:Cash", ex[2].answer)


def test_fiqa_scores_are_binned_and_headlines_map_yes_no():
    fiqa = load_task("fin_sentiment_fiqa")
    # 0.62 >= 0.1 -> 긍정; -0.48 < -0.1 -> 부정; 0.02 in [-0.1, 0.1) -> 중립; -0.12 < -0.1 -> 부정
    assert [e.choices[e.answer] for e in load_examples(fiqa)] == ["긍정", "부정", "중립", "부정"]
    assert [e.choices[e.answer] for e in load_examples(load_task("fin_headline"))] == ["예", "아니오", "아니오", "예"]
    assert [e.choices[e.answer] for e in load_examples(load_task("fin_ner_cls"))] == ["기관", "인물", "장소", "기관"]


def test_gsm8k_answer_is_the_number_after_hashes():
    ex = load_examples(load_task("general_gsm8k_ko"))
    assert [e.answer for e in ex] == ["7", "4800", "6", "360,000"]


def test_laws_question_format_from_shared_data(laws_dir, tmp_path):
    spec = TaskSpec(
        name="laws", kind="rag", format="laws_questions", path=laws_dir / "questions_dev.jsonl", kb=tmp_path
    )
    ex = load_examples(spec)
    assert len(ex) == 60
    assert ex[0].id == "dev-001" and ex[0].meta["gold"] == ["신용협동조합법 제78조"]


def test_bad_rows_are_named_with_file_line_and_fix(tmp_path):
    data = tmp_path / "s.jsonl"
    rows = [{"sentence": "좋다", "label": "positive"}, {"sentence": "나쁘다", "label": "bullish"}, {"label": "neutral"}]
    data.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    spec = TaskSpec(
        name="s",
        kind="classification",
        format="sentiment",
        path=data,
        labels=["긍정", "부정", "중립"],
        label_map={"positive": "긍정", "negative": "부정", "neutral": "중립"},
    )
    with pytest.raises(DataInputError) as err:
        load_examples(spec)
    msg = str(err.value)
    assert "2 problems" in msg
    assert (
        "s.jsonl:2  label: label 'bullish' is not one of ['negative', 'neutral', 'positive']; "
        "add it to the task's label_map" in msg
    )
    assert "s.jsonl:3  sentence: missing or empty" in msg


def test_bad_csv_answer_and_task_yaml_errors(tmp_path):
    csv = tmp_path / "k.csv"
    csv.write_text("question,answer,A,B,C,D,Category\n질문,5,a,b,c,d,Accounting\n", encoding="utf-8")
    spec = TaskSpec(name="k", kind="mcq", format="kmmlu_csv", path=csv)
    with pytest.raises(DataInputError, match=r"k.csv:2  answer: expected 1-4"):
        load_examples(spec)
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nkind: classification\nformat: sentiment\npath: s.jsonl\nlabelz: [a]\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_task(bad)
    assert "bad.yaml:5  labelz: unknown key" in str(err.value)
    with pytest.raises(
        TaskError, match="unknown task 'nope'; bundled tasks: fin_headline, fin_mcq_fmmlu, fin_mcq_kmmlu, fin_ner_cls, "
    ):
        load_task("nope")


def test_tfns_nwgi_and_korfin_asc_in_their_public_layouts():
    # TFNS: text,label CSV with 0 bearish / 1 bullish / 2 neutral.
    tfns = load_examples(load_task("fin_sentiment_tfns"))
    assert [e.choices[e.answer] for e in tfns] == ["부정", "긍정", "중립", "부정", "긍정"]
    assert tfns[0].where == "tfns_ko.csv:2" and tfns[0].question.startswith("가람전자 목표주가 하향")
    # NWGI: seven levels folded as FinGPT's benchmark folds them (mildly -> neutral).
    nwgi = load_examples(load_task("fin_sentiment_nwgi"))
    assert [e.choices[e.answer] for e in nwgi] == ["부정", "부정", "중립", "중립", "긍정", "중립"]
    # KorFin-ASC: the sentiment toward `aspect`; one headline, two firms, two labels.
    spec = load_task("fin_sentiment_korfin_asc")
    asc = load_examples(spec)
    assert [e.choices[e.answer] for e in asc] == ["긍정", "부정", "중립", "부정"]
    assert asc[0].question.split("\n")[0] == asc[1].question.split("\n")[0]
    assert asc[1].question.endswith("\n대상: 나래전자")
    assert (
        "문장: 가람전자 영업이익 30% 증가…경쟁사 나래전자는 적자 전환\n대상: 나래전자\n선택지: 긍정, 부정, 중립\n정답:"
        in prompt_for(spec, asc[1])
    )


def test_fpb_integer_labels_parquet_and_the_original_txt_release(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    fpb = load_task("fin_sentiment")
    # financial_phrasebank as the hub serves it (parquet, label 0 negative / 1 neutral / 2 positive).
    data = tmp_path / "fpb.parquet"
    pq.write_table(
        pa.table({"sentence": ["순이익이 늘었다.", "연체율이 올랐다.", "회의가 열린다."], "label": [2, 0, 1]}), data
    )
    ex = load_examples(fpb.model_copy(update={"path": data}))
    assert [e.choices[e.answer] for e in ex] == ["긍정", "부정", "중립"] and ex[1].question == "연체율이 올랐다."
    # The original Sentences_50Agree.txt: 'sentence@label' lines in Latin-1.
    txt = tmp_path / "Sentences_50Agree.txt"
    txt.write_bytes("Café chain's sales rose 5% .@positive\nThe board meets on Monday .@neutral\n".encode("latin-1"))
    spec = fpb.model_copy(update={"path": txt, "format": "fpb_txt"})
    ex = load_examples(spec)
    assert [(e.question, e.choices[e.answer], e.id) for e in ex] == [
        ("Café chain's sales rose 5% .", "긍정", "Sentences_50Agree.txt:1"),
        ("The board meets on Monday .", "중립", "Sentences_50Agree.txt:2"),
    ]
    txt.write_text("이익이 늘었다.@positive\n라벨 없는 줄\n손실.@bearish\n", encoding="utf-8")
    with pytest.raises(DataInputError) as err:
        load_examples(spec)
    assert "Sentences_50Agree.txt:2  line: expected 'sentence@label'" in str(err.value)
    assert "Sentences_50Agree.txt:3  label: label 'bearish' is not one of" in str(err.value)


def test_tfns_csv_bad_label_is_named(tmp_path):
    data = tmp_path / "sent_valid.csv"
    data.write_text("text,label\n좋다,1\n나쁘다,3\n", encoding="utf-8")
    with pytest.raises(DataInputError, match=r"sent_valid.csv:3  label: label '3' is not one of \['0', '1', '2'\]"):
        load_examples(load_task("fin_sentiment_tfns").model_copy(update={"path": data}))


def test_finlora_classification_rows_keep_only_the_input(tmp_path):
    # FinLoRA's test files hold FinGPT's whole prompt in `context` and the label word in `target`.
    rows = [
        {
            "context": "Instruction: What is the sentiment of this news? "
            "Please choose an answer from {negative/neutral/positive}.\n"
            "Input: 가람은행 순이익이 늘었다.\nAnswer: ",
            "target": "positive",
        },
        {
            "context": "Instruction: What is the entity type of '부산' in the input sentence.\n"
            "Options: person, location, organization\nInput: 가람은행은 부산에 센터를 열었다.\nAnswer: ",
            "target": "location",
        },
        {"context": "Input 없이 쓴 줄", "target": "neutral"},
    ]
    data = tmp_path / "fpb_test.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    spec = TaskSpec(
        name="f",
        kind="classification",
        format="sentiment",
        path=data,
        text_field="context",
        label_field="target",
        text_pattern=r"Input: (.*?)\s*Answer:",
        labels=["긍정", "부정", "중립", "장소"],
        label_map={"positive": "긍정", "negative": "부정", "neutral": "중립", "location": "장소"},
    )
    with pytest.raises(DataInputError, match=r"fpb_test.jsonl:3  context: does not match text_pattern"):
        load_examples(spec)
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows[:2]), encoding="utf-8")
    ex = load_examples(spec)
    assert [(e.question, e.choices[e.answer]) for e in ex] == [
        ("가람은행 순이익이 늘었다.", "긍정"),
        ("가람은행은 부산에 센터를 열었다.", "장소"),
    ]
    # The NER row's entity comes along when the pattern has a group for it.
    data.write_text(json.dumps(rows[1], ensure_ascii=False) + "\n", encoding="utf-8")
    ner = load_examples(spec.model_copy(update={"text_pattern": r"type of '(.+?)'.*Input: (.*?)\s*Answer:"}))
    assert ner[0].question == "부산\n가람은행은 부산에 센터를 열었다."
    with pytest.raises(ValueError, match="text_pattern needs a \\(group\\)"):
        TaskSpec(name="f", kind="classification", format="sentiment", path=data, labels=["a"], text_pattern="Input:")


def test_keys_of_another_kind_are_errors_naming_the_key(tmp_path):
    from kofin.config import ConfigError
    from kofin.eval.tasks import load_task

    src = ROOT / "eval" / "tasks" / "fin_mcq_kmmlu.yaml"
    bad = tmp_path / "mcq_k.yaml"
    bad.write_text(
        src.read_text(encoding="utf-8").replace("path: examples/", f"path: {src.parent}/examples/") + "k: [1, 3]\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match=r"k: applies to rag tasks only, and this task is kind: mcq; remove k:"):
        load_task(bad)
    bad.write_text(
        f"name: x\nkind: mcq\nformat: sentiment\npath: {src.parent}/examples/kmmlu_finance.csv\n", encoding="utf-8"
    )
    with pytest.raises(
        ConfigError, match="format: sentiment does not load mcq tasks; use one of financial_mmlu_ko, kmmlu_csv"
    ):
        load_task(bad)
    bad.write_text(
        f"name: x\nkind: numeric_qa\nformat: numeric_qa\npath: {src.parent}/examples/numeric_qa_ko.jsonl\n"
        "labels: [a]\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match="labels: applies to classification tasks only"):
        load_task(bad)
    for name in ("fin_mcq_kmmlu", "fin_sentiment", "kb_rag", "fin_numeric_qa", "fin_xbrl_extraction"):
        load_task(name)  # every bundled task is valid for its kind


def test_include_shared_defaults(tmp_path):
    from kofin.eval.tasks import TaskError, load_task

    examples = ROOT / "eval" / "tasks" / "examples"
    (tmp_path / "sentiment_defaults.yaml").write_text(
        "kind: classification\nformat: sentiment\ntext_field: sentence\nlabel_field: label\n"
        "labels: [긍정, 부정, 중립]\n"
        "label_map: {positive: 긍정, negative: 부정, neutral: 중립}\ninstruction: 기본 지시문\n",
        encoding="utf-8",
    )
    (tmp_path / "mine.yaml").write_text(
        f"include: sentiment_defaults.yaml\nname: mine\npath: {examples}/sentiment_fpb_ko.jsonl\n"
        "instruction: 다음 문장의 감성을 고르세요.\n",
        encoding="utf-8",
    )
    spec = load_task(tmp_path / "mine.yaml")
    assert (spec.kind, spec.labels, spec.instruction) == (
        "classification",
        ["긍정", "부정", "중립"],
        "다음 문장의 감성을 고르세요.",
    )
    (tmp_path / "loop.yaml").write_text("include: loop.yaml\nname: loop\n", encoding="utf-8")
    with pytest.raises(TaskError, match="nests deeper than"):
        load_task(tmp_path / "loop.yaml")
    (tmp_path / "missing.yaml").write_text("include: nowhere.yaml\nname: m\n", encoding="utf-8")
    with pytest.raises(TaskError, match=r"include: nowhere.yaml does not exist"):
        load_task(tmp_path / "missing.yaml")


def test_k_shot_prompts_show_solved_examples_first(tmp_path):
    examples = ROOT / "eval" / "tasks" / "examples"
    (tmp_path / "k2.yaml").write_text(
        f"include: {ROOT / 'eval/tasks/fin_mcq_kmmlu.yaml'}\nname: k2\n"
        f"path: {examples / 'kmmlu_finance.csv'}\nnum_fewshot: 2\n",
        encoding="utf-8",
    )
    spec = load_task(tmp_path / "k2.yaml")
    zero = load_examples(load_task("fin_mcq_kmmlu"))
    two = load_examples(spec)
    assert [e.id for e in two] == [e.id for e in zero[2:]]  # the demonstrations are not scored
    prompt = prompt_for(spec, two[0])
    first = prompt_for(load_task("fin_mcq_kmmlu"), zero[0])
    assert prompt.startswith(f"{first} {zero[0].choices[zero[0].answer]}\n\n")
    assert prompt.endswith(prompt_for(load_task("fin_mcq_kmmlu"), zero[2])) and prompt.count("정답:") == 3
    (tmp_path / "k99.yaml").write_text(
        (tmp_path / "k2.yaml").read_text(encoding="utf-8").replace("num_fewshot: 2", "num_fewshot: 16"),
        encoding="utf-8",
    )
    with pytest.raises(TaskError, match="num_fewshot: 16 but .* holds"):
        load_examples(load_task(tmp_path / "k99.yaml"))
    (tmp_path / "qa.yaml").write_text(
        f"name: q\nkind: numeric_qa\nformat: numeric_qa\npath: {examples / 'numeric_qa_ko.jsonl'}\nnum_fewshot: 1\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match="num_fewshot: applies to mcq / classification tasks only"):
        load_task(tmp_path / "qa.yaml")
