"""A cell's declared alarm subscriptions (``CellSpec.alarm_subscriptions``): every
alarm topic of its tenants (and their workspaces) is subscribed to them, `check`
and `refresh` take them as declared, and one undeclared beside them still fails
`check` and is removed by the repair while the declared one stays.

A project of its own on the session's sandbox whose default cell's stack file
declares an SQS queue of the operators. The default cell is up already (its
outputs exist), so provisioning does not apply it again: only this project's
tenant stack reads the declaration."""

from __future__ import annotations

import pytest
from fault_tools import Cli, aws, listed
from faults import FAULT_AFTER_ENV, FAULT_EXIT_CODE

from tenantctl import naming
from tenantctl.errors import CHANGES_PENDING
from tenantctl.models import CellSpec, TenantSpec, WorkspaceSpec
from tenantctl.stackconfig import read_cell, stack_file, write_cell, write_tenant

pytestmark = pytest.mark.integration

TENANT, WS = "as-acme", "ops"


@pytest.fixture(scope="module")
def ops_queue(sandbox) -> str:
    sqs = aws(sandbox, "sqs")
    url = sqs.create_queue(QueueName="as-operators-alarms")["QueueUrl"]
    return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]


@pytest.fixture(scope="module")
def cli(sandbox, tmp_path_factory, ops_queue) -> Cli:
    cli = Cli.create(sandbox, tmp_path_factory.mktemp("alarm-subscriptions"))
    write_cell(cli.root / "stacks", CellSpec(alarm_subscriptions=[{"protocol": "sqs", "endpoint": ops_queue}]))
    return cli


@pytest.fixture(scope="module")
def tenant(cli):
    write_tenant(cli.root / "stacks", TenantSpec(id=TENANT, cell="default", workspaces=[WorkspaceSpec(name=WS)]))
    run = cli("provision", TENANT, "--json")  # its post-check passes with the subscriptions in place
    assert run.returncode == 0, run
    yield TENANT
    gone = cli("deprovision", TENANT, "--yes", "--json")
    assert gone.returncode == 0, gone


def topics(sandbox) -> list[str]:
    """The tenant's and its workspace's alarm topics."""
    names = {naming.resource_name(TENANT, "alarms"), naming.resource_name(naming.ws_stem(TENANT, WS), "alarms")}
    return [t["TopicArn"] for t in listed(aws(sandbox, "sns"), "list_topics", "Topics")
            if t["TopicArn"].split(":")[-1] in names]


def subscriptions(sandbox, topic: str) -> list[tuple[str, str]]:
    return [(s["Protocol"], s["Endpoint"])
            for s in aws(sandbox, "sns").list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]]


def test_every_alarm_topic_of_the_cell_is_subscribed_and_checks_clean(tenant, cli, sandbox, ops_queue):
    found = topics(sandbox)
    assert len(found) == 2
    for topic in found:
        assert subscriptions(sandbox, topic) == [("sqs", ops_queue)]
    checked = cli("check", TENANT, "--json")
    assert checked.returncode == 0, checked
    access = [c for c in checked.json()["checks"] if c["name"] == "topic-access"]
    assert len(access) == 2 and all(c["outcome"] == "pass" for c in access)
    assert cli("refresh", TENANT).returncode == 0


