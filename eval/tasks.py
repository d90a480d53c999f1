"""Eval tasks as data: a task is a YAML spec under `eval/tasks/` naming a local file and its format.

Run as: a library (`from kofin.eval.tasks import load_task`); `kofin eval` reads the tasks its
config lists. As in lm-evaluation-harness, adding a benchmark means writing a YAML file, not code:

    # eval/tasks/fin_mcq_kmmlu.yaml
    name: fin_mcq_kmmlu
    kind: mcq                      # mcq | classification | numeric_qa | rag | pairwise
    format: kmmlu_csv              # which loader reads `path` (see LOADERS in kofin.eval.loaders)
    path: examples/kmmlu_finance.csv   # relative to this YAML; point it at the real KMMLU file
    categories: [Accounting, Economics, Taxation, Management, Real Estate]

Every loader turns its rows into `Example`s; the prompts below are the same for every format
of a kind, so the same question scores the same whichever file it came from.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from kofin.config import KofinModel, ResolvedPath, load_config
from kofin.errors import KofinError

TASKS_DIR = Path(__file__).resolve().parent / "tasks"
LETTERS = "ABCDEFGHIJ"

Kind = Literal["mcq", "classification", "numeric_qa", "rag", "pairwise"]
Format = Literal[
    "financial_mmlu_ko",
    "kmmlu_csv",
    "sentiment",
    "fpb_txt",
    "numeric_qa",
    "gsm8k",
    "finlora",
    "laws_questions",
    "pairwise_prompts",
    "komt_bench",
    "logickor",
]


# Keys only some kinds read (every other key applies to every kind).
KIND_FIELDS: dict[str, frozenset[str]] = {
    "mcq": frozenset({"categories", "num_fewshot", "fewshot_path"}),
    "classification": frozenset(
        {
            "num_fewshot",
            "fewshot_path",
            "text_field",
            "label_field",
            "text_pattern",
            "aspect_field",
            "label_map",
            "labels",
            "score_thresholds",
        }
    ),
    "numeric_qa": frozenset(),
    "rag": frozenset({"kb", "documents", "answer_with", "k"}),
    "pairwise": frozenset(),
}
KIND_FORMATS: dict[str, tuple[str, ...]] = {
    "mcq": ("financial_mmlu_ko", "kmmlu_csv"),
    "classification": ("sentiment", "fpb_txt"),
    "numeric_qa": ("numeric_qa", "gsm8k", "finlora"),
    "rag": ("laws_questions",),
    "pairwise": ("pairwise_prompts", "komt_bench", "logickor"),
}
MAX_INCLUDE_DEPTH = 4


class TaskError(KofinError, ValueError):
    """A task that cannot be found or read."""


class TaskSpec(KofinModel):
    """One eval task: which file, in which format, scored how."""

    name: str = Field(description="Task name used in records, metrics.json and the report.")
    kind: Kind = Field(
        description="mcq (options, log-likelihood + generated letter), classification "
        "(label words, accuracy + weighted F1) or numeric_qa (generated answer, exact match)."
    )
    format: Format = Field(
        description="Loader for `path`: financial_mmlu_ko (conversations), kmmlu_csv, "
        "sentiment (text + label columns in JSONL / JSON / CSV / Parquet: "
        "FPB, FiQA-SA, TFNS, NWGI, KorFin-ASC, headlines, NER types), "
        "fpb_txt (FPB's original 'sentence@label' lines), numeric_qa, gsm8k, finlora (context/target), "
        "laws_questions (qid/question/gold/answer)."
    )
    path: ResolvedPath = Field(description="The data file; relative paths resolve against the task YAML.")
    group: Literal["finance", "general"] = Field(
        "finance", description="general tasks are the catastrophic-forgetting check (reported as deltas vs the base)."
    )
    description: str = Field("", description="What the task measures, for the report.")
    categories: list[str] = Field(
        default_factory=list, description="kmmlu_csv: keep only these Category values (empty: all)."
    )
    text_field: str = Field("sentence", description="sentiment: the column holding the text.")
    label_field: str = Field("label", description="sentiment: the column holding the gold label.")
    text_pattern: str | None = Field(
        None,
        description="sentiment: a regular expression whose groups pick the text out of text_field, joined by "
        "newlines; for FinLoRA / FinGPT rows that hold a whole prompt, e.g. context: 'Input: (.*)\\nAnswer:'.",
    )
    aspect_field: str | None = Field(
        None,
        description="sentiment: the column naming the entity the sentiment is asked about (KorFin-ASC's `aspect`); "
        "shown to the model after the text as '대상: ...'.",
    )
    label_map: dict[str, str] = Field(
        default_factory=dict,
        description="sentiment: raw label -> label word the model is scored on (e.g. positive: 긍정).",
    )
    labels: list[str] = Field(default_factory=list, description="classification: the label words, in a fixed order.")
    score_thresholds: list[float] = Field(
        default_factory=list,
        description="sentiment with numeric scores (FiQA-SA): labels[i] for a score below "
        "thresholds[i], the last label above all; e.g. labels [부정, 중립, 긍정] with [-0.1, 0.1].",
    )
    instruction: str = Field("", description="Text put before every question (e.g. '다음 문장의 감성을 고르세요.').")
    max_new_tokens: int | None = Field(
        None,
        gt=0,
        description="Generation length for generated-answer scoring; default 8 for mcq and "
        "classification (a letter or a label word), 32 otherwise.",
    )
    kb: ResolvedPath | None = Field(
        None, description="rag: the knowledge base (`kofin ingest --kb`) questions are asked against."
    )
    documents: ResolvedPath | None = Field(
        None, description="rag: documents to ingest into a cached KB under $KOFIN_HOME/eval-kb/ when no kb is given."
    )
    answer_with: Literal["model", "extractive"] = Field(
        "model",
        description="rag: answers generated by the evaluated model from kofin ask's prompt, "
        "or kofin's extractive answer.",
    )
    k: list[int] = Field([1, 3, 5, 10], description="rag: cut-offs for Recall@k and nDCG@k.")
    num_fewshot: int = Field(
        0,
        ge=0,
        le=16,
        description="mcq / classification: solved examples shown before each question (k-shot, as lm-eval's "
        "num_fewshot), taken from fewshot_path, else the first ones of `path` (which are then not scored).",
    )
    fewshot_path: ResolvedPath | None = Field(
        None,
        description="mcq / classification: a file in the task's format holding the few-shot examples (a dev split).",
    )
    include: str | None = Field(
        None,
        description="A YAML of shared defaults this task builds on (relative to the task file), as lm-eval's "
        "include:; the task's own keys win. Defaults may include further files.",
    )

    @model_validator(mode="after")
    def _fields_of_its_kind(self) -> TaskSpec:
        # One spec class for every kind keeps loaders and prompts simple; a key another kind reads is a
        # mistake here (`k:` on an MCQ task scores nothing), so it is refused, naming the kinds that read it.
        for key in sorted(self.model_fields_set):
            kinds = [k for k, keys in KIND_FIELDS.items() if key in keys]
            if kinds and self.kind not in kinds:
                raise ValueError(
                    f"{key}: applies to {' / '.join(kinds)} tasks only, and this task is kind: {self.kind}; "
                    f"remove {key}: or change kind:"
                )
        formats = KIND_FORMATS[self.kind]
        if self.format not in formats:
            raise ValueError(f"format: {self.format} does not load {self.kind} tasks; use one of {', '.join(formats)}")
        if self.categories and self.format != "kmmlu_csv":
            raise ValueError("categories: filters KMMLU's Category column; only format: kmmlu_csv has one")
        return self

    @model_validator(mode="after")
    def _labels_for_classification(self) -> TaskSpec:
        if self.kind == "rag" and (self.kb is None) == (self.documents is None):
            raise ValueError(
                "rag tasks need exactly one of kb: (a folder written by `kofin ingest --kb`) "
                "or documents: (files to ingest)"
            )
        if self.kind == "classification" and not self.labels:
            raise ValueError("classification tasks need labels: [..] (the label words the model chooses from)")
        missing = sorted(set(self.label_map.values()) - set(self.labels)) if self.labels else []
        if missing:
            raise ValueError(f"label_map maps to {missing}, which are not in labels {self.labels}; add them to labels")
        if self.score_thresholds and len(self.score_thresholds) != len(self.labels) - 1:
            raise ValueError(
                f"score_thresholds needs one number fewer than labels ({len(self.labels) - 1}), "
                f"got {len(self.score_thresholds)}"
            )
        if self.text_pattern is not None:
            try:
                groups = re.compile(self.text_pattern, re.S).groups
            except re.error as err:
                raise ValueError(
                    f"text_pattern {self.text_pattern!r} is not a valid regular expression: {err}"
                ) from None
            if not groups:
                raise ValueError("text_pattern needs a (group) around the text to keep, e.g. 'Input: (.*)\\nAnswer:'")
        if self.max_new_tokens is None:
            self.max_new_tokens = {"mcq": 8, "classification": 8, "rag": 128, "pairwise": 512}.get(self.kind, 32)
        return self


@dataclass
class Example:
    """One scored item. `answer` is an index into `choices` for mcq/classification, else the text."""

    id: str
    where: str  # file:line of the row, for error messages and drill-down
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
            raise TaskError(
                f"task file {path} does not exist; give a bundled task name ({', '.join(bundled_tasks())}) "
                "or the path of a task YAML"
            )
        return path.resolve()
    bundled = TASKS_DIR / f"{ref}.yaml"
    if not bundled.exists():
        raise TaskError(
            f"unknown task '{ref}'; bundled tasks: {', '.join(bundled_tasks())}, or give the path of a task YAML"
        )
    return bundled


def load_task(ref: str | Path) -> TaskSpec:
    path = find_task(ref)
    return load_config(TaskSpec, path, defaults=_included_defaults(path))


def _included_defaults(path: Path, depth: int = 0) -> dict:
    """The `include:` chain's keys, outermost first, each file's own keys over what it includes."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as err:
        raise TaskError(f"{path}: cannot read the task YAML: {err}") from None
    ref = data.get("include") if isinstance(data, dict) else None
    if not ref:
        return {}
    if depth >= MAX_INCLUDE_DEPTH:
        raise TaskError(
            f"{path}: include: nests deeper than {MAX_INCLUDE_DEPTH} files (a loop?); include the defaults directly"
        )
    target = (path.parent / str(ref)).resolve()
    if not target.exists():
        raise TaskError(
            f"{path}: include: {ref} does not exist (looked for {target}); give a path relative to the task file"
        )
    inner = _included_defaults(target, depth + 1)
    included = yaml.safe_load(target.read_text(encoding="utf-8")) or {}
    if not isinstance(included, dict):
        raise TaskError(f"{target}: an include: file must be a mapping of task keys")
    merged = {**inner, **{k: v for k, v in included.items() if k != "include"}}
    return merged


