"""Reading-comprehension conversion: Korean sentence splitting, josa, task mining, chats."""

from __future__ import annotations

import json

import pytest

from kofin.data_ko.corpus import Document, iter_documents
from kofin.data_ko.reading_comprehension import (
    TermStats,
    clean_passage_text,
    extract_passages,
    extract_terms,
    josa,
    mine_tasks,
    passage_chat,
    split_sentences,
    strip_josa,
)

ALL_TASKS = ["summarize", "title", "qa", "fill_in", "keywords"]

DOC = Document(
    doc_id="deposit/test-term-deposit",
    title="가람 테스트 정기예금 상품설명서",
    text="""# 가람 테스트 정기예금 상품설명서

## 1. 상품 개요

테스트 정기예금이란 목돈을 한 번에 맡기고 약정한 기간 동안 확정된 이율로 이자를 받는 거치식 예금을 말한다. 가입 금액은 100만원 이상이며, 기본이율은 연 2.5%이다. 만기 전에 해지하면 중도해지이율을 적용한다.

| 구분 | 내용 |
|---|---|
| 가입 기간 | 1개월 이상 36개월 이하 |
| 이자 지급 | 만기일시지급식 |

## 2. 우대이율

1. 비대면 가입 우대 0.10%p: 앱으로 가입한 경우
2. 급여이체 우대 0.10%p: 급여가 입금된 경우
""",
)


# ---------------------------------------------------------------- Korean text


def test_sentence_split_respects_decimals_dates_lists_and_quotes():
    text = (
        "금리는 연 1.5%이다. 기준일은 2026. 3. 1.이며 바뀔 수 있어요. 정말인가요? "
        '"예금이란 돈을 맡기는 것이다." 끝으로 확인한다(월이자지급식).\n'
        "1. 첫 항목 0.10%p: 앱 가입\n② 둘째 항목이다. 다만, 예외가 있다.\n| 구분 | 내용 |\n|---|---|\n| 기간 | 1년 |"
    )
    assert [(s.text, s.kind) for s in split_sentences(text)] == [
        ("금리는 연 1.5%이다.", "prose"),
        ("기준일은 2026. 3. 1.이며 바뀔 수 있어요.", "prose"),
        ("정말인가요?", "prose"),
        ('"예금이란 돈을 맡기는 것이다."', "prose"),
        ("끝으로 확인한다(월이자지급식).", "prose"),
        ("첫 항목 0.10%p: 앱 가입", "item"),
        ("둘째 항목이다.", "item"),
        ("다만, 예외가 있다.", "item"),
        ("| 구분 | 내용 |", "table"),
        ("| 기간 | 1년 |", "table"),
    ]


def test_josa_follows_the_final_consonant():
    assert [josa(w, "은/는") for w in ("예금", "금리", "COFIX", "3", "2", "서비스(카드)")] == [
        "예금은",
        "금리는",
        "COFIX는",
        "3은",
        "2는",
        "서비스(카드)는",
    ]
    assert josa("은행업", "이란/란") == "은행업이란" and josa("리볼빙", "과/와") == "리볼빙과"


def test_strip_josa_and_terms():
    assert [strip_josa(t) for t in ("정기예금은", "금리에서는", "신용한도가", "한도", "예금자보호법의")] == [
        "정기예금",
        "금리",
        "신용한도",
        "한도",
        "예금자보호법",
    ]
    assert extract_terms("가산금리는 COFIX 금리에 더해진다. 2026년 기준 3개월마다 바뀐다.") == [
        "가산금리",
        "COFIX",
        "금리",
    ]


def test_amendment_notes_and_deleted_items_are_removed():
    text = (
        "① 은행은 보고하여야 한다. <개정 2010.3.12, 2015.7.24>\n"
        "② 삭제 <2015.7.24>\n"
        "③ 다른 조항이다. [전문개정 2010.5.17]"
    )
    assert clean_passage_text(text) == "① 은행은 보고하여야 한다.\n③ 다른 조항이다."


def test_long_sections_are_cut_at_line_boundaries():
    doc = Document(
        "d", "제목", "## 긴 절\n" + "\n".join(f"{i}번째 문장은 충분히 길게 쓴 설명 문장이다." for i in range(60))
    )
    passages = extract_passages(doc, 10, 300)
    assert len(passages) > 1 and all(len(p.text) <= 300 for p in passages)
    assert [p.index for p in passages] == list(range(1, len(passages) + 1))
    assert "\n".join(p.text for p in passages) == "\n".join(
        f"{i}번째 문장은 충분히 길게 쓴 설명 문장이다." for i in range(60)
    )


# ---------------------------------------------------------------- tasks


