"""The store's tables, in every tenant schema: one list of names that the
runtime's statements, provisioning's SQL (templates/tenant_schema.sql.j2),
checks, drills, usage and moves all read.

Documents, conversation summaries and their blind search index belong with
the conversations: a tier move, a backup or a restore carries them all together.
"""

CONVERSATIONS = "conversations"
MESSAGES = "messages"
CONTEXT_ITEMS = "context_items"
DOCUMENTS = "documents"
SEARCH_KEYS = "search_keys"
SEARCH_POSTINGS = "search_postings"
SEARCH_VOCAB = "search_vocab"
SUMMARIES = "summaries"
SUMMARY_POSTINGS = "summary_postings"

TABLES = (CONVERSATIONS, MESSAGES, CONTEXT_ITEMS, DOCUMENTS, SEARCH_KEYS, SEARCH_POSTINGS, SEARCH_VOCAB, SUMMARIES,
          SUMMARY_POSTINGS)
