"""Split loaded documents into chunks at headings and Korean sentence boundaries.

Run as: a library; `kofin ingest` chunks every document it loads.

A chunk never crosses a section: each keeps its nearest heading — a Markdown heading or a
statute heading such as `제4조(금융거래의 비밀보장)` — and the page it starts on. Inside a section,
paragraphs are packed up to `max_chars`; a paragraph too long for that is split between
sentences, never inside one (unless a single sentence is longer than a chunk). A table stays
whole when it fits in `max_table_chars`; a larger one is split between rows, each piece
repeating the header row so it still reads as a table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydantic import Field

from kofin.config import KofinModel
from kofin.data_ko.korean import split_sentences, visible_text
from kofin.serve.loaders import LoadedDoc

_MD_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
# 제4조(금융거래의 비밀보장), 제16조의2(제목), 제1장 총칙, 제2절 ... at the start of a line.
_STATUTE_HEADING = re.compile(r"^(제\d+조(?:의\d+)?\s*\([^)\n]{1,60}\))")
_STATUTE_PART = re.compile(r"^(제\d+(?:장|절|편)(?:의\d+)?\s+\S.{0,40})$")


class ChunkingConfig(KofinModel):
    max_chars: int = Field(900, gt=50, description="Longest chunk in characters; sections are packed up to this size.")
    max_table_chars: int = Field(
        3000, gt=50, description="A table up to this size stays one chunk; a larger one is split between rows."
    )


@dataclass
class Chunk:
    chunk_id: str
    doc_id: str
    title: str
    section: str
    page: int | None
    text: str
    groups: tuple[str, ...]
    metadata: dict


@dataclass
class _Unit:  # a paragraph or a whole table, with where it sits
    text: str
    section: str
    page: int | None
    table: bool


def chunk_document(doc: LoadedDoc, cfg: ChunkingConfig) -> list[Chunk]:
    chunks: list[Chunk] = []
    section_units: list[_Unit] = []

    def emit(units: list[_Unit]) -> None:
        for text, page in _pack(units, cfg):
            chunks.append(
                Chunk(
                    f"{doc.doc_id}#{len(chunks)}",
                    doc.doc_id,
                    visible_text(doc.title),
                    units[0].section,
                    page,
                    text,
                    doc.groups,
                    doc.metadata,
                )
            )

    for unit in _units(doc):
        if section_units and unit.section != section_units[-1].section:
            emit(section_units)
            section_units = []
        section_units.append(unit)
    if section_units:
        emit(section_units)
    return chunks


def _units(doc: LoadedDoc):
    """Paragraphs and tables of a document in order, each tagged with its section and page."""
    section = doc.title
    for block in doc.blocks:
        table: list[str] = []
        # A zero-width space inside a word would split it for the index while a reader sees one word.
        for line in visible_text(block.text).splitlines() + [""]:
            stripped = line.strip()
            if stripped.startswith("|"):
                table.append(stripped)
                continue
            if table:
                yield _Unit("\n".join(table), section, block.page, True)
                table = []
            if not stripped:
                continue
            md = _MD_HEADING.match(stripped)
            if md:
                section = md.group(2).strip()
                continue
            statute = _STATUTE_HEADING.match(stripped) or _STATUTE_PART.match(stripped)
            if statute:
                # The heading line also carries the article's first sentence; keep it as text.
                section = statute.group(1).replace(" (", "(")
            yield _Unit(stripped, section, block.page, False)


def _pack(units: list[_Unit], cfg: ChunkingConfig) -> list[tuple[str, int | None]]:
    out: list[tuple[str, int | None]] = []
    buf: list[str] = []
    page: int | None = None
    size = 0

    def flush() -> None:
        nonlocal buf, size, page
        if buf:
            out.append(("\n".join(buf), page))
        buf, size, page = [], 0, None

    for unit in units:
        pieces = (
            _table_pieces(unit.text, cfg.max_table_chars) if unit.table else _sentence_pieces(unit.text, cfg.max_chars)
        )
        for piece in pieces:
            limit = cfg.max_table_chars if unit.table else cfg.max_chars
            if buf and (
                size + len(piece) + 1 > cfg.max_chars
                or unit.table
                or len(piece) > limit // 2
                and size + len(piece) > limit
            ):
                flush()
            if page is None:
                page = unit.page
            buf.append(piece)
            size += len(piece) + 1
            if unit.table:
                flush()  # a table is its own chunk: answers quote it whole
    flush()
    return out


def _sentence_pieces(text: str, max_chars: int) -> list[str]:
    if len(text) <= max_chars:
        return [text]
    pieces: list[str] = []
    cur = ""
    for sentence in split_sentences(text):
        while len(sentence) > max_chars:  # one sentence longer than a chunk: cut it, last resort
            if cur:
                pieces.append(cur)
                cur = ""
            pieces.append(sentence[:max_chars])
            sentence = sentence[max_chars:]
        if cur and len(cur) + 1 + len(sentence) > max_chars:
            pieces.append(cur)
            cur = sentence
        else:
            cur = f"{cur} {sentence}" if cur else sentence
    if cur:
        pieces.append(cur)
    return pieces


def _table_pieces(table: str, max_chars: int) -> list[str]:
    if len(table) <= max_chars:
        return [table]
    rows = table.split("\n")
    header = rows[:2] if len(rows) > 1 and set(rows[1]) <= set("|-: ") else rows[:1]
    pieces, cur = [], list(header)
    for row in rows[len(header) :]:
        if len("\n".join(cur + [row])) > max_chars and len(cur) > len(header):
            pieces.append("\n".join(cur))
            cur = list(header)
        cur.append(row)
    pieces.append("\n".join(cur))
    return pieces
