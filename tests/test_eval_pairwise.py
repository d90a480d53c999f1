"""Pairwise preference: Arena-Hard verdicts, position swap, Bradley-Terry and length control, end to end with judges."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from fake_openai import completions_server

from kofin.config import load_config
from kofin.eval.config import EvalConfig
from kofin.eval.pairwise import JUDGE_TEMPLATE
from kofin.eval.preference import (
    bootstrap_bradley_terry,
    combine_games,
    length_controlled_win_rate,
    parse_arena_verdict,
)
from kofin.eval.run import EvalError, main
from kofin.eval.tasks import load_examples, load_task

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "eval" / "tasks" / "examples"


def test_arena_verdicts_are_parsed_and_normalised():
    assert parse_arena_verdict("설명... 최종 판정: [[A>>B]]") == "A>>B"
    assert parse_arena_verdict("[[B > A]]") == "B>A" and parse_arena_verdict("[[A<B]]") == "B>A"
    assert parse_arena_verdict("[[A=B]]") == "A=B" and parse_arena_verdict("[[B=A]]") == "A=B"
    assert parse_arena_verdict("처음엔 [[A>B]] 라고 했지만 [[B>>A]]") == "B>>A"  # the last verdict counts
    assert parse_arena_verdict("A가 낫다") is None and parse_arena_verdict("[[A>A]]") is None


def test_position_swapped_games_combine_and_flips_are_ties():
    assert combine_games("A>B", "B>A") == (1.0, False)  # the model wins in both positions
    assert combine_games("B>>A", "A>B") == (0.0, False)  # the baseline wins in both
    assert combine_games("A>B", "A>B") == (0.5, True)  # always position A: the verdict flipped with position
    assert combine_games("A=B", "B>A") == (0.75, False)
    assert combine_games(None, None) == (0.5, False)  # no verdict: a tie


def test_bradley_terry_recovers_a_synthetic_ground_truth():
    truth = np.array([0.0, 0.8, -0.5, 1.5])
    rng = np.random.default_rng(0)
    pairs = [(i, j) for i in range(4) for j in range(i + 1, 4)]
    prompts = []
    for _ in range(300):
        games = []
        for i, j in pairs:
            p = 1 / (1 + math.exp(-(truth[i] - truth[j])))
            games.append((i, j, float(rng.random() < p)))
        prompts.append(games)
    point, low, high = bootstrap_bradley_terry(prompts, 4, anchor=0, resamples=60, seed=1)
    assert point[0] == 0.0 and low[0] == 0.0 == high[0]  # the anchor
    for k in range(1, 4):
        assert low[k] <= truth[k] <= high[k], (k, low[k], truth[k], high[k])
        assert abs(point[k] - truth[k]) < 0.25
    assert list(np.argsort(point)) == [2, 0, 1, 3]


def test_length_controlled_win_rate_removes_a_length_preference():
    rng = np.random.default_rng(2)
    diffs = rng.normal(60, 100, 400)  # the model mostly answers longer
    # A judge that only likes length: P(win) = sigmoid(3 tanh(d / sd)), no preference at equal length.
    sd = diffs.std()
    outcomes = (rng.random(400) < 1 / (1 + np.exp(-3 * np.tanh(diffs / sd)))).astype(float)
    raw = outcomes.mean()
    lc = length_controlled_win_rate(outcomes, diffs)
    assert raw > 0.65 and abs(lc - 0.5) < 0.1
    # No length difference at all: the LC win rate is the win rate.
    flat = [1.0, 0.5, 0.0, 1.0, 1.0]
    assert length_controlled_win_rate(flat, [0] * 5) == pytest.approx(np.mean(flat), abs=1e-6)


def test_komt_bench_and_logickor_layouts_load_by_path(tmp_path):
    (tmp_path / "question.jsonl").write_text(
        json.dumps(
            {
                "question_id": 81,
                "category": "writing",
                "turns": ["하와이 여행 블로그 글을 써 주세요.", "모든 문장을 A로 시작하게 다시 쓰세요."],
                "reference": [],
            },
            ensure_ascii=False,
        )
        + "\n",
        encoding="utf-8",
    )
    (tmp_path / "logickor.jsonl").write_text(
        json.dumps(
            {"id": 7, "category": "추론(Reasoning)", "questions": ["질문 1", "질문 2"], "references": ["참고 1", None]},
            ensure_ascii=False,
        )
        + "\n"
        + json.dumps({"id": 8, "questions": []})
        + "\n",
        encoding="utf-8",
    )
    for fmt, name in (("komt_bench", "question.jsonl"), ("logickor", "logickor.jsonl")):
        (tmp_path / f"{fmt}.yaml").write_text(
            f"name: {fmt}\nkind: pairwise\nformat: {fmt}\npath: {name}\n", encoding="utf-8"
        )
    komt = load_examples(load_task(tmp_path / "komt_bench.yaml"))
    assert (komt[0].id, komt[0].meta["turns"][1], komt[0].meta["category"]) == (
        "81",
        "모든 문장을 A로 시작하게 다시 쓰세요.",
        "writing",
    )
    from kofin.data_ko.formats import DataInputError

    with pytest.raises(DataInputError, match=r"logickor.jsonl:2 .*turns.*questions"):
        load_examples(load_task(tmp_path / "logickor.yaml"))  # the empty row is named by line
    bundled = load_examples(load_task("pairwise_fin_ko"))
    assert (
        len(bundled) == 6
        and any(len(ex.meta["turns"]) == 2 for ex in bundled)
        and all(ex.meta["references"] for ex in bundled)
    )


@pytest.fixture(scope="module")
def short_task(tmp_path_factory) -> Path:
    """The bundled Korean prompts with short answers (the tiny model on CPU), through include:."""
    root = tmp_path_factory.mktemp("pw")
    (root / "pw.yaml").write_text(
        f"include: {ROOT / 'eval' / 'tasks' / 'pairwise_fin_ko.yaml'}\nname: pw\n"
        f"path: {EXAMPLES / 'pairwise_fin_ko.jsonl'}\nmax_new_tokens: 6\n",
        encoding="utf-8",
    )
    return root / "pw.yaml"


def _cfg(out: Path, task: Path, models: str, judge: str, *extra: str) -> EvalConfig:
    return load_config(
        EvalConfig,
        ROOT / "configs" / "eval" / "tiny.yaml",
        [
            f"output_dir={out}",
            f"tasks=[{task}]",
            f"models={models}",
            f"pairwise_judge={judge}",
            "limit=3",
            "cpu_threads=1",
            "bootstrap_resamples=50",
            "report=false",
            *extra,
        ],
    )


def test_a_judge_that_always_prefers_position_a_is_caught(tmp_path, short_task):
    asked: list[str] = []

    def always_a(path, body, i):
        asked.append(body["prompt"][i])
        return {"text": " [[A>B]]"}

    with completions_server(always_a) as url:
        judge = f"{{endpoint: {url}, served_model: judge}}"
        out = main(_cfg(tmp_path / "e", short_task, "[{name: base, base: true}, {name: again}]", judge))
        metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
        assert len(asked) == 6  # 3 prompts x 2 positions, for the one model that is not the baseline
        cells = metrics["results"]["again"]["pw"]
        assert cells["win_rate"] == 0.5 and cells["position_bias_rate"] == 1.0 and cells["unparsed_verdicts"] == 0.0
        records = [
            json.loads(x) for x in (out / "records" / "again" / "pw.jsonl").read_text(encoding="utf-8").splitlines()
        ]
        assert all(r["judgement"]["flipped"] and r["judgement"]["score"] == 0.5 for r in records)
        assert [g["model_is"] for g in records[0]["judgement"]["games"]] == ["A", "B"]
        # The judge read the Korean template, the conversation and both answers, once in each position.
        assert "공정한 심사위원" in asked[0] and records[0]["turns"][0] in asked[0]
        assert metrics["pairwise"]["pw"]["judge_template"] == JUDGE_TEMPLATE
        bt = metrics["pairwise"]["pw"]["bradley_terry"]
        assert bt["base"]["strength"] == 0.0 and abs(bt["again"]["strength"]) < 1e-6
        assert metrics["comparisons"]["again"]["pw"]["win_rate"]["significant"] is False
        # A rerun asks the judge nothing: every judgement is kept with its key.
        asked.clear()
        main(_cfg(tmp_path / "e", short_task, "[{name: base, base: true}, {name: again}]", judge))
        assert asked == []


def test_a_consistent_judge_gives_wins_and_losses_without_position_bias(tmp_path, short_task):
    from kofin.tiny import TinyConfig, build_tiny_model

    other = build_tiny_model(TinyConfig(output_dir=tmp_path / "tiny-seed1", seed=1, num_hidden_layers=2))

    def prefers_shorter_answer(path, body, i):
        prompt = body["prompt"][i]
        a = prompt.split("[어시스턴트 A의 답변 시작]")[1].split("[어시스턴트 A의 답변 끝]")[0]
        b = prompt.split("[어시스턴트 B의 답변 시작]")[1].split("[어시스턴트 B의 답변 끝]")[0]
        return {"text": "[[A=B]]" if a == b else ("[[A>B]]" if (len(a), a) < (len(b), b) else "[[B>A]]")}

    with completions_server(prefers_shorter_answer) as url:
        out = main(
            _cfg(
                tmp_path / "c",
                short_task,
                f"[{{name: base, base: true}}, {{name: tuned, path: {other}}}]",
                f"{{endpoint: {url}, served_model: judge}}",
            )
        )
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    records = [json.loads(x) for x in (out / "records" / "tuned" / "pw.jsonl").read_text(encoding="utf-8").splitlines()]
    base = [json.loads(x) for x in (out / "records" / "base" / "pw.jsonl").read_text(encoding="utf-8").splitlines()]
    assert metrics["results"]["tuned"]["pw"]["position_bias_rate"] == 0.0
    for r, b in zip(records, base, strict=True):
        mine, theirs = "\n\n".join(r["answers"]), "\n\n".join(b["answers"])
        expected = 0.5 if mine == theirs else float((len(mine), mine) < (len(theirs), theirs))
        assert r["judgement"]["score"] == expected
    assert metrics["results"]["tuned"]["pw"]["win_rate"] == pytest.approx(
        np.mean([r["judgement"]["score"] for r in records])
    )


def test_the_tiny_model_against_itself_with_a_local_judge_is_a_tie_on_every_rerun(tmp_path, short_task, tiny_model):
    judge = f"{{path: {tiny_model}, max_new_tokens: 4}}"
    runs = []
    for name in ("a", "b"):
        out = main(_cfg(tmp_path / name, short_task, "[{name: base, base: true}, {name: again}]", judge, "limit=2"))
        runs.append(json.loads((out / "metrics.json").read_text(encoding="utf-8")))
    cell = runs[0]["intervals"]["again"]["pw"]["win_rate"]
    assert cell["value"] == 0.5 and cell["low"] <= 0.5 <= cell["high"] and cell["n"] == 2
    assert runs[0]["intervals"] == runs[1]["intervals"] and runs[0]["results"] == runs[1]["results"]


def test_a_pairwise_task_without_a_judge_is_refused(tmp_path, short_task):
    cfg = load_config(
        EvalConfig,
        ROOT / "configs" / "eval" / "tiny.yaml",
        [f"output_dir={tmp_path / 'x'}", f"tasks=[{short_task}]", "report=false"],
    )
    with pytest.raises(EvalError, match="needs a judge: set pairwise_judge:"):
        main(cfg)
