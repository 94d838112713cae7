"""Text analysis for the per-tenant search index: text -> terms, with offsets.

* NFKC + casefold (full-width letters and digits, ligatures, case), and
  Latin letters without their accents (format 2: "Café" and "cafe" meet,
  "İstanbul" and "istanbul"; letters that are not a base letter and a mark,
  ø, ł, æ, stay); a word runs on through the combining marks after its
  letters (format 2: "नमस्ते" is one word). From format 3 the marks a script
  writes optionally go too: Hebrew points and cantillation, Arabic harakat,
  superscript alef, Quranic marks and tatweel ("שָׁלוֹם" meets "שלום", "كِتَاب"
  meets "كتاب"); other scripts' marks, which are their vowels, stay.
* Latin/digit words: a light English stemmer (plural, -ing, -ed, -ly; no
  dictionary), so "Searching" and "searches" meet at "search".
* Japanese/CJK runs: the optional Japanese analyzer (``pip install
  tenantctl[ja]``: SudachiPy + sudachidict-small, split mode C) gives words;
  without it every run is indexed as overlapping character bigrams (and
  unigrams), the classic dictionary-free CJK approach (recall is good, precision lower: a
  query for 東京都 also matches a text with 京都 only, ranked below).
* Character trigrams of each word (``^``/``$`` padded) for typo and partial
  matching (``fuzzy=True`` searches): they are what makes "serch" find
  "search" (through the tenant's vocabulary, not per document).
* Prefixes (2..MAX_PREFIX characters) of title words, for suggestions.

The analyzer is part of the index format: its ``identity`` (``FORMAT``, and
the Japanese dictionary when the extra is used) is recorded with each search
key of a store (``search_analyzers``), and a store's index is written and
searched with the analyzer it records (``profile``: a runtime with the extra
reproduces an index built without it) or not at all: changing it needs
``tenantctl search reindex``. Kinds are prefixes of the term text ("w:" words, "p:" title
prefixes in the items' terms, their document frequencies not counted;
"g:" trigrams in the vocabulary).
"""

from __future__ import annotations

import functools
import re
import threading
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

from tenant_runtime.marks import ASTRAL_MARKS, MARKS, OPTIONAL_MARKS

MAX_PREFIX = 8
WORD_CACHE = 1 << 16  # words whose stem and trigrams are remembered
GRAM = 3
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f\u30fc"
# A word: letters and digits, not CJK ones (\w holds those too), so a Latin word
# written against Japanese ("PostgreSQLの索引", "GIN索引") ends where the Japanese begins;
# from format 2 with the combining marks after them (\w holds none: format 1 split "नमस्ते"
# at its virama and dropped its vowel signs, and "x̄ylophone" at its macron).
_RUNS = {False: re.compile(rf"(?P<cjk>[{_CJK}]+)|(?P<word>[^\W_{_CJK}]+)"),
         True: re.compile(rf"(?P<cjk>[{_CJK}]+)|(?P<word>[^\W_{_CJK}]++(?:(?:[{MARKS}]|"
                          rf"(?=[\U00010000-\U0010ffff])[{ASTRAL_MARKS}])++[^\W_{_CJK}]*+)*+)")}
_STOP = frozenset("a an and are as at be by for from in is it of on or that the this to was were with".split())


# The analysis's format version: bump it with any change to the terms a text gives
# (normalisation, word splitting, stemming, stop words), so indexes built before are
# told apart from the new ones (and rebuilt by ``tenantctl search reindex``).
FORMAT = 3  # 2: accent folding of Latin letters, words through their combining marks; 3: optional marks folded
FORMATS = frozenset({1, 2, 3})  # the formats this module still reproduces (an index of 1 is written as 1)
FOLDING = 2  # the first format that folds accents (and keeps a word's marks in it)
MARK_FOLDING = 3  # the first format that folds the optional marks of Hebrew and Arabic
# What an index records when it recorded nothing (built before identities were):
# the default analyzer without the extra (docs/runtime.md says why).
LEGACY_IDENTITY = "v1"


class Profile(NamedTuple):
    """An analysis a runtime can reproduce: its format, whether Japanese runs go
    to SudachiPy (else bigrams), and the identity a store records for it."""

    format: int
    ja: bool
    identity: str


