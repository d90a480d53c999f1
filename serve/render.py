"""How the chat shows an answer: Markdown for the chat column, HTML for the sources panel, and
the page's messages read back as the conversation the answer path gets as `history`.

Run as: a library; serve/chat.py renders every answer with it and serve/app.py shows the result.

Document text is untrusted: it is HTML-escaped in the sources panel and Markdown-escaped in the
chat, autolinks included (Gradio's Markdown, marked with GFM, turns a bare `http://x.y`,
`www.x.y` or `a@b.c` into a link), so a document cannot add links, images (an outside request)
or markup to the page.
"""

from __future__ import annotations

import html
import re

from kofin.data_ko.citations import CITATION as _CITE
from kofin.data_ko.citations import bigrams
from kofin.data_ko.korean import split_sentences
from kofin.serve.answer import LIST_MARKER, NO_ANSWER
from kofin.serve.respond import AskResult

# Markdown syntax, plus what GFM autolinks: the ':' of '://', the '.' of 'www.' and every '@'.
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|<>~&$@-]|:(?=//)|(?<=[wW]{3})\.)")
# What a chat message is made of besides the answer (caveat, conflicts, warnings, hints, the
# rewritten query): whole lines that an escaped answer line can never start with.
_DECORATION = re.compile(r"^[>_]")
HISTORY_MESSAGES = 6  # the last three exchanges go back to the answer path as `history`
HISTORY_CHARS = 2000  # per message: an earlier answer's topic is in its first lines
SOURCES_DISAGREE_TITLE = "⚠ 출처 간 내용이 다릅니다"
SUSPICIOUS_NOTE = "⚠ 문서 속 지시문 — 답변에 쓰지 않음"
NO_ANSWER_HINT = "질문을 더 구체적으로 바꾸어 보세요 (상품명·업무명·조건 등). 열람 권한이 있는 문서에서만 찾습니다."


def md_escape(text: str) -> str:
    return _MD_SPECIAL.sub(r"\\\1", text)


def md_plain(markdown: str) -> str:
    """The text a `md_escape`d / `answer_markdown` line shows: escapes undone, bold marks dropped."""
    out, i = [], 0
    while i < len(markdown):
        if markdown[i] == "\\" and i + 1 < len(markdown):
            out.append(markdown[i + 1])
            i += 2
        elif markdown.startswith("**", i):
            i += 2
        else:
            out.append(markdown[i])
            i += 1
    return "".join(out)


def conversation(messages: list | None) -> list[dict]:
    """The Chatbot's messages (the page's Markdown) as plain-text OpenAI chat messages, the last
    few only: what the answer path reads to understand a follow-up."""
    out = []
    for m in messages or []:
        role, content = (
            (m.get("role"), m.get("content"))
            if isinstance(m, dict)
            else (getattr(m, "role", None), getattr(m, "content", None))
        )
        if isinstance(content, list):  # Gradio may hand content back as parts
            content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
        if role not in ("user", "assistant") or not isinstance(content, str):
            continue
        lines = [line for line in content.split("\n") if not _DECORATION.match(line)]
        text = md_plain("\n".join(lines)).strip()
        if text and text != "…":
            out.append({"role": role, "content": text[:HISTORY_CHARS]})
    return out[-HISTORY_MESSAGES:]


def answer_markdown(text: str) -> str:
    """Answer text for the chat: document words escaped, bullets and [n] kept readable."""
    out = []
    for line in text.split("\n"):
        bullet = "- " if line.startswith("- ") else ""
        body, pieces, pos = line[len(bullet) :], [], 0
        for m in _CITE.finditer(body):
            pieces += [md_escape(body[pos : m.start()]), f"**{md_escape(m.group())}**"]
            pos = m.end()
        pieces.append(md_escape(body[pos:]))
        out.append(bullet + "".join(pieces))
    return "\n".join(out)


def final_markdown(result: AskResult) -> str:
    """The answer as the chat shows it: caveat above; conflicts, unsupported sentences and the
    query that was searched below. Everything but the answer is a `>` or `_` line (see
    `conversation`), and every piece of document or user text is escaped."""
    searched = getattr(result, "rewritten_query", None)
    tail = f"\n\n_검색한 질문: {md_escape(searched)}_" if searched else ""
    if not result.found:
        refusal = getattr(result, "refusal", None)
        hint = md_escape(refusal) if refusal else NO_ANSWER_HINT  # the question's own words are escaped
        return f"{NO_ANSWER}\n\n_{hint}_{tail}"
    parts = []
    caveat = getattr(result, "caveat", None)
    if caveat:
        parts.append(f"> ⚠ {md_escape(caveat)}")
    parts.append(answer_markdown(result.answer))
    conflicts = getattr(result, "conflicts", None) or []
    if conflicts:
        parts.append(conflicts_markdown(conflicts))
    if result.flagged:
        parts.append(
            "> ⚠ 확인 필요: 출처와 맞지 않는 부분이 있을 수 있는 문장 "
            + ", ".join(f"“{md_escape(f['sentence'][:40])}”" for f in result.flagged)
        )
    return "\n\n".join(parts) + tail


def conflicts_markdown(conflicts: list[dict]) -> str:
    """Each disagreement: what it is about, then every source's value with its title and effective date."""
    lines = [f"> **{SOURCES_DISAGREE_TITLE}**"]
    for c in conflicts:
        lines += [">", f"> {md_escape(str(c.get('subject') or '같은 항목'))}:"]
        for st in c.get("statements") or []:
            value = md_escape(str(st.get("value") or st.get("sentence") or ""))
            title = md_escape(str(st.get("title") or st.get("doc_id") or ""))
            effective = f" (시행 {md_escape(str(st['effective']))})" if st.get("effective") else " (시행일 없음)"
            lines.append(f"> - **{value}** — {title}{effective}")
    return "\n".join(lines)


def _cited_sentences(answer: str, n: int) -> set[str]:
    grams: set[str] = set()
    for line in answer.split("\n"):
        if any(n in [int(x) for x in m.group()[1:-1].split(",")] for m in _CITE.finditer(line)):
            grams |= bigrams(_CITE.sub("", line))
    return grams


def highlighted(text: str, answer: str, n: int) -> tuple[str, str]:
    """(the chunk as HTML with the sentences the answer took from it in <mark>, the first such sentence)."""
    cited = _cited_sentences(answer, n)
    out, pos, first = [], 0, ""
    for sentence in split_sentences(text):
        at = text.find(sentence, pos)
        if at < 0:
            continue
        grams = bigrams(sentence)
        hit = bool(cited and grams) and len(grams & cited) / len(grams) >= 0.6
        out.append(html.escape(text[pos:at]))
        out.append(f"<mark>{html.escape(sentence)}</mark>" if hit else html.escape(sentence))
        first = first or (LIST_MARKER.sub("", sentence) if hit else "")
        pos = at + len(sentence)
    out.append(html.escape(text[pos:]))
    return "".join(out), first


def sources_html(result: AskResult | None) -> str:
    if result is None or not result.found or not result.sources:
        return '<div class="kofin-sources kofin-empty">표시할 출처가 없습니다.</div>'
    cited = [s for n in result.cited for s in result.sources if s["n"] == n]
    rest = [s for s in result.sources if not s["cited"]]
    parts = ['<div class="kofin-sources">', f"<h3>인용된 출처 {len(cited)}건</h3>"]
    parts += [_source_block(s, result.answer, True) for s in cited]
    if rest:
        parts.append(f"<h4>함께 검색된 자료 {len(rest)}건 (인용 안 됨)</h4>")
        parts += [_source_block(s, result.answer, False) for s in rest]
    parts.append("</div>")
    return "\n".join(parts)


def _source_block(s: dict, answer: str, cited: bool) -> str:
    body, first = highlighted(s["text"], answer, s["n"]) if cited else (html.escape(s["text"]), "")
    page = f" · {int(s['page'])}쪽" if s.get("page") else ""
    section = f" · {html.escape(s['section'])}" if s.get("section") else ""
    snippet = f'<div class="kofin-snippet">“{html.escape(first)}”</div>' if first else ""
    # Sentences that address an assistant or claim to override other text: never part of an
    # answer; shown, flagged, so staff can report the document.
    warn = "".join(
        f'<div class="kofin-suspicious">{SUSPICIOUS_NOTE}: “{html.escape(str(line))}”</div>'
        for line in s.get("suspicious") or []
    )
    kind = "kofin-cited" if cited else "kofin-uncited"
    return (
        f'<details class="kofin-source {kind}" data-n="{s["n"]}"><summary><span class="kofin-n">[{s["n"]}]</span> '
        f'<b class="kofin-title">{html.escape(s["title"])}</b>{section}{page}{snippet}{warn}</summary>'
        f'<div class="kofin-doc">{html.escape(s["id"])}</div><div class="kofin-text">{body}</div></details>'
    )
