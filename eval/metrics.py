"""Metric functions of the eval pack: plain Python over lists, so each can be checked by hand.

Run as: a library (`from kofin.eval.metrics import weighted_f1, exact_match, ...`); `kofin eval`
calls these on the per-example records it writes.

- Classification: accuracy, weighted F1 (sklearn's `f1_score(average="weighted")` definition).
- Extraction / QA: Korean number normalisation (`1억 2천만원` = 120000000), exact match with it,
  token F1 and ROUGE-L over Kiwi content morphemes (`kofin.data_ko.korean`).
- Retrieval: Recall@k, MRR, nDCG@k against gold ids (binary relevance).
- Citations: ALCE-style citation recall and precision with a pluggable judge: lexical by default
  (`kofin.data_ko.citations.support`, the character-bigram check serve runs on every answer `kofin ask`
  gives), an NLI classifier, or an LLM (`kofin.eval.judge`).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

# ---------------------------------------------------------------- classification


def accuracy(y_true: Sequence[Hashable], y_pred: Sequence[Hashable]) -> float:
    _same_length(y_true, y_pred)
    if not y_true:
        return 0.0
    return sum(t == p for t, p in zip(y_true, y_pred, strict=True)) / len(y_true)


def weighted_f1(y_true: Sequence[Hashable], y_pred: Sequence[Hashable]) -> float:
    """Per-class F1 averaged with each class's share of the true labels as its weight.

    As sklearn: a label that only ever appears in predictions has weight 0; a class with no
    predictions (precision 0/0) scores F1 = 0 rather than being skipped.
    """
    _same_length(y_true, y_pred)
    support = Counter(y_true)
    if not support:
        return 0.0
    total = 0.0
    for label, n_true in support.items():
        tp = sum(1 for t, p in zip(y_true, y_pred, strict=True) if t == label and p == label)
        n_pred = sum(1 for p in y_pred if p == label)
        f1 = 2 * tp / (n_true + n_pred) if tp else 0.0
        total += f1 * n_true
    return total / len(y_true)


def _same_length(a: Sequence, b: Sequence) -> None:
    if len(a) != len(b):
        raise ValueError(f"labels and predictions differ in length ({len(a)} vs {len(b)})")


# ---------------------------------------------------------------- numbers


_BIG_UNITS = {"조": 10**12, "억": 10**8, "만": 10**4}
_SMALL_UNITS = {"천": 1000, "백": 100, "십": 10}
_NUM = r"\d[\d,]*(?:\.\d+)?"
_UNIT = "[조억만천백십]"
# A number, its units, and further "number+unit" groups after a space: "1억 2천만원", "12억",
# "1,200만 원". A space is only crossed before a group that has a unit, so "3 5" is two numbers.
# A bare unit word is a number only where nothing but 원 or the end follows and no syllable comes
# before: "천만원", "만원", "백만 원" are amounts; "만약", "수백만", "백화점" are not.
_BARE_UNITS = rf"(?<![가-힣\d]){_UNIT}*[조억만천백](?=\s*원|\s*$)"
_NUMBER_EXPR = re.compile(rf"[-−]?{_NUM}(?:\s*{_UNIT})*(?:\s*{_NUM}(?:\s*{_UNIT})+)*|{_BARE_UNITS}")
_TOKEN = re.compile(rf"({_NUM})|({_UNIT})")


def parse_korean_number(expr: str) -> float:
    """Value of one number expression with Korean units: `1억 2천만원` -> 120000000.0.

    천/백/십 multiply within a 만-group, 조/억/만 close a group; a unit without a digit before it
    counts one (`천만원` = 10,000,000, `만원` = 10,000). A trailing 천/백/십 group after 억 or 조
    is in the next group down, as Koreans say amounts: `3억5천` = 3억 5천만 = 350,000,000
    (`1만5천` stays 15,000; a bare trailing number, `1억 5000`, stays 100,005,000). `%` and `원`
    are dropped (`3.5%` -> 3.5). Raises ValueError when `expr` holds no number.
    """
    total, group, pending = 0.0, 0.0, None
    last_big, group_has_small = 0, False
    tokens = _TOKEN.findall(expr)
    if not tokens:
        raise ValueError(f"no number in {expr!r}")
    for num, unit in tokens:
        if num:
            if pending is not None:  # two bare numbers in a row: keep the sum, as "1억 5000"
                group += pending
            pending = float(num.replace(",", ""))
        elif unit in _SMALL_UNITS:
            group += (1.0 if pending is None else pending) * _SMALL_UNITS[unit]
            pending, group_has_small = None, True
        else:
            group += pending or 0.0
            total += (group or 1.0) * _BIG_UNITS[unit]
            group, pending, last_big, group_has_small = 0.0, None, _BIG_UNITS[unit], False
    if group_has_small and pending is None and last_big > _BIG_UNITS["만"]:
        group *= last_big // _BIG_UNITS["만"]  # "3억5천": the 천 is 천만
    value = total + group + (pending or 0.0)
    return -value if expr.lstrip().startswith(("-", "−")) else value


def find_numbers(text: str) -> list[float]:
    """Every number expression in `text`, in order, as values."""
    return [parse_korean_number(m.group()) for m in _NUMBER_EXPR.finditer(text)]


def normalize_answer(text: str) -> str:
    """Lower-cased text without whitespace and punctuation: '  삼성전자. ' == '삼성전자'."""
    return re.sub(r"[\s\W_]+", "", text.lower())


def exact_match(prediction: str, reference: str, rel_tol: float = 1e-6) -> bool:
    """Numeric references compare by value with the prediction's last number, else normalised text.

    The last number is taken because generated answers often restate the question's numbers
    before the result ("1억의 20%는 2천만원입니다").
    """
    ref_numbers = find_numbers(reference)
    if len(ref_numbers) == 1 and _NUMBER_EXPR.fullmatch(_strip_number_suffix(reference)):
        pred_numbers = find_numbers(prediction)
        return bool(pred_numbers) and math.isclose(pred_numbers[-1], ref_numbers[0], rel_tol=rel_tol, abs_tol=1e-9)
    return normalize_answer(prediction) == normalize_answer(reference)


def _strip_number_suffix(text: str) -> str:
    return re.sub(r"\s*(원|%|퍼센트|달러|주|명|개|건)?\s*$", "", text.strip())


# ---------------------------------------------------------------- token overlap


def morphemes(text: str) -> list[str]:
    """Kiwi content morphemes (particles and endings dropped), as retrieval indexes them."""
    from kofin.data_ko.korean import morpheme_terms

    return morpheme_terms(text)


def token_f1(prediction: str, reference: str, tokenize: Callable[[str], list[str]] = morphemes) -> float:
    """SQuAD-style bag-of-tokens F1; tokens are Korean morphemes by default."""
    pred, ref = tokenize(prediction), tokenize(reference)
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if not common:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def rouge_l(prediction: str, reference: str, tokenize: Callable[[str], list[str]] = morphemes) -> float:
    """ROUGE-L F1 (beta=1): longest common subsequence of the two token lists."""
    pred, ref = tokenize(prediction), tokenize(reference)
    if not pred or not ref:
        return float(pred == ref)
    lcs = _lcs_length(pred, ref)
    if not lcs:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


def _lcs_length(a: list[str], b: list[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


# ---------------------------------------------------------------- retrieval


def recall_at_k(retrieved: Sequence[str], gold: Sequence[str], k: int) -> float:
    """Share of the gold ids found among the first k retrieved."""
    if not gold:
        raise ValueError("recall@k needs at least one gold id")
    return len(set(retrieved[:k]) & set(gold)) / len(set(gold))


def reciprocal_rank(retrieved: Sequence[str], gold: Sequence[str]) -> float:
    """1/rank of the first gold id retrieved; 0 when none is. MRR is its mean over questions."""
    for rank, doc in enumerate(retrieved, 1):
        if doc in gold:
            return 1.0 / rank
    return 0.0


def ndcg_at_k(retrieved: Sequence[str], gold: Sequence[str], k: int) -> float:
    """nDCG@k with binary relevance; a gold id retrieved twice counts once."""
    gold_set, seen, dcg = set(gold), set(), 0.0
    for i, doc in enumerate(retrieved[:k]):
        if doc in gold_set and doc not in seen:
            dcg += 1.0 / math.log2(i + 2)
            seen.add(doc)
    ideal = sum(1.0 / math.log2(i + 2) for i in range(min(len(gold_set), k)))
    return dcg / ideal if ideal else 0.0


# ---------------------------------------------------------------- citations (ALCE)


@dataclass
class CitationScores:
    recall: float  # share of sentences supported by the union of their citations
    precision: float  # share of citations that support, or are needed to support, their sentence
    sentences: int
    citations: int


def lexical_judge(min_support: float = 0.5) -> Callable[[str, list[str]], bool]:
    """`judge(sentence, passages) -> supported?` from kofin's bigram support share."""
    from kofin.data_ko.citations import support

    return lambda sentence, passages: bool(passages) and support(sentence, passages) >= min_support


