"""What the extractive answer quotes (the kind of value asked for, the asking sentence, a follow-up's
own words) and the scope refusals (live values, one's own records, off-topic questions, shortened names)."""

from __future__ import annotations

from pathlib import Path

import pytest
from serve_fixtures import ask_assistant, served_assistant

from kofin.serve.ingest import IngestConfig
from kofin.serve.ingest import main as ingest


def _one_doc_kb(tmp_path: Path, name: str, text: str) -> Path:
    """A KB of one Markdown document, ingested with the defaults."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / name).write_text(text, encoding="utf-8")
    ingest(IngestConfig(output_dir=tmp_path / "kb", inputs=[docs]))
    return tmp_path / "kb"


def test_an_asked_for_age_is_quoted_from_the_document_chunk_that_states_it(tmp_path):
    kb = _one_doc_kb(
        tmp_path,
        "youth.md",
        "---\ntitle: 가람 청년 희망 적금\ngroups: [all]\n---\n# 가람 청년 희망 적금\n"
        "## 1. 상품 개요\n가람 청년 희망 적금은 청년의 목돈 마련을 돕는 적금이다. "
        "청년 희망 적금은 영업점과 앱에서 가입할 수 있다. "
        "청년 희망 적금에 가입하면 매월 정해진 날에 자동이체로 적립한다.\n"
        "## 2. 대상\n| 구분 | 내용 |\n|---|---|\n| 대상 | 만 19세 이상 만 34세 이하 |\n| 서류 | 신분증 |\n",
    )
    result = ask_assistant(kb, tmp_path).ask("청년 희망 적금 몇 살까지 가입돼요?", top_k=1)
    assert result.found and "만 34세 이하" in result.answer, result.answer
    assert len(result.sources) == 2 and all(s["id"] == "youth.md" for s in result.sources)


@pytest.mark.parametrize(
    "question, kind",
    [
        # the interrogative decides over topic words: 나이 is what the period is subtracted from
        ("병역 기간을 나이에서 빼 줄 수 있나요, 최대 몇 년까지요?", {"period"}),
        ("청년 적금 나이 몇살까지 가입됨?", {"age"}),
        ("보상 여부는 서류 접수하고 얼마 안에 알려 주나요?", {"period"}),
        ("확인이 계속 안 되면 얼마나 지나서 돌려보내요?", {"period"}),
        ("몇 시가 기준이에요?", {"period"}),
        ("이사는 몇 명 두나요?", {"count"}),
        # a bare 얼마 takes its kind from the topic; a fee may be a sum or a share
        ("금리가 얼마예요?", {"rate"}),
        ("현금서비스 한도는 얼마예요?", {"amount"}),
        ("환매수수료가 얼마인가요?", {"amount", "rate"}),
        # a search-box question asks for its last word
        ("체크카드 한도 증액 적용 시점", {"period"}),
        ("정기적금 1인 최대 계좌 수", {"count"}),
        # a follow-up joined to the earlier question keeps the earlier interrogative
        ("전세대출 계약금은 얼마나 내야 해요? 집이 한 채 있는 사람은 안 돼요?", {"amount"}),
        ("중도해지하면 이자는 어떻게 돼요?", set()),
        ("ELS 얼마나 안전한가요?", set()),  # a degree, not a value
        ("얼마 전에 해외송금 보냈는데 아직 안 왔어요", set()),  # a while ago
        ("가족 몇 분까지 대리 수령 가능해요?", {"count"}),  # people, honorific
        ("몇 분 걸려요?", {"period"}),  # minutes
        ("분실신고 전화 몇 번이에요?", {"phone"}),
        ("대출 금리 적용 기간은 얼마예요?", {"period"}),  # the nearest topic word before 얼마
        ("환전 우대율 얼마예요?", {"rate"}),
        ("거절되면 얼마쯤 지나서 다시 신청하면 되나요?", {"period"}),  # 얼마쯤 / 얼마 정도 + a word of time
        ("얼마 정도 뒤에 찾을 수 있어요?", {"period"}),
    ],
)
def test_the_kind_of_value_asked_for_comes_from_the_interrogative(question, kind):
    from kofin.serve.extract import asked_kinds

    assert asked_kinds(question) == kind


def test_a_long_question_is_answered_from_what_its_last_sentence_asks(bundled_kb, tmp_path):
    """The story's words (지갑, 분실 신고, 보상 신청서, 경찰서 사건 접수 확인서) match the card
    documents' procedure steps; the asking sentence wants a period, and the answer quotes it."""
    result = served_assistant(bundled_kb, tmp_path).ask(
        "어제 오후에 고객 한 분이 지하철에서 지갑을 소매치기당했다며 오셨어요. 카드로 누가 온라인 결제를 했다고 "
        "하셔서 분실 신고와 보상 신청서 작성을 도와드렸고, 경찰서 사건 접수 확인서도 받아 오셨습니다. "
        "보상이 되는지는 서류 내고 나서 얼마 안에 연락이 가나요?"
    )
    assert result.found and "30일 이내" in result.answer, result.answer


