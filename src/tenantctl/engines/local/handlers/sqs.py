"""SQS queues, found by name; every attribute is set on create and update."""

from __future__ import annotations

from typing import Any

from tenantctl.engines.local.handlers.base import (
    Context,
    Desired,
    Handler,
    ignore_missing,
    managed_tags,
    read_or_none,
)

# pulumi_aws input -> SQS attribute
ATTRIBUTES = {
    "delaySeconds": "DelaySeconds",
    "messageRetentionSeconds": "MessageRetentionPeriod",
    "visibilityTimeoutSeconds": "VisibilityTimeout",
    "maxMessageSize": "MaximumMessageSize",
    "receiveWaitTimeSeconds": "ReceiveMessageWaitTimeSeconds",
    "kmsMasterKeyId": "KmsMasterKeyId",
    "kmsDataKeyReusePeriodSeconds": "KmsDataKeyReusePeriodSeconds",
    "redrivePolicy": "RedrivePolicy",
    "policy": "Policy",
    "sqsManagedSseEnabled": "SqsManagedSseEnabled",
}


def _attr(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


# What SQS gives an attribute the program leaves unset (configure resets these).
DEFAULTS = {"DelaySeconds": "0", "MessageRetentionPeriod": "345600", "VisibilityTimeout": "30"}


def queue_attributes(d: Desired) -> dict[str, str]:
    return {attr: _attr(d.inputs[key]) for key, attr in ATTRIBUTES.items() if d.inputs.get(key) not in (None, "")}


class QueueHandler(Handler):
    type = "aws:sqs/queue:Queue"
    replace_on = ("name", "fifoQueue")
    read_defaults = {key: int(DEFAULTS[attr]) for key, attr in ATTRIBUTES.items() if attr in DEFAULTS}
    # CreateQueue answers the existing queue's URL when the attributes match, else refuses.
    taken_codes = ("QueueAlreadyExists", "QueueNameExists", "QueueDeletedRecently")

    def find(self, ctx: Context, d: Desired) -> str | None:
        found = read_or_none(lambda: ctx.client("sqs").get_queue_url(QueueName=d.physical_name()))
        return None if found is None else found["QueueUrl"]

    def read(self, ctx: Context, rid: str | None, d: Desired) -> dict[str, Any] | None:
        sqs = ctx.client("sqs")
        rid = rid or self.find(ctx, d)
        got = rid and read_or_none(lambda: sqs.get_queue_attributes(QueueUrl=rid, AttributeNames=["All"]))
        if not got:
            return None
        attrs = got.get("Attributes", {})
        live: dict[str, Any] = {key: attrs.get(attr) for key, attr in ATTRIBUTES.items()}
        live["tags"] = managed_tags(d, sqs.list_queue_tags(QueueUrl=rid).get("Tags", {}))
        return live

    def make(self, ctx: Context, d: Desired) -> str:
        return ctx.client("sqs").create_queue(QueueName=d.physical_name(), Attributes=queue_attributes(d),
                                              tags=d.tags())["QueueUrl"]

    def configure(self, ctx: Context, rid: str, d: Desired, olds: dict[str, Any] | None) -> dict[str, Any]:
        sqs = ctx.client("sqs")
        if olds is not None:
            # Inputs dropped since the last run fall back to SQS defaults.
            sqs.set_queue_attributes(QueueUrl=rid, Attributes={**DEFAULTS, **queue_attributes(d)})
            if d.tags():
                sqs.tag_queue(QueueUrl=rid, Tags=d.tags())
        # Read, not derived from the URL: the posture check's placement verdict reuses it (region, account).
        arn = sqs.get_queue_attributes(QueueUrl=rid, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        return {"arn": arn, "url": rid, "name": d.physical_name(), "tagsAll": d.tags()}

    def planned_outputs(self, ctx: Context, d: Desired) -> dict[str, Any]:
        name = d.physical_name()
        return {"arn": ctx.arn("sqs", name), "name": name}

    def remove(self, ctx: Context, rid: str, d: Desired) -> None:
        ignore_missing(lambda: ctx.client("sqs").delete_queue(QueueUrl=rid))


HANDLERS = (QueueHandler(),)