def test_an_undeclared_subscription_beside_the_declared_one_fails_and_only_it_is_removed(tenant, cli, sandbox,
                                                                                         ops_queue):
    sns = aws(sandbox, "sns")
    topic = next(t for t in topics(sandbox) if t.endswith(f":{naming.resource_name(TENANT, 'alarms')}"))
    extra = sns.subscribe(TopicArn=topic, Protocol="email", Endpoint="someone@example.org",
                          ReturnSubscriptionArn=True)["SubscriptionArn"]
    try:
        checked = cli("check", TENANT, "--json")
        assert checked.returncode == 8, checked
        [failed] = [c for c in checked.json()["checks"] if c["outcome"] == "fail"]
        assert failed["name"] == "topic-access" and "someone@example.org" in failed["detail"]
        assert ops_queue not in failed["detail"]

        found = cli("refresh", TENANT, "--json")
        assert found.returncode == CHANGES_PENDING, found
        [drift] = found.json()["tenants"]
        assert drift["resources"] == []
        assert [(o["kind"], "someone@example.org" in o["name"]) for o in drift["orphans"]] == [
            ("sns:subscription", True)]

        repaired = cli("provision", TENANT, "--yes", "--json")
        assert repaired.returncode == 0, repaired
        assert [o["removed"] for o in repaired.json()["orphans"]] == ["unsubscribed"]
        assert subscriptions(sandbox, topic) == [("sqs", ops_queue)]
        assert cli("refresh", TENANT).returncode == 0 and cli("check", TENANT).returncode == 0
    finally:
        if ("email", "someone@example.org") in subscriptions(sandbox, topic):
            sns.unsubscribe(SubscriptionArn=extra)


def new_queue(sandbox, name: str) -> str:
    sqs = aws(sandbox, "sqs")
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]


def access_checks(cli) -> tuple[int, dict[str, dict]]:
    """`check`'s exit code and its topic-access results, by area (the tenant's, the workspace's)."""
    run = cli("check", TENANT, "--json")
    return run.returncode, {c["area"]: c for c in run.json()["checks"] if c["name"] == "topic-access"}


def subscription_drift(cli, op: str, *topics: str) -> dict:
    """`refresh`'s drift of the tenant: one ``op`` of a TopicSubscription per topic, no orphan."""
    found = cli("refresh", TENANT, "--json")
    assert found.returncode == CHANGES_PENDING, found
    [drift] = found.json()["tenants"]
    assert drift["orphans"] == []
    assert sorted((r["op"], r["type"], r["arn"]) for r in drift["resources"]) == sorted(
        (op, "aws:sns/topicSubscription:TopicSubscription", topic) for topic in topics)
    return drift


def test_a_declared_subscription_not_applied_yet_fails_check_and_is_drift_the_repair_subscribes(
        tenant, cli, sandbox, ops_queue):
    """The cell's list gained a queue (no `apply` yet): each topic misses it. One subscribed by hand
    meanwhile (an earlier partial run) is no unmanaged subscription: the repair adopts it."""
    pager = new_queue(sandbox, "as-operators-pager")
    stacks = cli.root / "stacks"
    before = read_cell(stacks, "default")
    tenant_topic, ws_topic = sorted(topics(sandbox), key=lambda t: WS in t)
    try:
        write_cell(stacks, before.model_copy(update={"alarm_subscriptions": [
            *before.alarm_subscriptions, {"protocol": "sqs", "endpoint": pager}]}))
        code, access = access_checks(cli)
        assert code == 8 and {c["outcome"] for c in access.values()} == {"fail"}, access
        for c in access.values():
            assert f"sqs {pager}" in c["detail"] and "missing" in c["detail"] and "apply" in c["detail"], c
            assert f"sqs {ops_queue}" not in c["detail"], c

        drift = subscription_drift(cli, "create", tenant_topic, ws_topic)
        assert all(pager in str(r["diffs"]) for r in drift["resources"])

        # Subscribed by hand on the tenant's topic: declared, so neither unmanaged nor missing there.
        aws(sandbox, "sns").subscribe(TopicArn=tenant_topic, Protocol="sqs", Endpoint=pager)
        code, access = access_checks(cli)
        assert code == 8 and [a for a, c in access.items() if c["outcome"] == "fail"] == [f"workspace {WS}/aws"]
        found = cli("refresh", TENANT, "--json")
        assert found.returncode == CHANGES_PENDING, found
        [drift] = found.json()["tenants"]
        assert drift["orphans"] == [], drift["orphans"]
        assert [r["arn"] for r in drift["resources"]] == [ws_topic]
        assert "not in its stack yet" in drift["note"] and pager in drift["note"], drift["note"]

        repaired = cli("provision", TENANT, "--yes", "--json")
        assert repaired.returncode == 0, repaired
        assert repaired.json()["orphans"] == []
        for topic in (tenant_topic, ws_topic):
            assert sorted(subscriptions(sandbox, topic)) == sorted([("sqs", ops_queue), ("sqs", pager)])
        assert cli("refresh", TENANT).returncode == 0 and cli("check", TENANT).returncode == 0
    finally:
        write_cell(stacks, before)
        gone = cli("provision", TENANT, "--yes", "--json")  # the pager's subscriptions deleted again
        assert gone.returncode == 0, gone
        for topic in (tenant_topic, ws_topic):
            assert subscriptions(sandbox, topic) == [("sqs", ops_queue)]


