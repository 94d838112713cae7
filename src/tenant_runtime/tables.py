"""The store's tables, in every tenant schema: one list of names that the
runtime's statements, provisioning's SQL (templates/tenant_schema.sql.j2),
checks, drills, usage and moves all read.

Documents, conversation summaries and their blind search index (the items'
``terms``/``tfs`` columns, the fuzzy vocabulary and the per-term document
counts of ``search_stats``) belong with
the conversations: a tier move, a backup or a restore carries them all together.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from tenant_runtime.blind_index import SEARCH_KEY_SCOPE, document_scope, summary_scope

CONVERSATIONS = "conversations"
MESSAGES = "messages"
CONTEXT_ITEMS = "context_items"
DOCUMENTS = "documents"
SEARCH_KEYS = "search_keys"
SEARCH_VOCAB = "search_vocab"
SUMMARIES = "summaries"
SEARCH_STATS = "search_stats"
SEARCH_ANALYZERS = "search_analyzers"  # per search key: the analyzer its index was built with

TABLES = (CONVERSATIONS, MESSAGES, CONTEXT_ITEMS, DOCUMENTS, SEARCH_KEYS, SEARCH_VOCAB, SUMMARIES, SEARCH_STATS,
          SEARCH_ANALYZERS)

# The earlier index layout: a posting row per (term, item) in these tables. The
# schema template drops them and adds INDEX_COLUMNS to the items, which reindex
# fills: a backup of that layout restores as its items, less the index.
RETIRED_TABLES = ("search_postings", "summary_postings")
INDEX_COLUMNS = {DOCUMENTS: ("terms", "tfs"), SUMMARIES: ("terms", "tfs")}
# Tables a backup from before them lacks: the schema template re-applied by a
# restore creates them empty (search keys restored from such a backup are not
# counted, so search counts per query until the next reindex; their analyzer is
# not recorded, so it is taken as ``analyzer.LEGACY_IDENTITY``).
ADDED_TABLES = (SEARCH_STATS, SEARCH_ANALYZERS)


class Sealed(NamedTuple):
    """A column the runtime seals with the tenant's envelope (``tenant_runtime.crypto``),
    and the envelope scope (its ``conversation_id``) of a row, from the row's key."""

    table: str
    keys: tuple[str, ...]
    column: str
    scope_of: Callable[[tuple], str]


# Every sealed column: what a re-key (revive) or a re-wrap (a move to another key) must carry.
SEALED: tuple[Sealed, ...] = (
    Sealed(MESSAGES, ("conversation_id", "seq"), "content", lambda key: key[0]),
    Sealed(DOCUMENTS, ("doc_id",), "content", lambda key: document_scope(key[0])),
    Sealed(SUMMARIES, ("conversation_id",), "content", lambda key: summary_scope(key[0])),
    # The search key itself: the index's terms (HMACs) stay valid once it is carried.
    Sealed(SEARCH_KEYS, ("version",), "sealed", lambda key: SEARCH_KEY_SCOPE),
)
SEALED_BY_TABLE = {s.table: s for s in SEALED}
