"""The LLM citation judge: verdicts from a local tiny model and from an OpenAI-compatible server on 127.0.0.1
flow into ALCE citation recall / precision, in the metric and through `kofin eval`'s RAG records."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from fake_openai import completions_server
from test_eval_rag import DOCS as RAG_DOCS
from test_eval_rag import QUESTIONS as RAG_QUESTIONS

from kofin.config import ConfigError, load_config
from kofin.eval.config import EvalConfig
from kofin.eval.judge import LlmCitationJudge, citation_judge, citation_queries, parse_verdict
from kofin.eval.metrics import citation_scores, lexical_judge

SOURCES = [
    "예금 금리는 연 3%이며 근거 조항은 약관 제5조이다.",
    "대출 한도는 소득에 따라 정해진다.",
    "환율은 매일 고시된다.",
]
# Verdicts of the fake judge below: supported iff the sources shown contain '근거' (only source 1 does).
ANSWER = "예금 금리는 연 3%입니다 [1]. 대출 한도는 1억원입니다 [2]. 환율이 올랐습니다 [1][3]."


@pytest.fixture(scope="module")
def judge_server():
    """A vLLM-shaped /v1/completions server whose 'model' says 예 when the sources contain '근거'."""
    state = {"mode": "rule", "prompts": [], "posts": 0}

    def verdict(prompt: str) -> str:
        if state["mode"] == "no":
            return " 아니오"
        sources = prompt.split("자료:", 1)[1].split("문장:", 1)[0]
        return " 예, 뒷받침합니다." if "근거" in sources else " 아니요."

    def choice(path: str, body: dict, i: int) -> dict:
        # The judge must answer from its generation here: a likelihood request would mean it misread the answer.
        assert path == "/v1/completions" and not body.get("echo") and body["temperature"] == 0.0
        state["posts"] += i == 0
        state["prompts"].append(body["prompt"][i])
        return {"text": verdict(body["prompt"][i])}

    with completions_server(choice) as url:
        yield url, state


def _endpoint_judge(url: str, tmp_path: Path):
    cfg = load_config(
        EvalConfig,
        None,
        [
            f"output_dir={tmp_path}/o",
            "models=[{name: t}]",
            f"citation_llm_judge={{endpoint: '{url}', served_model: judge}}",
        ],
    )
    return citation_judge(cfg)


def test_parse_verdict():
    assert [parse_verdict(a) for a in ("예", " 네, 그렇습니다", "Yes.", "'예'", "supported")] == [True] * 5
    assert [parse_verdict(a) for a in ("아니오", "아니요.", "No", "not supported", "false")] == [False] * 5
    assert [parse_verdict(a) for a in ("", "예시를 들면", "모르겠습니다", "nothing")] == [None] * 4


def test_endpoint_verdicts_decide_citation_recall_and_precision(judge_server, tmp_path):
    url, state = judge_server
    state["mode"], state["prompts"] = "rule", []
    judge, name = _endpoint_judge(url, tmp_path)
    assert isinstance(judge, LlmCitationJudge) and name == f"llm:{url} judge"
    scores = citation_scores(ANSWER, SOURCES, judge)
    # Sentence 1 cites [1] (근거): supported. Sentence 2 cites [2]: not. Sentence 3 cites [1][3]: supported
    # as a whole; [1] supports alone, [3] neither alone nor needed (its partner [1] suffices).
    assert scores.recall == pytest.approx(2 / 3)
    assert scores.precision == pytest.approx(2 / 4)  # relevant: s1[1], s3[1]; irrelevant: s2[2], s3[3]
    assert (scores.sentences, scores.citations) == (3, 4)
    # The lexical judge disagrees on these paraphrases, so the numbers above are the LLM's.
    lexical = citation_scores(ANSWER, SOURCES, lexical_judge())
    assert (lexical.recall, lexical.precision) != (scores.recall, scores.precision)
    # What the server saw: the instruction, the cited sources numbered, the sentence without its marker.
    first = state["prompts"][0]
    assert (
        "'예'" in first
        and "[1] 예금 금리는 연 3%이며" in first
        and first.endswith("문장: 예금 금리는 연 3%입니다.\n답:")
    )
    # One request per distinct (sentence, sources): the single-citation sentences ask once, not twice.
    assert len(state["prompts"]) == 1 + 1 + 3  # s1 {1}, s2 {2}, s3 {1,3} {1} {3}


def test_tiny_model_judge_is_deterministic_and_its_verdicts_are_used(tiny_model, tmp_path):
    cfg = load_config(
        EvalConfig,
        None,
        [
            f"output_dir={tmp_path}/o",
            "models=[{name: t}]",
            "cpu_threads=1",
            f"citation_llm_judge={{path: {tiny_model}}}",
            "device=cpu",
        ],
    )
    judge, name = citation_judge(cfg)
    assert name.startswith(f"llm:{tiny_model} ") and judge._backend is None  # loaded on the first question only
    scores = citation_scores(ANSWER, SOURCES, judge)
    assert len(judge.verdicts) == 5
    # The tiny model rambles: its verdicts come through the likelihood fallback, which this test checks.
    assert any(parse_verdict(a) is None for a in judge.answers.values())
    backend = judge.backend
    for (sentence, passages), verdict in judge.verdicts.items():
        # Recompute each verdict from the model directly: its greedy answer, else 예 vs 아니오 by likelihood.
        prompt = judge.prompt(sentence, list(passages))
        answer = backend.generate([prompt], 4, stop=("\n",))[0]
        assert answer == judge.answers[(sentence, passages)]
        expected = parse_verdict(answer)
        if expected is None:
            lead = "" if judge.chat else " "
            yes, no = backend.loglikelihood([(prompt, f"{lead}예"), (prompt, f"{lead}아니오")])
            expected = yes.logprob > no.logprob
        assert verdict == expected
    # A fresh judge on the same model gives the same verdicts, and the scores are a function of them.
    again = LlmCitationJudge(backend)
    assert citation_scores(ANSWER, SOURCES, again) == scores and again.verdicts == judge.verdicts
    # Judging everything in one batched pass gives the same verdicts as one question at a time.
    batched = LlmCitationJudge(backend)
    batched.prefetch(citation_queries(ANSWER, SOURCES))
    assert {k: batched.verdicts[k] for k in judge.verdicts} == judge.verdicts
    table = dict(judge.verdicts)
    assert citation_scores(ANSWER, SOURCES, lambda s, p: table[(s, tuple(p))]) == scores


def test_kofin_eval_rag_records_carry_the_llm_judges_verdicts(judge_server, tmp_path):
    from kofin.eval.run import main

    url, state = judge_server
    docs = tmp_path / "docs"
    docs.mkdir()
    for doc, text in RAG_DOCS.items():  # test_eval_rag's knowledge base and questions
        (docs / doc).write_text(text, encoding="utf-8")
    (tmp_path / "q.jsonl").write_text(
        "".join(json.dumps(q, ensure_ascii=False) + "\n" for q in RAG_QUESTIONS), encoding="utf-8"
    )
    (tmp_path / "rag.yaml").write_text(
        "name: mini_rag\nkind: rag\nformat: laws_questions\npath: q.jsonl\ndocuments: docs\n"
        "answer_with: extractive\nk: [1]\n",
        encoding="utf-8",
    )

    def run(*extra: str) -> dict:
        cfg = load_config(
            EvalConfig,
            None,
            [
                f"output_dir={tmp_path}/eval",
                "models=[{name: t}]",
                f"tasks=[{tmp_path}/rag.yaml]",
                "cpu_threads=1",
                "report=false",
                *extra,
            ],
        )
        metrics = json.loads((main(cfg) / "metrics.json").read_text(encoding="utf-8"))
        judges.append(metrics["citation_judge"])
        return metrics["results"]["t"]["mini_rag"]

    judges: list[str] = []

    lexical = run()  # the extractive answer quotes its sources: the lexical judge finds every citation supported
    assert lexical["citation_recall"] == 1.0 and lexical["citation_precision"] == 1.0
    state["mode"], state["prompts"], state["posts"] = "no", [], 0
    judged = run(f"citation_llm_judge={{endpoint: '{url}'}}", "batch_size=4")
    # A judge that always answers 아니오: no sentence supported, no citation relevant; the records were re-scored.
    assert judged["citation_recall"] == 0.0 and judged["citation_precision"] == 0.0
    assert state["prompts"] and all("문장:" in p for p in state["prompts"])
    # Every question's citation checks were sent together, batch_size prompts per request.
    assert len(state["prompts"]) > 4 and state["posts"] == -(-len(state["prompts"]) // 4)
    assert judges == ["lexical", f"llm:{url} kofin"]  # metrics.json (and the report) say which judge scored
    assert judged["recall@1"] == lexical["recall@1"] == pytest.approx((1 + 1 + 0.5) / 3, abs=1e-6)  # not on the judge


def test_llm_judge_config_errors(tmp_path):
    base = [f"output_dir={tmp_path}/o", "models=[{name: t}]"]
    with pytest.raises(ConfigError, match="give exactly one of path .* or endpoint"):
        load_config(EvalConfig, None, [*base, "citation_llm_judge={served_model: x}"])
    with pytest.raises(ConfigError, match=re.escape("endpoint host 'judge.example.com' is not in allowed_hosts")):
        load_config(EvalConfig, None, [*base, "citation_llm_judge={endpoint: 'http://judge.example.com/v1'}"])
    with pytest.raises(ConfigError, match="set one citation judge"):
        load_config(
            EvalConfig, None, [*base, f"citation_nli_model={tmp_path}", f"citation_llm_judge={{path: {tmp_path}}}"]
        )
