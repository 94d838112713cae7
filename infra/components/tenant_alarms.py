"""TenantAlarms: the tenant's SNS topic and CloudWatch alarms on its queues
and (dedicated) database. Removed with the tenant like everything else.

The topic is encrypted with the tenant's key, whose policy lets CloudWatch use
it for exactly these alarms (``naming.alarm_names``). Its subscriptions are its
cell's ``alarm_subscriptions`` (the operators' queue, function or pager), the
only ones it may have: `check` fails any other and a repair removes it."""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from tenantctl.naming import alarm_subscription_resource, alarm_topic_resource, resource_name

PERIOD = 300
STALE_AFTER_DELAY = 1800  # a job still queued 30 min after its delay is stuck
CPU_PERCENT = 80
FREE_STORAGE_FRACTION = 0.1


@dataclass
class TenantAlarmsArgs:
    tenant_id: str
    kms_key_arn: pulumi.Input[str]
    queue_name: str
    dlq_name: str
    delay_seconds: int
    tags: dict[str, str]
    db_identifier: str | None = None  # dedicated only
    db_storage_gb: int = 0
    subscriptions: list[dict[str, str]] = field(default_factory=list)  # its cell's: protocol, endpoint


class TenantAlarms(pulumi.ComponentResource):
    def __init__(self, name: str, args: TenantAlarmsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("tenantctl:cloudwatch:TenantAlarms", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        tid = args.tenant_id
        topic = alarm_topic_resource(name)
        self.topic = aws.sns.Topic(topic, name=resource_name(tid, "alarms"),
                                   kms_master_key_id=args.kms_key_arn, tags=args.tags, opts=child)

        def alarm(suffix: str, namespace: str, metric: str, dimensions: dict[str, str], statistic: str,
                  comparison: str, threshold: float, periods: int = 1) -> None:
            aws.cloudwatch.MetricAlarm(
                f"{name}-{suffix}", name=resource_name(tid, suffix), namespace=namespace, metric_name=metric,
                dimensions=dimensions, statistic=statistic, period=PERIOD, evaluation_periods=periods,
                comparison_operator=comparison, threshold=threshold, treat_missing_data="notBreaching",
                alarm_actions=[self.topic.arn], ok_actions=[self.topic.arn], tags=args.tags, opts=child)

        alarm("dlq-depth", "AWS/SQS", "ApproximateNumberOfMessagesVisible", {"QueueName": args.dlq_name},
              "Maximum", "GreaterThanThreshold", 0)
        alarm("queue-age", "AWS/SQS", "ApproximateAgeOfOldestMessage", {"QueueName": args.queue_name},
              "Maximum", "GreaterThanThreshold", args.delay_seconds + STALE_AFTER_DELAY)
        if args.db_identifier:
            db = {"DBInstanceIdentifier": args.db_identifier}
            alarm("db-storage", "AWS/RDS", "FreeStorageSpace", db, "Minimum", "LessThanThreshold",
                  args.db_storage_gb * FREE_STORAGE_FRACTION * 1024 ** 3)
            alarm("db-cpu", "AWS/RDS", "CPUUtilization", db, "Average", "GreaterThanThreshold", CPU_PERCENT, 3)
        for sub in args.subscriptions:
            # An https endpoint must confirm by itself (a paging service does): nobody clicks thousands of links.
            aws.sns.TopicSubscription(alarm_subscription_resource(topic, sub["protocol"], sub["endpoint"]),
                                      topic=self.topic.arn, protocol=sub["protocol"], endpoint=sub["endpoint"],
                                      endpoint_auto_confirms=sub["protocol"] == "https" or None, opts=child)
        self.register_outputs({"topic_arn": self.topic.arn})