def citation_scores(
    answer: str, sources: list[str], judge: Callable[[str, list[str]], bool] | None = None
) -> CitationScores:
    """ALCE citation recall and precision of an answer citing `sources` as `[1]`, `[2]` ...

    Recall: a sentence scores 1 when its cited passages together support it (no citation: 0).
    Precision: a citation is irrelevant when it does not support its sentence alone AND the
    sentence's other citations support it without it; precision = relevant / all citations.
    Out-of-range ids (`[9]` with 3 sources) count as citations that support nothing.
    """
    from kofin.data_ko.citations import CITATION as _CITE  # the syntax kofin ask writes
    from kofin.data_ko.citations import cited_numbers

    judge = judge or lexical_judge()
    sentences = answer_sentences(answer)
    supported, relevant, n_citations = 0, 0, 0

    def passages(ids: list[int]) -> list[str]:
        return [sources[i - 1] for i in ids if 1 <= i <= len(sources)]

    for sentence in sentences:
        ids = cited_numbers(sentence)
        # "금리는 3%입니다 [1]." loses its marker; the space it leaves before the period goes too (a judge reads this).
        text = re.sub(r"\s+([.!?。])", r"\1", _CITE.sub("", sentence)).strip()
        n_citations += len(ids)
        if not ids:
            continue
        whole = judge(text, passages(ids))
        supported += whole
        for i in ids:
            alone = judge(text, passages([i]))
            others = [j for j in ids if j != i]
            needed = whole and not (others and judge(text, passages(others)))
            relevant += alone or needed
    return CitationScores(
        recall=supported / len(sentences) if sentences else 0.0,
        precision=relevant / n_citations if n_citations else 0.0,
        sentences=len(sentences),
        citations=n_citations,
    )