@pytest.mark.parametrize(
    "question, own",
    [
        ("내 카드 이번 달 결제 금액 얼마인지 조회해 줘", True),
        ("제 정기예금 만기까지 몇 달 남았는지 확인해 주실 수 있어요?", True),  # a story's 제 too
        ("제 신용점수로 신용대출 받을 수 있는지 확인해 주세요", False),  # the rule for a score, not a lookup
        ("제 통장 비밀번호를 잊어버렸는데 어떻게 확인해요?", False),  # how to, asked of no one
        ("정기예금 만기가 몇 달 남았는지 어디서 조회해요?", False),  # nobody's own account
    ],
)
def test_a_request_to_look_up_the_askers_own_record_is_refused_and_told_where(bundled_kb, tmp_path, question, own):
    from kofin.serve.respond import asks_own_record

    assert asks_own_record(question) is own
    result = served_assistant(bundled_kb, tmp_path).ask(question)
    if own:
        assert not result.found and result.sources == [], result.answer
        assert result.refusal and "업무 시스템" in result.refusal
    else:
        assert result.refusal is None or "업무 시스템" not in result.refusal


@pytest.mark.parametrize(
    "question, live",
    [
        ("지금 가람은행 엔화 현찰 살 때 환율 몇 원이에요?", True),  # a few words between
        ("지금 본점 창구 대기 시간 얼마나 돼요?", True),  # a queue
        ("현재 원달러 환율", True),  # a search box: the quantity ends it
        ("오늘 환전하면 어떤 환율이 적용돼요?", False),  # which rate applies is policy
        ("현재 판매 중인 주가지수연동정기예금 중도해지 되나요?", False),  # 주가 inside a product's name
        ("지금 가입한 ELS 기초자산 지수가 떨어지면 원금 손실 나요?", False),  # 지수 is not what is asked
        ("지금까지 낸 이자는 환율 변동이랑 상관있나요?", False),  # 지금까지 is not now
        ("외화예금 해지할 때 오늘 환율로 계산하나요, 가입일 환율로 계산하나요?", False),
    ],
)
def test_live_values_are_refused_and_questions_about_rules_are_not(bundled_kb, tmp_path, question, live):
    from kofin.serve.respond import asks_live_value

    assert asks_live_value(question) is live
    if live:
        result = served_assistant(bundled_kb, tmp_path).ask(question)
        assert not result.found and result.sources == [], result.answer
        assert result.refusal and "실시간" in result.refusal  # told where to look instead


