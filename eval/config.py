"""`kofin eval` configuration: which models, which tasks, how to batch.

Run as: a library; `kofin eval --config configs/eval/tiny.yaml` loads it (`kofin eval --help`
lists every key).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from kofin.config import KofinModel, ResolvedPath, StageConfig
from kofin.offline import check_endpoint_host


class Endpoint(KofinModel):
    """Where a model is served instead of loaded: an OpenAI-compatible server (vLLM)."""

    endpoint: str | None = Field(
        None, description="OpenAI-compatible base URL (vLLM), e.g. http://127.0.0.1:8000/v1, instead of path."
    )
    served_model: str = Field("kofin", description="Model name sent to the endpoint (vLLM's --served-model-name).")
    api_key_env: str = Field("KOFIN_OPENAI_API_KEY", description="Environment variable holding the endpoint's API key.")
    allowed_hosts: list[str] = Field(
        default_factory=lambda: ["127.0.0.1", "localhost", "::1"],
        description="Hosts the endpoint may be on; kofin is offline by design, "
        "so add the bank's internal vLLM host here.",
    )


class EvalModel(Endpoint):
    name: str = Field(
        description="Label in records, metrics.json and the report (e.g. base, sft, dpo, merged).",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
    )
    path: ResolvedPath | None = Field(
        None,
        description="A model folder (config.json + weights + tokenizer), a complete kofin run directory "
        "holding one, or a kofin sft / dpo run (its LoRA adapter applied to the base it was trained on); "
        "null = the embedded tiny model.",
    )
    base: bool = Field(
        False, description="The reference model: forgetting deltas of the others are measured against it."
    )

    @model_validator(mode="after")
    def _path_or_endpoint(self) -> EvalModel:
        if self.endpoint is None:
            return self
        if self.path is not None:
            raise ValueError("give either path (a local model) or endpoint (an OpenAI-compatible server), not both")
        check_endpoint_host(self.endpoint, self.allowed_hosts, "endpoint")
        return self


class LlmJudge(Endpoint):
    """A causal LM that judges citation support: a local model folder or an OpenAI-compatible endpoint."""

    path: ResolvedPath | None = Field(
        None,
        description="Local model folder (config.json + weights + tokenizer) "
        "or a complete kofin run directory holding one.",
    )
    max_new_tokens: int = Field(
        4, gt=0, description="Tokens generated for the verdict ('예' / '아니오' need one or two)."
    )

    @model_validator(mode="after")
    def _path_xor_endpoint(self) -> LlmJudge:
        if (self.path is None) == (self.endpoint is None):
            raise ValueError("give exactly one of path (a local judge model) or endpoint (an OpenAI-compatible server)")
        if self.endpoint is not None:
            check_endpoint_host(self.endpoint, self.allowed_hosts, "endpoint")
        return self


class PairwiseJudge(LlmJudge):
    """The judge of `kind: pairwise` tasks: a local model folder or an OpenAI-compatible endpoint."""

    max_new_tokens: int = Field(
        16,
        gt=0,
        description="Tokens generated for a verdict; '[[A>B]]' needs about 8, more when the judge explains first.",
    )

    @model_validator(mode="after")
    def _path_xor_endpoint(self) -> PairwiseJudge:
        # Unlike the citation judge, a pairwise judge may be the embedded tiny model (path: null, no endpoint):
        # the tiny ablation runs the judging machinery end to end; its verdicts mean nothing.
        if self.path is not None and self.endpoint is not None:
            raise ValueError(
                "give either path (a local judge model) or endpoint (an OpenAI-compatible server), not both"
            )
        if self.endpoint is not None:
            check_endpoint_host(self.endpoint, self.allowed_hosts, "endpoint")
        return self


class GpuPrice(KofinModel):
    gpu_hour_price: float = Field(gt=0, description="Price of one GPU-hour.")
    currency: str = Field("USD", description="Currency of gpu_hour_price.")


class EvalConfig(StageConfig):
    """Evaluate each model on each task; write per-example records, metrics.json and the forgetting deltas."""

    models: list[EvalModel] = Field(min_length=1, description="Models to evaluate, in report order.")
    tasks: list[str] = Field(
        default_factory=lambda: [
            "fin_mcq_fmmlu",
            "fin_mcq_kmmlu",
            "fin_sentiment",
            "fin_sentiment_fiqa",
            "fin_sentiment_tfns",
            "fin_sentiment_nwgi",
            "fin_sentiment_korfin_asc",
            "fin_headline",
            "fin_ner_cls",
            "fin_numeric_qa",
            "fin_xbrl_extraction",
            "kb_rag",
            "general_mcq_ko",
            "general_gsm8k_ko",
        ],
        description="Bundled task names (eval/tasks/*.yaml) or paths of task YAMLs (relative to this config).",
    )
    training_runs: list[ResolvedPath] = Field(
        default_factory=list,
        description="kofin sft / dpo / merge run directories whose time and cost the report shows "
        "(GPU-hours, tokens/s, peak GPU memory, cost from their manifests).",
    )
    gpu_price: GpuPrice | None = Field(
        None,
        description="{gpu_hour_price: 8.0, currency: USD}: prices the GPU-hours of training runs whose manifest "
        "records no cost (kofin dpo, merge); shown as estimates. null = only recorded costs.",
    )
    bertscore_encoder: ResolvedPath | None = Field(
        None,
        description="Local encoder folder (e.g. a Korean BERT/RoBERTa) for BERTScore F1 of generated answers; "
        "null = off.",
    )
    citation_nli_model: ResolvedPath | None = Field(
        None,
        description="Local NLI classifier (labels include 'entailment') that judges citation support in RAG "
        "tasks, as ALCE does; null = the lexical (character-bigram) judge.",
    )
    citation_llm_judge: LlmJudge | None = Field(
        None,
        description="An LLM judge for citation support in RAG tasks ({path: MODEL_DIR} or {endpoint: URL, "
        "served_model: NAME}): asked in Korean whether the cited sources support the sentence, greedy answer parsed "
        "as 예/아니오; null = citation_nli_model, else the lexical judge.",
    )
    bootstrap_resamples: int = Field(
        1000, ge=10, description="Bootstrap resamples for the 95% intervals and paired tests (fewer: faster, noisier)."
    )
    seed: int = Field(0, description="Seed of the bootstrap resampling: the same records give the same intervals.")
    pairwise_judge: PairwiseJudge | None = Field(
        None,
        description="Judge of pairwise preference tasks ({path: MODEL_DIR}, {endpoint: URL, served_model: NAME}, or "
        "{path: null}: the embedded tiny model, for dry runs of the machinery): "
        "compares each model's answer with the base model's, twice with positions swapped, Arena-Hard verdicts.",
    )
    limit: int | None = Field(None, gt=0, description="Score only the first N examples of each task (smoke runs).")
    batch_size: int = Field(8, gt=0, description="Sequences per forward pass (log-likelihood and generation).")
    device: str = Field("auto", description="auto (cuda when present, else cpu), cpu, cuda, cuda:1 ...")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weights' dtype: auto = bfloat16 on CUDA, float32 on CPU."
    )
    cpu_threads: int | None = Field(
        None,
        gt=0,
        description="Torch CPU threads; null = torch's default. 1 is fastest for the tiny model on a busy machine.",
    )
    report: bool = Field(
        True, description="Write report.md, report.html and charts/ (needs the eval extra: matplotlib)."
    )

    @field_validator("tasks")
    @classmethod
    def _task_paths_against_config(cls, tasks: list[str], info: ValidationInfo) -> list[str]:
        # A task YAML named by path is relative to the config file, like every other path.
        base = Path((info.context or {}).get("base_dir") or Path.cwd())
        return [str((base / t).resolve()) if t.endswith((".yaml", ".yml")) else t for t in tasks]

    @model_validator(mode="after")
    def _names_and_base(self) -> EvalConfig:
        names = [m.name for m in self.models]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"model names must be unique; {dupes} appear more than once")
        if sum(m.base for m in self.models) > 1:
            raise ValueError("at most one model can have base: true (the reference for forgetting deltas)")
        if self.citation_nli_model is not None and self.citation_llm_judge is not None:
            raise ValueError("set one citation judge: citation_nli_model or citation_llm_judge, not both")
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError("a task is listed twice in tasks")
        return self

    @property
    def base_model(self) -> EvalModel:
        """The marked base, else the first model listed."""
        return next((m for m in self.models if m.base), self.models[0])
