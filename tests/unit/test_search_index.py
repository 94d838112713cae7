"""The search index's pure parts: analysis (English stemming, CJK bigrams,
trigrams, prefixes), the blind terms, highlights and the operations' input
checks (refused before any I/O)."""

from __future__ import annotations

import base64
import hashlib
import json
import random
import struct
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from psycopg import sql
from runtime_fixtures import context

from tenant_runtime import InvalidRequest, StoreUnavailable, TenantMismatch, UntrustedContext, analyzer
from tenant_runtime import cursor as cursor_codec
from tenant_runtime.blind_index import TermHasher, blind, document_scope, summary_scope, term_id
from tenant_runtime.documents import (
    HIGHLIGHT_SCAN,
    ITEM_LOCK_BUCKETS,
    LARGE_BODY,
    MAX_BODY,
    DocumentOperations,
    item_locks,
)
from tenant_runtime.objects import ObjectAccess
from tenant_runtime.search import SNIPPET, highlight
from tenant_runtime.search_keys import SearchKey
from tenant_runtime.store import Compute, Statement, StoreOperations, advance
from tenant_runtime.tables import TABLES


def terms(text: str) -> list[str]:
    return [t.term for t in analyzer.tokens(text)]


def test_english_variants_meet_at_one_stem_and_stop_words_go():
    assert terms("Searching the SEARCHES searched") == ["search"] * 3
    assert terms("indexes index running runs cities") == ["index", "index", "run", "run", "city"]
    assert terms("rotate rotates rotating rotated") == ["rotat"] * 4
    assert terms("class bus this speed tree") == ["class", "bus", "speed", "tree"]  # no over-stripping


def test_full_width_and_case_are_normalised():
    assert terms("ＰｏｓｔｇｒｅＳＱＬ") == terms("postgresql") == ["postgresql"]


def test_japanese_without_the_extra_is_indexed_as_bigrams(monkeypatch):
    monkeypatch.setattr(analyzer, "japanese_tokenizer", lambda: None)
    assert terms("東京都") == ["東京", "京都"] and terms("鍵") == ["鍵"]
    assert [t.term for t in analyzer.tokens("東京都", index=True)] == ["東", "東京", "京", "京都", "都"]


@pytest.mark.parametrize("ja", [True, False])
def test_latin_words_end_where_japanese_begins(monkeypatch, ja):
    # Japanese writes product names and acronyms without a space: "PostgreSQLの索引" was one term.
    if not ja:
        monkeypatch.setattr(analyzer, "japanese_tokenizer", lambda: None)
    assert {"postgresql", "索引"} <= set(terms("PostgreSQLの索引"))
    assert {"gin", "索引", "aws"} <= set(terms("GIN索引とAWS"))
    assert [t.surface for t in analyzer.tokens("iPhone用ケース") if not t.cjk] == ["iphone"]


@pytest.mark.parametrize("ja", [True, False])
def test_indexing_analyses_a_text_as_the_offset_tokens_do(monkeypatch, ja):
    # Indexing has its own offset-free pass (speed): it must give the very terms queries and highlights use.
    if not ja:
        monkeypatch.setattr(analyzer, "japanese_tokenizer", lambda: None)
    text = ("The SEARCHES of ＰｏｓｔｇｒｅＳＱＬ, running 3 rotated keys; 東京都の会議で予算を確認した。"
            "ｶﾀｶﾅ and naïve café Straße x_y 42 鍵 PostgreSQLの索引とAWS鍵") * 2
    for title, body in ((text[:40], text), ("", text), (text, ""), ("", ""), ("Keys keys KEYS", "the keys 東京 東京")):
        analysed = analyzer.index_terms(title, body)
        assert (analysed.counts, analysed.length, analysed.words) == index_terms_of_tokens(title, body)


def index_terms_of_tokens(title, body):
    """``index_terms`` written plainly over ``tokens``: title words twice, a
    Latin word's first surface, title prefixes once per title token."""
    title_tokens, body_tokens = analyzer.tokens(title, index=True), analyzer.tokens(body, index=True)
    counts, words = Counter(), set()
    for weight, toks in ((2, title_tokens), (1, body_tokens)):
        for tok in toks:
            if not tok.cjk and "w:" + tok.term not in counts:
                words.add((tok.surface, "w:" + tok.term))
            counts["w:" + tok.term] += weight
    for tok in title_tokens:
        for n in range(2, min(len(tok.surface), analyzer.MAX_PREFIX) + 1):
            counts["p:" + tok.surface[:n]] += 1
    return counts, 2 * len(title_tokens) + len(body_tokens), words


