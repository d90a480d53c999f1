"""Eval metrics against hand-computed values and sklearn."""

from __future__ import annotations

import math

import pytest

from kofin.eval import metrics as M


def test_accuracy_by_hand():
    assert M.accuracy(["A", "B", "C", "D"], ["A", "B", "D", "D"]) == 0.75
    with pytest.raises(ValueError, match="differ in length"):
        M.accuracy(["A"], ["A", "B"])


def test_weighted_f1_by_hand():
    # pos: tp=2, 3 true, 2 predicted -> F1 = 4/5; neg: tp=1, 2 true, 2 predicted -> 1/2;
    # neu: 1 true, never predicted -> 0; "x" only predicted -> weight 0.
    y_true = ["pos", "pos", "pos", "neg", "neg", "neu"]
    y_pred = ["pos", "pos", "neg", "neg", "x", "neg"]
    expected = (0.8 * 3 + (2 * 1 / (2 + 3)) * 2 + 0 * 1) / 6
    assert M.weighted_f1(y_true, y_pred) == pytest.approx(expected)


@pytest.mark.parametrize("seed", range(5))
def test_weighted_f1_equals_sklearn(seed):
    import random

    from sklearn.metrics import f1_score

    rng = random.Random(seed)
    labels = ["긍정", "부정", "중립", "기타"]
    y_true = [rng.choice(labels[:3]) for _ in range(40)]
    y_pred = [rng.choice(labels) for _ in range(40)]
    assert M.weighted_f1(y_true, y_pred) == pytest.approx(f1_score(y_true, y_pred, average="weighted", zero_division=0))


@pytest.mark.parametrize(
    "text, value",
    [
        ("1억 2천만원", 120_000_000),
        ("1억2천만 원", 120_000_000),
        ("1,200만 원", 12_000_000),
        ("12억", 1_200_000_000),
        ("3.5%", 3.5),
        ("1,234,567원", 1_234_567),
        ("5천원", 5_000),
        ("2조 3,000억", 2_300_000_000_000),
        ("1억 5000만", 150_000_000),
        ("3억 7백만 원", 307_000_000),
        ("-2.5", -2.5),
    ],
)
def test_korean_number_parsing(text, value):
    assert M.find_numbers(text) == [pytest.approx(value)]


def test_numbers_found_in_a_sentence_stay_separate():
    assert M.find_numbers("2023년 3월 매출은 1억 2천만원, 이익은 3 5") == [2023, 3, 120_000_000, 3, 5]


def test_exact_match_numbers_and_text():
    assert M.exact_match("답: 1억 2천만원입니다.", "120,000,000")
    assert M.exact_match("1억의 20%는 2천만원입니다", "2,000만 원")  # last number counts
    assert not M.exact_match("1억 2천만원", "130000000")
    assert not M.exact_match("모르겠습니다", "3.5%")
    assert M.exact_match(" 삼성전자. ", "삼성전자")
    assert not M.exact_match("삼성전자우", "삼성전자")


def _split(text):
    return text.split()


def test_token_f1_by_hand():
    # common = {a, b} -> P = 2/3, R = 2/4, F1 = 2PR/(P+R) = 4/7
    assert M.token_f1("a b c", "a b d e", tokenize=_split) == pytest.approx(4 / 7)
    assert M.token_f1("x", "y", tokenize=_split) == 0.0


def test_rouge_l_by_hand():
    # LCS("a b c d", "a c e d") = a c d = 3 -> P = R = 3/4
    assert M.rouge_l("a b c d", "a c e d", tokenize=_split) == pytest.approx(0.75)
    # order matters for ROUGE-L, not for token F1
    assert M.rouge_l("d c b a", "a b c d", tokenize=_split) == pytest.approx(0.25)
    assert M.token_f1("d c b a", "a b c d", tokenize=_split) == 1.0


def test_korean_morphemes_ignore_particles():
    # 예금은/예금을 differ only in the particle: the content morphemes are the same.
    assert M.token_f1("정기예금은 해지한다", "정기예금을 해지한다") == 1.0
    assert 0 < M.rouge_l("정기예금을 중도 해지하면 이자가 줄어든다", "정기예금 중도 해지 시 약정 이자가 줄어든다") < 1


def test_retrieval_metrics_by_hand():
    retrieved = ["d3", "d1", "d7", "d2"]
    gold = ["d1", "d2"]
    assert M.recall_at_k(retrieved, gold, 1) == 0.0
    assert M.recall_at_k(retrieved, gold, 2) == 0.5
    assert M.recall_at_k(retrieved, gold, 4) == 1.0
    assert M.reciprocal_rank(retrieved, gold) == 0.5
    assert M.reciprocal_rank(["x"], gold) == 0.0
    # DCG@4 = 1/log2(3) + 1/log2(5); IDCG = 1 + 1/log2(3)
    expected = (1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3))
    assert M.ndcg_at_k(retrieved, gold, 4) == pytest.approx(expected)
    assert M.ndcg_at_k(["d1", "d2"], gold, 2) == pytest.approx(1.0)


SOURCES = [
    "정기예금을 만기 전에 해지하면 중도해지이율이 적용됩니다.",
    "적금은 매월 정해진 금액을 납입하는 상품입니다.",
    "대출 금리는 기준금리에 가산금리를 더해 정해집니다.",
]