def test_tasks_mined_from_a_product_section():
    passages = extract_passages(DOC, 40, 1500)
    assert [p.heading for p in passages] == ["상품 개요", "우대이율"]
    overview = passages[0]
    tasks = mine_tasks(overview, TermStats(passages), ALL_TASKS, max_qa=3, num_keywords=3)
    by_kind = {}
    for t in tasks:
        by_kind.setdefault(t.kind, []).append(t)
    assert list(by_kind) == ALL_TASKS
    assert by_kind["title"][0].answer == "가람 테스트 정기예금 상품설명서 — 상품 개요"
    assert by_kind["summarize"][0].answer == (
        "테스트 정기예금이란 목돈을 한 번에 맡기고 약정한 기간 동안 확정된 이율로 이자를 받는 거치식 예금을 말한다."
    )
    qa = [(t.question, t.answer) for t in by_kind["qa"]]
    assert qa == [
        ("테스트 정기예금이란 무엇인가요?", by_kind["summarize"][0].answer),
        ("표에서 가입 기간은 어떻게 되나요?", "표에 따르면 가입 기간은 '1개월 이상 36개월 이하'입니다."),
        (
            "이 글에 따르면 가입 금액과 관련된 수치 기준은 무엇인가요?",
            "가입 금액은 100만원 이상이며, 기본이율은 연 2.5%이다.",
        ),
    ]
    for t in by_kind["qa"]:
        assert t.evidence in overview.text
    cloze = by_kind["fill_in"][0]
    assert cloze.answer in overview.text and "____" in cloze.question and cloze.answer not in cloze.question
    keywords = by_kind["keywords"][0].answer.split(", ")
    assert len(keywords) == 3 and all(k in overview.text for k in keywords)


def test_passage_chat_alternates_and_starts_with_the_passage():
    passages = extract_passages(DOC, 40, 1500)
    tasks = mine_tasks(passages[0], TermStats(passages), ["qa", "title"], 2, 5)
    messages = passage_chat(passages[0], tasks, "kb:deposit/test-term-deposit#1")
    assert [m["role"] for m in messages] == ["user", "assistant"] * len(tasks)
    assert passages[0].text in messages[0]["content"] and messages[0]["content"].endswith(tasks[0].question)
    assert [m["content"] for m in messages[1::2]] == [t.answer for t in tasks]
    assert [m["content"] for m in messages[2::2]] == [t.question for t in tasks[1:]]


def test_bundled_kb_document_yields_every_task_with_answers_in_the_passage():
    docs = list(iter_documents())
    passages = [p for d in docs for p in extract_passages(d, 80, 1500)]
    stats = TermStats(passages)
    seen: set[str] = set()
    for passage in passages[:120]:
        for task in mine_tasks(passage, stats, ALL_TASKS, 3, 5):
            seen.add(task.kind)
            if task.kind in ("qa", "fill_in"):
                assert task.evidence in passage.text, (passage.doc_id, task)
            if task.kind == "qa" and not task.answer.startswith("표에 따르면"):
                assert task.answer in passage.text
            if task.kind == "summarize":  # one or two lead sentences, each verbatim
                assert all(s.text in passage.text for s in split_sentences(task.answer)), (passage.doc_id, task)
    assert seen == set(ALL_TASKS)


@pytest.fixture(scope="module")
def banking_act(tmp_path_factory, laws_dir) -> list[Document]:
    """The articles of 은행법 from the shared statute file (a small corpus for keyword IDF)."""
    with open(laws_dir / "fin_articles.jsonl", encoding="utf-8") as f:
        lines = [line for line in f if json.loads(line)["law"] == "은행법"]
    path = tmp_path_factory.mktemp("laws") / "banking_act.jsonl"
    path.write_text("".join(lines), encoding="utf-8")
    return list(iter_documents(path))


def test_statute_article_becomes_definition_questions(banking_act):
    passages = [p for d in banking_act for p in extract_passages(d, 60, 1500)]
    stats = TermStats(passages)
    article = next(p for p in passages if p.doc_id == "은행법 제2조" and p.index == 1)
    assert "<개정" not in article.text
    tasks = mine_tasks(article, stats, ALL_TASKS, 3, 5)
    assert [t.kind for t in tasks][:2] == ["summarize", "title"] and {"qa", "fill_in", "keywords"} <= {
        t.kind for t in tasks
    }
    assert next(t for t in tasks if t.kind == "title").answer == "은행법 제2조(정의)"
    qa = [t for t in tasks if t.kind == "qa"]
    assert [t.question for t in qa] == ["은행업이란 무엇인가요?", "은행이란 무엇인가요?", "상업금융업무란 무엇인가요?"]
    for t in qa:
        assert t.answer in article.text and t.answer.endswith("말한다.")
    cloze = next(t for t in tasks if t.kind == "fill_in")
    assert cloze.answer in article.text


def test_mining_is_deterministic():
    docs = list(iter_documents())[:8]

    def run() -> str:
        passages = [p for d in docs for p in extract_passages(d, 80, 1500)]
        stats = TermStats(passages)
        return json.dumps(
            [
                passage_chat(p, t, f"kb:{p.doc_id}#{p.index}")
                for p in passages
                if (t := mine_tasks(p, stats, ALL_TASKS, 3, 5))
            ],
            ensure_ascii=False,
        )

    assert run() == run()