@pytest.mark.skipif(analyzer.japanese_tokenizer() is None, reason="the Japanese extra (ja) is not installed")
def test_japanese_with_the_extra_gives_content_words_in_dictionary_form():
    assert terms("索引を使うと検索が速くなります") == ["索引", "使う", "検索", "速い", "成る"]
    tok = next(t for t in analyzer.tokens("検索が速く") if t.term == "速い")
    assert (tok.start, tok.end, tok.surface) == (3, 5, "速く")


@pytest.mark.skipif(analyzer.japanese_tokenizer() is None, reason="the Japanese extra (ja) is not installed")
def test_threads_analyse_japanese_at_once():
    text = "東京都は明日晴れる予報です。" * 20
    want = analyzer.japanese_tokenizer()(text)
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(lambda _: analyzer.japanese_tokenizer()(text), range(200))) == [want] * 200


def test_a_typo_shares_most_trigrams_with_the_vocabulary_word():
    vocabulary = analyzer.index_terms("", "postgresql").vocabulary
    assert {w for _, w in vocabulary} == {"w:postgresql"}
    typo = analyzer.query_grams("postgrsql")
    shared = {g for _, g, _ in typo} & {g for g, _ in vocabulary}
    assert len(shared) / typo[0][2] >= 0.5  # FUZZY_SIMILARITY
    assert analyzer.query_terms("PostgreSQL postgresql") == ["w:postgresql"]


def test_title_words_weigh_double_and_give_bounded_prefixes():
    analysed = analyzer.index_terms("Rotating keys", "keys")
    counts, length = analysed.counts, analysed.length
    assert counts["w:key"] == 3 and length == 5 and not any(t.startswith("g:") for t in counts)
    assert {t for t in counts if t.startswith("p:")} == {f"p:{'rotating'[:n]}" for n in range(2, 9)} | {
        "p:ke", "p:key", "p:keys"}
    assert analyzer.prefix_term("how to rota") == "p:rota" and analyzer.prefix_term("r") is None


def test_blind_terms_differ_per_key_and_reveal_nothing():
    k1, k2 = b"1" * 32, b"2" * 32
    assert blind(k1, "w:secret") != blind(k2, "w:secret") and len(blind(k1, "w:secret")) == 16
    assert blind(k1, "w:secret") == blind(k1, "w:secret") and b"secret" not in blind(k1, "w:secret")
    assert "\x00" in document_scope("x")  # no conversation id (text) can share the envelope scope
    assert len({document_scope("x"), summary_scope("x"), "x"}) == 3


def test_highlight_marks_every_matching_word_in_the_snippet():
    snippet, matches = highlight("Keys rotate. Rotating KMS keys is cheap.", {"key", "rotat"}.__contains__)
    assert [snippet[s:e] for s, e in matches] == ["Keys", "rotate", "Rotating", "keys"]
    long = "filler " * 100 + "needle here"
    snippet, matches = highlight(long, set(terms("needles")).__contains__)
    assert snippet.startswith("filler") and [snippet[s:e] for s, e in matches] == ["needle"]