def test_citation_scores_by_hand():
    answer = (
        "정기예금을 만기 전에 해지하면 중도해지이율이 적용됩니다 [1][2]. "  # supported; [2] irrelevant
        "대출 금리는 기준금리에 가산금리를 더해 정해집니다 [3]. "  # supported; [3] relevant
        "환율은 매일 바뀝니다."  # no citation: recall 0
    )
    s = M.citation_scores(answer, SOURCES)
    assert (s.sentences, s.citations) == (3, 3)
    assert s.recall == pytest.approx(2 / 3)
    assert s.precision == pytest.approx(2 / 3)


def test_citation_after_the_period_belongs_to_its_sentence():
    # kofin ask's extractive answers write "문장. [1]": the sentence splitter cuts before "[1]".
    s = M.citation_scores(
        "- 정기예금을 만기 전에 해지하면 중도해지이율이 적용됩니다. [1]\n"
        "- 적금은 매월 정해진 금액을 납입하는 상품입니다. [2]",
        SOURCES,
    )
    assert (s.sentences, s.citations, s.recall, s.precision) == (2, 2, 1.0, 1.0)


def test_citation_needed_jointly_counts_as_precise():
    # Half the sentence is in [1], half in [2]: neither alone supports it, both together do,
    # so both are needed -> precision 1. A judge that wants both halves makes this exact.
    def judge(sentence, passages):
        joined = " ".join(passages)
        return "예금" in joined and "대출" in joined

    s = M.citation_scores("예금과 대출을 함께 설명합니다 [1][2].", ["예금 설명", "대출 설명"], judge=judge)
    assert (s.recall, s.precision) == (1.0, 1.0)
    bad = M.citation_scores("예금 금리는 연 3%입니다 [7].", SOURCES)  # cites a source that was not shown
    assert (bad.recall, bad.precision) == (0.0, 0.0)


def test_bertscore_with_a_local_encoder(tiny_model):
    import torch

    scorer = M.BertScorer(str(tiny_model))
    assert scorer.f1("정기예금 중도해지이율", "정기예금 중도해지이율") == pytest.approx(1.0, abs=1e-5)
    # By hand: greedy matching of cosine similarities of the encoder's last-layer token vectors.
    p, r = scorer._vectors("대출 금리"), scorer._vectors("예금 금리는 연 3%")
    sim = p @ r.T
    precision, recall = float(sim.max(1).values.mean()), float(sim.max(0).values.mean())
    expected = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    assert scorer.f1("대출 금리", "예금 금리는 연 3%") == pytest.approx(expected)
    assert scorer.f1("대출 금리", "예금 금리는 연 3%") < 1.0
    assert torch.allclose(p.norm(dim=-1), torch.ones(p.shape[0]))


@pytest.fixture(scope="module")
def nli_model(tmp_path_factory, tiny_model):
    """A (randomly initialised) NLI-shaped classifier on the tiny model's config and tokenizer."""
    import torch
    from transformers import AutoConfig, AutoTokenizer, LlamaForSequenceClassification

    out = tmp_path_factory.mktemp("nli") / "nli"
    config = AutoConfig.from_pretrained(tiny_model)
    config.num_labels, config.pad_token_id = 3, 0
    config.id2label = {0: "ENTAILMENT", 1: "neutral", 2: "contradiction"}
    config.label2id = {v: k for k, v in config.id2label.items()}
    torch.manual_seed(0)
    LlamaForSequenceClassification(config).save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(out)
    return out


def test_nli_judge_uses_the_entailment_probability(nli_model):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(nli_model)
    model = AutoModelForSequenceClassification.from_pretrained(nli_model).eval()
    premise, hypothesis = SOURCES[0], "정기예금 중도해지 시 중도해지이율이 적용된다"
    with torch.inference_mode():
        p_entail = float(model(**tok(premise, hypothesis, return_tensors="pt")).logits[0].softmax(-1)[0])
    assert M.nli_judge(str(nli_model), threshold=p_entail - 1e-4)(hypothesis, [premise]) is True
    assert M.nli_judge(str(nli_model), threshold=p_entail + 1e-4)(hypothesis, [premise]) is False
    always = M.nli_judge(str(nli_model), threshold=0.0)
    s = M.citation_scores(f"{hypothesis} [1]. 근거 없는 문장입니다.", SOURCES, judge=always)
    assert (s.recall, s.precision) == (0.5, 1.0)  # the uncited sentence still counts against recall


@pytest.mark.parametrize(
    "text, value",
    [
        ("천만원", 10_000_000),
        ("만원", 10_000),
        ("백만원", 1_000_000),
        ("백만 원", 1_000_000),
        ("십억원", 1_000_000_000),
        ("3억5천", 350_000_000),
        ("3억 5천만원", 350_000_000),
        ("1조5천", 1_500_000_000_000),
        ("1만5천", 15_000),
        ("2억3백", 203_000_000),
    ],
)
def test_unit_words_without_digits_and_colloquial_amounts(text, value):
    assert M.find_numbers(text) == [pytest.approx(value)]


def test_unit_syllables_inside_words_are_not_numbers():
    assert M.find_numbers("만약 백화점에서 수백만 명이 천천히 걸으면") == []
    assert M.find_numbers("수수료는 만원") == [10_000]


def test_exact_match_on_unit_word_amounts():
    assert M.exact_match("정답은 천만원입니다", "10,000,000")
    assert M.exact_match("10,000,000원", "천만원")
    assert M.exact_match("1만 원", "만원") and M.exact_match("100만원", "백만원")
    assert M.exact_match("3억5천만원", "3억5천") and not M.exact_match("300,005,000원", "3억5천")