@functools.lru_cache(maxsize=1)
def _dictionary() -> str:
    """The Japanese dictionary's name and version (what decides SudachiPy's words)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"sudachidict_small-{version('sudachidict-small')}"
    except PackageNotFoundError:  # a dictionary installed some other way: named, not versioned
        return "sudachidict_small"


def _identity(fmt: int, ja: bool) -> str:
    return f"v{fmt}" + (f"+ja:{_dictionary()}" if ja else "")


def identity() -> str:
    """What this runtime's analyzer records: ``v<FORMAT>``, ``+ja:<dictionary>-<version>``
    when the Japanese extra is installed (``v2+ja:sudachidict_small-20240409``)."""
    return current().identity


def current() -> Profile:
    """The analysis this runtime uses for an index it builds (a new store, a reindex)."""
    return _profile(FORMAT, japanese_tokenizer() is not None)


@functools.lru_cache(maxsize=64)
def _profile(fmt: int, ja: bool) -> Profile:
    return Profile(fmt, ja, _identity(fmt, ja))


def profile(recorded: str) -> Profile | None:
    """The analysis that reproduces an index recording ``recorded``, None when
    this runtime cannot: another format, or Japanese words cut by a dictionary
    it has not (not installed, another version)."""
    fmt, _, ja = recorded.partition("+")
    if not fmt.startswith("v") or not fmt[1:].isdigit() or int(fmt[1:]) not in FORMATS:
        return None
    installed = japanese_tokenizer() is not None
    found = _profile(int(fmt[1:]), bool(ja))
    return found if found.identity == recorded and (installed or not found.ja) else None


def _tokenizer(prof: Profile | None):  # noqa: ANN202 - japanese_tokenizer's callable, or None
    """The Japanese tokenizer ``prof`` cuts with (None: bigrams); None: this runtime's own."""
    return japanese_tokenizer() if prof is None or prof.ja else None


class Token(NamedTuple):  # a tuple: built per word, several times cheaper than a frozen dataclass
    term: str  # normalised form (stemmed word, CJK word or bigram)
    surface: str  # lowercased text as written (for trigrams and prefixes)
    start: int
    end: int
    cjk: bool


def normalise(text: str, prof: Profile | None = None) -> str:
    """NFKC + casefold, folded as ``prof``'s format folds (for comparing words; offsets come from ``nfkc``)."""
    return _fold(nfkc(text).casefold(), (prof or current()).format)


# Combining marks after a Latin base letter, once decomposed (NFD): "é" is "e" + U+0301.
_ACCENTS = re.compile("(?<=[a-zA-Z])[\u0300-\u036f]+")


_OPTIONAL = re.compile(f"[{OPTIONAL_MARKS}]+")


def _fold(text: str, fmt: int) -> str:
    """``text`` (casefolded) as format ``fmt`` folds it: as it is before format 2."""
    if fmt < FOLDING or text.isascii():
        return text
    text = unicodedata.normalize("NFC", _ACCENTS.sub("", unicodedata.normalize("NFD", text)))
    return _OPTIONAL.sub("", text) if fmt >= MARK_FOLDING else text


@functools.lru_cache(maxsize=WORD_CACHE)
def fold(word: str, fmt: int) -> str:
    """A casefolded word without the accents of its Latin letters ("café" ->
    "cafe", "i̇stanbul" -> "istanbul"); NFC again, so other scripts come back
    as they were (Hangul, which NFD splits into its jamo); from format 3
    without the optional marks of Hebrew and Arabic either."""
    return _fold(word, fmt)


def nfkc(text: str) -> str:
    """The text token offsets refer to: NFKC only (casefolding may change
    lengths, so words are casefolded one by one)."""
    return unicodedata.normalize("NFKC", text)


@functools.lru_cache(maxsize=WORD_CACHE)
def stem(word: str) -> str:
    """A light English stemmer: enough for plural/tense variants, never below 3 letters."""
    if not word.isascii() or not word.isalpha() or len(word) <= 3:
        return word
    base = _strip_suffix(word)
    # "rotate", "rotates" -> "rotat" (as "rotating", "rotated"); "tree", "free" stay
    return base[:-1] if base.endswith("e") and len(base) >= 5 else base


def _strip_suffix(word: str) -> str:
    for suffix, repl in (("ies", "y"), ("sses", "ss"), ("ness", ""), ("ing", ""), ("edly", ""), ("ed", ""),
                         ("ly", ""), ("es", ""), ("s", "")):
        if word.endswith(suffix) and len(word) - len(suffix) + len(repl) >= 3:
            if suffix == "s" and word.endswith(("ss", "us", "is")):
                return word
            if suffix == "es" and not word.endswith(("ches", "shes", "xes", "sses", "zes")):
                continue
            if suffix == "ed" and word.endswith("eed"):  # speed, need, agreed
                return word
            base = word[: len(word) - len(suffix)] + repl
            # "running" -> "runn" -> "run"
            if suffix in ("ing", "ed") and len(base) > 3 and base[-1] == base[-2] and base[-1] not in "lsz":
                base = base[:-1]
            return base
    return word