def highlight_of_every_token(body, words):
    """The snippet and spans as from every token of the scanned beginning."""
    text = analyzer.nfkc(body)
    hits = [(t.start, t.end) for t in analyzer.tokens(text[:HIGHLIGHT_SCAN], index=True) if t.term in words]
    start = max(0, hits[0][0] - SNIPPET // 4) if hits else 0
    if start:
        space = text.rfind(" ", 0, start)
        start = space + 1 if space >= start - 20 else start
    end = min(len(text), start + SNIPPET)
    return text[start:end], [(s - start, e - start) for s, e in hits if s >= start and e <= end]


def test_highlight_stops_at_the_snippets_end_with_the_same_answer():
    rng = random.Random(3)
    vocab = ["key", "keys", "rotate", "東京", "会議", "の", "予算", "data", "ｄａｔａ", "backup", "復元", "x" * 30]
    for _ in range(300):
        body = "".join(rng.choice(vocab) + rng.choice((" ", "", "。")) for _ in range(rng.randrange(1, 400)))
        words = set(rng.sample(["key", "rotat", "東京", "予算", "data", "backup", "nothing"], 2))
        assert highlight(body, words.__contains__) == highlight_of_every_token(body, words), (body, words)


def test_the_store_lists_the_document_tables():
    # The index lives in the items' rows (terms, tfs): no table of postings.
    assert {"documents", "search_keys", "search_vocab", "summaries"} <= set(TABLES)
    assert not {"search_postings", "summary_postings"} & set(TABLES)
    assert issubclass(StoreOperations, DocumentOperations)


@pytest.mark.parametrize("call", [
    lambda ops, ctx: ops._search(ctx, "", None, None, 10, 0, None, False),
    lambda ops, ctx: ops._search(ctx, "x", None, None, 0, 0, None, False),
    lambda ops, ctx: ops._search(ctx, "x", None, None, 10, 1, "cursor", False),
    lambda ops, ctx: ops._search(ctx, "the of", None, None, 10, 0, None, False),
    lambda ops, ctx: ops._search(ctx, "x", None, None, 10, 0, "not-a-cursor", False),
    lambda ops, ctx: ops._put_document(ctx, "", "t", "b", None, None),
    lambda ops, ctx: ops._put_document(ctx, "d", "t", "b" * (MAX_BODY + 1), None, None),
    lambda ops, ctx: ops._put_document(ctx, "d", "t" * (1 << 20), "b", None, None),
    # A large body with no object storage to put it in.
    lambda ops, ctx: ops._put_document(ctx, "d", "t", "b" * (LARGE_BODY + 1), None, None),
    lambda ops, ctx: ops._put_document(ctx, "d", "t", "b", {"x": object()}, None),
    # One field name, not a list: it was taken as the facets "t", "e", "a", "m".
    lambda ops, ctx: ops._search(ctx, "x", None, "team", 10, 0, None, False),
    lambda ops, ctx: ops._search(ctx, "x", [("lang", "en")], None, 10, 0, None, False),
    # A field the document has not (a typo of "metadata", say) is not dropped silently.
    lambda ops, ctx: ops._put_documents(ctx, [{"doc_id": "d", "title": "t", "body": "b", "meta": {"lang": "en"}}]),
    # Numbers JSON has not (PostgreSQL's jsonb refuses them) and lone surrogates (what json.loads makes
    # of "\ud800"; UTF-8 cannot encode them): 400, not the driver's error.
    lambda ops, ctx: ops._put_document(ctx, "d", "t", "b", {"x": float("nan")}, None),
    lambda ops, ctx: ops._put_document(ctx, "d", "t", "b", {"x": float("inf")}, None),
    lambda ops, ctx: ops._search(ctx, "x", {"x": float("nan")}, None, 10, 0, None, False),
    lambda ops, ctx: ops._put_document(ctx, "d\udc00", "t", "b", None, None),
    lambda ops, ctx: ops._put_document(ctx, "d", "t\ud800", "b", None, None),
    lambda ops, ctx: ops._put_document(ctx, "d", "t", "b \ud800", None, None),
    lambda ops, ctx: ops._put_document(ctx, "d", "t", "b", {"k": "\ud800"}, None),
    lambda ops, ctx: ops._put_document(ctx, "d", "t", "b", {"\ud800": 1}, None),
    lambda ops, ctx: ops._put_document(ctx, "d", "t", "b", None, "https://x/\ud800"),
    lambda ops, ctx: ops._put_documents(ctx, [{"doc_id": "d", "title": "t", "body": "\udfff"}]),
    lambda ops, ctx: ops._get_document(ctx, "\ud800"),
    lambda ops, ctx: ops._delete_document(ctx, "\ud800"),
    lambda ops, ctx: ops._search(ctx, "x", {"k": "\ud800"}, None, 10, 0, None, False),
    lambda ops, ctx: ops._search(ctx, "x", None, ["\ud800"], 10, 0, None, False),
    lambda ops, ctx: ops._search(ctx, "x", None, [f"f{i}" for i in range(101)], 10, 0, None, False),
    # A limit or offset that is no int, or an offset no statement can hold.
    lambda ops, ctx: ops._search(ctx, "x", None, None, "5", 0, None, False),
    lambda ops, ctx: ops._search(ctx, "x", None, None, True, 0, None, False),
    lambda ops, ctx: ops._search(ctx, "x", None, None, 10, 10 ** 20, None, False),
    lambda ops, ctx: ops._search(ctx, "x", None, None, 10, "3", None, False),
    lambda ops, ctx: ops._suggest(ctx, "ro", "5"),
    lambda ops, ctx: ops._list_documents(ctx, 2.5, None),
])
def test_bad_input_is_refused_before_any_io(call):
    with pytest.raises(InvalidRequest):
        next(call(StoreOperations(), context("acme")))


def search_cursor(query, statistics):
    """A cursor of ``query`` (no filters, not fuzzy) on tenant acme carrying ``statistics``."""
    fingerprint = hashlib.sha256(json.dumps([query, {}, False], sort_keys=True).encode()).hexdigest()[:16]
    return cursor_codec.encode("search", {"t": "acme", "q": fingerprint, "s": "1.5", "d": "d1", "k": "document",
                                "st": statistics})


@pytest.mark.parametrize("statistics", [
    "no",
    [1.0, 2.0, [[0, 0.5]]],  # a field missing
    [1.0, 2.0, [[5, 0.5]], ""],  # idf of a term the query has not
    [1.0, 2.0, [[0, "x"]], ""],
    [1.0, 2.0, [], "AAAA"],  # not whole found words
    [1.0, 2.0, [], "not base64!"],
    [1.0, 2.0, [], base64.urlsafe_b64encode(bytes(28 * 61)).decode()],  # more found words than a cursor carries
    # Values the statement would fail on (a division by zero, NaN scores) rather than rank with.
    [1.0, 0.0, [[0, 0.5]], ""],
    [float("nan"), 2.0, [[0, 0.5]], ""],
    [1.0, 2.0, [[0, float("inf")]], ""],
    [1.0, 2.0, [], base64.urlsafe_b64encode(struct.pack("<iqdd", 1, 2, float("nan"), 0.5)).decode()],
    [1.0, 2.0, [], base64.urlsafe_b64encode(struct.pack("<iqdd", 1, 2, 0.5, -5.0)).decode()],
])
def test_a_cursor_with_statistics_no_search_wrote_is_refused_before_any_io(statistics):
    with pytest.raises(InvalidRequest, match="invalid cursor"):
        next(StoreOperations()._search(context("acme"), "keys", None, None, 10, 0,
                                       search_cursor("keys", statistics), False))


def test_a_document_field_that_does_not_exist_is_named():
    with pytest.raises(InvalidRequest, match="Extra inputs are not permitted \\('meta'\\)"):
        next(StoreOperations()._put_documents(context("acme"), [{"doc_id": "d", "title": "t", "body": "b",
                                                                 "meta": {}}]))


def test_an_untrusted_context_reaches_nothing():
    with pytest.raises(UntrustedContext):
        next(StoreOperations()._search({"tenant_id": "a"}, "x", None, None, 10, 0, None, False))


def no_s3(ctx):
    raise AssertionError("no S3 call expected")


@pytest.mark.parametrize(("key", "error"), [
    ("tenants/other/uploads/abc/notes.txt", TenantMismatch),  # another tenant's upload
    ("tenants/acme/uploads/../../other/uploads/abc/x.txt", TenantMismatch),
    ("tenants/acme/uploads/tmp/abc/notes.txt", InvalidRequest),  # expires by lifecycle
    ("tenants/acme/documents/abc", InvalidRequest),  # not an upload
])
def test_a_document_from_an_upload_is_refused_before_any_io(key, error):
    ops = StoreOperations()
    ops.objects = ObjectAccess(no_s3)
    with pytest.raises(error):
        next(ops._put_document_from_upload(context("acme"), "d", "t", key, None, None))


class Sealing:
    def encrypt(self, ctx, scope, data):
        return b"sealed"

    def decrypt_many(self, ctx, scope, blobs):
        return [b"k" * 32 for _ in blobs]


def test_a_large_body_whose_row_is_not_written_leaves_no_object():
    """The driver raises the failed statement inside the operation: it
    deletes the object it put, then the error goes on to the caller."""
    ops = StoreOperations()
    ops.envelope, ops.objects = Sealing(), ObjectAccess(no_s3)
    ctx = context("acme")
    op = ops._put_document(ctx, "d", "t", "x" * (LARGE_BODY + 1), None, None)
    step, made = next(op), "documents/new"
    assert isinstance(step, Compute) and step.fn == ops.objects.put_body
    results = {ops.objects.put_body: made, ops._seal_contents: [b"sealed"], ops.envelope.decrypt_many: [b"k" * 32]}
    done, step = advance(op, made)
    while isinstance(step, Compute) or step.query.as_string(None).startswith("SELECT k.version"):  # the search key
        done, step = advance(op, results[step.fn] if isinstance(step, Compute) else [(1, b"sealed", True, None)])
    assert isinstance(step, Statement) and step.query.as_string(None).startswith("WITH d AS (INSERT")
    done, step = advance(op, None, StoreUnavailable("connection lost"))
    assert not done and step.fn == ops.objects.delete_body and step.args == (ctx, made)
    with pytest.raises(StoreUnavailable):
        advance(op, None)


def test_the_term_hasher_remembers_what_it_hashed_under_its_own_key_only():
    k1, k2 = b"1" * 32, b"2" * 32
    h1 = TermHasher(k1)
    assert h1("w:secret") == h1("w:secret") == blind(k1, "w:secret") != TermHasher(k2)("w:secret")


def test_an_items_terms_are_the_signed_first_8_bytes_of_their_hmacs():
    hasher = TermHasher(b"k" * 32)
    assert hasher.id("w:secret") == term_id(blind(b"k" * 32, "w:secret")) == int.from_bytes(
        blind(b"k" * 32, "w:secret")[:8], "big", signed=True)
    assert term_id(b"\xff" * 8) == -1 and term_id(b"\x7f" + b"\xff" * 7) == (1 << 63) - 1


def test_a_batch_gives_each_item_its_own_slice_of_the_terms():
    """Items are written in one statement: item i's terms and frequencies are
    ``ft[lo[i]:hi[i]]`` (1-based, inclusive), sorted by term, an item without
    terms an empty slice."""
    ops, hasher = StoreOperations(), TermHasher(b"k" * 32)
    items = [("a", analyzer.index_terms("Rotating keys", "keys rotate")), ("b", analyzer.index_terms("", "")),
             ("c", analyzer.index_terms("", "東京の索引"))]
    op = ops._index_write(context("acme"), sql.SQL("SELECT 'a' AS doc_id"), {}, SearchKey(1, b"d", hasher), items)
    p = next(op).params
    ft, ftf = int_array(p["ft"]), int_array(p["ftf"])  # PostgreSQL's text form of an array
    for (_, analysed), lo, hi in zip(items, p["lo"], p["hi"], strict=True):
        # Sorted by term (a query binary-searches them), each frequency beside its term,
        # a title prefix's negated (not counted).
        assert list(zip(ft[lo - 1:hi], ftf[lo - 1:hi], strict=True)) == sorted(
            (hasher.id(t), -tf if t.startswith("p:") else tf) for t, tf in analysed.counts.items())
    assert p["lo"][1] == p["hi"][1] + 1
    # What the batch adds to search_stats: how many of its items hold each word, their number and length.
    held = dict(zip(int_array(p["nt"]), int_array(p["nn"]), strict=True))
    assert held == {hasher.id(t): sum(t in a.counts for _, a in items) for _, a in items for t in a.counts
                    if t.startswith("w:")}
    assert any(t.startswith("p:") for t in items[0][1].counts)
    assert (p["ni"], p["nl"]) == (3, sum(a.length for _, a in items))


def int_array(text):
    return [int(x) for x in text.strip("{}").split(",") if x]


def test_vocabulary_words_are_sent_until_a_write_of_them_committed():
    """A word's trigram rows go with the first committed write of it; a
    statement that wrote nothing (a newer key) leaves the word to be sent again."""
    ops, hasher = StoreOperations(), TermHasher(b"k" * 32)
    analysed = analyzer.index_terms("", "quixotic plans")
    head = sql.SQL("SELECT 'd' AS doc_id")

    def sent(rows):
        op = ops._index_write(context("acme"), head, {}, SearchKey(1, b"d", hasher), [("d", analysed)])
        step = next(op)
        advance(op, rows)
        return len(step.params["grams"])

    assert sent([]) == sent([("d",)]) == len(analysed.vocabulary) > 0
    assert sent([("d",)]) == 0


def test_a_write_takes_a_bounded_number_of_item_locks_shared_by_every_write_of_an_item():
    batch = [f"doc-{i}" for i in range(500)]
    locks = item_locks("acme", "document", batch)
    # Advisory locks fill the server's shared lock table (64 per connection by default).
    assert locks == sorted(locks) and len(set(locks)) == len(locks) <= ITEM_LOCK_BUCKETS
    for doc_id in ("doc-7", "doc-499"):
        assert set(item_locks("acme", "document", [doc_id])) <= set(locks)
    # Per tenant and kind.
    assert not set(item_locks("acme", "summary", batch)) & set(locks)
    assert not set(item_locks("beta", "document", batch)) & set(locks)


@pytest.mark.parametrize("metadata, refused", [
    ({"k": "a\x00b"}, True), ({"k\x00": 1}, True), ({"k": ["\\\x00"]}, True), ({"k": "\\\\\x00"}, True),
    ({"k": "\\u0000"}, False), ({"k": "\\\\u0000"}, False), ({"k": "u0000"}, False),
])
def test_a_nul_in_metadata_is_told_from_its_escaped_text_before_any_io(metadata, refused):
    """jsonb refuses a NUL: refused before any I/O (a batch's large bodies are not put in S3 first);
    a backslash before ``u0000`` is text, not a NUL's escape."""
    write = StoreOperations()._put_documents(context("acme"), [
        {"doc_id": "d", "title": "t", "body": "b", "metadata": metadata}])
    if refused:
        with pytest.raises(InvalidRequest, match="NUL"):
            next(write)
    else:
        assert next(write) is not None  # its first step: the statement or computation, not a refusal


def test_the_analyzer_identity_says_what_changes_terms(monkeypatch):
    with_extra = analyzer.identity()
    assert with_extra.startswith(f"v{analyzer.FORMAT}+ja:sudachidict_small-")  # the test extra is installed
    assert analyzer.profile(with_extra) == analyzer.current() and analyzer.current().ja
    # An index without the extra is reproduced by a runtime with it (bigrams): same terms as without it.
    plain = analyzer.profile(f"v{analyzer.FORMAT}")
    assert plain is not None and not plain.ja
    bigrams = analyzer.index_terms("東京都", "検索が速く", plain).counts
    assert analyzer.query_terms("速く", plain) == ["w:速く"] and "w:速く" in bigrams and "w:速い" not in bigrams
    # What this runtime cannot reproduce: another dictionary, another format, anything else.
    for other in (f"v{analyzer.FORMAT}+ja:sudachidict_small-19990101", f"v{analyzer.FORMAT + 1}", "v0", "", "x"):
        assert analyzer.profile(other) is None, other
    assert analyzer.profile(analyzer.LEGACY_IDENTITY) is not None  # an index from before identities
    monkeypatch.setattr(analyzer, "japanese_tokenizer", lambda: None)
    assert analyzer.identity() == f"v{analyzer.FORMAT}" and analyzer.profile(with_extra) is None
    assert analyzer.index_terms("東京都", "検索が速く").counts == bigrams


def test_latin_letters_lose_their_accents_from_format_2():
    assert terms("Café naïve İstanbul Crème brûlée Ærø") == terms("cafe naive istanbul creme brulee ærø")
    assert terms("Café İstanbul") == ["cafe", "istanbul"]
    assert analyzer.query_terms("CAFÉ") == analyzer.query_terms("cafe") == ["w:cafe"]
    assert analyzer.prefix_term("crème brû") == "p:bru" and analyzer.normalise("Ça") == "ca"
    assert [g for _, g, _ in analyzer.query_grams("café")] == [g for _, g, _ in analyzer.query_grams("cafe")]
    # Marks of other scripts stay (Greek's tonos), and so do letters that are no base and mark (ø, ł).
    assert terms("Άλφα łódź Tiếng Việt") == ["άλφα", "łodz", "tieng", "viet"]
    # An index of format 1 is reproduced as it was: accents kept.
    v1 = analyzer.profile("v1")
    assert v1 is not None and [t.term for t in analyzer.tokens("Café", prof=v1)] == ["café"]
    assert "w:café" in analyzer.index_terms("Café", "", v1).counts
    assert "w:cafe" in analyzer.index_terms("Café", "").counts and "p:ca" in analyzer.index_terms("Café", "").counts


def test_words_run_on_through_their_combining_marks_from_format_2():
    # A mark with no precomposed letter ("x̄": x + U+0304) no longer ends a Latin word,
    # and a script written with marks (Devanagari's virama and vowel signs, Thai's) keeps its words whole.
    assert terms("x\u0304ylophone") == terms("xylophone") == ["xylophon"]
    assert terms("नमस्ते दुनिया") == ["नमस्ते", "दुनिया"]
    assert terms("ภาษาไทย") == ["ภาษาไทย"]
    assert terms("\U0001e900\U0001e944\U0001e901") == ["\U0001e922\U0001e944\U0001e923"]  # Adlam, casefolded
    assert "w:नमस्ते" in analyzer.index_terms("नमस्ते", "").counts
    # Format 1 is reproduced as it was: split at the mark, the marks dropped.
    v1 = analyzer.profile("v1")
    assert v1 is not None and [t.term for t in analyzer.tokens("x\u0304ylophone नमस्ते", prof=v1)] == [
        "x", "ylophon", "नमस", "त"]


def test_optional_hebrew_and_arabic_marks_fold_from_format_3():
    # Points (niqqud, dagesh, shin/sin dots), cantillation, harakat, superscript alef and tatweel are
    # optional: a query written without them finds a text written with them, and the other way round.
    pointed, plain = "שָׁלוֹם עוֹלָם", "שלום עולם"
    assert terms(pointed) == terms(plain) == ["שלום", "עולם"]
    assert terms("كِتَابٌ الرَّحْمٰنِ العـربية") == terms("كتاب الرحمن العربية") == ["كتاب", "الرحمن", "العربية"]
    assert analyzer.query_terms("שָׁלוֹם") == analyzer.query_terms("שלום") == ["w:שלום"]
    assert analyzer.prefix_term("كِتَا") == "p:كتا" and analyzer.normalise("עוֹלָם") == "עולם"
    assert [g for _, g, _ in analyzer.query_grams("كِتَاب")] == [g for _, g, _ in analyzer.query_grams("كتاب")]
    # Marks that are letters' vowels elsewhere stay (Devanagari's), Latin accents fold as from format 2.
    assert terms("नमस्ते Café") == ["नमस्ते", "cafe"]
    # Indexes of formats 1 and 2 are reproduced as they were: the marks kept.
    for old in ("v1", "v2"):
        prof = analyzer.profile(old)
        assert prof is not None and [t.term for t in analyzer.tokens("שָׁלוֹם", prof=prof)] != ["שלום"], old
        assert "w:שלום" not in analyzer.index_terms("שָׁלוֹם", "", prof).counts, old
    v2 = analyzer.profile("v2")
    assert [t.term for t in analyzer.tokens("שָׁלוֹם Café", prof=v2)] == ["שָׁלוֹם", "cafe"]
    assert analyzer.index_terms("Café", "").counts == analyzer.index_terms("Café", "", v2).counts


def test_the_written_out_marks_are_unicodes_combining_marks():
    import re
    import unicodedata

    from tenant_runtime.marks import ASTRAL_MARKS, MARKS

    ranges = re.findall(r"(.)(?:-(.))?", MARKS + ASTRAL_MARKS, re.S)
    points = [cp for a, b in ranges for cp in range(ord(a), ord(b or a) + 1)]
    assert len(points) > 2000 and all(unicodedata.category(chr(cp)).startswith("M") for cp in points)
    from tenant_runtime.marks import OPTIONAL_MARKS  # marks, and tatweel (a letter, Lm)

    optional = {cp for a, b in re.findall(r"(.)(?:-(.))?", OPTIONAL_MARKS, re.S)
                for cp in range(ord(a), ord(b or a) + 1)} - {0x640}
    assert {unicodedata.category(chr(cp))[0] for cp in optional} == {"M"} and optional <= set(points)