def load_examples(spec: TaskSpec, limit: int | None = None) -> list[Example]:
    from kofin.eval.loaders import LOADERS

    examples = LOADERS[spec.format](spec)
    if spec.num_fewshot:
        if spec.fewshot_path is not None:
            shots = LOADERS[spec.format](spec.model_copy(update={"path": spec.fewshot_path}))[: spec.num_fewshot]
        else:  # the first rows are the demonstrations; no question is scored with itself shown solved
            shots, examples = examples[: spec.num_fewshot], examples[spec.num_fewshot :]
        if len(shots) < spec.num_fewshot:
            raise TaskError(
                f"task {spec.name}: num_fewshot: {spec.num_fewshot} but {spec.fewshot_path or spec.path} "
                f"holds {len(shots)} examples; lower num_fewshot or give a larger fewshot_path"
            )
        for ex in examples:
            ex.meta["fewshot"] = shots
    if not examples:
        raise TaskError(
            f"task {spec.name}: {spec.path} holds no examples"
            + (f" in categories {spec.categories}" if spec.categories else "")
            + (f" after the {spec.num_fewshot} few-shot ones" if spec.num_fewshot and spec.fewshot_path is None else "")
        )
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


def pairwise_prompt(spec: TaskSpec, ex: Example) -> str:
    """The user turns (the model's chat template is applied when answering: kofin.eval.pairwise)."""
    return "\n\n".join(ex.meta["turns"])


PROMPTS = {
    "mcq": mcq_prompt,
    "classification": classification_prompt,
    "numeric_qa": qa_prompt,
    "rag": qa_prompt,
    "pairwise": pairwise_prompt,
}


def prompt_for(spec: TaskSpec, ex: Example) -> str:
    """The prompt scored; k-shot tasks put each demonstration, solved with its option text, before it."""
    prompt = PROMPTS[spec.kind](spec, ex)
    shots = ex.meta.get("fewshot") or []
    if not shots:
        return prompt
    solved = [f"{PROMPTS[spec.kind](spec, s)} {s.choices[s.answer]}" for s in shots]
    return "\n\n".join(solved + [prompt])
