"""Forwarding the jobs left in a tenant's old queue to its queue in another
region, on moto in process."""

from __future__ import annotations

import boto3
import botocore.exceptions
import pytest

from tenantctl.transfer.queue_forward import forward


def _queue(region: str, name: str) -> tuple[object, str]:
    sqs = boto3.client("sqs", region_name=region)
    return sqs, sqs.create_queue(QueueName=name)["QueueUrl"]


def _held(sqs, url: str) -> int:
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


def test_every_message_moves_once_with_its_attributes_and_leaves_the_old_queue(moto_account):
    old_sqs, old = _queue("us-east-1", "tenantctl-acme-jobs")
    new_sqs, new = _queue("eu-west-1", "tenantctl-acme-jobs")
    for i in range(23):  # more than two batches
        old_sqs.send_message(QueueUrl=old, MessageBody=f"job-{i}", MessageAttributes={
            "kind": {"DataType": "String", "StringValue": "reindex"},
            "n": {"DataType": "Number", "StringValue": str(i)}})
    assert forward(old_sqs, old, new_sqs, new) == 23
    assert _held(old_sqs, old) == 0
    got = {}
    while batch := new_sqs.receive_message(QueueUrl=new, MaxNumberOfMessages=10,
                                           MessageAttributeNames=["All"]).get("Messages", []):
        for m in batch:
            got[m["Body"]] = m["MessageAttributes"]
            new_sqs.delete_message(QueueUrl=new, ReceiptHandle=m["ReceiptHandle"])
    assert set(got) == {f"job-{i}" for i in range(23)}
    assert got["job-7"]["kind"]["StringValue"] == "reindex" and got["job-7"]["n"]["StringValue"] == "7"
    assert forward(old_sqs, old, new_sqs, new) == 0  # nothing left: a second run is a no-op


def test_a_target_that_refuses_leaves_every_message_in_the_old_queue(moto_account):
    old_sqs, old = _queue("us-east-1", "tenantctl-acme-jobs-dlq")
    new_sqs, new = _queue("eu-west-1", "tenantctl-acme-jobs-dlq")
    for i in range(3):
        old_sqs.send_message(QueueUrl=old, MessageBody=f"dead-{i}")
    new_sqs.delete_queue(QueueUrl=new)
    with pytest.raises(botocore.exceptions.ClientError):
        forward(old_sqs, old, new_sqs, new)
    assert _held(old_sqs, old) == 3