@pytest.mark.parametrize(
    "question, refused",
    [
        ("이번 주말에 캠핑 가는데 텐트랑 침낭 뭐 챙겨야 돼요?", True),  # most of its naming words: no document's
        ("피아노 배우려면 하루에 몇 시간 연습해야 해요?", True),
        # in the domain, with a friend, slang and a shop in the story: its other words are the KB's
        ("체크카드 잃어버렸는데 친구가 그냥 두라던데 신고 안 하면 큰일남?", False),
        ("동네 치킨집 사장님이 카드 분실했다는데 신고는 어디로 해요?", False),
        # a story of family, a party and a gold ring, then an in-domain question: the story counts less
        (
            "지난주 조카 돌잔치에서 시댁 어르신께 금반지를 받았어요. "
            "이거 팔아서 입금하면 고액현금거래 보고 대상인가요?",
            False,
        ),
    ],
)
def test_a_question_about_things_no_document_names_is_refused(bundled_kb, tmp_path, question, refused):
    from kofin.serve.kb import load_kb
    from kofin.serve.retrieve import HybridRetriever
    from kofin.serve.scope import off_topic

    assert (off_topic(HybridRetriever(load_kb(bundled_kb)), question) is not None) is refused
    result = served_assistant(bundled_kb, tmp_path).ask(question)
    assert result.found is not refused, (result.answer, result.evidence)


def test_a_follow_up_is_answered_from_its_own_words_once_its_topic_found_the_document(tmp_path):
    """The earlier question's words (주택담보대출, 최장, 빌리) found the document and fill most of its
    sentences; the follow-up asks for the 거치기간, and the answer quotes that sentence."""
    kb = _one_doc_kb(
        tmp_path,
        "mortgage.md",
        "---\ntitle: 가람 주택담보대출\ngroups: [all]\n---\n# 가람 주택담보대출\n## 1. 대출 기간\n"
        "주택담보대출은 최장 40년까지 빌릴 수 있다. 만 34세 이하인 고객은 주택담보대출을 최장 50년까지 빌릴 수 있다. "
        "신혼부부도 주택담보대출을 최장 50년까지 빌릴 수 있다. "
        "주택담보대출을 최장 기간으로 빌리면 매월 상환액이 줄어든다. "
        "원금균등분할상환을 고르면 거치기간은 최대 1년이다.\n",
    )
    history = [{"role": "user", "content": "주택담보대출은 최장 몇 년까지 빌릴 수 있어요?"}]
    result = ask_assistant(kb, tmp_path).ask("거치기간은 최대 얼마나 돼요?", history=history)
    assert result.rewritten_query and "주택" in result.rewritten_query
    assert result.found and "거치기간은 최대 1년" in result.answer, result.answer


def test_a_shortened_name_of_something_the_kb_names_is_not_unknown(tmp_path):
    """Korean shortens names by keeping syllables in order (서금원 = 서민금융진흥원, 직판업자 in
    금융상품직접판매업자), and chat endings stick to a name ("직판업자야"): neither is a name the KB
    never mentions. Names it does not mention stay unknown, two-syllable ones too (부산, though the
    KB says 부동산)."""
    from kofin.serve.kb import load_kb
    from kofin.serve.retrieve import HybridRetriever
    from kofin.serve.scope import unknown_name

    kb = _one_doc_kb(
        tmp_path,
        "guarantee.md",
        "---\ntitle: 서민금융 보증 안내\ngroups: [all]\n---\n# 서민금융 보증 안내\n## 1. 보증\n"
        "서민금융진흥원의 보증을 받은 대출은 보증료를 낸다. 금융상품직접판매업자는 설명의무를 진다. "
        "부동산 담보대출은 이 보증의 대상이 아니다.\n",
    )
    retriever = HybridRetriever(load_kb(kb))

    def name_in(question: str) -> str | None:
        return unknown_name(retriever, question, retriever.search(question, ("all",), 5))

    assert name_in("서금원 보증 받으면 보증료 더 내요?") is None
    assert name_in("금소법상 은행은 직판업자야 대리중개업자야? 헷갈림") is None
    assert name_in("국민은행 보증료는 얼마예요?") == "국민은행"
    assert name_in("부산 지점에서도 보증 신청돼요?") == "부산"