def answer_sentences(answer: str) -> list[str]:
    """The answer's sentences, each with the citations written after it."""
    from kofin.data_ko.citations import CITATION as _CITE
    from kofin.data_ko.korean import split_sentences

    sentences: list[str] = []
    for piece in split_sentences(answer):
        # "…적용한다. [1]" splits after the period; a citation-only piece belongs to the sentence before it.
        if sentences and not _CITE.sub("", piece).strip():
            sentences[-1] += " " + piece
        else:
            sentences.append(piece)
    return sentences


# A sentence with fewer word characters than this ("네.", "1.") states nothing a source must back.
MIN_FACTUAL_CHARS = 4


@dataclass
class CitationFormat:
    """Does a generated answer follow kofin's citation format (the format NEFTune broke)?"""

    compliant: bool  # it states something, every factual sentence cites a valid [n], no id is out of range
    cites_nothing: bool  # no valid [n] anywhere in the answer
    out_of_range: list[int]  # cited ids with no such source ([9] with 3 sources)
    uncited_sentences: int  # factual sentences without a valid citation
    factual_sentences: int


def citation_format(answer: str, n_sources: int, removed_ids: Sequence[int] = ()) -> CitationFormat:
    """Format compliance of `answer` citing `n_sources` numbered sources.

    `removed_ids`: ids the answer path already stripped as out of range (`kofin.serve` removes
    them from the served text and reports them), counted as if still in the text.
    """
    from kofin.data_ko.citations import CITATION as _CITE

    out_of_range = sorted(
        {
            *removed_ids,
            *(i for m in _CITE.finditer(answer) for i in map(int, m.group(1).split(",")) if not 1 <= i <= n_sources),
        }
    )
    factual = uncited = valid_anywhere = 0
    for sentence in answer_sentences(answer):
        ids = [i for m in _CITE.finditer(sentence) for i in map(int, m.group(1).split(","))]
        valid = [i for i in ids if 1 <= i <= n_sources]
        valid_anywhere += bool(valid)
        if len(re.sub(r"[\W_]+", "", _CITE.sub("", sentence))) < MIN_FACTUAL_CHARS:
            continue
        factual += 1
        uncited += not valid
    return CitationFormat(
        compliant=factual > 0 and uncited == 0 and not out_of_range,
        cites_nothing=not valid_anywhere,
        out_of_range=out_of_range,
        uncited_sentences=uncited,
        factual_sentences=factual,
    )


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


