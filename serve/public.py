"""What other stages may use of kofin.serve: a knowledge base built from documents, and answers.

Run as: a library. `kofin eval`'s RAG task (and any script) imports these from `kofin.serve`
itself, never serve's modules, so eval scores exactly what `kofin ask` and the chat serve:

    from kofin.serve import answer_question, build_knowledge_base
    kb = build_knowledge_base(["docs/"], Path("kb"), default_groups=["all"])
    result = answer_question(kb, None, "정기예금 중도해지 이율은?", ("all",))

`answer_question` takes a loaded retriever (what the chat holds) or a KB folder, opened once per
process and reopened when a re-ingest changes its manifest.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where used: `import kofin.serve` stays light for other stages
    from kofin.serve.conflicts import Conflict
    from kofin.serve.retrieve import HybridRetriever


def build_knowledge_base(inputs: list[Path], kb: Path, default_groups: list[str] | None = None) -> Path:
    """`kofin ingest --kb KB INPUTS...`: incremental (unchanged files are skipped); returns `kb`.

    `default_groups` are the access groups of documents that declare none (ingest's default:
    administrators only; public data such as statutes or an eval set passes `["all"]`)."""
    from kofin.serve.ingest import IngestConfig
    from kofin.serve.ingest import main as ingest

    if default_groups is None:
        cfg = IngestConfig(output_dir=kb, inputs=list(inputs))
    else:
        cfg = IngestConfig(output_dir=kb, inputs=list(inputs), default_groups=default_groups)
    ingest(cfg)
    return kb


def open_kb(kb: Path) -> tuple[HybridRetriever, list[Conflict]]:
    """The retriever and the ingest's conflict list of a KB folder (cached until it is re-ingested)."""
    from kofin.rundir import MANIFEST

    path = Path(kb).resolve()
    return _open(path, (path / MANIFEST).stat().st_mtime_ns)


@lru_cache(maxsize=4)
def _open(path: Path, _stamp: int) -> tuple[HybridRetriever, list[Conflict]]:
    from kofin.serve.conflicts import read_conflicts
    from kofin.serve.retrieve import load_retriever

    return load_retriever(path), read_conflicts(path)