def test_a_subscription_the_cell_no_longer_declares_fails_check_and_is_drift_the_repair_deletes(
        tenant, cli, sandbox, ops_queue):
    """The cell's list shrank (no `apply` since): each topic's stack still holds the dropped
    endpoint's subscription. `check` fails it and `refresh` names it, as the delete the repair does."""
    stacks = cli.root / "stacks"
    before = read_cell(stacks, "default")
    tenant_topic, ws_topic = sorted(topics(sandbox), key=lambda t: WS in t)
    try:
        write_cell(stacks, before.model_copy(update={"alarm_subscriptions": []}))
        code, access = access_checks(cli)
        assert code == 8 and {c["outcome"] for c in access.values()} == {"fail"}, access
        assert all(f"sqs {ops_queue}" in c["detail"] for c in access.values()), access

        drift = subscription_drift(cli, "delete", tenant_topic, ws_topic)
        assert all(r["diffs"] == [{"path": "subscription", "old": None, "new": f"sqs {ops_queue}"}]
                   for r in drift["resources"]), drift["resources"]
        assert all(naming.alarm_subscription_resource(r["name"].rsplit("-to-", 1)[0], "sqs", ops_queue) == r["name"]
                   for r in drift["resources"])
        said = cli("refresh", TENANT)
        assert said.returncode == CHANGES_PENDING and "2 no longer declared" in said.stdout, said
        assert "deleted out of band" not in said.stdout, said
        planned = cli("provision", TENANT, "--preview", "--json")  # the repair's plan: two deletes, no orphan
        assert planned.returncode == CHANGES_PENDING, planned
        assert planned.json()["orphans"] == [], planned.json()["orphans"]  # the stack's own, not unmanaged
        assert sorted((c["op"], c["name"]) for c in planned.json()["resources"]) == sorted(
            ("delete", r["name"]) for r in drift["resources"])

        repaired = cli("provision", TENANT, "--yes", "--json")
        assert repaired.returncode == 0, repaired
        for topic in (tenant_topic, ws_topic):
            assert subscriptions(sandbox, topic) == []
        assert cli("refresh", TENANT).returncode == 0 and cli("check", TENANT).returncode == 0
    finally:
        write_cell(stacks, before)
        back = cli("provision", TENANT, "--yes", "--json")
        assert back.returncode == 0, back
        for topic in (tenant_topic, ws_topic):
            assert subscriptions(sandbox, topic) == [("sqs", ops_queue)]


def test_a_declared_subscription_unsubscribed_out_of_band_fails_check_and_is_subscribed_again(
        tenant, cli, sandbox, ops_queue):
    sns = aws(sandbox, "sns")
    topic = next(t for t in topics(sandbox) if t.endswith(f":{naming.resource_name(TENANT, 'alarms')}"))
    [sub] = sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
    sns.unsubscribe(SubscriptionArn=sub["SubscriptionArn"])
    try:
        code, access = access_checks(cli)
        assert code == 8 and access["aws"]["outcome"] == "fail"
        assert access[f"workspace {WS}/aws"]["outcome"] == "pass"
        assert f"sqs {ops_queue}" in access["aws"]["detail"] and "missing" in access["aws"]["detail"]

        found = cli("refresh", TENANT, "--json")
        assert found.returncode == CHANGES_PENDING, found
        [drift] = found.json()["tenants"]
        assert [(r["op"], r["type"]) for r in drift["resources"]] == [
            ("delete", "aws:sns/topicSubscription:TopicSubscription")]  # the stack's, deleted out of band

        repaired = cli("apply", "--refresh", "--yes", "--json", "--match", "as-*")
        assert repaired.returncode == 0, repaired
        assert subscriptions(sandbox, topic) == [("sqs", ops_queue)]
        assert cli("refresh", TENANT).returncode == 0 and cli("check", TENANT).returncode == 0
    finally:
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=ops_queue)  # as the stack holds it, whatever failed


