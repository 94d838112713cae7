"""Automation API failures -> tenantctl errors, each a one-line message.

The Pulumi CLI's failures arrive as CommandError (and subclasses picked by
matching its stderr) holding the whole stdout/stderr; the CLI shows one line, so
the most telling `error:` line is pulled out of them.

The SDK picks StackNotFoundError / StackAlreadyExistsError by a regex over the
stderr of *any* command ("no stack named.*found", "stack.*already exists"), so
an `up` whose StackReference names a missing stack, or a provider error that
mentions a CloudFormation "Stack ... already exists", would read as this
stack missing or taken (and `destroy` would report nothing to destroy). They
count only from the commands that select or create a stack, and only when the
CLI's own message names this stack.
"""

from __future__ import annotations

import re

from tenantctl.errors import ApplyFailed, Conflict, NotFound, TargetUnavailable, TenantctlError

MISSING_CLI = "Pulumi CLI not found: run `tenantctl setup pulumi` or install it"

_ERROR_LINE = re.compile(r"^\s*error:\s*(.+?)\s*$", re.MULTILINE)
_NOISE = ("update failed", "preview failed", "destroy failed", "refresh failed")
_MAX = 300

# What the CLI and the AWS provider say when this machine cannot use the target
# (lowercased, looked for in the reported line): not logged in to Pulumi Cloud
# (the SDK runs every command --non-interactive, so the CLI asks for a token),
# no or bad AWS credentials (pulumi-aws's provider check; aws-sdk-go-v2, which
# the S3 backend reads state with).
_UNREACHABLE = (
    "pulumi_access_token must be set",
    "pulumi login",
    "no credentials",
    "no valid credential sources",
    "invalid credentials configured",
    "failed to refresh cached credentials",
)

# The commands whose failure can mean the stack itself is missing or taken.
STACK_COMMANDS = frozenset({"select", "create", "outputs", "stack rm"})
_NOT_FOUND = re.compile(r"^\s*error:\s*no stack named '([^']+)' found", re.MULTILINE)
_EXISTS = re.compile(r"^\s*error:\s*stack '([^']+)' already exists", re.MULTILINE)


def _streams(exc: BaseException) -> tuple[str, str]:
    """stdout/stderr of a CommandError (kept only in its text by the SDK)."""
    text = str(exc)
    stdout = re.search(r"\n stdout: (.*?)\n stderr: ", text, re.DOTALL)
    stderr = re.search(r"\n stderr: (.*)\Z", text, re.DOTALL)
    return (stdout.group(1) if stdout else ""), (stderr.group(1) if stderr else text)


def first_line(exc: BaseException) -> str:
    """The most telling line of a failed command: a real `error:` line (not the
    closing `update failed`), first from stderr, then stdout, else the last
    non-empty stderr line."""
    stdout, stderr = _streams(exc)
    for stream in (stderr, stdout):
        lines = [m.group(1) for m in _ERROR_LINE.finditer(stream)]
        useful = [line for line in lines if line.lower() not in _NOISE]
        if useful:
            return _short(useful[0])
    tail = [line.strip() for line in stderr.splitlines() if line.strip()]
    return _short(tail[-1] if tail else type(exc).__name__)


def _short(line: str) -> str:
    line = " ".join(line.split())
    return line if len(line) <= _MAX else line[: _MAX - 1] + "…"


def _names_stack(exc: BaseException, message: re.Pattern, action: str, stack: str) -> bool:
    """The CLI itself said ``message`` about ``stack`` (bare or qualified), from a stack command."""
    if action not in STACK_COMMANDS:
        return False
    stdout, stderr = _streams(exc)
    short = stack.rsplit("/", 1)[-1]
    return any(name.rsplit("/", 1)[-1] == short for name in message.findall(stderr + "\n" + stdout))


def map_error(exc: BaseException, action: str, stack: str, backend: str) -> TenantctlError:
    """`action` is what was being done ("preview", "up", ...), `stack` the
    fully-qualified stack name, `backend` where its state lives (for messages)."""
    from pulumi.automation import errors as auto

    if isinstance(exc, TenantctlError):
        return exc
    if isinstance(exc, FileNotFoundError):
        return TargetUnavailable(MISSING_CLI)
    if isinstance(exc, auto.InvalidVersionError):
        return TargetUnavailable(f"unsupported Pulumi CLI version ({exc}): run `tenantctl setup pulumi`")
    if isinstance(exc, auto.StackNotFoundError) and _names_stack(exc, _NOT_FOUND, action, stack):
        return NotFound(f"stack {stack!r} not found on {backend}")
    if isinstance(exc, auto.StackAlreadyExistsError) and _names_stack(exc, _EXISTS, action, stack):
        return Conflict(f"stack {stack!r} already exists on {backend}")
    if isinstance(exc, auto.ConcurrentUpdateError):
        return Conflict(
            f"stack {stack!r} is locked by another update on {backend}: wait for it, or run "
            f"`pulumi cancel --stack {stack}` if it died"
        )
    if isinstance(exc, auto.CommandError):
        detail = first_line(exc)
        if "passphrase must be set" in detail:
            return TargetUnavailable(
                f"{action} {stack}: the stack uses the passphrase secrets provider: set PULUMI_CONFIG_PASSPHRASE, "
                "or configure an awskms:// secrets provider (TENANTCTL_SECRETS_PROVIDER)"
            )
        if "incorrect passphrase" in detail.lower():  # the CLI's ErrIncorrectPassphrase and its locked manager's
            return TargetUnavailable(
                f"{action} {stack}: PULUMI_CONFIG_PASSPHRASE (or PULUMI_CONFIG_PASSPHRASE_FILE) does not unlock the "
                "stack's secrets: set the passphrase the stack was created with"
            )
        if any(phrase in detail.lower() for phrase in _UNREACHABLE):
            return TargetUnavailable(f"{action} {stack}: {detail}")
        return ApplyFailed(f"{action} {stack} failed: {detail}")
    return ApplyFailed(f"{action} {stack} failed: {type(exc).__name__}: {_short(str(exc))}")
