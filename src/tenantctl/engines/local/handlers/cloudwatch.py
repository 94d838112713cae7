"""CloudWatch metric alarms: PutMetricAlarm creates or overwrites by name."""

from __future__ import annotations

from typing import Any

from tenantctl.engines.local.handlers.base import Context, Desired, Handler, as_int, ignore_missing


class MetricAlarmHandler(Handler):
    type = "aws:cloudwatch/metricAlarm:MetricAlarm"
    replace_on = ("name",)

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
        return {"arn": f"arn:aws:cloudwatch:{ctx.region}:{ctx.account_id}:alarm:{rid}", "tagsAll": d.tags()}

    def remove(self, ctx: Context, rid: str, d: Desired) -> None:
        ignore_missing(lambda: ctx.client("cloudwatch").delete_alarms(AlarmNames=[rid]))


HANDLERS = (MetricAlarmHandler(),)
