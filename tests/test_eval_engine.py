"""The transformers backend on the tiny model: log-likelihoods are exact, deterministic and batch-invariant."""

from __future__ import annotations

import pytest

from kofin.eval.engine import TransformersBackend, cut_at_stop
from kofin.eval.scoring import parse_choice, score_examples, task_metrics
from kofin.eval.tasks import Example, TaskSpec, load_examples, load_task


@pytest.fixture(scope="module")
def backends(tiny_model):
    import torch

    threads = torch.get_num_threads()
    yield (
        TransformersBackend(tiny_model, batch_size=1, device="cpu", cpu_threads=1),
        TransformersBackend(tiny_model, batch_size=4, device="cpu", cpu_threads=1),
    )
    torch.set_num_threads(threads)


REQUESTS = [
    ("정기예금을 만기 전에 해지하면\n정답:", " 중도해지이율"),
    ("정기예금을 만기 전에 해지하면\n정답:", " 약정이율"),
    ("환율", " 상승"),
    ("대출 금리는 기준금리에 가산금리를 더해 정해집니다. 정답: ", "A"),  # trailing space moves to the continuation
    ("예금자보호 한도는", " 1억원"),
]


def test_loglikelihood_matches_a_hand_computed_forward_pass(backends):
    import torch

    one, _ = backends
    tok, model = one.tokenizer, one.model
    context, continuation = REQUESTS[2]
    ctx = tok(context).input_ids
    whole = tok(context + continuation).input_ids
    with torch.inference_mode():
        logprobs = torch.log_softmax(model(torch.tensor([whole])).logits[0].float(), -1)
    expected = sum(float(logprobs[j - 1, whole[j]]) for j in range(len(ctx), len(whole)))
    got = one.loglikelihood([REQUESTS[2]])[0]
    assert got.tokens == len(whole) - len(ctx) >= 1
    assert got.logprob == pytest.approx(expected, abs=1e-5)
    assert got.logprob < 0


def test_loglikelihood_is_deterministic_and_batch_invariant(backends):
    one, four = backends
    a = one.loglikelihood(REQUESTS)
    b = one.loglikelihood(REQUESTS)
    c = four.loglikelihood(REQUESTS)
    assert [x.logprob for x in a] == [x.logprob for x in b]
    assert [x.tokens for x in a] == [x.tokens for x in c]
    assert [x.logprob for x in c] == pytest.approx([x.logprob for x in a], abs=1e-4)
    # Different contexts/continuations really give different numbers (not a constant).
    assert len({round(x.logprob, 4) for x in a}) == len(REQUESTS)


def test_generation_is_greedy_and_batch_invariant(backends):
    one, four = backends
    prompts = ["정기예금을 만기 전에 해지하면", "대출 금리는", "환율이 오르면 수입 기업은"]
    g1 = one.generate(prompts, max_new_tokens=8)
    assert g1 == one.generate(prompts, max_new_tokens=8)
    assert g1 == four.generate(prompts, max_new_tokens=8)
    assert one.tokenizer.padding_side == "right"  # restored for log-likelihood batches


def test_mcq_scoring_same_choices_for_batch_sizes_and_metrics_from_records(backends):
    one, four = backends
    spec = load_task("fin_mcq_fmmlu")
    examples = load_examples(spec)
    r1 = score_examples(spec, examples, one)
    r4 = score_examples(spec, examples, four)
    assert [r["pred_ll"] for r in r1] == [r["pred_ll"] for r in r4]
    assert [r["pred_ll_norm"] for r in r1] == [r["pred_ll_norm"] for r in r4]
    assert [r["generation"] for r in r1] == [r["generation"] for r in r4]
    for r in r1:
        assert len(r["logprob"]) == 4 and r["pred_ll"] == r["logprob"].index(max(r["logprob"]))
    m = task_metrics(spec, r1)
    assert m["acc"] == sum(r["pred_ll"] == r["gold"] for r in r1) / len(r1)
    assert m["acc_gen"] == sum(r["pred_gen"] == r["gold"] for r in r1) / len(r1)


def test_parse_generated_answers():
    mcq = TaskSpec(name="m", kind="mcq", format="kmmlu_csv", path="x.csv")
    ex = Example("1", "x:1", "q", 0, ["단리", "복리", "할인", "거치"])
    assert parse_choice(mcq, ex, " B. 복리") == 1
    assert parse_choice(mcq, ex, "(C)") == 2
    assert parse_choice(mcq, ex, "2번입니다") == 1
    assert parse_choice(mcq, ex, "정답은 거치입니다") == 3
    assert parse_choice(mcq, ex, "Because") is None and parse_choice(mcq, ex, "5") is None
    cls = TaskSpec(name="c", kind="classification", format="sentiment", path="x.jsonl", labels=["긍정", "부정", "중립"])
    ex = Example("2", "x:2", "q", 0, ["긍정", "부정", "중립"])
    assert parse_choice(cls, ex, "이 문장은 부정적이며 긍정 요소는 없다") == 1
    assert parse_choice(cls, ex, "모름") is None
    assert cut_at_stop("\n 답: 30만원\n다음 질문", ["\n"]) == "답: 30만원"


def test_a_prompt_longer_than_the_context_keeps_its_end(backends, monkeypatch):
    one, _ = backends
    seen = []
    real = one.model.generate

    def recording(**kw):
        seen.append(kw["input_ids"][0].tolist())
        return real(**kw)

    monkeypatch.setattr(one.model, "generate", recording)
    monkeypatch.setattr(one, "max_length", 24)
    prompt = "예금 약관 " * 40 + "질문: 중도해지 이율은?\n답:"
    one.generate([prompt], max_new_tokens=8)
    ids = one.tokenizer(prompt).input_ids
    # BOS, then the prompt's last tokens: the question and '답:' survive, the start of the sources goes.
    assert len(ids) > 24 and seen[0] == ids[:1] + ids[-15:]
    assert one.tokenizer.truncation_side == "right"
