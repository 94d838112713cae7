"""A tenant's prefix kept in step between two cells' buckets (a move between
cells), on moto in process: versioned buckets as the cells have them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import boto3
import pytest

from tenantctl.transfer.prefix_sync import Copied, Place, carry_late, listing, remove, sync

PREFIX = "tenants/acme/"
OLD, NEW = Place("cell-a", PREFIX), Place("cell-b", PREFIX)


@pytest.fixture
def s3(moto_account):
    client = boto3.client("s3", region_name="us-east-1")
    for place in (OLD, NEW):
        client.create_bucket(Bucket=place.bucket)
        client.put_bucket_versioning(Bucket=place.bucket, VersioningConfiguration={"Status": "Enabled"})
    return client


@pytest.fixture
def key_arn(moto_account) -> str:
    return boto3.client("kms", region_name="us-east-1").create_key()["KeyMetadata"]["Arn"]


def put(s3, place: Place, name: str, body: bytes = b"x", **extra) -> None:
    s3.put_object(Bucket=place.bucket, Key=place.prefix + name, Body=body, **extra)


def names(s3, place: Place) -> set[str]:
    return {key.removeprefix(place.prefix) for key in listing(s3, place)}


def test_passes_copy_what_changed_keep_tags_and_key_and_delete_only_what_the_source_held(s3, key_arn):
    put(s3, OLD, "a", b"one")
    put(s3, OLD, "uploads/tmp/b", Tagging="tenantctl-class=tmp-7d")
    s3.put_object(Bucket=OLD.bucket, Key="tenants/acme-corp/c", Body=b"twin")  # another tenant's: not ours
    copied = sync(s3, OLD, NEW, key_arn, Copied())
    assert {o["Key"] for o in s3.list_objects_v2(Bucket=NEW.bucket)["Contents"]} == {
        PREFIX + "a", PREFIX + "uploads/tmp/b"} and copied.objects == 2
    head = s3.head_object(Bucket=NEW.bucket, Key=PREFIX + "a")
    assert (head["ServerSideEncryption"], head["SSEKMSKeyId"]) == ("aws:kms", key_arn)
    assert s3.get_object_tagging(Bucket=NEW.bucket, Key=PREFIX + "uploads/tmp/b")["TagSet"] == [
        {"Key": "tenantctl-class", "Value": "tmp-7d"}]

    assert sync(s3, OLD, NEW, key_arn, copied).objects == 2  # nothing changed: nothing copied
    put(s3, OLD, "a", b"two")  # changed
    s3.delete_object(Bucket=OLD.bucket, Key=PREFIX + "uploads/tmp/b")  # deleted
    put(s3, OLD, "c")  # new
    put(s3, NEW, "stale")  # written to the target by a runtime holding the other record: never in the source
    copied = sync(s3, OLD, NEW, key_arn, copied)
    assert (copied.objects, copied.removed) == (4, 1)
    assert names(s3, NEW) == {"a", "c", "stale"}
    assert s3.get_object(Bucket=NEW.bucket, Key=PREFIX + "a")["Body"].read() == b"two"


def test_late_objects_are_carried_unless_deleted_in_the_target_and_removal_leaves_no_version(s3, key_arn):
    put(s3, OLD, "a")
    put(s3, OLD, "deleted-since")
    sync(s3, OLD, NEW, key_arn, Copied())
    s3.delete_object(Bucket=NEW.bucket, Key=PREFIX + "deleted-since")  # the tenant deleted it after the switch
    put(s3, OLD, "late")
    assert carry_late(s3, OLD, NEW, key_arn) == [PREFIX + "late"]
    assert names(s3, NEW) == {"a", "late"}
    assert remove(s3, OLD) == 3 and s3.list_object_versions(Bucket=OLD.bucket, Prefix=PREFIX).get("Versions") is None


def test_a_pass_since_both_prefixes_were_in_step_copies_only_what_changed_after(s3, key_arn):
    put(s3, OLD, "a")
    put(s3, OLD, "b")
    sync(s3, OLD, NEW, key_arn, Copied())  # in step, as at a switch
    put(s3, NEW, "after-the-switch")
    switched = datetime.now(UTC) + timedelta(hours=1)  # every object here older than the switch: in step then
    assert sync(s3, NEW, OLD, key_arn, Copied(), since=switched).objects == 1  # only the one missing there
    assert names(s3, OLD) == {"a", "b", "after-the-switch"}
    assert sync(s3, NEW, OLD, key_arn, Copied()).objects == 3  # without ``since``: every object once more


def test_a_prefix_moves_to_a_bucket_of_another_region_under_the_new_key_with_each_sides_client(s3, key_arn):
    """A move to another account or region: each place with its own client,
    the copy sent to the target's region and sealed under the target's key."""
    eu = boto3.client("s3", region_name="eu-west-1")
    eu.create_bucket(Bucket="cell-eu", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    eu.put_bucket_versioning(Bucket="cell-eu", VersioningConfiguration={"Status": "Enabled"})
    new_key = boto3.client("kms", region_name="eu-west-1").create_key()["KeyMetadata"]["Arn"]
    away = Place("cell-eu", PREFIX, client=eu)
    put(s3, OLD, "a", b"one", Tagging="tenantctl-class=tmp-7d")
    put(s3, OLD, "b")
    unused = object()  # the pass's own client is never used when both places name theirs
    copied = sync(unused, Place(OLD.bucket, PREFIX, client=s3), away, new_key, Copied())
    assert copied.objects == 2 and names(eu, away) == {"a", "b"}
    head = eu.head_object(Bucket="cell-eu", Key=PREFIX + "a")
    assert (head["ServerSideEncryption"], head["SSEKMSKeyId"]) == ("aws:kms", new_key)
    assert eu.get_object_tagging(Bucket="cell-eu", Key=PREFIX + "a")["TagSet"] == [
        {"Key": "tenantctl-class", "Value": "tmp-7d"}]
    s3.delete_object(Bucket=OLD.bucket, Key=PREFIX + "b")
    put(s3, OLD, "late")
    assert sync(s3, OLD, away, new_key, copied).removed == 1 and names(eu, away) == {"a", "late"}
    assert remove(s3, away) > 0 and names(eu, away) == set()


class _NoServerSideCopy:
    """A target account's client that may not read the source's bucket: a server-side copy fails the test."""

    def __init__(self, client) -> None:
        self.client = client

    def __getattr__(self, name: str):
        if name == "copy_object":
            raise AssertionError("a server-side copy across accounts needs the old bucket's policy")
        return getattr(self.client, name)


def test_a_prefix_moves_to_another_account_read_and_written_by_each_sides_own_client(s3, key_arn):
    """Across accounts, no account reads the other's bucket or key: each
    object is read by the source's client and written by the target's, under
    the new key, with its tags, metadata and content type."""
    eu = boto3.client("s3", region_name="eu-west-1")
    eu.create_bucket(Bucket="cell-other", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    eu.put_bucket_versioning(Bucket="cell-other", VersioningConfiguration={"Status": "Enabled"})
    new_key = boto3.client("kms", region_name="eu-west-1").create_key()["KeyMetadata"]["Arn"]
    away = Place("cell-other", PREFIX, client=_NoServerSideCopy(eu), other_account=True)
    put(s3, OLD, "a", b"one", Tagging="tenantctl-class=tmp-7d&b=2", Metadata={"origin": "upload"},
        ContentType="text/plain")
    put(s3, OLD, "b", b"two")
    copied = sync(object(), Place(OLD.bucket, PREFIX, client=s3), away, new_key, Copied())
    assert copied.objects == 2 and names(eu, away) == {"a", "b"}
    got = eu.get_object(Bucket="cell-other", Key=PREFIX + "a")
    assert (got["Body"].read(), got["ServerSideEncryption"], got["SSEKMSKeyId"]) == (b"one", "aws:kms", new_key)
    assert (got["Metadata"], got["ContentType"]) == ({"origin": "upload"}, "text/plain")
    assert eu.get_object_tagging(Bucket="cell-other", Key=PREFIX + "a")["TagSet"] == [
        {"Key": "tenantctl-class", "Value": "tmp-7d"}, {"Key": "b", "Value": "2"}]
    assert eu.get_object_tagging(Bucket="cell-other", Key=PREFIX + "b")["TagSet"] == []
    put(s3, OLD, "late")
    assert carry_late(object(), Place(OLD.bucket, PREFIX, client=s3), away, new_key) == [PREFIX + "late"]
