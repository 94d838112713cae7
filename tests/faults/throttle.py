"""Injected throttling: a realistic server-side rate limit, shared by every process.

``TENANTCTL_FAULT_THROTTLE=<rules>``: comma-separated ``service.Operation=rate``
(``service.*`` for every operation of the service; a bare number means
``kms.CreateKey=<number>``), rates in calls per second. ``install_throttle``
gives a client a ``before-send`` hook per matching rule: a call over the rate
is not sent but answered with the error AWS itself returns when throttling
(HTTP 400 ``ThrottlingException`` for JSON services, ``Throttling`` for query
ones, 503 ``RequestLimitExceeded`` for EC2, 503 ``SlowDown`` for S3), so it goes
through botocore's parsing and retry handler like the real thing.

``TENANTCTL_FAULT_THROTTLE_FILE``: the token buckets' state (a JSON file under
an ``flock``, so several processes share one limit as they would share an
account's quota). It also counts ``allowed`` and ``throttled`` calls per rule,
which the tests read back.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

FAULT_THROTTLE_ENV = "TENANTCTL_FAULT_THROTTLE"
FAULT_THROTTLE_FILE_ENV = "TENANTCTL_FAULT_THROTTLE_FILE"


def parse_throttle(spec: str) -> dict[str, float]:
    """``"kms.CreateKey=2,dynamodb.*=50"`` -> {"kms.CreateKey": 2.0, "dynamodb.*": 50.0}."""
    rules: dict[str, float] = {}
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        name, _, rate = part.rpartition("=")
        if not name:
            name, rate = "kms.CreateKey", part
        if "." not in name:
            raise ValueError(f"{FAULT_THROTTLE_ENV}: {name!r} is not service.Operation (or service.*)")
        value = float(rate)
        if value <= 0:
            raise ValueError(f"{FAULT_THROTTLE_ENV}: rate of {name} must be > 0 calls per second")
        rules[name] = value
    return rules


def throttle_file(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    return Path(env.get(FAULT_THROTTLE_FILE_ENV)
                or Path(tempfile.gettempdir()) / f"tenantctl-fault-throttle-{os.getuid()}.json")


class SharedTokenBucket:
    """Token buckets (rate r/s, burst max(1, r)) kept in one file under flock:
    every process with the same file draws from the same buckets."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _update(self, fn):
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                fh.seek(0)
                text = fh.read()
                state = json.loads(text) if text.strip() else {}
                result = fn(state)
                fh.seek(0)
                fh.truncate()
                fh.write(json.dumps(state))
                fh.flush()
                return result
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def take(self, rule: str, rate: float) -> bool:
        """One call under ``rule``: True if allowed, False if throttled."""
        def take(state: dict[str, Any]) -> bool:
            now = time.time()
            burst = max(1.0, rate)
            b = state.setdefault(rule, {"tokens": burst, "stamp": now, "allowed": 0, "throttled": 0})
            stamp = now if b["stamp"] is None else b["stamp"]  # None: spent as of this first call
            b["tokens"] = min(burst, b["tokens"] + max(0.0, now - stamp) * rate)
            b["stamp"] = now
            if b["tokens"] >= 1.0:
                b["tokens"] -= 1.0
                b["allowed"] += 1
                return True
            b["throttled"] += 1
            return False

        return self._update(take)

    def spend(self, rule: str, calls: float) -> None:
        """``rule``'s quota found spent by ``calls`` calls more than it holds when it
        is first drawn on (another client of the same account got there first):
        its first call is throttled however slowly the calls arrive."""
        self._update(lambda state: state.__setitem__(
            rule, {"tokens": -float(calls), "stamp": None, "allowed": 0, "throttled": 0}))

    def counts(self) -> dict[str, dict[str, int]]:
        if not self.path.exists():
            return {}
        return {k: {"allowed": v["allowed"], "throttled": v["throttled"]}
                for k, v in self._update(lambda s: dict(s)).items()}


class _Body:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_: Any):
        yield self.body


def throttling_response(protocol: str, url: str) -> Any:
    """The response AWS sends a throttled call, in the service's protocol."""
    from botocore.awsrequest import AWSResponse

    rid = str(uuid.uuid4())
    if protocol == "json":
        status, ctype = 400, "application/x-amz-json-1.1"
        body = json.dumps({"__type": "ThrottlingException", "message": "Rate exceeded"}).encode()
    elif protocol == "rest-json":
        status, ctype = 429, "application/json"
        body = json.dumps({"message": "Rate exceeded"}).encode()
    elif protocol == "query":
        status, ctype = 400, "text/xml"
        body = (f"<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message>"
                f"</Error><RequestId>{rid}</RequestId></ErrorResponse>").encode()
    elif protocol == "ec2":
        status, ctype = 503, "text/xml"
        body = (f"<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded."
                f"</Message></Error></Errors><RequestID>{rid}</RequestID></Response>").encode()
    elif protocol == "rest-xml":
        status, ctype = 503, "application/xml"
        body = (f"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message>"
                f"<RequestId>{rid}</RequestId></Error>").encode()
    else:  # e.g. smithy-rpc-v2-cbor: a bare 429 is throttling to botocore as well
        status, ctype, body = 429, "application/octet-stream", b""
    headers = {"x-amzn-RequestId": rid, "x-amz-request-id": rid, "Content-Type": ctype,
               "Content-Length": str(len(body))}
    if protocol == "rest-json":
        headers["x-amzn-ErrorType"] = "ThrottlingException"
    return AWSResponse(url, status, headers, _Body(body))


def install_throttle(client: Any, rules: Mapping[str, float], bucket: SharedTokenBucket) -> None:
    """Hook the rules (``parse_throttle``) that match this client's service."""
    model = client.meta.service_model
    names = {model.service_name, model.endpoint_prefix, model.service_id.hyphenize()}
    event = model.service_id.hyphenize()
    for rule, rate in rules.items():
        service, _, operation = rule.partition(".")
        if service not in names:
            continue

        def hook(request: Any, _rule: str = rule, _rate: float = rate, **_: Any) -> Any:
            if bucket.take(_rule, _rate):
                return None  # sent as usual
            return throttling_response(model.protocol, request.url)

        name = f"before-send.{event}" if operation == "*" else f"before-send.{event}.{operation}"
        client.meta.events.register(name, hook)
