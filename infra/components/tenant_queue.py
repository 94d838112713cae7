"""TenantQueue: the tenant's delay queue and its dead-letter queue, both
encrypted with the tenant's key."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from tenantctl import naming
from tenantctl.models import QueueSpec

DLQ_RETENTION_SECONDS = 14 * 24 * 3600  # the maximum: a DLQ is for inspection
KEY_REUSE_SECONDS = 300  # fewer KMS calls, bounded exposure of a data key


@dataclass
class TenantQueueArgs:
    tenant_id: str
    kms_key_arn: pulumi.Input[str]
    spec: QueueSpec
    tags: dict[str, str]
    workspace: str | None = None  # a workspace's queues (its own names), else the tenant's


class TenantQueue(pulumi.ComponentResource):
    def __init__(self, name: str, args: TenantQueueArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("tenantctl:sqs:TenantQueue", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        names = naming.OwnerNames(args.tenant_id, args.workspace)
        encryption = {"kms_master_key_id": args.kms_key_arn, "kms_data_key_reuse_period_seconds": KEY_REUSE_SECONDS}
        dlq = aws.sqs.Queue(f"{name}-dlq", name=names.dlq,
                            message_retention_seconds=DLQ_RETENTION_SECONDS, tags=args.tags, opts=child,
                            **encryption)
        queue = aws.sqs.Queue(
            f"{name}-queue", name=names.queue, delay_seconds=args.spec.delay_seconds,
            message_retention_seconds=args.spec.retention_seconds,
            redrive_policy=pulumi.Output.json_dumps({"deadLetterTargetArn": dlq.arn,
                                                     "maxReceiveCount": args.spec.max_receive_count}),
            tags=args.tags, opts=child, **encryption)
        self.queue_name, self.dlq_name = names.queue, names.dlq
        self.url, self.arn = queue.url, queue.arn
        self.dlq_url, self.dlq_arn = dlq.url, dlq.arn
        self.register_outputs({"url": self.url, "arn": self.arn, "dlq_url": self.dlq_url, "dlq_arn": self.dlq_arn})
