"""Sessions made by tenant_runtime.boto_sessions parse each botocore data file once per process."""

from __future__ import annotations

import boto3
import pytest
from botocore import loaders

from tenant_runtime import boto_sessions

ENDPOINT = "http://127.0.0.1:9"  # never called: making a client sends no request


@pytest.fixture
def parsed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The data files parsed from now on, by a shared loader of this test's own."""
    monkeypatch.setattr(boto_sessions, "_loader", None)
    seen: list[str] = []
    load = loaders.JSONFileLoader.load_file

    def counted(self, file_path: str) -> object:
        seen.append(file_path)
        return load(self, file_path)

    monkeypatch.setattr(loaders.JSONFileLoader, "load_file", counted)
    return seen


def make(session: boto3.session.Session, service: str) -> None:
    session.client(service, region_name="us-east-1", endpoint_url=ENDPOINT,
                   aws_access_key_id="k", aws_secret_access_key="s")


def test_a_second_session_parses_no_data_file_again(parsed: list[str]) -> None:
    make(boto_sessions.new_session(), "kms")
    assert any("/kms/" in p for p in parsed)  # the fixture sees parsing at all
    parsed.clear()

    make(boto_sessions.new_session(region_name="eu-west-1"), "kms")
    make(boto_sessions.share_loader(boto3.session.Session()), "kms")
    make(boto_sessions.default_session(), "kms")

    assert parsed == []


def test_a_plain_session_parses_them_again(parsed: list[str]) -> None:
    make(boto_sessions.new_session(), "sqs")
    parsed.clear()

    make(boto3.session.Session(), "sqs")

    assert any("/sqs/" in p for p in parsed)


def test_the_shared_loader_keeps_one_copy_of_each_search_path(parsed: list[str]) -> None:
    sessions = [boto_sessions.new_session() for _ in range(5)]
    paths = sessions[-1]._session.get_component("data_loader").search_paths

    assert len(paths) == len(set(paths))
    assert {s._session.get_component("data_loader") for s in sessions} == {boto_sessions._loader}


def test_tenantctl_target_clients_and_the_runtime_factory_share_it(parsed: list[str]) -> None:
    from tenant_runtime.credentials import ClientFactory
    from tenantctl.aws import Clients

    make(boto_sessions.new_session(), "secretsmanager")
    parsed.clear()

    Clients(region="us-east-1", endpoint_url=ENDPOINT, credentials=("k", "s"))("secretsmanager")
    ClientFactory(region="us-east-1", endpoint_url=ENDPOINT).own_client("secretsmanager", "us-east-1")

    assert parsed == []
