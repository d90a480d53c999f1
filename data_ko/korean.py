"""Korean text handling shared by every stage: Kiwi morpheme terms, sentence splitting, cleaning.

Run as: a library (`from kofin.data_ko.korean import morpheme_terms, split_sentences`); used by
`kofin ingest` to index chunks, by `kofin ask` to read the question, and by `kofin eval`'s
token F1 / ROUGE-L, so a question and a reference are cut into words the same way everywhere.

Whitespace splitting leaves particles glued to nouns (`법인에`, `법인이`, `법인은` are three
words), which is why langchain's default BM25 scores poorly on Korean; Kiwi splits them into
morphemes and we keep only the ones that carry meaning.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from functools import lru_cache

# Kiwi tags that carry content: nouns, verb/adjective stems, roots, foreign words, numbers,
# Hanja, adverbs. Particles (J*), endings (E*), affixes and punctuation only add noise to BM25.
CONTENT_TAGS = ("NNG", "NNP", "NNB", "NR", "NP", "VV", "VA", "XR", "SL", "SH", "SN", "MAG")
_CONTENT = frozenset(CONTENT_TAGS)
# Light verbs and the bound nouns every legal sentence has: they match everything.
_STOP = frozenset(
    {"하", "되", "있", "없", "않", "이", "것", "수", "등", "및", "때", "경우", "바", "중", "그", "이하", "이상"}
)

# Words of the question frame: interrogatives and "tell me / I wonder". They say what kind of
# answer is wanted, not what it is about, and match whatever happens to contain them.
QUESTION_WORDS = frozenset(
    {
        "누구",
        "무엇",
        "뭐",
        "언제",
        "어디",
        "얼마",
        "어떤",
        "어떻",
        "몇",
        "무슨",
        "왜",
        "어느",  # interrogatives
        "알리",
        "궁금",
        "저",
        "같",
        "따르",  # 알려 주세요, 궁금합니다, 저는, 인터넷뱅킹 같은, 법에 따르면
    }
)

# Characters that render as nothing (zero-width space/joiners, word joiner, BOM, soft hyphen) or
# reorder text (bidi controls): inside a word they split it for the tokenizer while a reader sees
# one word, so a sentence could hide from retrieval or a number from the PII masker.
_INVISIBLE = re.compile("[\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def visible_text(text: str) -> str:
    """Text with invisible and bidi characters removed and lone surrogates (not encodable as UTF-8)
    replaced by U+FFFD; nothing a reader sees changes. Documents are indexed and quoted this way
    (NFKC would also turn a statute's ① into 1)."""
    return _INVISIBLE.sub("", _SURROGATE.sub("\ufffd", text))


def clean_text(text: str) -> str:
    """A question as a reader sees it: `visible_text`, then NFKC (full-width digits and letters to ASCII)."""
    return _INVISIBLE.sub("", unicodedata.normalize("NFKC", _SURROGATE.sub("\ufffd", text)))


_lock = threading.Lock()
# Morphemes of each distinct word (eojeol) seen so far. Legal and bank text repeats its words a
# lot (2,953 statute articles: 292k words, 36k distinct), so analysing each distinct word once
# makes indexing ~8x faster than analysing every sentence, and a question's words are analysed
# exactly as the indexed ones were.
_word_terms: dict[str, tuple[str, ...]] = {}
_MAX_CACHED_WORDS = 500_000


@lru_cache(maxsize=1)
def _kiwi():
    # Loading Kiwi's model takes about a second; one instance per process, loaded on first use.
    from kiwipiepy import Kiwi

    return Kiwi()


def _content(tokens) -> tuple[str, ...]:
    out = []
    for tok in tokens:
        tag = tok.tag.split("-")[0]  # "VV-R" (regular conjugation) -> "VV"
        if tag not in _CONTENT:
            continue
        form = tok.form.lower() if tag == "SL" else tok.form
        if form not in _STOP:
            out.append(form)
    return tuple(out)


def _analyse_words(words: list[str]) -> None:
    """Fill _word_terms for `words`, each word analysed on its own.

    Kiwi's analysis of a word depends on the words around it in the same call, so analysing
    words in blocks made a word's morphemes depend on which other words happened to be new in
    that call: the index (built from blocks of corpus words) and a later question (its own few
    words) could split the same word differently, and results changed with process history.
    One text per word, in one batched call, gives every process the same terms for a word.
    """
    for w, tokens in zip(words, _kiwi().tokenize(words), strict=True):
        _word_terms[w] = _content(tokens)


def _ensure_analysed(split: list[list[str]]) -> None:
    # Called under _lock.
    if len(_word_terms) > _MAX_CACHED_WORDS:
        _word_terms.clear()
    new = sorted({w for words in split for w in words if w not in _word_terms})
    if new:
        _analyse_words(new)


def morpheme_terms_many(texts: list[str]) -> list[list[str]]:
    """Content morphemes of each text, in order, duplicates kept (BM25 counts them)."""
    split = [t.split() for t in texts]
    with _lock:  # Kiwi instances are not documented as thread-safe (Gradio serves in threads)
        _ensure_analysed(split)
        return [[term for w in words for term in _word_terms[w]] for words in split]


def morpheme_terms(text: str) -> list[str]:
    """Content morphemes of one text."""
    return morpheme_terms_many([text])[0]


def proper_nouns(text: str) -> list[str]:
    """The proper nouns (Kiwi's NNP) of a sentence, in order. Read as a whole sentence, not word by
    word as `morpheme_terms` does: whether a word is a name depends on the words around it."""
    return [t.form for t in tokenize(text) if t.tag == "NNP"]


def tokenize(text: str) -> list:
    """Kiwi's tokens of a sentence read as a whole (each with .form and .tag)."""
    with _lock:
        return list(_kiwi().tokenize(text))


def is_proper_noun(word: str) -> bool:
    """Whether Kiwi, reading `word` in a plain context ("X에 대해"), keeps it a name rather than a
    common noun with an affix: 합의제 is tagged NNP alone but is 합의 + -제 in context."""
    with _lock:
        tokens = _kiwi().tokenize(f"{word}에 대해")
    return not any(t.tag.startswith(("XS", "XP")) for t in tokens if t.start < len(word))


# A sentence ends at . ? ! (or their full-width forms) followed by space or end of text, or at a
# line break. Korean sentences almost always end in "다." "요." "까?" so this is reliable without
# a model; numbers like "1.5%" and "제1항." inside lines are not followed by a space.
_SENTENCE_END = re.compile(r"(?<=[.?!。？！])[\"'”’)\]]*\s+|\n+")


def split_sentences(text: str) -> list[str]:
    """Sentences of `text`, stripped, empty ones dropped."""
    out: list[str] = []
    pending = ""
    for piece in _SENTENCE_END.split(text):
        piece = piece.strip()
        if not piece:
            continue
        if len(piece) <= 4 and piece.endswith("."):
            # An enumerator ("1.", "2의2.", "가.") starts the item that follows it.
            pending += piece + " "
            continue
        out.append(pending + piece)
        pending = ""
    if pending.strip():
        out.append(pending.strip())
    return out


def asked_sentences(question: str) -> list[str]:
    """Every sentence of a question that asks: those with a "?", and the last ("…알려주세요.");
    not a story's ("어제 오늘 환율을 봤는데 …"), nor hearsay with a "?" ("친구가 케이뱅크가 더 좋다던데?")."""
    sentences = split_sentences(question) or [question]
    asking = [s for s in sentences[:-1] if ("?" in s or "？" in s) and not _HEARSAY.search(s)]
    return asking + sentences[-1:]


_HEARSAY = re.compile(r"(던데|다는데|라는데|대던데|다더라|라더라)\s*[?？!.]*\s*$")


def asking_sentence(question: str) -> str:
    """The sentence of a question that asks (a story comes first): the last one with a "?", or the last."""
    sentences = split_sentences(question) or [question]
    return next((s for s in reversed(sentences) if "?" in s or "？" in s), sentences[-1])
