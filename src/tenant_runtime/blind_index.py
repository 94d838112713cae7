"""The blind index: search terms as keyed hashes, under a per-tenant search key.

A term is stored as a truncated ``HMAC-SHA256(search_key, term)``, never as
text: an item's terms as the first 8 bytes (a signed int8, ``term_id``: one
row per item, an int8[]), the fuzzy vocabulary's as 16 bytes. The
search key is 32 random bytes generated once per tenant (and again by
``reindex``), stored in the tenant's own ``search_keys`` table *sealed* with
the tenant's envelope (a data key from the tenant's KMS key, AES-GCM bound to
tenant id + a scope no conversation or document can have). So:

* a copied index reveals neither the words (no key, no dictionary attack) nor
  which tenants share words (each tenant's hashes differ for the same word);
* rows copied into another tenant's schema never match its queries (they were
  hashed under another key);
* deprovisioning schedules the tenant's KMS key for deletion: the search key
  can no longer be unsealed, so even a superuser holding every row can
  compute no query term (crypto-shredding).

What it still leaks, to someone who holds the rows (a DBA, a backup): within
one tenant, how often each (unknown) term occurs, how many items hold it,
document lengths, which documents share terms (co-occurrence) and which of
an item's terms are title prefixes (stored with a negated frequency, so
roughly the length of its title's words). Frequency
analysis against a known corpus could guess the commonest terms of a large
tenant. Acceptable here: the rows sit behind the same walls as the
ciphertexts (RLS, per-tenant roles, encrypted storage), the words, bodies and
cross-tenant links stay hidden, and ranking needs these statistics in SQL.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterable

TERM_BYTES = 16
KEY_BYTES = 32
MEMO_TERMS = 200_000  # per key: ~30 MiB at most
# Envelope scopes (the "conversation" slot of the encryption context): a NUL
# cannot be stored in a PostgreSQL text column, so no conversation id has one.
SEARCH_KEY_SCOPE = "\x00search-key"


def document_scope(doc_id: str) -> str:
    return "\x00document:" + doc_id


def summary_scope(conversation_id: str) -> str:
    return "\x00summary:" + conversation_id


def new_search_key() -> bytes:
    return os.urandom(KEY_BYTES)


def blind(key: bytes, term: str) -> bytes:
    # hmac.digest: OpenSSL's one-shot HMAC, several times faster than hmac.new per term.
    return hmac.digest(key, term.encode(), hashlib.sha256)[:TERM_BYTES]


# term_id in SQL, of a bytea expression ({}): bit(64) -> int8 is two's complement, as signed=True.
TERM_ID_SQL = "('x' || encode(substr({}, 1, 8), 'hex'))::bit(64)::int8"


def term_id(hashed: bytes) -> int:
    """A blind term's first 8 bytes as a signed int8 (``TERM_ID_SQL``). 64
    bits: a collision within one tenant's vocabulary (~10^6 terms) has odds
    ~10^-7, and would only add a hit for that one term."""
    return int.from_bytes(hashed[:8], "big", signed=True)


class TermHasher:
    """``blind`` under one search key, remembering what it hashed: a tenant's
    words and trigrams repeat from document to document, so after a few
    hundred documents nearly every term is a dictionary hit instead of an
    HMAC. Lives exactly as long as the unsealed key it holds (the runtime's
    search-key cache); bounded (forgets everything past ``MEMO_TERMS``)."""

    __slots__ = ("key", "_memo", "_ids", "written")

    def __init__(self, key: bytes) -> None:
        self.key = key
        self._memo: dict[str, bytes] = {}
        self._ids: dict[str, int] = {}
        # Vocabulary words (surface, term) this process has committed under
        # this key: their trigram rows exist, a later document need not send
        # them again. Bounded like the memo.
        self.written: set[tuple[str, str]] = set()

    def wrote(self, words: list[tuple[str, str]]) -> None:
        if len(self.written) + len(words) > MEMO_TERMS:
            self.written.clear()
        self.written.update(words)

    def __call__(self, term: str) -> bytes:
        hashed = self._memo.get(term)
        if hashed is None:
            if len(self._memo) >= MEMO_TERMS:
                self._memo.clear()
            hashed = self._memo[term] = blind(self.key, term)
        return hashed

    def ids(self, terms: Iterable[str]) -> list[int]:
        """``id`` of each term: remembered ones looked up in C (``map``), the rest hashed."""
        terms = list(terms)
        found = list(map(self._ids.get, terms))
        if None in found:
            found = [self.id(term) if i is None else i for term, i in zip(terms, found, strict=True)]
        return found

    def id(self, term: str) -> int:
        """The term as an item's index stores it (``term_id``), remembered the same way."""
        found = self._ids.get(term)
        if found is None:
            if len(self._ids) >= MEMO_TERMS:
                self._ids.clear()
            found = self._ids[term] = term_id(self(term))
        return found
