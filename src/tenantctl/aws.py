"""Every boto3 client tenantctl makes (LocalEngine handlers, registry writer,
dynamic providers, preflight, deprovision purge) comes from ``client()``, so
they all share one retry policy:

- botocore's *standard* retry conditions and truncated exponential backoff with
  full jitter (``rand(0,1) * min(base * 2**attempt, 20 s)``, base 1 s for
  throttling, 50 ms otherwise). Not the *adaptive* mode: its client-side rate
  limiter slows every operation of a client after one throttled call (KMS
  throttles CreateKey, yet DescribeKey, CreateAlias... would then crawl at
  0.5 calls/s), while backing off the throttled call alone is enough;
- bounded, with a separate budget per kind of error: throttling
  (``ThrottlingException``, ``SlowDown``, ``RequestLimitExceeded``, HTTP 429...)
  is retried up to ``THROTTLE_ATTEMPTS`` times — KMS CreateKey allows only a
  few calls per second, and 50 parallel provisions must still all succeed —
  while other transient errors (5xx, connection refused, timeouts) get only
  ``TRANSIENT_ATTEMPTS``, so an unreachable endpoint fails within seconds.

``TENANTCTL_AWS_THROTTLE_ATTEMPTS`` / ``TENANTCTL_AWS_TRANSIENT_ATTEMPTS``
override the two budgets.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

from tenant_runtime.boto_sessions import default_session, new_session, share_loader
from tenantctl import collector

THROTTLE_ATTEMPTS_ENV = "TENANTCTL_AWS_THROTTLE_ATTEMPTS"
TRANSIENT_ATTEMPTS_ENV = "TENANTCTL_AWS_TRANSIENT_ATTEMPTS"
THROTTLE_ATTEMPTS = 15  # ~2.5 min of backoff in the worst case (20 s cap, full jitter: ~1 min expected)
TRANSIENT_ATTEMPTS = 4  # botocore's standard default is 3
CONNECT_TIMEOUT, READ_TIMEOUT = 5, 60


def _attempts(env: str, default: int) -> int:
    raw = os.environ.get(env)
    if not raw:
        return default
    value = int(raw)
    if not 1 <= value <= 50:
        raise ValueError(f"{env} must be between 1 and 50, not {value}")
    return value


def retry_budgets() -> tuple[int, int]:
    """(attempts on throttling, attempts on other transient errors), first call included."""
    throttle = _attempts(THROTTLE_ATTEMPTS_ENV, THROTTLE_ATTEMPTS)
    return throttle, min(_attempts(TRANSIENT_ATTEMPTS_ENV, TRANSIENT_ATTEMPTS), throttle)


def config(**overrides: Any):
    """The botocore Config every tenantctl client uses (standard mode, whose
    retry handler ``_install_retries`` then replaces)."""
    from botocore.config import Config

    throttle, _ = retry_budgets()
    settings: dict[str, Any] = {"retries": {"mode": "standard", "total_max_attempts": throttle},
                                "connect_timeout": CONNECT_TIMEOUT, "read_timeout": READ_TIMEOUT}
    settings.update(overrides)
    return Config(**settings)


class _Conditions:
    """botocore's standard retry conditions, with a smaller attempt budget for
    errors that are not throttling."""

    def __init__(self, throttle_attempts: int, transient_attempts: int) -> None:
        from botocore.retries import standard

        self.standard = standard.StandardRetryConditions(max_attempts=throttle_attempts)
        self.throttling = standard.ThrottlingErrorDetector(standard.RetryEventAdapter())
        self.transient_attempts = transient_attempts

    def is_retryable(self, context: Any) -> bool:
        if not self.standard.is_retryable(context):
            return False
        if self.throttling.is_throttling_error_from_context(context):
            return True
        return context.attempt_number < self.transient_attempts


def _install_retries(client: Any) -> None:
    from botocore.retries import quota, standard

    event = client.meta.service_model.service_id.hyphenize()
    throttle, transient = retry_budgets()
    adapter = standard.RetryEventAdapter()
    detector = standard.ThrottlingErrorDetector(adapter)
    handler = standard.RetryHandler(
        retry_policy=standard.RetryPolicy(
            retry_checker=_Conditions(throttle, transient),
            retry_backoff=standard.ExponentialBackoff(service_name=event, throttling_detector=detector),
        ),
        retry_event_adapter=adapter,
        retry_quota=standard.RetryQuotaChecker(quota.RetryQuota(), detector),
        service_name=event,
    )
    # Same event and unique id as botocore's own handler: replace it.
    unique_id = f"retry-config-{event}"
    client.meta.events.unregister(f"needs-retry.{event}", unique_id=unique_id)
    client.meta.events.register(f"needs-retry.{event}", handler.needs_retry, unique_id=unique_id)


_CACHE: dict[tuple, Any] = {}
_CACHE_LOCK = threading.Lock()


def _env_key() -> tuple:
    """What a default-session client depends on besides its arguments."""
    return tuple(sorted((k, v) for k, v in os.environ.items()
                        if k.startswith(("AWS_", "TENANTCTL_AWS_"))))


SESSION_NAME = "tenantctl"


def _boto3() -> Any:
    """boto3, imported the first time with the collector paused (tenantctl.collector)."""
    with collector.paused(lasting="boto3" not in sys.modules):
        import boto3
    return boto3


def assumed_session(sts: Any, role_arn: str, region: str | None) -> Any:
    """A boto3 Session acting as ``role_arn`` (a cell's account), its
    credentials from ``sts.assume_role`` and refreshed by botocore before they
    expire. On the sandbox, moto serves the requests made with them in the
    role's account."""
    import botocore.session

    boto3 = _boto3()
    from botocore.credentials import RefreshableCredentials

    def fetch() -> dict[str, str]:
        creds = sts.assume_role(RoleArn=role_arn, RoleSessionName=SESSION_NAME)["Credentials"]
        return {"access_key": creds["AccessKeyId"], "secret_key": creds["SecretAccessKey"],
                "token": creds["SessionToken"], "expiry_time": creds["Expiration"].isoformat()}

    core = botocore.session.get_session()
    # botocore's documented way to hand a session refreshable credentials.
    core._credentials = RefreshableCredentials.create_from_metadata(
        metadata=fetch(), refresh_using=fetch, method="sts-assume-role")
    return share_loader(boto3.session.Session(botocore_session=core, region_name=region))


_ASSUMED: dict[tuple, Any] = {}


def client(service: str, *, session: Any | None = None, region: str | None = None,
           endpoint_url: str | None = None, role_arn: str | None = None, **kwargs: Any) -> Any:
    """A boto3 client with tenantctl's retry policy.

    ``session``: a boto3 Session (default: boto3's default session, which reads
    AWS_* from the environment: on the sandbox AWS_ENDPOINT_URL points at moto).
    ``role_arn``: act in another account (a cell's), assuming that role with the
    default session's credentials (the dynamic providers, which run inside the
    program and know their cell's account only from their inputs).
    Default-session clients are cached per arguments and AWS_* environment
    (making one costs ~50 ms; botocore clients are thread-safe)."""
    key, shared = None, session is None  # shared: a session of this module's (default or assumed)
    if session is None and not kwargs:
        key = (service, region, endpoint_url, role_arn, _env_key())
        with _CACHE_LOCK:
            if key in _CACHE:
                return _CACHE[key]
    if role_arn and session is None:
        account = (role_arn, region, endpoint_url, _env_key())
        session = _ASSUMED.get(account)
        if session is None:
            made = assumed_session(client("sts", region=region, endpoint_url=endpoint_url), role_arn, region)
            with _CACHE_LOCK:
                session = _ASSUMED.setdefault(account, made)
    _boto3()  # after the cache: a cached client's lookup pauses no collector
    args: dict[str, Any] = {"config": config()}
    if region:
        args["region_name"] = region
    if endpoint_url:
        args["endpoint_url"] = endpoint_url
    args.update(kwargs)
    with collector.paused(lasting=True):  # a client's service model loads as a bulk of long-lived objects
        if not shared:
            made = session.client(service, **args)
        else:
            with _CACHE_LOCK:  # boto3 sessions are not thread-safe while they make clients
                made = (session or default_session()).client(service, **args)
    _install_retries(made)
    if key is not None:
        with _CACHE_LOCK:
            made = _CACHE.setdefault(key, made)
    return made


def require_known_region(region: str) -> None:
    """InvalidInput (exit 3) for a region no partition of botocore's endpoint
    data names: a typo, or a region newer than the installed botocore. Checked
    before a cell is written: AWS (and moto) would refuse it only mid-up."""
    from tenantctl.errors import InvalidInput

    with _CACHE_LOCK:
        data = default_session()._session.get_component("data_loader").load_data("endpoints")
    if not any(region in partition["regions"] for partition in data["partitions"]):
        import botocore

        raise InvalidInput(f"region {region!r}: no AWS partition has it (by botocore {botocore.__version__}'s "
                           "endpoint data; a region newer than that: upgrade boto3)", rule="region")


def service_endpoint(service: str) -> str | None:
    """``AWS_ENDPOINT_URL_<SERVICE>`` when set: botocore's own per-service override,
    kept above a target's endpoint so one service can be pointed elsewhere
    (a DynamoDB Local, or a dead port in a fault drill)."""
    return os.environ.get(f"AWS_ENDPOINT_URL_{service.upper().replace('-', '_')}") or None


class Clients:
    """The clients of one target, each made once (``client()``'s retry policy):
    the sandbox's endpoint and credentials, or an AWS profile's session. Passed
    explicitly, so no command changes the process environment to reach its target.
    ``in_account(role_arn, region)``: the clients of a cell in another account."""

    def __init__(self, *, region: str | None = None, endpoint_url: str | None = None,
                 credentials: tuple[str, str] | None = None, profile: str | None = None,
                 session: Any = None) -> None:
        self.region, self.endpoint_url = region, endpoint_url
        self._session_args: dict[str, Any] = {}
        if credentials is not None:
            self._session_args.update(aws_access_key_id=credentials[0], aws_secret_access_key=credentials[1])
        if profile:
            self._session_args["profile_name"] = profile
        self._session: Any = session
        self._made: dict[tuple[str, str | None], Any] = {}
        self._accounts: dict[tuple[str | None, str | None], Clients] = {}
        self._lock = threading.RLock()  # re-entered: in_account makes its STS client through __call__

    def endpoint_for(self, service: str) -> str | None:
        """The endpoint a client of ``service`` gets (``service_endpoint`` first)."""
        return service_endpoint(service) or self.endpoint_url

    def __call__(self, service: str, region: str | None = None) -> Any:
        region = region or self.region
        with self._lock:  # boto3 sessions are not thread-safe while they make clients
            key = (service, region)
            if key not in self._made:
                if self._session is None:
                    _boto3()
                    self._session = new_session(**self._session_args)
                self._made[key] = client(service, session=self._session, region=region,
                                         endpoint_url=self.endpoint_for(service))
            return self._made[key]

    def in_account(self, role_arn: str | None, region: str | None = None) -> Clients:
        """Clients acting as ``role_arn`` (None: these same credentials), by
        default in ``region``; made once per role and region."""
        key = (role_arn, region)
        with self._lock:
            if key not in self._accounts:
                session = assumed_session(self("sts", region), role_arn, region) if role_arn else self._session
                if session is None:
                    self("sts", region)  # makes the session
                    session = self._session
                self._accounts[key] = Clients(region=region or self.region, endpoint_url=self.endpoint_url,
                                              session=session)
            return self._accounts[key]