def test_apply_brings_a_changed_list_to_the_cells_tenants(tenant, cli, sandbox, ops_queue):
    """The cell's list is in its tenants' fingerprints: `apply` re-applies them when it changes
    (the cell's own stack reads none of it: not applied again)."""
    sqs = aws(sandbox, "sqs")
    url = sqs.create_queue(QueueName="as-operators-audit")["QueueUrl"]
    audit = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    stacks = cli.root / "stacks"
    before = read_cell(stacks, "default")
    try:
        added = cli("cell", "add", "default", "--alarm-subscription", f"sqs={ops_queue}",
                    "--alarm-subscription", f"sqs={audit}", "--write-only", "--json")
        assert added.returncode == 0, added
        run = cli("apply", "--json", "--match", "as-*")
        assert run.returncode == 0, run
        assert [(r["tenant_id"], r["action"]) for r in run.json()["results"]] == [(TENANT, "update")]
        assert run.json()["cells"] == []  # the cell itself: as applied
        for topic in topics(sandbox):
            assert sorted(subscriptions(sandbox, topic)) == sorted([("sqs", ops_queue), ("sqs", audit)])
    finally:
        write_cell(stacks, before)
    # Taking one away deletes a resource of each topic: asked about, as every delete is.
    unconfirmed = cli("apply", "--json", "--match", "as-*")
    assert unconfirmed.returncode == 1 and "deletes or replaces 2 resource(s)" in unconfirmed.stderr, unconfirmed
    again = cli("apply", "--yes", "--json", "--match", "as-*")
    assert again.returncode == 0, again
    for topic in topics(sandbox):
        assert subscriptions(sandbox, topic) == [("sqs", ops_queue)]
    assert cli("check", TENANT).returncode == 0


@pytest.mark.parametrize(("value", "code", "says"), [
    ("email=ops@example.org", 3, "a person to confirm"),
    ("sqs=arn:aws:lambda:us-east-1:123456789012:function:page", 3, "needs a sqs ARN"),
    ("sqs=arn:aws-cn:sqs:us-east-1:123456789012:q", 3, "partition"),
    ("sqs", 2, "PROTOCOL=ENDPOINT"),
])
def test_a_bad_subscription_is_refused_with_nothing_written(cli, value, code, says):
    path = stack_file(cli.root / "stacks", naming.PLATFORM_STACK)
    before = path.read_text()
    run = cli("cell", "add", "default", "--alarm-subscription", value, "--write-only", "--json")
    assert run.returncode == code, run
    assert says in run.stderr + run.stdout
    assert path.read_text() == before and read_cell(cli.root / "stacks", "default").alarm_subscriptions


def test_a_fresh_provisions_check_knows_the_subscriptions_from_its_up(cli, sandbox, ops_queue, aws_calls):
    """The post-provision check reads no subscription (nor the topic) back: the up made both."""
    from tenantctl.operations.deprovision import deprovision
    from tenantctl.operations.provision import provision
    from tenantctl.workspace import Workspace

    ws = Workspace(project_dir=cli.root, cwd=cli.root)
    record, _ = provision(ws, TenantSpec(id="as-calls"))
    calls = list(aws_calls)
    try:
        assert record.last_error is None
        assert "sns.Subscribe" in calls
        assert not {"sns.ListSubscriptionsByTopic", "sns.GetTopicAttributes"} & set(calls), [
            c for c in calls if c.startswith("sns.")]
        [topic] = [t["TopicArn"] for t in listed(aws(sandbox, "sns"), "list_topics", "Topics")
                   if t["TopicArn"].endswith(":tenantctl-as-calls-alarms")]
        assert subscriptions(sandbox, topic) == [("sqs", ops_queue)]
    finally:
        deprovision(ws, "as-calls", final_backup=False)


