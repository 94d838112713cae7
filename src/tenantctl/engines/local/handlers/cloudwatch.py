"""CloudWatch metric alarms: PutMetricAlarm creates or overwrites by name."""

from __future__ import annotations

from typing import Any

from tenantctl.engines.local.handlers.base import Context, Desired, Handler, as_int, ignore_missing

# input -> DescribeAlarms field, for what a refresh reads back (tags are only set on create).
FIELDS = {"namespace": "Namespace", "metricName": "MetricName", "statistic": "Statistic", "period": "Period",
          "evaluationPeriods": "EvaluationPeriods", "threshold": "Threshold",
          "comparisonOperator": "ComparisonOperator", "treatMissingData": "TreatMissingData",
          "alarmActions": "AlarmActions", "okActions": "OKActions", "actionsEnabled": "ActionsEnabled"}


class MetricAlarmHandler(Handler):
    type = "aws:cloudwatch/metricAlarm:MetricAlarm"
    replace_on = ("name",)
    read_defaults = {"treatMissingData": "missing", "alarmActions": [], "okActions": [], "actionsEnabled": True}
    find_when_recovering = True  # PutMetricAlarm makes or overwrites by name anyway

    def find(self, ctx: Context, d: Desired) -> str | None:
        name = d.physical_name()
        return name if ctx.client("cloudwatch").describe_alarms(AlarmNames=[name])["MetricAlarms"] else None

    def read(self, ctx: Context, rid: str | None, d: Desired) -> dict[str, Any] | None:
        alarms = ctx.client("cloudwatch").describe_alarms(AlarmNames=[rid or d.physical_name()])["MetricAlarms"]
        if not alarms:
            return None
        alarm = alarms[0]
        live = {key: alarm.get(field) for key, field in FIELDS.items()}
        live["dimensions"] = {dim["Name"]: dim["Value"] for dim in alarm.get("Dimensions", [])}
        return live

    def make(self, ctx: Context, d: Desired) -> str:
        return d.physical_name()

    def configure(self, ctx: Context, rid: str, d: Desired, olds: dict[str, Any] | None) -> dict[str, Any]:
        args: dict[str, Any] = {
            "AlarmName": rid, "Namespace": d.get("namespace"), "MetricName": d.get("metricName"),
            "Dimensions": [{"Name": k, "Value": str(v)} for k, v in (d.get("dimensions") or {}).items()],
            "Statistic": d.get("statistic"), "Period": as_int(d.get("period")),
            "EvaluationPeriods": as_int(d.get("evaluationPeriods")), "Threshold": float(d.get("threshold")),
            "ComparisonOperator": d.get("comparisonOperator"),
            "TreatMissingData": d.get("treatMissingData", "missing"),
            "AlarmActions": list(d.get("alarmActions", [])), "OKActions": list(d.get("okActions", [])),
            "ActionsEnabled": bool(d.get("actionsEnabled", True)), "Tags": d.tag_list(),
        }
        if d.get("alarmDescription"):
            args["AlarmDescription"] = d.get("alarmDescription")
        ctx.client("cloudwatch").put_metric_alarm(**args)
        return {"arn": ctx.arn("cloudwatch", f"alarm:{rid}"), "tagsAll": d.tags()}

    def remove(self, ctx: Context, rid: str, d: Desired) -> None:
        ignore_missing(lambda: ctx.client("cloudwatch").delete_alarms(AlarmNames=[rid]))


HANDLERS = (MetricAlarmHandler(),)
