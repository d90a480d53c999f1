"""Statute short names and a financial synonym lexicon, for expanding what a user asks.

Run as: a library; `kofin ask` expands every question with it before retrieval.

Bank staff say 자본시장법, 금소법, 특금법; the statutes call themselves by their full names. Staff
say 코인, 카드사, P2P; the statutes say 가상자산, 신용카드업자, 온라인투자연계금융업. Both tables
hold common usage of Korean finance (short names as the regulators and the press use them,
everyday words beside their legal terms); they are not drawn from any evaluation question, and a
bank adds its own product names through `extra_synonyms` in the ask config.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kofin.data_ko.korean import morpheme_terms

# short name -> full statute name. Several short names may name one statute.
STATUTE_ALIASES: dict[str, str] = {
    "자본시장법": "자본시장과 금융투자업에 관한 법률",
    "자통법": "자본시장과 금융투자업에 관한 법률",
    "금소법": "금융소비자 보호에 관한 법률",
    "금융소비자보호법": "금융소비자 보호에 관한 법률",
    "특금법": "특정 금융거래정보의 보고 및 이용 등에 관한 법률",
    "특정금융정보법": "특정 금융거래정보의 보고 및 이용 등에 관한 법률",
    "신용정보법": "신용정보의 이용 및 보호에 관한 법률",
    "신정법": "신용정보의 이용 및 보호에 관한 법률",
    "금융실명법": "금융실명거래 및 비밀보장에 관한 법률",
    "실명법": "금융실명거래 및 비밀보장에 관한 법률",
    "여전법": "여신전문금융업법",
    "여신전문법": "여신전문금융업법",
    "대부업법": "대부업 등의 등록 및 금융이용자 보호에 관한 법률",
    "신협법": "신용협동조합법",
    "저축은행법": "상호저축은행법",
    "온투법": "온라인투자연계금융업 및 이용자 보호에 관한 법률",
    "온투업법": "온라인투자연계금융업 및 이용자 보호에 관한 법률",
    "P2P법": "온라인투자연계금융업 및 이용자 보호에 관한 법률",
    "가상자산법": "가상자산 이용자 보호 등에 관한 법률",
    "가상자산이용자보호법": "가상자산 이용자 보호 등에 관한 법률",
    "금융중심지법": "금융중심지의 조성과 발전에 관한 법률",
    "지배구조법": "금융회사의 지배구조에 관한 법률",
    "금융사지배구조법": "금융회사의 지배구조에 관한 법률",
    "금산법": "금융산업의 구조개선에 관한 법률",
    "구조개선법": "금융산업의 구조개선에 관한 법률",
    "서민금융법": "서민의 금융생활 지원에 관한 법률",
    "서민금융지원법": "서민의 금융생활 지원에 관한 법률",
    "통신사기피해환급법": "전기통신금융사기 피해 방지 및 피해금 환급에 관한 특별법",
    "보이스피싱법": "전기통신금융사기 피해 방지 및 피해금 환급에 관한 특별법",
    "인터넷은행법": "인터넷전문은행 설립 및 운영에 관한 특례법",
    "인터넷전문은행법": "인터넷전문은행 설립 및 운영에 관한 특례법",
    "금융위원회법": "금융위원회의 설치 등에 관한 법률",
    "금융위설치법": "금융위원회의 설치 등에 관한 법률",
    "주택금융공사법": "한국주택금융공사법",
    "수출입은행법": "한국수출입은행법",
    "수은법": "한국수출입은행법",
    "산업은행법": "한국산업은행법",
    "산은법": "한국산업은행법",
    "기업은행법": "중소기업은행법",
    "한은법": "한국은행법",
    "우체국예금보험법": "우체국예금ㆍ보험에 관한 법률",
    "증권집단소송법": "증권관련 집단소송법",
    "자산유동화법": "자산유동화에 관한 법률",
    "금융복합기업집단법": "금융복합기업집단의 감독에 관한 법률",
    "금융그룹감독법": "금융복합기업집단의 감독에 관한 법률",
    "금융거래지표법": "금융거래지표의 관리에 관한 법률",
    "개인채무자보호법": "개인금융채권의 관리 및 개인금융채무자의 보호에 관한 법률",
    "채권추심법": "채권의 공정한 추심에 관한 법률",
    "외환법": "외국환거래법",
    "전금법": "전자금융거래법",
    "예보법": "예금자보호법",
    "금융지주법": "금융지주회사법",
    "금융혁신법": "금융혁신지원 특별법",
    "통안증권법": "한국은행 통화안정증권법",
    "국제금융기구가입법": "국제금융기구에의 가입조치에 관한 법률",
}

# What people say -> what documents write. One direction on purpose: expanding a formal term
# into everyday words only adds noise, since the documents use the formal term already.
# A key matches a question when it is one of the question's Kiwi morphemes (verb stems match
# every conjugation: 맡길/맡겨서/맡기려면 -> 맡기) or, for keys of two or more syllables, when it
# appears in the question as written (multi-word keys such as 인터넷뱅킹 or 문을 닫).
SYNONYMS: dict[str, tuple[str, ...]] = {
    # institutions and products as customers name them
    "P2P": ("온라인투자연계금융업",),
    "온투업": ("온라인투자연계금융업",),
    "코인": ("가상자산",),
    "암호화폐": ("가상자산",),
    "가상화폐": ("가상자산",),
    "카드사": ("신용카드업자",),
    "카드회사": ("신용카드업자",),
    "카드 회원": ("신용카드회원",),
    "체크카드": ("직불카드",),
    "현금서비스": ("단기카드대출",),
    "카드론": ("장기카드대출",),
    "보험사": ("보험회사",),
    "증권사": ("투자매매업자", "투자중개업자"),
    "운용사": ("집합투자업자",),
    "펀드": ("집합투자기구",),
    "사모펀드": ("사모집합투자기구",),
    "대부업체": ("대부업자",),
    "신협": ("신용협동조합",),
    "금감원": ("금융감독원",),
    "금융위": ("금융위원회",),
    "한은": ("한국은행",),
    "예보": ("예금보험공사",),
    "보이스피싱": ("전기통신금융사기",),
    "대포통장": ("사기이용계좌",),
    "리스": ("시설대여",),
    "마이데이터": ("본인신용정보관리업",),
    "신용평가사": ("신용평가회사",),
    "신용점수": ("신용평점",),
    "인터넷은행": ("인터넷전문은행",),
    "인터넷뱅킹": ("전자금융거래",),
    "모바일뱅킹": ("전자금융거래",),
    "비밀번호": ("접근매체",),
    "공인인증서": ("접근매체",),
    "지주사": ("금융지주회사",),
    "환전": ("외국환",),
    # people and money
    "사장": ("대표이사",),
    "직원": ("임직원", "종사자"),
    "고객": ("이용자", "금융소비자"),
    "손님": ("이용자", "금융소비자"),
    "주인": ("소유자", "권리자"),
    "월급": ("보수", "급여"),
    "연봉": ("보수",),
    "돈": ("금전", "자금"),
    "세금": ("조세",),
    "금리": ("이자율",),
    "빚": ("채무",),
    "통장": ("계좌",),
    "서류": ("서면",),
    "우리나라": ("대한민국", "국내"),
    "외국 사람": ("외국인",),
    "최소": ("최저",),
    "최대": ("최고", "한도"),
    "벌금": ("과태료", "벌칙"),
    "처벌": ("벌칙", "징역"),
    "감옥": ("징역",),
    "숨은 돈": ("휴면예금",),
    "해킹": ("침해사고",),
    "대신": ("대리", "대행"),
    "강제": ("강요",),
    "마음대로": ("임의",),
    "거짓": ("허위",),
    # what people do, in everyday verbs -> the statutes' verbs (Kiwi stems)
    "빌리": ("차입", "대출"),
    "갚": ("상환", "변제"),
    "돌려주": ("반환", "환급"),
    "돌려받": ("반환", "환급"),
    "맡기": ("위탁", "위임"),
    "넘기": ("제공", "이전", "양도"),
    "팔": ("매도", "처분"),
    "사들이": ("매수", "취득"),
    "뽑": ("선임", "선출"),
    "임명": ("임면", "선임"),
    "그만두": ("퇴임", "퇴직"),
    "쫓아내": ("제명", "해임"),
    "고치": ("변경",),
    "바꾸": ("변경",),
    "만들": ("작성", "설립"),
    "세우": ("설립", "수립"),
    "없애": ("폐지", "말소"),
    "알리": ("통지", "공시"),
    "공개": ("공시",),
    "보이": ("제시",),
    "확인": ("조회", "열람"),
    "살펴보": ("검사", "조사"),
    "허락": ("승인", "허가", "인가"),
    "어기": ("위반",),
    "지키": ("준수",),
    "속이": ("기망", "허위"),
    "나누": ("배분", "분배"),
    "합치": ("합병", "합산"),
    "쪼개": ("분할",),
    "미루": ("유예", "연기"),
    "늦추": ("유예", "연기"),
    "거절": ("거부",),
    "망하": ("파산", "부실"),
    "문을 닫": ("폐업", "해산"),
    "시작": ("개시",),
    "끝나": ("종료", "만료"),
    "늘리": ("증액", "확대"),
    "올리": ("인상",),
    "낮추": ("인하",),
    "깎": ("감면", "인하"),
    "도와주": ("지원",),
    "이어받": ("승계",),
}


@dataclass(frozen=True)
class Expansion:
    """What a question adds to retrieval: full statute names it refers to, and synonyms."""

    statutes: tuple[str, ...]
    synonyms: tuple[str, ...]

    def text(self) -> str:
        return " ".join(self.statutes + self.synonyms)


class Lexicon:
    """Alias and synonym lookup; `extra_synonyms` adds a bank's own terms."""

    def __init__(self, extra_aliases: dict[str, str] | None = None, extra_synonyms: dict[str, list[str]] | None = None):
        self.aliases = dict(STATUTE_ALIASES) | dict(extra_aliases or {})
        self.synonyms = dict(SYNONYMS) | {k: tuple(v) for k, v in (extra_synonyms or {}).items()}
        # Longest names first, so "가상자산이용자보호법" wins over a shorter alias inside it.
        self._alias_re = re.compile("|".join(re.escape(a) for a in sorted(self.aliases, key=len, reverse=True)), re.I)

    def expand(self, question: str) -> Expansion:
        statutes: list[str] = []
        for m in self._alias_re.finditer(question):
            full = self.aliases.get(m.group()) or self.aliases.get(m.group().upper(), "")
            if full and full not in statutes and full not in question:
                statutes.append(full)
        folded = question.lower()
        stems = {t.lower() for t in morpheme_terms(question)}
        synonyms: list[str] = []
        for said, written in self.synonyms.items():
            key = said.lower()
            if key in stems or (len(key) >= 2 and key in folded):
                synonyms.extend(w for w in written if w not in question and w not in synonyms)
        return Expansion(tuple(statutes), tuple(synonyms))