@functools.lru_cache(maxsize=1)
def japanese_tokenizer():  # noqa: ANN201 - a callable over sudachipy, when installed
    """SudachiPy (split mode C, the small dictionary) when the ``ja`` extra is
    installed, else None. Gives (normalised form, begin, end) of content
    words: particles, auxiliaries, punctuation and blank forms are left out. One tokenizer
    per thread over the one dictionary: a SudachiPy tokenizer refuses a second
    caller while in use (two threads writing documents at once)."""
    try:
        from sudachipy import Dictionary, SplitMode
        dictionary = Dictionary(dict="small")
        local = threading.local()
        local.tok = dictionary.tokenizer(SplitMode.C)
    except Exception:  # noqa: BLE001 - not installed, or no dictionary: the bigram fallback
        return None

    def words(text: str) -> list[tuple[str, int, int]]:
        tok = getattr(local, "tok", None)
        if tok is None:
            tok = local.tok = dictionary.tokenizer(SplitMode.C)
        return [(form, m.begin(), m.end()) for m in tok.tokenize(text)
                if m.part_of_speech()[0] not in _JA_SKIP and (form := m.normalized_form()).strip()]

    return words


_JA_SKIP = frozenset({"助詞", "助動詞", "補助記号", "空白"})


def _cjk_tokens(run: str, offset: int, index: bool, ja: Callable | None) -> Iterator[Token]:
    if ja is not None:
        for form, begin, end in ja(run):
            yield Token(form, run[begin:end], offset + begin, offset + end, True)
        return
    for i in range(len(run)):
        if index or len(run) == 1:  # unigrams: what a one-character query matches
            yield Token(run[i], run[i], offset + i, offset + i + 1, True)
        if i + 1 < len(run):
            yield Token(run[i:i + 2], run[i:i + 2], offset + i, offset + i + 2, True)


def tokens(text: str, index: bool = False, prof: Profile | None = None) -> list[Token]:
    """Tokens of ``text`` (offsets into ``nfkc(text)``), stop words dropped.
    ``index``: a document's (CJK unigrams too, so one-character queries match;
    a query's runs give bigrams only, unigrams only for a single character).
    ``prof``: the analysis (``profile``), this runtime's own when None (as for
    every function here taking one)."""
    return list(iter_tokens(text, index, prof))


def iter_tokens(text: str, index: bool = False, prof: Profile | None = None) -> Iterator[Token]:
    """``tokens`` one at a time, in order of their offsets (a caller may stop early)."""
    ja = _tokenizer(prof)
    fmt = (prof or current()).format
    for m in _RUNS[fmt >= FOLDING].finditer(nfkc(text)):
        if m.group("cjk"):
            yield from _cjk_tokens(m.group("cjk"), m.start(), index, ja)
            continue
        word = fold(m.group("word").casefold(), fmt)
        if word not in _STOP:
            yield Token(stem(word), word, m.start(), m.end(), False)


# A word as written -> (surface, word term), None for a stop word; one table per format.
_LATIN: dict[int, dict[str, tuple[str, str] | None]] = {fmt: {} for fmt in FORMATS}
_MISS = object()
SHORT_RUN = 32  # CJK runs up to this length (titles, names) have their terms remembered


def _latin_term(word: str, fmt: int) -> tuple[str, str] | None:
    """(casefolded surface, kinded term) of a Latin/digit word as written, None
    for a stop word; remembered per word as written (bounded like the stems),
    so a repeated word costs one dictionary lookup. Folded as format ``fmt`` folds."""
    folded = fold(word.casefold(), fmt)
    found = None if folded in _STOP else (folded, "w:" + stem(folded))
    known = _LATIN[fmt]
    if len(known) >= WORD_CACHE:
        known.clear()
    known[word] = found
    return found


@functools.lru_cache(maxsize=WORD_CACHE)
def _short_cjk_terms(run: str, ja: Callable | None) -> tuple[tuple[str, str], ...]:
    # ``ja``: the tokenizer the terms come from (part of the key: an index of bigrams, tests without it).
    return _cjk_terms(run, ja)


