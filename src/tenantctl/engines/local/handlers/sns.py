"""SNS topics: CreateTopic is idempotent by name, so find and make are one call,
which also sets the attributes (a topic made by an earlier run gets them again in configure)."""

from __future__ import annotations

from typing import Any

from tenantctl.engines.local.handlers.base import Context, Desired, Handler, ignore_missing, managed_tags, read_or_none

ATTRIBUTES = {"displayName": "DisplayName", "kmsMasterKeyId": "KmsMasterKeyId", "policy": "Policy"}


class TopicHandler(Handler):
    type = "aws:sns/topic:Topic"
    replace_on = ("name", "namePrefix", "fifoTopic")
    find_when_recovering = True  # make adopts a topic of that name anyway

    def find(self, ctx: Context, d: Desired) -> str | None:
        arn = ctx.arn("sns", d.physical_name())
        sns = ctx.client("sns")
        return arn if read_or_none(lambda: sns.get_topic_attributes(TopicArn=arn)) else None

    def make(self, ctx: Context, d: Desired) -> str:
        attributes = {attr: str(d.get(key)) for key, attr in ATTRIBUTES.items() if d.get(key) is not None}
        arn = ctx.client("sns").create_topic(Name=d.physical_name(), Tags=d.tag_list(),
                                             Attributes=attributes)["TopicArn"]
        d.known["attributes"] = True
        return arn

    def read(self, ctx: Context, rid: str | None, d: Desired) -> dict[str, Any] | None:
        sns = ctx.client("sns")
        got = rid and read_or_none(lambda: sns.get_topic_attributes(TopicArn=rid))
        if not got:
            return None
        attrs = got.get("Attributes", {})
        live: dict[str, Any] = {key: attrs.get(attr) for key, attr in ATTRIBUTES.items() if d.get(key) is not None}
        tags = sns.list_tags_for_resource(ResourceArn=rid).get("Tags", [])
        live["tags"] = managed_tags(d, {t["Key"]: t["Value"] for t in tags})
        return live

    def configure(self, ctx: Context, rid: str, d: Desired, olds: dict[str, Any] | None) -> dict[str, Any]:
        sns = ctx.client("sns")
        for key, attr in ATTRIBUTES.items():
            if d.get(key) is not None and not (olds is None and d.known.get("attributes")):
                sns.set_topic_attributes(TopicArn=rid, AttributeName=attr, AttributeValue=str(d.get(key)))
        if olds is not None and d.tags():
            sns.tag_resource(ResourceArn=rid, Tags=d.tag_list())
        return {"arn": rid, "name": d.physical_name(), "tagsAll": d.tags()}

    def remove(self, ctx: Context, rid: str, d: Desired) -> None:
        ignore_missing(lambda: ctx.client("sns").delete_topic(TopicArn=rid))


class TopicSubscriptionHandler(Handler):
    """A topic's subscription, its id the subscription's ARN (as pulumi-aws's). Subscribe
    answers the existing subscription's ARN for the same topic, protocol and endpoint."""

    type = "aws:sns/topicSubscription:TopicSubscription"
    replace_on = ("topic", "protocol", "endpoint")
    find_when_recovering = True  # make adopts the subscription of that endpoint anyway

    def find(self, ctx: Context, d: Desired) -> str | None:
        pages = ctx.client("sns").get_paginator("list_subscriptions_by_topic").paginate(TopicArn=d.get("topic"))
        found = read_or_none(lambda: [s for page in pages for s in page["Subscriptions"]
                                      if (s.get("Protocol"), s.get("Endpoint")) == (d.get("protocol"),
                                                                                    d.get("endpoint"))])
        return found[0]["SubscriptionArn"] if found else None

    def make(self, ctx: Context, d: Desired) -> str:
        return ctx.client("sns").subscribe(TopicArn=d.get("topic"), Protocol=d.get("protocol"),
                                           Endpoint=d.get("endpoint"), ReturnSubscriptionArn=True)["SubscriptionArn"]

    def read(self, ctx: Context, rid: str | None, d: Desired) -> dict[str, Any] | None:
        sns = ctx.client("sns")
        got = rid and read_or_none(lambda: sns.get_subscription_attributes(SubscriptionArn=rid))
        if not got:
            return None
        attrs = got.get("Attributes", {})
        return {"topic": attrs.get("TopicArn"), "protocol": attrs.get("Protocol"), "endpoint": attrs.get("Endpoint")}

    def configure(self, ctx: Context, rid: str, d: Desired, olds: dict[str, Any] | None) -> dict[str, Any]:
        return {"arn": rid}

    def remove(self, ctx: Context, rid: str, d: Desired) -> None:
        ignore_missing(lambda: ctx.client("sns").unsubscribe(SubscriptionArn=rid))


HANDLERS = (TopicHandler(), TopicSubscriptionHandler())
