"""The chat in a real browser: Debian's headless Chromium, driven by Playwright's API.

Staff log in, ask a question on the bundled knowledge base, wait for the streamed answer, see
numbered citations and the sources panel, open a cited passage; a user outside a document's group
never sees its content; the admin tab is there for admins only; links, images and bare URLs in a
cited document are never clickable and never fetched; and no request leaves 127.0.0.1 (no fonts,
analytics or version checks from the internet).

Needs /usr/bin/chromium (`make browser`, which `make test` runs). Playwright never downloads a
browser here: it launches that executable. A fresh temporary profile per launch.
"""

from __future__ import annotations

import re
from urllib.parse import urlparse

import pytest
from serve_fixtures import (
    OPEN_QUESTION,
    PASSWORDS,
    RESTRICTED_DOC,
    RESTRICTED_QUESTION,
    ROOT,
    demo_config,
    restricted_sentences,
    running_app,
)

LOCAL_HOSTS = {"127.0.0.1", "localhost"}
# A document whose every link form Gradio's Markdown (marked, GFM) or the HTML panel could render:
# raw HTML, a Markdown link and image, bare URLs (http://, www.) and an e-mail address.
LINKS_DOC = """---
title: 가람 무지개적금 안내
groups: [all]
---
# 가람 무지개적금 안내
## 1. 신청
무지개적금 가입 신청은 <a href="http://evil.example/x">클릭</a> 또는 [링크](http://evil.example) 에서 받는다.
무지개적금 금리표는 ![img](http://evil.example/i.png) 그림과 http://evil.example/path 주소에 있다.
무지개적금 약관은 www.evil.example 누리집이나 help@evil.example 메일로 받는다.
"""
LINKS_QUESTION = "무지개적금 가입 신청, 금리표, 약관은 어디서 받나요?"


@pytest.fixture(scope="module")
def kb(tmp_path_factory):
    """The bundled knowledge base plus LINKS_DOC."""
    from kofin.serve.chunking import ChunkingConfig
    from kofin.serve.ingest import IngestConfig, main

    root = tmp_path_factory.mktemp("serve-browser")
    (root / "links").mkdir()
    (root / "links" / "rainbow-savings.md").write_text(LINKS_DOC, encoding="utf-8")
    main(
        IngestConfig(
            output_dir=root / "kb",
            inputs=[ROOT / "data_ko" / "kb", root / "links"],
            chunking=ChunkingConfig(max_chars=900),
        )
    )
    return root / "kb"


@pytest.fixture(scope="module")
def app(kb, tmp_path_factory):
    cfg = demo_config(kb, tmp_path_factory.mktemp("serve-browser") / "serve")
    with running_app(cfg) as (chat, url):
        yield chat, url


@pytest.fixture(scope="module")
def requests_seen():
    seen: list[str] = []
    yield seen
    outside = [
        u
        for u in seen
        if urlparse(u).scheme in ("http", "https", "ws", "wss") and urlparse(u).hostname not in LOCAL_HOSTS
    ]
    assert not outside, f"the page made requests that leave this machine: {outside[:10]}"


def _login(browser, url: str, user: str, seen: list[str]):
    context = browser.new_context(locale="ko-KR")
    context.on("request", lambda r: seen.append(r.url))
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto(url)
    page.wait_for_selector("input[type=password]")
    page.fill("input[type=text]", user)
    page.fill("input[type=password]", PASSWORDS[user])
    page.get_by_role("button", name="로그인").click()
    page.wait_for_selector("#kofin-question textarea")
    page.wait_for_function("() => document.querySelector('#kofin-user')?.innerText.includes('열람 그룹')")
    return context, page


def _ask(page, question: str) -> None:
    page.fill("#kofin-question textarea", question)
    page.click("#kofin-send")
    # The sources panel gets its final content only after the answer has streamed in and been verified.
    page.wait_for_function(
        "() => { const s = document.querySelector('#kofin-sources'); return s && (s.querySelector('.kofin-source') "
        "|| s.innerText.includes('표시할 출처가 없습니다')); }"
    )


def test_anonymous_visitors_get_only_the_login_form(browser, app, requests_seen):
    _, url = app
    context = browser.new_context()
    context.on("request", lambda r: requests_seen.append(r.url))
    page = context.new_page()
    page.goto(url)
    page.wait_for_selector("input[type=password]")
    assert page.query_selector("#kofin-question") is None and page.query_selector("#kofin-sources") is None
    context.close()