def _cjk_terms(run: str, ja: Callable | None) -> tuple[tuple[str, str], ...]:
    """(surface, kinded term) of a CJK run's index tokens (SudachiPy's words
    taken as they come: no Token built per word of a Japanese body)."""
    if ja is not None:
        return tuple((run[begin:end], "w:" + form) for form, begin, end in ja(run))
    return tuple((t.surface, "w:" + t.term) for t in _cjk_tokens(run, 0, True, None))


@functools.lru_cache(maxsize=WORD_CACHE)
def _prefixes(surface: str) -> tuple[str, ...]:
    return tuple("p:" + surface[:n] for n in range(2, min(len(surface), MAX_PREFIX) + 1))


def grams(surface: str) -> list[str]:
    padded = f"^{surface}$"
    return [padded[i:i + GRAM] for i in range(len(padded) - GRAM + 1)]


@functools.lru_cache(maxsize=WORD_CACHE)
def vocabulary_pairs(surface: str, term: str) -> tuple[tuple[str, str], ...]:
    # Words repeat across a tenant's documents: their trigrams are worked out once.
    return tuple(("g:" + g, term) for g in grams(surface))


@dataclass
class Analysed:
    """What a document puts in the index."""

    counts: Counter[str]  # kinded term -> frequency (words, title prefixes)
    length: int  # word tokens (title counted twice)
    words: set[tuple[str, str]]  # (surface, word term) of its Latin words: what ``vocabulary`` is made of

    @property
    def vocabulary(self) -> set[tuple[str, str]]:
        """(trigram, word term) pairs of its Latin words, for fuzzy queries."""
        return {pair for surface, term in self.words for pair in vocabulary_pairs(surface, term)}


def index_terms(title: str, body: str, prof: Profile | None = None) -> Analysed:
    """Term frequencies of a document and its length in word tokens. Title
    words count twice (a light field boost). Trigrams are not item terms: they
    go to the tenant's vocabulary (trigram -> word), once per word, where a
    fuzzy query finds the words it may mean. The terms of ``tokens(text,
    index=True)`` (a unit test holds them equal), without offsets: each
    distinct word or CJK run of a text is analysed once (``Counter`` of
    ``re.findall``, in C), through the per-word caches."""
    counts: Counter[str] = Counter()
    words: set[tuple[str, str]] = set()
    title_surfaces: list[tuple[str, int]] = []
    length = 0
    ja = _tokenizer(prof)
    fmt = (prof or current()).format
    latin, get = _LATIN[fmt].get, counts.get  # get, not []: Counter's __missing__ is a Python call per new term
    runs = _RUNS[fmt >= FOLDING]
    for weight, text in ((2, title), (1, body)):
        for (cjk, word), seen in Counter(runs.findall(nfkc(text))).items():
            n = weight * seen
            if cjk:
                found = _short_cjk_terms(cjk, ja) if len(cjk) <= SHORT_RUN else _cjk_terms(cjk, ja)
                for surface, term in found:
                    counts[term] = get(term, 0) + n
                    if weight == 2:
                        title_surfaces.append((surface, seen))
                length += n * len(found)
                continue
            found = latin(word, _MISS)
            if found is _MISS:
                found = _latin_term(word, fmt)
            if found is None:
                continue
            surface, term = found
            if term not in counts:
                words.add(found)
            counts[term] = get(term, 0) + n
            if weight == 2:
                title_surfaces.append((surface, seen))
            length += n
    for surface, seen in title_surfaces:
        for prefix in _prefixes(surface):
            counts[prefix] = get(prefix, 0) + seen
    return Analysed(counts, length, words)


def query_terms(query: str, prof: Profile | None = None) -> list[str]:
    """The query's word terms, each once."""
    return list(dict.fromkeys("w:" + tok.term for tok in tokens(query, prof=prof)))


def query_grams(query: str, prof: Profile | None = None) -> list[tuple[int, str, int]]:
    """(query word, trigram, trigrams of that word) for a fuzzy query: a
    vocabulary word sharing at least half of a query word's trigrams is
    searched too (a typo or a partial word still shares most of them)."""
    out = []
    for i, tok in enumerate(t for t in tokens(query, prof=prof) if not t.cjk):
        gs = list(dict.fromkeys(grams(tok.surface)))
        out += [(i, "g:" + g, len(gs)) for g in gs]
    return out


def prefix_term(prefix: str, prof: Profile | None = None) -> str | None:
    """The prefix term of a suggestion query (its last word, at most MAX_PREFIX characters)."""
    words = normalise(prefix, prof).split()
    if not words or len(words[-1]) < 2:
        return None
    return "p:" + words[-1][:MAX_PREFIX]
