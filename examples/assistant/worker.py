"""The assistant's job worker: drains each tenant's delay queue and answers
"reply" jobs by appending the assistant's message to the conversation: the
answer cites the tenant's best-matching document (its own search index, never
another tenant's), where a real assistant would hand the hits to a model.

The queue is the tenant's own (its URL comes from the registry record), and
``JobQueue.work`` runs a job only when its body names that same tenant:
anything else goes to the tenant's DLQ untouched. Run in-process by app.py
(ASSISTANT_WORKER_TENANTS), or alone: ``python worker.py acme globex``.
"""

from __future__ import annotations

import asyncio
import logging
import sys

from tenant_runtime import InvalidRequest, TenantContext
from tenant_runtime.aio import AsyncTenantRuntime
from tenant_runtime.jobs import Job, JobMessage
from tenant_runtime.search import MAX_QUERY, SearchResult

REPLY = "reply"
POLL_SECONDS = 0.5
log = logging.getLogger("assistant.worker")


def reply_to(text: str, result: SearchResult) -> str:
    """Stands in for the model call a real assistant would make with the hits."""
    if not result.hits:
        return f"You said {len(text.split())} words; none of your documents match."
    best = result.hits[0]
    return f"From {best.title!r} ({best.doc_id}): {best.snippet}"


async def best_match(runtime: AsyncTenantRuntime, ctx: TenantContext, text: str) -> SearchResult:
    try:
        return await runtime.store.search(ctx, text[:MAX_QUERY], limit=1, fuzzy=True)
    except InvalidRequest:  # nothing searchable in the message (only punctuation, say)
        return SearchResult(hits=[], total=0, facets={}, next_cursor=None)


async def handle(runtime: AsyncTenantRuntime, tenant_id: str, job: Job, message: JobMessage) -> None:
    if job.kind != REPLY:
        log.info("tenant %s: job %s of kind %r ignored", tenant_id, message.job_id, job.kind)
        return
    ctx = await runtime.context(tenant_id)
    conversation = job.payload["conversation_id"]
    page = await runtime.store.history(ctx, conversation, limit=1)
    asked = page.messages[0].content if page.messages else ""
    found = await best_match(runtime, ctx, asked)
    await runtime.store.append(ctx, conversation, "assistant", reply_to(asked, found),
                               {"in_reply_to": job.payload["seq"], "cited": [h.doc_id for h in found.hits]})


async def run_worker(runtime: AsyncTenantRuntime, tenant_ids: list[str], stop: asyncio.Event) -> None:
    while not stop.is_set():
        for tenant_id in tenant_ids:
            try:
                ctx = await runtime.context(tenant_id)

                async def handler(job: Job, message: JobMessage, tenant_id: str = tenant_id) -> None:
                    await handle(runtime, tenant_id, job, message)

                counts = await runtime.jobs.work(ctx, handler, max_messages=10, wait_seconds=0)
                if any(counts.values()):
                    log.info("tenant %s: %s", tenant_id, counts)
            except Exception:  # one tenant's trouble never stops the others
                log.exception("tenant %s: worker pass failed", tenant_id)
        try:
            await asyncio.wait_for(stop.wait(), POLL_SECONDS)
        except TimeoutError:
            pass


async def main(tenant_ids: list[str]) -> None:
    from app import build_runtime

    async with build_runtime() as runtime:
        await run_worker(runtime, tenant_ids, asyncio.Event())


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    asyncio.run(main(sys.argv[1:]))