# ---------------------------------------------------------------- BERTScore


class BertScorer:
    """BERTScore F1 (Zhang et al. 2020, greedy cosine matching, no idf weights, no baseline rescaling)
    with a local encoder folder; turned on by `bertscore_encoder` in the eval config.

    Tokens are the encoder's own; the encoder's last hidden layer gives their vectors.
    """

    def __init__(self, encoder: str, device: str = "cpu"):
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(encoder)
        self.model = AutoModel.from_pretrained(encoder).to(device).eval()
        self.device = device

    def _vectors(self, text: str):
        import torch

        enc = self.tokenizer(text, return_tensors="pt", add_special_tokens=False).to(self.device)
        with torch.inference_mode():
            hidden = self.model(**enc).last_hidden_state[0].float()
        return torch.nn.functional.normalize(hidden, dim=-1)

    def f1(self, prediction: str, reference: str) -> float:
        if not prediction.strip() or not reference.strip():
            return float(prediction.strip() == reference.strip())
        sim = self._vectors(prediction) @ self._vectors(reference).T
        precision = float(sim.max(dim=1).values.mean())  # each predicted token's best reference match
        recall = float(sim.max(dim=0).values.mean())
        return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def nli_judge(model_path: str, threshold: float = 0.5, device: str = "cpu") -> Callable[[str, list[str]], bool]:
    """`judge(sentence, passages)` from a local NLI classifier: P(entailment | premise=passages, hypothesis=sentence).

    ALCE judges with an NLI model (TRUE); any sequence-classification folder whose labels include
    an 'entailment' class works (e.g. a Korean KLUE-NLI cross-encoder).
    """
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForSequenceClassification.from_pretrained(model_path).to(device).eval()
    labels = {str(v).lower(): int(k) for k, v in model.config.id2label.items()}
    entail = next((i for name, i in labels.items() if name.startswith("entail")), None)
    if entail is None:
        raise ValueError(
            f"{model_path}: no 'entailment' label in id2label {model.config.id2label}; "
            "citation_nli_model must be an NLI classifier"
        )

    def judge(sentence: str, passages: list[str]) -> bool:
        if not passages:
            return False
        enc = tokenizer(" ".join(passages), sentence, return_tensors="pt", truncation=True).to(device)
        with torch.inference_mode():
            probs = model(**enc).logits[0].float().softmax(-1)
        return float(probs[entail]) >= threshold

    return judge
