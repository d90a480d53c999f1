"""`kofin ingest`: documents -> a knowledge base (chunks + BM25 + char n-grams + dense vectors).

Run as:
    kofin ingest --kb runs/kb-demo data_ko/kb
    kofin ingest --kb runs/kb-laws ../shared/data/laws/fin_articles.jsonl
    kofin ingest --kb runs/kb-demo --remove data_ko/kb/fx/old-notice.md
    kofin ingest --config configs/ingest/demo.yaml [key.path=value ...]

Incremental: a file whose sha256 matches the KB's `sources.json` is not read again (its chunks are
kept); a changed file's chunks replace its old ones; a file that disappeared from a folder being
ingested again, or one named by `--remove`, loses its chunks. When nothing changed the KB is not
rewritten at all. Indexes are rebuilt from all chunks whenever something changed (BM25 statistics
and the SVD depend on the whole collection; the laws corpus takes seconds).

A file that cannot be read (corrupt, unknown format, empty, over `max_file_mb`) is reported by
name with the reason and skipped; the rest is ingested. Symbolic links are never followed by
default (`links: refuse`): a link in an ingest folder (`passwd-link.md -> /etc/passwd`) is named in
the skip list; `links: inside_root` follows only links that resolve inside the folder being
ingested. A document that declares no access groups gets `default_groups` (default: `admins`,
a group only administrators have), so an unlabelled file is never open to everyone by accident.

Every KB written also gets `conflicts.json`: statements of different documents that give the same
rate, limit, threshold or code different values (kofin.serve.conflicts). The summary lists them for
the admin who ran the ingest; they name documents, so they are for admins, not for every user.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from kofin.config import ResolvedPath, StageConfig
from kofin.data_ko.corpus import DocumentError
from kofin.errors import KofinError
from kofin.rundir import atomic_write_json, atomic_write_text, is_complete, open_run, sha256_file
from kofin.serve.chunking import ChunkingConfig, chunk_document
from kofin.serve.conflicts import CONFLICTS_FILE, Conflict, conflicts_json, describe, find_conflicts, read_conflicts
from kofin.serve.index import IndexConfig, build_bm25, build_chars, build_dense
from kofin.serve.kb import FORMAT_VERSION, STAGE, KnowledgeBaseError, read_chunks, read_sources, verified_manifest
from kofin.serve.loaders import SUFFIXES, LoaderError, load_file
from kofin.serve.users import ADMINS_GROUP, check_groups

SKIP_NAMES = {"readme.md"}  # folder notes, not knowledge (the bundled KB has one)


class IngestConfig(StageConfig):
    """`output_dir` is the knowledge-base folder (`--kb`)."""

    inputs: list[ResolvedPath] = Field(
        default_factory=list, description="Files and folders to ingest (folders recursively)."
    )
    remove: list[ResolvedPath] = Field(
        default_factory=list, description="Files or folders whose chunks are removed from the KB."
    )
    rebuild: bool = Field(
        False, description="Ignore the existing KB and ingest from scratch (also repairs a corrupted KB)."
    )
    max_file_mb: float = Field(50.0, gt=0, description="Files larger than this are skipped and reported.")
    chunking: ChunkingConfig = Field(default_factory=ChunkingConfig, description="How documents are cut into chunks.")
    index: IndexConfig = Field(default_factory=IndexConfig, description="BM25, char n-gram and dense index settings.")
    default_groups: list[str] = Field(
        default_factory=lambda: [ADMINS_GROUP],
        min_length=1,
        description=(
            "Access groups of a document that declares none (no front-matter `groups:`, no `groups` in a JSONL "
            "record, "
            f"and every PDF/DOCX/HTML/HWPX/text file). Default [{ADMINS_GROUP}]: administrators only. "
            "`[all]` opens unlabelled documents to everyone (public statutes, e.g. fin_articles.jsonl)."
        ),
    )
    links: Literal["refuse", "inside_root"] = Field(
        "refuse",
        description=(
            "Symbolic links in the inputs: `refuse` skips every link (named in the skip list); `inside_root` follows "
            "a link only when its target is inside the folder being ingested."
        ),
    )

    @field_validator("default_groups")
    @classmethod
    def _groups(cls, v: list[str]) -> list[str]:
        return check_groups(v)


@dataclass
class IngestReport:
    kb: str
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    chunks: int = 0
    documents: int = 0
    seconds: float = 0.0
    written: bool = False
    conflicts: list[Conflict] = field(default_factory=list)  # of the KB as it now is
    conflict_seconds: float = 0.0
    defaulted: list[str] = field(default_factory=list)  # documents read this run that declared no groups
    default_groups: list[str] = field(default_factory=list)

    def summary(self) -> str:
        head = (
            f"{len(self.added)} added, {len(self.updated)} updated, {len(self.unchanged)} unchanged, "
            f"{len(self.removed)} removed, {len(self.skipped)} skipped"
        )
        state = (
            f"{self.documents} documents, {self.chunks} chunks"
            if self.written
            else "nothing changed; the KB was left as it was"
        )
        lines = [f"{self.kb}: {head} -> {state} ({self.seconds:.1f}s)"]
        if self.defaulted:
            # Said every time: statutes ingested with the defaults are otherwise silently invisible to staff.
            n, groups = len(self.defaulted), ", ".join(self.default_groups)
            lines.append(
                f"{n} document{'s' if n != 1 else ''} declared no access groups and got default_groups "
                f"[{groups}]"
                + (
                    ": only administrators can read them; for public text (statutes) pass "
                    "default_groups='[all]' or use configs/ingest/laws.yaml"
                    if self.default_groups == [ADMINS_GROUP]
                    else ""
                )
            )
        if self.conflicts:
            n = len(self.conflicts)
            lines.append(
                f"{n} conflicting statement{'s' if n != 1 else ''} (documents that disagree; check which one is right):"
            )
            lines += [f"  - {describe(c)}" for c in self.conflicts]
        return "\n".join(lines)


def main(cfg: IngestConfig, *, quiet: bool = False) -> IngestReport:
    """Ingest into the knowledge base; returns what changed. `quiet` is accepted for the one stage
    signature: ingestion prints nothing itself (`kofin ingest` prints the report)."""
    started = time.time()
    kb = cfg.output_dir
    report = IngestReport(kb=str(kb), default_groups=list(cfg.default_groups))
    old_chunks, old_sources = _previous(kb, cfg.rebuild)

    sources: dict[str, dict] = dict(old_sources)
    chunks_by_source: dict[str, list[dict]] = {}
    for c in old_chunks:
        chunks_by_source.setdefault(c["source"], []).append(c)

    seen: set[str] = set()
    for path, root in _files(cfg.inputs, report, cfg.links):
        key = str(path)
        seen.add(key)
        reason = _too_big_or_unknown(path, cfg.max_file_mb)
        if reason:
            report.skipped.append((key, reason))
            continue
        digest = sha256_file(path)
        forced = _upload_record_groups(path)
        old = old_sources.get(key)
        if (
            old
            and old["sha256"] == digest
            and old.get("groups") == forced
            and old.get("default_groups", ["all"]) == cfg.default_groups
        ):  # KBs before default_groups gave `all`
            report.unchanged.append(key)
            continue
        rel = path.relative_to(root).as_posix()
        try:
            docs = load_file(path, rel)
            new = [
                _record(c, key, forced, cfg.default_groups) for doc in docs for c in chunk_document(doc, cfg.chunking)
            ]
        except (LoaderError, DocumentError) as err:
            report.skipped.append((key, str(err).removeprefix(f"{path}: ").removeprefix(f"{path}")))
            continue
        clash = _doc_id_clash(new, key, chunks_by_source)
        if clash:
            report.skipped.append((key, clash))
            continue
        (report.updated if key in old_sources else report.added).append(key)
        if forced is None:
            report.defaulted += [d.doc_id for d in docs if not d.groups]
        chunks_by_source[key] = new
        sources[key] = {
            "sha256": digest,
            "bytes": path.stat().st_size,
            "root": str(root),
            "documents": sorted({c["doc_id"] for c in new}),
            "default_groups": list(cfg.default_groups),
        }
        if forced is not None:
            sources[key]["groups"] = forced

    for key in list(sources):
        if _removed(key, sources[key], cfg, seen):
            report.removed.append(key)
            sources.pop(key)
            chunks_by_source.pop(key, None)

    chunks = [c for key in sorted(sources) for c in chunks_by_source.get(key, [])]
    report.chunks = len(chunks)
    report.documents = len({c["doc_id"] for c in chunks})
    changed = report.added or report.updated or report.removed or not is_complete(kb) or cfg.rebuild
    if changed:
        if not chunks:
            raise KofinError(
                f"{kb}: nothing to index — every input was skipped or removed (see the reasons above); "
                "the KB was not written"
            )
        _write(cfg, chunks, sources, report)
        report.written = True
    else:
        report.conflicts = read_conflicts(kb)
    report.seconds = time.time() - started
    return report


def _previous(kb: Path, rebuild: bool) -> tuple[list[dict], dict[str, dict]]:
    if rebuild or not is_complete(kb):
        return [], {}
    try:
        verified_manifest(kb)
    except KnowledgeBaseError as err:
        raise KnowledgeBaseError(f"{err}\n(`kofin ingest --rebuild` rebuilds it from the source files)") from None
    return read_chunks(kb), read_sources(kb)


def _files(inputs: list[Path], report: IngestReport, links: str = "refuse"):
    """(file, ingest root) for every input; a folder's files in sorted order, hidden ones skipped,
    symbolic links skipped (or, with links=inside_root, kept when they resolve inside the root)."""
    for item in inputs:
        if item.is_symlink():
            report.skipped.append((str(item), _link_refusal(item)))
        elif item.is_file():
            yield item, item.parent
        elif item.is_dir():
            for path in sorted(item.rglob("*")):
                rel = path.relative_to(item)
                if any(p.startswith(".") for p in rel.parts) or path.name.lower() in SKIP_NAMES:
                    continue
                link = next(
                    (
                        item.joinpath(*rel.parts[:i])
                        for i in range(1, len(rel.parts) + 1)
                        if item.joinpath(*rel.parts[:i]).is_symlink()
                    ),
                    None,
                )
                if link is not None:
                    inside = path.resolve().is_relative_to(item.resolve())
                    if links == "inside_root" and inside:
                        if path.is_file():
                            yield path, item
                    elif link == path or path.is_file():
                        report.skipped.append((str(path), _link_refusal(link, inside and links == "refuse")))
                elif path.is_file():
                    yield path, item
        else:
            report.skipped.append((str(item), "no such file or folder"))


def _link_refusal(link: Path, inside: bool = False) -> str:
    try:
        target = str(link.readlink())
    except OSError:
        target = "?"
    fix = (
        "set links: inside_root to follow links within the ingest folder"
        if inside
        else "copy the file itself into the folder"
    )
    return f"a symbolic link (to {target}); links are not followed ({fix})"


def _too_big_or_unknown(path: Path, max_mb: float) -> str:
    if path.suffix.lower() not in SUFFIXES:
        return f"unknown format '{path.suffix or path.name}'; kofin reads {', '.join(SUFFIXES)}"
    size = path.stat().st_size
    if size > max_mb * 1024 * 1024:
        return f"{size / 2**20:.1f} MB is over the {max_mb:g} MB limit (max_file_mb=...)"
    return ""


UNASSIGNED = "unassigned-upload"  # a group no user is given: an unrecorded upload is visible to nobody


def _upload_record_groups(path: Path) -> list[str] | None:
    """Groups the chat's admin chose for a file in its upload folder (its access.json), replacing
    the file's own front matter, whether the chat or a hand-run ingest reads it: a restricted upload
    must never fall back to its own (open) groups. A file in such a folder without a record is closed
    to everyone. Stored with the source, so a changed choice re-reads the file."""
    from kofin.serve.uploads import ACCESS_FILE, read_access

    if not (path.parent / ACCESS_FILE).is_file():
        return None
    return sorted(set(read_access(path.parent).get(path.name) or [UNASSIGNED]))


def _record(chunk, source: str, forced: list[str] | None = None, default: list[str] | None = None) -> dict:
    rec = asdict(chunk)
    rec["groups"] = list(forced) if forced is not None else list(chunk.groups or default or [ADMINS_GROUP])
    rec["source"] = source
    return rec


def _doc_id_clash(new: list[dict], key: str, chunks_by_source: dict[str, list[dict]]) -> str:
    ids = {c["doc_id"] for c in new}
    for other, chunks in chunks_by_source.items():
        if other != key and ids & {c["doc_id"] for c in chunks}:
            dup = sorted(ids & {c["doc_id"] for c in chunks})[0]
            return f"document id '{dup}' is already in the KB from {other}; rename one of them or --remove the other"
    return ""


def _removed(key: str, info: dict, cfg: IngestConfig, seen: set[str]) -> bool:
    path = Path(key)
    if any(path == r or r in path.parents for r in cfg.remove):
        return True
    # A file gone from a folder that is being ingested again was deleted at the source.
    root = Path(info["root"])
    return key not in seen and root in cfg.inputs and root.is_dir() and not path.exists()


def _write(cfg: IngestConfig, chunks: list[dict], sources: dict[str, dict], report: IngestReport) -> None:
    inputs: dict[str, Path | None] = {f"input{i}": p for i, p in enumerate(cfg.inputs) if p.exists()}
    with open_run(STAGE, cfg, inputs=inputs) as run:
        atomic_write_text(run.path / "chunks.jsonl", "".join(json.dumps(c, ensure_ascii=False) + "\n" for c in chunks))
        atomic_write_json(run.path / "sources.json", sources)
        bm25 = build_bm25(chunks, cfg.index, run.path)
        build_chars(chunks, cfg.index, run.path)
        dense = build_dense(chunks, bm25, cfg.index, run.path)
        atomic_write_json(
            run.path / "kb.json",
            {
                "format": FORMAT_VERSION,
                "index": cfg.index.model_dump(mode="json"),
                "dense": dense.model_dump(mode="json"),
            },
        )
        started = time.perf_counter()
        report.conflicts = find_conflicts(chunks)
        report.conflict_seconds = time.perf_counter() - started
        atomic_write_json(run.path / CONFLICTS_FILE, conflicts_json(report.conflicts))
        run.metrics.update(
            documents=report.documents,
            chunks=report.chunks,
            added=len(report.added),
            updated=len(report.updated),
            unchanged=len(report.unchanged),
            removed=len(report.removed),
            skipped=[list(s) for s in report.skipped],
            conflicts=len(report.conflicts),
            conflicts_seconds=round(report.conflict_seconds, 3),
        )
