"""Config of the data stage: which documents and user files to read, and how to validate them.

Run as:
    kofin data build --config configs/data/tiny.yaml [key.path=value ...]

`kofin data build --help` lists every key below with its default and description.
"""

from __future__ import annotations

import warnings
from typing import Literal

from pydantic import Field, model_validator

from kofin.config import KofinModel, ResolvedPath, StageConfig

RcTask = Literal["summarize", "title", "qa", "fill_in", "keywords"]
RC_TASKS: tuple[RcTask, ...] = ("summarize", "title", "qa", "fill_in", "keywords")

DEFAULT_SYSTEM_PROMPT = (
    "당신은 가람은행 직원을 돕는 금융 상담 도우미입니다. 제공된 자료와 확인된 사실에 근거하여 "
    "정확하고 간결한 한국어로 답하고, 근거가 된 출처를 밝히세요. 모르는 내용은 추측하지 말고 "
    "확인이 필요하다고 말하세요."
)


class DocumentSource(KofinModel):
    """Documents turned into reading-comprehension chats (and grounded preference pairs)."""

    path: ResolvedPath | None = Field(
        default=None,
        description="Markdown folder/file with front matter, or a JSONL of records (id, title, text; "
        "statutes also law, article); null = the knowledge base bundled with kofin (data_ko/kb).",
    )
    name: str | None = Field(
        default=None,
        description="Label that starts each row's source, e.g. 'laws' gives 'laws:은행법 제2조#1'; "
        "null = 'kb' for the bundled knowledge base, else the file name without extension.",
    )
    max_documents: int | None = Field(
        default=None, gt=0, description="Read at most this many documents, in file order; null = all."
    )

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        return "kb" if self.path is None else self.path.stem


class InstructionSource(KofinModel):
    """A file of instruction/chat examples passed through to SFT after normalising."""

    path: ResolvedPath = Field(
        description="JSONL, JSON array, parquet file, or a datasets save_to_disk folder of instruction rows."
    )
    format: Literal["auto", "alpaca", "sharegpt", "openai"] = Field(
        default="auto",
        description="Row shape: alpaca (instruction/input/output), sharegpt (conversations: from/value), "
        "openai (messages: role/content); auto detects it per row from the keys.",
    )
    split: str | None = Field(
        default=None, description="Split to read when path is a saved DatasetDict (e.g. 'train')."
    )


class PreferenceSource(KofinModel):
    """A file of preference pairs for DPO."""

    path: ResolvedPath = Field(
        description="JSONL, JSON array, parquet file, or a datasets save_to_disk folder of preference rows."
    )
    format: Literal["auto", "implicit", "explicit"] = Field(
        default="auto",
        description="explicit: prompt + chosen + rejected; implicit: chosen and rejected are whole "
        "conversations sharing the prompt (argilla/dpo-mix-7k); auto: explicit when a row has 'prompt'.",
    )
    split: str | None = Field(
        default=None, description="Split to read when path is a saved DatasetDict (e.g. 'train')."
    )


class ReadingComprehensionConfig(KofinModel):
    """How document passages become multi-turn reading-comprehension chats (AdaptLLM style)."""

    tasks: list[RcTask] = Field(
        default_factory=lambda: list(RC_TASKS),
        description="Tasks mined from each passage, asked in this order: summarize, title, qa, fill_in, keywords.",
    )
    min_passage_chars: int = Field(
        default=80, gt=0, description="Skip passages shorter than this many characters (too little to ask about)."
    )
    max_passage_chars: int = Field(
        default=1500,
        gt=0,
        description="Longer sections are cut at line and sentence boundaries into passages of at most this size.",
    )
    max_passages: int | None = Field(
        default=None, gt=0, description="Use at most this many passages per document source; null = all."
    )
    max_qa_per_passage: int = Field(default=3, ge=1, description="At most this many question-answer turns per passage.")
    num_keywords: int = Field(default=5, ge=1, description="Keywords asked for in the keywords task.")

    @model_validator(mode="after")
    def _check(self) -> ReadingComprehensionConfig:
        if self.min_passage_chars >= self.max_passage_chars:
            raise ValueError(
                f"min_passage_chars ({self.min_passage_chars}) must be below max_passage_chars "
                f"({self.max_passage_chars}); lower the first or raise the second"
            )
        if not self.tasks:
            raise ValueError(f"tasks is empty; list at least one of {', '.join(RC_TASKS)}")
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError("tasks lists a task twice; list each task once")
        return self


