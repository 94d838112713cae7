"""Forwarding what is left in a tenant's old queue to its new one, at the end
of a move to another account or region (docs/moves.md, "Queues").

Job messages are not sealed by the runtime (SQS encrypts them under the
tenant key server-side), so nothing is re-wrapped: each message left in the
old queue (or DLQ) is received, sent to the new one with its body and
message attributes, and deleted from the old one only once SQS accepted the
send. At least once: a run killed between the send and the delete sends that
message again on the next run (jobs are at-least-once with SQS anyway). A
message SQS refused to take is left in the old queue, visible again after its
visibility timeout, and the run fails naming it (nothing lost). A source
queue that no longer exists has nothing to forward.
"""

from __future__ import annotations

from typing import Any

from tenantctl.errors import TenantctlError

BATCH = 10  # SQS's most per ReceiveMessage / SendMessageBatch / DeleteMessageBatch
VISIBILITY = 60  # seconds a received message stays hidden while it is forwarded


def forward(source_sqs: Any, source_url: str, target_sqs: Any, target_url: str) -> int:
    """Move every message of ``source_url`` to ``target_url`` (each queue with
    the client of its own account and region); returns how many were moved."""
    moved = 0
    while True:
        try:
            received = source_sqs.receive_message(QueueUrl=source_url, MaxNumberOfMessages=BATCH,
                                                  WaitTimeSeconds=0, VisibilityTimeout=VISIBILITY,
                                                  MessageAttributeNames=["All"])
        except source_sqs.exceptions.QueueDoesNotExist:
            # Only the old stack's destroy removes it, after a forward that ended: a finalize killed
            # while destroying it and run again finds nothing left to forward.
            return moved
        messages = received.get("Messages", [])
        if not messages:
            return moved
        entries = [{"Id": str(i), "MessageBody": m["Body"],
                    **({"MessageAttributes": m["MessageAttributes"]} if m.get("MessageAttributes") else {})}
                   for i, m in enumerate(messages)]
        sent = target_sqs.send_message_batch(QueueUrl=target_url, Entries=entries)
        accepted = {s["Id"] for s in sent.get("Successful", [])}
        done = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                for i, m in enumerate(messages) if str(i) in accepted]
        if done:
            source_sqs.delete_message_batch(QueueUrl=source_url, Entries=done)
        moved += len(done)
        failed = sent.get("Failed", [])
        if failed:
            raise TenantctlError(f"{target_url}: {len(failed)} message(s) not accepted ({failed[0].get('Message')}); "
                                 f"left in {source_url}, {moved} forwarded")