def test_an_faq_answer_is_read_with_the_question_it_answers(tmp_path):
    """ "A. 네, 비자·마스터 가맹점에서 쓸 수 있다." shares no word with "체크카드 해외 결제 돼요?";
    the FAQ question above it does, and says what the answer is about."""
    kb = _one_doc_kb(
        tmp_path,
        "check-card-faq.md",
        "---\ntitle: 자주 묻는 질문\ngroups: [all]\n---\n# 자주 묻는 질문\n## FAQ\n"
        "**Q. 체크카드로 해외 결제가 되나요?**\nA. 네, 비자·마스터 가맹점에서 쓸 수 있다.\n\n"
        "**Q. 분실하면 어떻게 하나요?**\nA. 고객센터에 바로 신고한다.\n",
    )
    result = ask_assistant(kb, tmp_path).ask("체크카드 해외 결제 돼요?")
    assert result.found and "비자·마스터 가맹점에서 쓸 수 있다" in result.answer, result.answer
    assert "고객센터" not in result.answer  # the other question's answer


def test_a_sentence_pointing_at_the_rows_that_follow_quotes_them_once(bundled_kb, tmp_path):
    """ "다음 사유가 생기면 기한의 이익이 상실되어…" points at the table after it, which the chunker
    put in the next chunk: its row is quoted, once, and that chunk is not shown a second time."""
    result = served_assistant(bundled_kb, tmp_path).ask("주담대 이자 몇 달 연체되면 기한이익 잃어요?")
    assert result.found and result.answer.count("이자 납입일부터 2개월 경과") == 1, result.answer
    shown = [s["chunk_id"] for s in result.sources]
    assert len(shown) == len(set(shown))