class BuildSftConfig(KofinModel):
    """SFT chats: reading comprehension over documents plus user instruction files."""

    documents: list[DocumentSource] = Field(
        default_factory=lambda: [DocumentSource()],
        description="Document sources for reading-comprehension chats; default: the bundled knowledge base.",
    )
    instructions: list[InstructionSource] = Field(
        default_factory=list, description="Instruction/chat files passed through after normalising to messages."
    )
    reading_comprehension: ReadingComprehensionConfig = Field(
        default_factory=ReadingComprehensionConfig, description="Reading-comprehension task settings."
    )
    system_prompt: str | None = Field(
        default=DEFAULT_SYSTEM_PROMPT,
        description="System turn added to every chat that has none; null = no system turn.",
    )
    raw_text: bool = Field(
        default=False,
        description="Also write sft/raw_text.jsonl: {'text': ...} rows of the train passages, for "
        "domain-adaptive continued pretraining (completion format).",
    )

    @model_validator(mode="after")
    def _check(self) -> BuildSftConfig:
        if not self.documents and not self.instructions:
            raise ValueError("no input: list at least one entry under documents or instructions")
        if self.raw_text and not self.documents:
            raise ValueError("raw_text needs documents; add a documents entry or set raw_text: false")
        return self


class BuildDpoConfig(KofinModel):
    """Preference pairs: user preference files plus grounded pairs mined from documents."""

    sources: list[PreferenceSource] = Field(
        default_factory=list, description="Preference files (explicit or implicit-prompt rows)."
    )
    from_documents: bool = Field(
        default=False,
        description="Also synthesise grounded pairs: chosen answers from the passage and cites it, "
        "rejected is plausible but ungrounded (another passage's answer, or a changed number).",
    )
    documents: list[DocumentSource] = Field(
        default_factory=lambda: [DocumentSource()],
        description="Document sources for from_documents pairs; default: the bundled knowledge base.",
    )
    max_pairs_per_passage: int = Field(
        default=1,
        ge=1,
        description="Grounded pairs per passage. Pairs of one passage share its text, so more than one "
        "per passage is mostly removed again by near-duplicate removal.",
    )
    system_prompt: str | None = Field(
        default=DEFAULT_SYSTEM_PROMPT,
        description="System turn put first in every prompt that has none; null = no system turn.",
    )

    @model_validator(mode="after")
    def _check(self) -> BuildDpoConfig:
        if not self.sources and not self.from_documents:
            raise ValueError("no input: list preference files under sources or set from_documents: true")
        if self.from_documents and not self.documents:
            raise ValueError("from_documents needs documents; add a documents entry or set from_documents: false")
        return self


class ValidateConfig(KofinModel):
    """Checks applied to every built row before it is written."""

    tokenizer: ResolvedPath | None = Field(
        default=None,
        description="Local tokenizer folder (HF format with a chat template) used to count tokens; "
        "null = kofin's embedded tiny model.",
    )
    max_seq_len: int = Field(default=2048, gt=0, description="Longest row, in tokens of the rendered chat template.")
    too_long: Literal["drop", "error"] = Field(
        default="drop", description="Rows over max_seq_len: drop them (counted in the report) or fail naming them."
    )
    scrub_pii: bool = Field(
        default=True, description="Mask resident numbers, phone, card and account numbers in every message."
    )
    dedupe: Literal["none", "exact", "near"] = Field(
        default="near",
        description="Remove exact duplicates (normalised text) or also near duplicates (MinHash + Jaccard).",
    )
    near_dup_threshold: float = Field(
        default=0.85,
        gt=0,
        le=1,
        description="Character 5-gram Jaccard similarity at which two rows count as near duplicates "
        "(also used for the train/eval leakage check).",
    )
    minhash_permutations: int = Field(
        default=128, ge=16, le=1024, description="MinHash signature length; more is more exact and slower."
    )
    eval_fraction: float = Field(
        default=0.1,
        ge=0,
        lt=0.5,
        description="Share of rows held out for eval, chosen by whole source documents; 0 = no eval split.",
    )
    seed: int = Field(default=0, description="Seed of the train/eval split and of the MinHash permutations.")

    @model_validator(mode="after")
    def _check(self) -> ValidateConfig:
        if self.minhash_permutations % 8:
            raise ValueError(
                f"minhash_permutations ({self.minhash_permutations}) must be a multiple of 8 so it "
                "splits into LSH bands; use e.g. 64, 128 or 256"
            )
        return self


with warnings.catch_warnings():
    # The YAML key is `validate` (what users write); pydantic warns that the field name shadows
    # BaseModel.validate, a deprecated classmethod nothing in kofin calls.
    warnings.filterwarnings("ignore", message='Field name "validate"', category=UserWarning)

    class DataConfig(StageConfig):
        """The data stage: build SFT and/or DPO rows, validate them, write one run directory."""

        sft: BuildSftConfig | None = Field(
            default_factory=BuildSftConfig, description="SFT data to build; null = none."
        )
        dpo: BuildDpoConfig | None = Field(default=None, description="DPO preference data to build; null = none.")
        validate: ValidateConfig = Field(  # type: ignore[assignment]
            default_factory=ValidateConfig, description="Validation, deduplication, PII scrubbing and the split."
        )

        @model_validator(mode="after")
        def _check(self) -> DataConfig:
            if self.sft is None and self.dpo is None:
                raise ValueError("nothing to build: sft and dpo are both null; configure at least one")
            return self