def test_refresh_judges_the_subscriptions_of_a_tenant_mid_move_against_its_stacks_cell(tenant, cli, sandbox,
                                                                                       ops_queue):
    """A move killed right after recording itself (its target spec not written: the stack is
    still its cell's, applied as before) leaves the move open; `refresh` still names the
    subscriptions the cell's list no longer declares, as `check` fails them. The move is recorded as
    `tenantctl move` records it: its target slot taken in the same write, given back after."""
    from tenant_runtime.models import MovePhase, TenantMove, Tier
    from tenantctl.workspace import Workspace

    registry = Workspace(project_dir=cli.root, cwd=cli.root).registry
    record = registry.require(TENANT)
    assert record.resources is not None and record.tier is Tier.pooled
    moving = registry.save_taking_slot(record, record.cell, Tier.dedicated, None, move=TenantMove(
        from_tier=Tier.pooled, to_tier=Tier.dedicated, from_cell=record.cell, to_cell=record.cell,
        phase=MovePhase.preparing, old_store=record.resources.store))
    assert moving is not None
    stacks = cli.root / "stacks"
    before = read_cell(stacks, "default")
    tenant_topic, ws_topic = sorted(topics(sandbox), key=lambda t: WS in t)
    try:
        write_cell(stacks, before.model_copy(update={"alarm_subscriptions": []}))
        drift = subscription_drift(cli, "delete", tenant_topic, ws_topic)
        assert drift["held"].startswith("moving (preparing"), drift["held"]
        write_cell(stacks, before)
        assert cli("refresh", TENANT, "--json").json()["tenants"][0]["resources"] == []
    finally:
        write_cell(stacks, before)
        registry.save_giving_slot(registry.require(TENANT), record.cell, Tier.dedicated, move=None)


def test_check_and_refresh_judge_a_tenant_mid_move_to_another_cell_against_its_stacks_cell(tenant, cli, sandbox,
                                                                                           ops_queue):
    """A move to another cell of the account, killed once its target spec is applied (``move:copying``):
    the stack subscribes the target cell's list while the record still names the old cell. `check` and
    `refresh` both take the stack's cell: the healthy tenant passes both, and the old cell's queue
    subscribed again by hand is foreign to both. The move is rolled back and the cell removed after."""
    target = new_queue(sandbox, "as-operators-other")
    added = cli("cell", "add", "as-b", "--region", sandbox.region, "--alarm-subscription", f"sqs={target}", "--json")
    assert added.returncode == 0, added
    sns = aws(sandbox, "sns")
    try:
        killed = cli("move", TENANT, "--cell", "as-b", env={FAULT_AFTER_ENV: "move:copying"})
        assert killed.returncode == FAULT_EXIT_CODE, killed
        tenant_topic, ws_topic = sorted(topics(sandbox), key=lambda t: WS in t)
        assert [subscriptions(sandbox, t) for t in (tenant_topic, ws_topic)] == [[("sqs", target)]] * 2
        code, access = access_checks(cli)
        assert code == 0 and {c["outcome"] for c in access.values()} == {"pass"}, access
        assert cli("refresh", TENANT).returncode == 0

        stale = sns.subscribe(TopicArn=tenant_topic, Protocol="sqs", Endpoint=ops_queue,
                              ReturnSubscriptionArn=True)["SubscriptionArn"]
        try:
            code, access = access_checks(cli)
            assert code == 8 and access["aws"]["outcome"] == "fail", access
            assert f"sqs {ops_queue}" in access["aws"]["detail"], access
            found = cli("refresh", TENANT, "--json")
            assert found.returncode == CHANGES_PENDING, found
        finally:
            sns.unsubscribe(SubscriptionArn=stale)
    finally:
        rolled = cli("move", TENANT, "--rollback", "--json")
        assert rolled.returncode == 0, rolled
        assert cli("check", TENANT).returncode == 0
        assert cli("cell", "remove", "as-b", "--yes").returncode == 0
