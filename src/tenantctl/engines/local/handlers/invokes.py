"""Provider functions (Mocks.call) the program uses, answered from moto."""

from __future__ import annotations

from typing import Any

from tenantctl.engines.local.handlers.base import Context


def caller_identity(ctx: Context, args: dict[str, Any]) -> dict[str, Any]:
    who = ctx.caller_identity()
    return {"accountId": who["Account"], "arn": who["Arn"], "userId": who["UserId"], "id": who["Account"]}


def availability_zones(ctx: Context, args: dict[str, Any]) -> dict[str, Any]:
    filters = [{"Name": "state", "Values": [args["state"]]}] if args.get("state") else []
    zones = ctx.client("ec2").describe_availability_zones(Filters=filters)["AvailabilityZones"]
    zones.sort(key=lambda z: z["ZoneName"])
    return {"names": [z["ZoneName"] for z in zones], "zoneIds": [z.get("ZoneId", "") for z in zones],
            "groupNames": [z.get("GroupName", ctx.region) for z in zones], "id": ctx.region, "region": ctx.region}


def region(ctx: Context, args: dict[str, Any]) -> dict[str, Any]:
    return {"name": ctx.region, "region": ctx.region, "id": ctx.region,
            "endpoint": f"ec2.{ctx.region}.amazonaws.com", "description": ctx.region}


def lambda_function(ctx: Context, args: dict[str, Any]) -> dict[str, Any]:
    fn = ctx.client("lambda").get_function(FunctionName=args["functionName"])["Configuration"]
    return {"arn": fn["FunctionArn"], "functionName": fn["FunctionName"], "role": fn["Role"],
            "runtime": fn.get("Runtime", ""), "handler": fn.get("Handler", ""), "id": fn["FunctionName"],
            "qualifiedArn": fn["FunctionArn"], "version": fn.get("Version", "$LATEST")}


INVOKES = {
    "aws:index/getCallerIdentity:getCallerIdentity": caller_identity,
    "aws:index/getAvailabilityZones:getAvailabilityZones": availability_zones,
    "aws:index/getRegion:getRegion": region,
    "aws:lambda/getFunction:getFunction": lambda_function,
}
