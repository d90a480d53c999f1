"""Eval tasks as data: a task is a YAML spec under `eval/tasks/` naming a local file and its format.

Run as: a library (`from kofin.eval.tasks import load_task`); `kofin eval` reads the tasks its
config lists. As in lm-evaluation-harness, adding a benchmark means writing a YAML file, not code:

    # eval/tasks/fin_mcq_kmmlu.yaml
    name: fin_mcq_kmmlu
    kind: mcq                      # mcq | classification | numeric_qa
    format: kmmlu_csv              # which loader reads `path` (see LOADERS in kofin.eval.loaders)
    path: examples/kmmlu_finance.csv   # relative to this YAML; point it at the real KMMLU file
    categories: [Accounting, Economics, Taxation, Management, Real Estate]

Every loader turns its rows into `Example`s; the prompts below are the same for every format
of a kind, so the same question scores the same whichever file it came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from kofin.config import KofinModel, ResolvedPath, load_config
from kofin.errors import KofinError

TASKS_DIR = Path(__file__).resolve().parent / "tasks"
LETTERS = "ABCDEFGHIJ"

Kind = Literal["mcq", "classification", "numeric_qa", "rag"]
Format = Literal["financial_mmlu_ko", "kmmlu_csv", "sentiment", "numeric_qa", "gsm8k", "laws_questions"]


class TaskError(KofinError, ValueError):
    """A task that cannot be found or read."""


class TaskSpec(KofinModel):
    """One eval task: which file, in which format, scored how."""

    name: str = Field(description="Task name used in records, metrics.json and the report.")
    kind: Kind = Field(description="mcq (options, log-likelihood + generated letter), classification "
                       "(label words, accuracy + weighted F1) or numeric_qa (generated answer, exact match).")
    format: Format = Field(description="Loader for `path`: financial_mmlu_ko (conversations), kmmlu_csv, "
                           "sentiment (FPB / FiQA-SA / TFNS / NWGI / KorFin-ASC style JSONL), numeric_qa, gsm8k.")
    path: ResolvedPath = Field(description="The data file; relative paths resolve against the task YAML.")
    group: Literal["finance", "general"] = Field(
        "finance", description="general tasks are the catastrophic-forgetting check (reported as deltas vs the base).")
    description: str = Field("", description="What the task measures, for the report.")
    categories: list[str] = Field(default_factory=list, description="kmmlu_csv: keep only these Category values (empty: all).")
    text_field: str = Field("sentence", description="sentiment: the column holding the text.")
    label_field: str = Field("label", description="sentiment: the column holding the gold label.")
    label_map: dict[str, str] = Field(
        default_factory=dict, description="sentiment: raw label -> label word the model is scored on (e.g. positive: 긍정).")
    labels: list[str] = Field(default_factory=list, description="classification: the label words, in a fixed order.")
    instruction: str = Field("", description="Text put before every question (e.g. '다음 문장의 감성을 고르세요.').")
    max_new_tokens: int | None = Field(
        None, gt=0, description="Generation length for generated-answer scoring; default 8 for mcq and "
        "classification (a letter or a label word), 32 otherwise.")
    kb: ResolvedPath | None = Field(None, description="rag: the knowledge base (`kofin ingest --kb`) questions are asked against.")
    k: list[int] = Field([1, 3, 5, 10], description="rag: cut-offs for Recall@k and nDCG@k.")

    @model_validator(mode="after")
    def _labels_for_classification(self) -> "TaskSpec":
        if self.kind == "rag" and self.kb is None:
            raise ValueError("rag tasks need kb: (a knowledge base folder written by `kofin ingest --kb`)")
        if self.kind == "classification" and not self.labels:
            raise ValueError("classification tasks need labels: [..] (the label words the model chooses from)")
        missing = sorted(set(self.label_map.values()) - set(self.labels)) if self.labels else []
        if missing:
            raise ValueError(f"label_map maps to {missing}, which are not in labels {self.labels}; add them to labels")
        if self.max_new_tokens is None:
            self.max_new_tokens = 8 if self.kind in ("mcq", "classification") else 32
        return self


@dataclass
class Example:
    """One scored item. `answer` is an index into `choices` for mcq/classification, else the text."""

    id: str
    where: str                      # file:line of the row, for error messages and drill-down
    question: str
    answer: int | str
    choices: list[str] = field(default_factory=list)
    meta: dict = field(default_factory=dict)


def bundled_tasks() -> list[str]:
    return sorted(p.stem for p in TASKS_DIR.glob("*.yaml"))


def find_task(ref: str | Path) -> Path:
    """A bundled task name (`fin_mcq_kmmlu`) or a path to a task YAML."""
    path = Path(ref)
    if path.suffix in (".yaml", ".yml"):
        if not path.exists():
            raise TaskError(f"task file {path} does not exist; give a bundled task name ({', '.join(bundled_tasks())}) "
                            "or the path of a task YAML")
        return path.resolve()
    bundled = TASKS_DIR / f"{ref}.yaml"
    if not bundled.exists():
        raise TaskError(f"unknown task '{ref}'; bundled tasks: {', '.join(bundled_tasks())}, "
                        "or give the path of a task YAML")
    return bundled


def load_task(ref: str | Path) -> TaskSpec:
    return load_config(TaskSpec, find_task(ref))


def load_examples(spec: TaskSpec, limit: int | None = None) -> list[Example]:
    from kofin.eval.loaders import LOADERS

    examples = LOADERS[spec.format](spec)
    if not examples:
        raise TaskError(f"task {spec.name}: {spec.path} holds no examples"
                        + (f" in categories {spec.categories}" if spec.categories else ""))
    return examples[:limit] if limit else examples


# ---------------------------------------------------------------- prompts


def mcq_prompt(spec: TaskSpec, ex: Example) -> str:
    """KMMLU's lm-eval layout: question, lettered options, then '정답:'."""
    head = f"{spec.instruction}\n" if spec.instruction else ""
    options = "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(ex.choices))
    return f"{head}{ex.question}\n{options}\n정답:"


def classification_prompt(spec: TaskSpec, ex: Example) -> str:
    head = f"{spec.instruction}\n" if spec.instruction else ""
    return f"{head}문장: {ex.question}\n선택지: {', '.join(ex.choices)}\n정답:"


def qa_prompt(spec: TaskSpec, ex: Example) -> str:
    head = f"{spec.instruction}\n" if spec.instruction else ""
    context = f"자료: {ex.meta['context']}\n" if ex.meta.get("context") else ""
    return f"{head}{context}질문: {ex.question}\n답:"


PROMPTS = {"mcq": mcq_prompt, "classification": classification_prompt, "numeric_qa": qa_prompt}


def prompt_for(spec: TaskSpec, ex: Example) -> str:
    return PROMPTS[spec.kind](spec, ex)
