"""Citation judges: does a cited source support a sentence? ALCE's citation recall and precision ask this.

Run as: a library; `kofin eval` builds the judge its config names (`citation_judge(cfg)`) and
`kofin.eval.metrics.citation_scores` asks it `judge(sentence, passages) -> bool`.

- lexical (default): kofin's character-bigram support share, the check `kofin ask` runs on every answer.
- nli (`citation_nli_model`): a local NLI classifier, P(entailment) >= 0.5, as ALCE's TRUE judge.
- llm (`citation_llm_judge`): a causal LM, local (transformers) or an OpenAI-compatible endpoint,
  asked in Korean whether the sources support the sentence. The greedy answer is parsed as
  yes / no; when it names neither (small models ramble), the likelier of '예' and '아니오' after
  the same prompt decides. Both steps are greedy, so a verdict is deterministic. RAG scoring
  hands it every question's checks at once (`prefetch`), so they run batched.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Judge = Callable[[str, list[str]], bool]

JUDGE_INSTRUCTION = (
    "다음 자료가 문장의 내용을 뒷받침하는지 판단하세요. 자료에 문장의 근거가 있으면 '예', 없으면 '아니오'로만 답하세요."
)
_NO = re.compile(r"^\W*(아니오|아니요|아니|no|false|not)(?!\w)", re.IGNORECASE)
_YES = re.compile(r"^\W*(예|네|yes|true|supported)(?!\w)", re.IGNORECASE)


def parse_verdict(answer: str) -> bool | None:
    """'예' / '네' / 'Yes' -> True, '아니오' / 'No' -> False, anything else -> None."""
    if _NO.match(answer):  # first: "not supported" must not read as "supported"
        return False
    if _YES.match(answer):
        return True
    return None


class LlmCitationJudge:
    """`judge(sentence, passages)` from a backend with `generate` and `loglikelihood` (transformers or endpoint).

    Verdicts are remembered per (sentence, passages): ALCE precision asks about the same
    citation alone and within its group, and one forward pass per question is enough.
    """

    def __init__(self, backend: Any = None, max_new_tokens: int = 4, load: Callable[[], Any] | None = None):
        if (backend is None) == (load is None):
            raise ValueError("give a backend or a function that loads one")
        # A resumed run whose RAG records are all scored never asks: a 10B judge is loaded on the first question.
        self._backend, self._load = backend, load
        self.max_new_tokens = max_new_tokens
        self.verdicts: dict[tuple[str, tuple[str, ...]], bool] = {}
        self.answers: dict[tuple[str, tuple[str, ...]], str] = {}  # raw generations, for inspection

    @property
    def backend(self) -> Any:
        if self._backend is None:
            assert self._load is not None, "__init__ takes a backend or a function that loads one"
            self._backend = self._load()
        return self._backend

    @property
    def chat(self) -> bool:
        return bool(getattr(getattr(self.backend, "tokenizer", None), "chat_template", None))

    def prompt(self, sentence: str, passages: list[str]) -> str:
        sources = "\n".join(f"[{i}] {p}" for i, p in enumerate(passages, 1))
        text = f"{JUDGE_INSTRUCTION}\n\n자료:\n{sources}\n\n문장: {sentence}"
        if self.chat:  # an instruct model answers its own turn format far better than plain text
            return self.backend.tokenizer.apply_chat_template(
                [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False
            )
        return f"{text}\n답:"

    def __call__(self, sentence: str, passages: list[str]) -> bool:
        if not passages:
            return False
        key = (sentence, tuple(passages))
        if key not in self.verdicts:
            self.prefetch([key])
        return self.verdicts[key]

    def prefetch(self, queries: list[tuple[str, tuple[str, ...]]]) -> None:
        """Judge many (sentence, passages) at once: one batched generation, one batched likelihood fallback.

        Greedy batched generation gives what one-at-a-time gives (the engine is batch-invariant),
        so prefetching changes the speed, never a verdict.
        """
        todo = list(dict.fromkeys(q for q in queries if q[1] and q not in self.verdicts))
        if not todo:
            return
        prompts = [self.prompt(sentence, list(passages)) for sentence, passages in todo]
        answers = self.backend.generate(prompts, self.max_new_tokens, stop=("\n",))
        verdicts = [parse_verdict(a) for a in answers]
        unsure = [i for i, v in enumerate(verdicts) if v is None]
        if unsure:
            lead = "" if self.chat else " "
            requests = [(prompts[i], f"{lead}{word}") for i in unsure for word in ("예", "아니오")]
            scores = self.backend.loglikelihood(requests)
            for n, i in enumerate(unsure):
                verdicts[i] = scores[2 * n].logprob > scores[2 * n + 1].logprob
        for key, answer, verdict in zip(todo, answers, verdicts, strict=True):
            self.answers[key], self.verdicts[key] = answer, bool(verdict)


def citation_queries(answer: str, sources: list[str]) -> list[tuple[str, tuple[str, ...]]]:
    """Every (sentence, passages) `citation_scores` can ask a judge about for this answer (a superset:
    a judge that says yes to all is asked everything), so an LLM judge can batch them."""
    from kofin.eval.metrics import citation_scores

    asked: list[tuple[str, tuple[str, ...]]] = []

    def recorder(sentence: str, passages: list[str]) -> bool:
        asked.append((sentence, tuple(passages)))
        return True

    citation_scores(answer, sources, recorder)
    return asked


def citation_judge(cfg: Any) -> tuple[Judge | None, str]:
    """The judge an EvalConfig names and its identity (part of each RAG record's resume key); None = lexical."""
    if cfg.citation_nli_model is not None:
        from kofin.eval.metrics import nli_judge

        return nli_judge(str(cfg.citation_nli_model)), str(cfg.citation_nli_model)
    spec = cfg.citation_llm_judge
    if spec is None:
        return None, "lexical"
    if spec.endpoint is not None:
        from kofin.eval.endpoint import EndpointBackend

        backend = EndpointBackend(
            spec.endpoint, spec.served_model, batch_size=cfg.batch_size, api_key_env=spec.api_key_env
        )
        return LlmCitationJudge(backend, spec.max_new_tokens), f"llm:{spec.endpoint} {spec.served_model}"
    from kofin.eval.engine import TransformersBackend
    from kofin.eval.run import EvalModel, resolve_model, weights_digest

    # A run directory holding a model works here as for the evaluated models.
    path, manifest = resolve_model(EvalModel(name="judge", path=spec.path), where="citation_llm_judge.path")

    def load() -> TransformersBackend:
        return TransformersBackend(
            path, batch_size=cfg.batch_size, device=cfg.device, dtype=cfg.dtype, cpu_threads=cfg.cpu_threads
        )

    return LlmCitationJudge(
        max_new_tokens=spec.max_new_tokens, load=load
    ), f"llm:{path} {weights_digest(path, manifest)[:16]}"
