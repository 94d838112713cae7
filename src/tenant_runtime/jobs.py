"""Delayed jobs on the tenant's SQS queue, and a worker helper.

``schedule(job, delay)``: SQS delays natively up to 900 s; a longer delay is sent
with DelaySeconds=900 and a ``due_at`` in the body, and the worker re-enqueues it
(with the remaining delay, again at most 900 s) until it is due. Every body names
its tenant; the worker runs a job only when that tenant is the queue's tenant and
moves any other message to the tenant's DLQ, untouched, with the reason as a
message attribute.

A body (the job as JSON, sent as it is: the queue's SSE-KMS encrypts it on
the server, nothing encodes it here) is at most ``max_message_bytes`` of
UTF-8, SQS's limit (1 MiB, ``SQS_MAX_MESSAGE``, unless the queue sets a lower
``MaximumMessageSize``), less ``DEAD_LETTER_ROOM``: a larger job is an
InvalidRequest before any call. SQS counts a message's attributes (name, type
and value) with its body, so the room kept lets any job be dead-lettered with
its reason; a reason is cut to the room a message left (one the runtime did
not write may leave none: then it goes without). A larger payload belongs in
the tenant's objects, the job naming its key.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from tenant_runtime.aws_errors import aws_errors
from tenant_runtime.context import TenantContext, verified
from tenant_runtime.errors import InvalidRequest

log = logging.getLogger(__name__)

SQS_MAX_DELAY = 900
SQS_MAX_MESSAGE = 1 << 20  # bytes of body; SQS's maximum since 2025 (256 KiB before)
SQS_MIN_MESSAGE = 1024  # the lowest MaximumMessageSize a queue can set
MAX_DELAY = 365 * 24 * 3600
REASON = ("reason", "String")  # the dead-letter attribute's name and data type
MAX_REASON = 256  # bytes of a dead-letter reason
DEAD_LETTER_ROOM = sum(map(len, REASON)) + MAX_REASON  # bytes a job leaves for its reason


class Job(BaseModel):
    kind: str = Field(min_length=1, max_length=100)
    payload: dict[str, Any] = {}


class JobMessage(BaseModel):
    """The body on the wire."""

    tenant_id: str
    job_id: str
    due_at: float  # unix seconds
    job: Job


class JobQueue:
    def __init__(self, sqs_for: Callable[[TenantContext], Any], clock: Callable[[], float] = time.time,
                 max_native_delay: int = SQS_MAX_DELAY, max_message_bytes: int = SQS_MAX_MESSAGE) -> None:
        if not 0 <= max_native_delay <= SQS_MAX_DELAY:
            raise ValueError(f"max_native_delay must be within 0..{SQS_MAX_DELAY}")
        if not SQS_MIN_MESSAGE <= max_message_bytes <= SQS_MAX_MESSAGE:
            raise ValueError(f"max_message_bytes must be within {SQS_MIN_MESSAGE}..{SQS_MAX_MESSAGE}")
        self.sqs_for, self.clock, self.max_native_delay = sqs_for, clock, max_native_delay
        self.max_message_bytes = max_message_bytes

    def schedule(self, ctx: TenantContext, job: Job, delay: int = 0) -> str:
        ctx = verified(ctx)
        if type(delay) is not int or not 0 <= delay <= MAX_DELAY:
            raise InvalidRequest(f"delay must be whole seconds within 0..{MAX_DELAY}")
        message = JobMessage(tenant_id=ctx.key, job_id=uuid.uuid4().hex, due_at=self.clock() + delay, job=job)
        body = message.model_dump_json()
        # SQS counts UTF-8 bytes (AWS refuses more; moto counts characters and lets them through).
        if (size := len(body.encode())) > (most := self.max_message_bytes - DEAD_LETTER_ROOM):
            raise InvalidRequest(f"the job's message is {size} bytes; the limit is {most} (the queue's "
                                 f"{self.max_message_bytes} less {DEAD_LETTER_ROOM} kept to dead-letter it with "
                                 "its reason; put a large payload in the tenant's objects and name its key)")
        self._send(ctx, body, delay)
        return message.job_id

    def _send(self, ctx: TenantContext, body: str, delay: float) -> None:
        with aws_errors(ctx, "SQS", "send a job"):
            self.sqs_for(ctx).send_message(QueueUrl=ctx.resources.queue_url, MessageBody=body,
                                           DelaySeconds=max(0, min(int(delay + 0.999), self.max_native_delay)))

    def _dead_letter(self, ctx: TenantContext, sqs: Any, body: str, reason: str) -> None:
        """``body`` to the DLQ, untouched, with ``reason`` cut to the room it leaves
        under ``max_message_bytes`` (SQS counts the attribute with the body)."""
        room = min(MAX_REASON, self.max_message_bytes - len(body.encode()) - sum(map(len, REASON)))
        cut = reason.encode()[:max(room, 0)].decode(errors="ignore")  # never half a character
        attributes = {"MessageAttributes": {REASON[0]: {"DataType": REASON[1], "StringValue": cut}}} if cut else {}
        with aws_errors(ctx, "SQS", "dead-letter a job"):
            sqs.send_message(QueueUrl=ctx.resources.dlq_url, MessageBody=body, **attributes)

    def work(self, ctx: TenantContext, handler: Callable[[Job, JobMessage], None], max_messages: int = 10,
             wait_seconds: int = 0) -> dict[str, int]:
        """Receive one batch from ctx's queue: run due jobs (deleted on success;
        a failing handler leaves the message for SQS's redrive), re-enqueue early
        ones, dead-letter foreign or malformed ones. Returns counts."""
        ctx = verified(ctx)
        sqs, res = self.sqs_for(ctx), ctx.resources
        counts = {"done": 0, "deferred": 0, "dead_lettered": 0, "failed": 0}
        with aws_errors(ctx, "SQS", "receive jobs"):
            resp = sqs.receive_message(QueueUrl=res.queue_url, MaxNumberOfMessages=max_messages,
                                       WaitTimeSeconds=wait_seconds)
        for raw in resp.get("Messages", []):
            try:
                message = JobMessage.model_validate_json(raw["Body"])
                reason = None if message.tenant_id == ctx.key else \
                    f"tenant {message.tenant_id!r} on the queue of {ctx.key!r}"
            except ValidationError:
                message, reason = None, "malformed job message"
            if reason is not None:
                self._dead_letter(ctx, sqs, raw["Body"], reason)
                counts["dead_lettered"] += 1
            elif (remaining := message.due_at - self.clock()) > 0:
                self._send(ctx, message.model_dump_json(), remaining)
                counts["deferred"] += 1
            else:
                try:
                    handler(message.job, message)
                except Exception:
                    # Left for SQS's redrive; logged, or a caller sees only the count.
                    log.exception("job %s (kind %r) of %s failed in its handler; left for the redrive",
                                  message.job_id, message.job.kind, ctx.key)
                    counts["failed"] += 1
                    continue
                counts["done"] += 1
            with aws_errors(ctx, "SQS", "delete a job"):
                sqs.delete_message(QueueUrl=res.queue_url, ReceiptHandle=raw["ReceiptHandle"])
        return counts