def test_staff_log_in_ask_and_open_cited_sources(browser, app, requests_seen):
    _, url = app
    context, page = _login(browser, url, "teller", requests_seen)
    assert "teller" in page.inner_text("#kofin-user") and "branch" in page.inner_text("#kofin-user")
    assert "추출형" in page.inner_text("#kofin-backend")
    assert page.get_by_role("tab", name="문서 관리").count() == 0  # staff have no admin tab
    _ask(page, OPEN_QUESTION)
    answer = page.locator("#kofin-chat .message.bot, #kofin-chat [data-testid=bot]").last.inner_text()
    assert re.search(r"\[\d\]", answer) and "중도해지이율" in answer
    cited = page.locator("#kofin-sources details.kofin-cited")
    assert cited.count() >= 1
    first = cited.first
    assert re.match(r"\[\d\]", first.locator(".kofin-n").inner_text())
    assert first.locator(".kofin-title").inner_text() and "정기예금" in page.inner_text("#kofin-sources")
    assert not first.locator(".kofin-text").is_visible()  # the passage opens on demand
    first.locator("summary").click()
    assert first.locator(".kofin-text").is_visible() and first.locator("mark").count() >= 1
    assert first.locator("mark").first.inner_text() in first.locator(".kofin-text").inner_text()
    context.close()


def test_a_question_outside_the_knowledge_base_says_so(browser, app, requests_seen):
    _, url = app
    context, page = _login(browser, url, "teller", requests_seen)
    _ask(page, "오늘 점심 메뉴로 짜장면과 짬뽕 중 무엇이 좋을까요?")
    assert "제공된 자료에서 답을 찾지 못했습니다" in page.inner_text("#kofin-chat")
    assert "표시할 출처가 없습니다" in page.inner_text("#kofin-sources")
    context.close()


def test_restricted_documents_stay_with_their_group(browser, app, kb, requests_seen):
    _, url = app
    secret = restricted_sentences(kb, ["branch"])
    context, page = _login(browser, url, "teller", requests_seen)
    _ask(page, RESTRICTED_QUESTION)
    # Open every source so hidden text is visible text too, then read the whole page.
    for summary in page.locator("#kofin-sources summary").all():
        summary.click()
    text = page.inner_text("body")
    # Open documents may name the procedure (ctr-guide refers to it); none of its own passages is a source.
    assert "의심거래보고(STR) 내부 처리 절차" not in page.locator("#kofin-sources .kofin-title").all_inner_texts()
    assert not [s for s in secret if s in text], "a teller saw text of a compliance-only document"
    assert RESTRICTED_DOC not in page.content()
    context.close()

    context, page = _login(browser, url, "compliance", requests_seen)
    _ask(page, RESTRICTED_QUESTION)
    assert "의심거래보고(STR) 내부 처리 절차" in page.inner_text("#kofin-sources")
    context.close()


def test_admins_get_the_document_tab(browser, app, requests_seen):
    _, url = app
    context, page = _login(browser, url, "admin", requests_seen)
    tab = page.get_by_role("tab", name="문서 관리")
    tab.click()
    page.wait_for_selector("#kofin-upload")
    assert "관리자" in page.inner_text("#kofin-user") and page.locator("#kofin-reindex").is_visible()
    context.close()


# Every link and image the page has after an answer, as the browser resolved them.
_LINKS_JS = """() => [
  ...[...document.querySelectorAll('a[href]')]
       .map(a => ['a', a.href, a.closest('#kofin-chat, #kofin-sources') ? 'answer' : 'page']),
  ...[...document.querySelectorAll('img[src], image, source[src], iframe[src], video[src], audio[src]')]
       .map(e => [e.tagName.toLowerCase(), e.src || e.getAttribute('href') || '', 'any']),
]"""


def test_links_in_a_cited_document_are_never_clickable_or_fetched(browser, app, requests_seen):
    _, url = app
    seen: list[str] = []
    context, page = _login(browser, url, "teller", seen)
    _ask(page, LINKS_QUESTION)
    for summary in page.locator("#kofin-sources summary").all():
        summary.click()
    page.wait_for_timeout(500)  # an <img> would have been requested by now
    answer = page.locator("#kofin-chat .message.bot, #kofin-chat [data-testid=bot]").last
    text = answer.inner_text()
    # The document was cited, its link text shows as text: the checks below see real input.
    assert "무지개적금" in page.inner_text("#kofin-sources") and re.search(r"\[\d\]", text)
    for shown in (
        '<a href="http://evil.example/x">',
        "[링크](http://evil.example)",
        "http://evil.example/path",
        "www.evil.example",
    ):
        assert shown in text or shown in page.inner_text("#kofin-sources"), shown
    elements = page.evaluate(_LINKS_JS)
    outside = [
        e
        for e in elements
        if urlparse(e[1]).scheme not in ("", "data", "blob") and (urlparse(e[1]).hostname or "") not in LOCAL_HOSTS
    ]
    assert not outside, f"links or images to outside hosts: {outside}"
    assert not [e for e in elements if e[2] == "answer"], f"a document's text became a link: {elements}"
    assert answer.locator("a").count() == 0 and page.locator("#kofin-sources a, #kofin-sources img").count() == 0
    assert not [u for u in seen if "evil.example" in u], seen
    requests_seen.extend(seen)
    context.close()