def test_a_statutes_editorial_notes_are_never_quoted(laws_dir, tmp_path):
    """ "<개정 2016.3.29>", "3. 삭제 <2012.12.11>" and a bare "제43조(상환준비금)" say when and where
    a provision changed, not what it says; before, 68 of 156 statute dev answers quoted one."""
    import json
    import re

    rows = [
        line
        for line in (laws_dir / "fin_articles.jsonl").read_text(encoding="utf-8").splitlines()
        if json.loads(line)["law"] == "신용협동조합법"
    ]
    (tmp_path / "laws.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    ingest(IngestConfig(output_dir=tmp_path / "kb", inputs=[tmp_path / "laws.jsonl"], default_groups=["all"]))
    a = ask_assistant(tmp_path / "kb", tmp_path)
    note = re.compile(r"<[^>]*\d{4}\.\d{1,2}\.\d{1,2}[^>]*>|^- (\d+\.\s*)?삭제|^- 제\d+조(의\d+)?\([^)]*\) \[")
    for question in (
        "신협 조합은 상환준비금을 얼마나 보유해야 하나요?",
        "신용협동조합 중앙회 회장은 어떻게 뽑나요?",
        "조합원이 탈퇴하면 출자금은 언제 돌려받나요?",
    ):
        result = a.ask(question)
        assert result.found, question
        assert not any(note.search(line) for line in result.answer.splitlines()), result.answer
    assert "100분의 10 이상" in a.ask("신협 조합은 상환준비금을 얼마나 보유해야 하나요?").answer


def test_an_asked_for_age_is_shown_even_when_the_retrieved_chunk_states_another_rules_age(tmp_path):
    """The chunk retrieved for "시니어 통장 몇 살부터 가입돼요?" names an age of another rule (만 65세,
    비과세종합저축); the product's own (만 50세 이상) is in its table, which is added and quoted."""
    kb = _one_doc_kb(
        tmp_path,
        "senior.md",
        "---\ntitle: 가람 시니어 통장\ngroups: [all]\n---\n# 가람 시니어 통장\n"
        "## 1. 상품 개요\n| 구분 | 내용 |\n|---|---|\n| 가입 대상 | 만 50세 이상 개인 |\n| 기본이율 | 연 0.10% |\n"
        "## 2. 세금\n만 65세 이상 거주자는 가람은행의 시니어 통장 예금을 비과세종합저축으로 가입할 수 있다. "
        "시니어 통장 가입 고객의 비과세 한도는 5천만원이다.\n",
    )
    result = ask_assistant(kb, tmp_path).ask("가람은행 시니어 통장은 몇 살부터 가입할 수 있어요?", top_k=1)
    assert result.found and "만 50세 이상" in result.answer, (result.answer, [s["section"] for s in result.sources])


@pytest.mark.parametrize(
    ("question", "refused"),
    [
        ("가람은행 동래역 지점 어디예요? 토요일에도 열어요?", True),  # the first question names the branch
        ("미소캐피탈 자동차 대출 금리는요?", True),  # Kiwi reads 미소 + 캐피탈: an institution all the same
        ("저축은행 예금도 예금자보호 되나요?", False),  # a kind of bank the documents name
        ("인터넷은행 계좌로 보내면 수수료 있어요?", False),
        ("주거래은행 바꾸면 우대 없어져요?", False),
        ("카드 잃어버렸어요 ㅠㅠ 어떻게 해요?", False),  # ㅠㅠ is no name
        ("가람은행 치아보험 있어요? 보험료 얼마예요?", True),  # a product no document names
        ("청년첫걸음적금 몇 살까지 돼요?", False),  # the KB's 청년 첫걸음 적금 without its spaces
        ("가람스마트정기예금 금리 몇 %예요?", False),
        ("예적금 중도해지하면 이자 어떻게 돼요?", False),  # the KB writes 예·적금
        ("집담보대출 한도는?", False),  # a 담보대출 of a kind the documents name
        ("친구가 케이뱅크가 더 좋다던데? 가람 정기예금 금리 얼마예요?", False),  # hearsay, not what is asked
        ("인뱅 해킹 피해 신고는 어디에 해요?", False),  # 인뱅 = 인터넷 + 뱅킹, a name the KB spells out
    ],
)
def test_a_name_in_any_asking_sentence_that_no_document_mentions_is_refused(bundled_kb, tmp_path, question, refused):
    """Names Kiwi tags as proper nouns, and compounds named as institutions and products are
    (…캐피탈, …보험, …대출) whose first part no document uses; in every sentence that asks."""
    from kofin.serve.kb import load_kb
    from kofin.serve.retrieve import HybridRetriever
    from kofin.serve.scope import unknown_name

    result = served_assistant(bundled_kb, tmp_path).ask(question)
    assert result.found is not refused, (result.answer, result.evidence)
    retriever = HybridRetriever(load_kb(bundled_kb))
    named = unknown_name(retriever, question, retriever.search(question, ("all",), 5))
    assert (named is not None) is refused, named  # refused for the name, not by the gate
    assert (result.refusal is not None) is refused and (not refused or f"‘{named}’" in result.refusal)


def test_a_question_about_conditions_gets_every_item_of_a_short_numbered_list(tmp_path):
    """Conditions are met together: quoting "1. 만 55세 이상일 것" alone is half an answer."""
    kb = _one_doc_kb(
        tmp_path,
        "pension.md",
        "---\ntitle: 개인형 퇴직연금 안내\ngroups: [all]\n---\n# 개인형 퇴직연금 안내\n## 3. 연금 수령\n"
        "1. 만 55세 이상일 것\n2. 가입 기간이 5년 이상일 것\n\n"
        "연금 수령 한도 안에서 받으면 연금소득세가 낮다. 연금 수령은 영업점이나 앱에서 신청한다.\n",
    )
    result = ask_assistant(kb, tmp_path).ask("연금 수령 조건이 어떻게 되나요?")
    assert "만 55세 이상일 것" in result.answer and "가입 기간이 5년 이상일 것" in result.answer, result.answer


def test_a_question_about_eligibility_does_not_quote_the_steps_its_first_step_names(bundled_kb, tmp_path):
    """ "1. 본인 확인 및 ISA 가입 자격 확인" is a step of opening the account: the other steps do not say
    who may open one."""
    result = served_assistant(bundled_kb, tmp_path).ask("ISA 가입 자격은?")
    assert result.found and "만 19세 이상 거주자" in result.answer, result.answer
    assert "3. " not in result.answer and "5. " not in result.answer, result.answer
