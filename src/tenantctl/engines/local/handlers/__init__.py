"""One handler module per AWS service (plus dynamic resources, stack
references and explicit providers); ``HANDLERS`` maps a Pulumi type token to
the handler that materialises it on the sandbox."""

from __future__ import annotations

from tenantctl.engines.local.handlers import (
    cloudwatch,
    dynamic,
    dynamodb,
    ec2,
    iam,
    kms,
    logs,
    rds,
    s3,
    secretsmanager,
    serverlessrepository,
    sns,
    sqs,
    stack_reference,
)
from tenantctl.engines.local.handlers.base import Context, Desired, Handler
from tenantctl.engines.local.handlers.invokes import INVOKES

HANDLERS: dict[str, Handler] = {
    h.type: h
    for module in (kms, s3, sqs, iam, secretsmanager, ec2, rds, dynamodb, sns, cloudwatch, logs,
                   serverlessrepository, dynamic, stack_reference)
    for h in module.HANDLERS
}

__all__ = ["HANDLERS", "INVOKES", "Context", "Desired", "Handler"]
