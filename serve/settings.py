"""`AnswerSettings`: how a question becomes an answer, declared once for `kofin ask` and the chat.

Run as: a library; `AskConfig` (serve/ask.py) and `ServeConfig` (serve/serve_config.py) both
inherit these keys, so a YAML key means the same thing in either config and a new answer
setting reaches both.
"""

from __future__ import annotations

from pydantic import Field

from kofin.config import KofinModel
from kofin.serve.backends import GenerationConfig
from kofin.serve.retrieve import RetrievalConfig


class AnswerSettings(KofinModel):
    """How a question becomes an answer; shared by `kofin ask` (AskConfig) and the chat (ServeConfig)."""

    retrieval: RetrievalConfig = Field(default_factory=RetrievalConfig, description="Hybrid retrieval settings.")
    generation: GenerationConfig = Field(default_factory=GenerationConfig, description="Answer backend.")
    # A step below what `kofin ask --calibrate` proposes for the statutes on every set tuned on
    # (benchmarks/{dev,heldout..heldout5}: 0.19 of 560 answerable and 215 unanswerable, 2026-12-05),
    # since the gate counts a word as found where its synonym or the name it shortens is (0.12 before;
    # benchmarks/README.md); blind questions cover less than tuned ones. Tests allow two steps below.
    # A KB of manuals calibrates its own (configs/serve/demo.yaml).
    min_coverage: float = Field(
        0.18,
        ge=0,
        le=1,
        description="Below this share of the question's (idf-weighted) words found in the best of the top 3 "
        "sources, the answer is that nothing was found (benchmarks/answers.py measures refusals of answerable "
        "and unanswerable questions against it).",
    )
    confident_coverage: float = Field(
        0.45,
        ge=0,
        le=1,
        description="Below this share (and at or above min_coverage) the answer is given with a visible caveat "
        "that the evidence is weak.",
    )
    min_support: float = Field(
        0.5, ge=0, le=1, description="A cited sentence with less of its text in its sources than this is flagged."
    )
    max_sentences: int = Field(3, ge=1, le=10, description="Sentences the extractive backend quotes.")

    def answer_settings(self) -> dict:
        """The AnswerSettings fields of this config, to build the other config kind from it."""
        return {name: getattr(self, name) for name in AnswerSettings.model_fields}
