"""`apply --max-failures N`: the fleet-rollout guard (CloudFormation StackSets'
failure tolerance, Ansible's max_fail_percentage as a count).

A program or template change re-applies every tenant of the fleet; when the new
program is broken, each of them would fail in turn. The budget counts the stacks
whose run failed — cells (applied before any tenant, so a broken program
usually shows there first) and tenants alike — and once more than N have
failed, apply starts no further stack: those running finish and are reported,
the rest are reported *not started* (`StackResult.not_started`), which fails the
run without counting as failures of their own.

What the plan already refused (an invalid stack file, a registry refusal, a
live read of `--refresh` that failed) never ran and is not counted: it says
nothing of the program, and a preview reports it beforehand. The budget is per
run: each `--shard` counts its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from tenantctl.errors import UsageError
from tenantctl.operations.apply_results import StackResult

R = TypeVar("R", bound=StackResult)


class FailureBudget:
    """How many stack runs may fail before apply starts no more (``limit`` None:
    no limit). ``on_spent`` is called once, with `why`, when the limit is passed."""

    def __init__(self, limit: int | None = None, on_spent: Callable[[str], None] | None = None) -> None:
        if limit is not None and limit < 0:
            raise UsageError(f"Invalid value for '--max-failures': {limit} is not in the range x>=0.")
        self.limit, self.failures, self._on_spent = limit, 0, on_spent

    @property
    def spent(self) -> bool:
        """More than ``limit`` runs failed: start nothing more."""
        return self.limit is not None and self.failures > self.limit

    def why(self) -> str:
        return f"{self.failures} failed, more than --max-failures {self.limit}"

    def count(self, result: StackResult) -> None:
        """A stack that ran: its failure is spent from the budget."""
        if not (result.ok or result.not_started):
            self.fail()

    def fail(self) -> None:
        """One run failed: spent from the budget."""
        was_spent = self.spent
        self.failures += 1
        if self.spent and not was_spent and self._on_spent is not None:
            self._on_spent(self.why())

    def hold(self, result: R) -> R:
        """Mark ``result`` (the plan's, in place: the summary lists it) as never started, saying why."""
        result.ok, result.not_started, result.error = False, True, f"not started: {self.why()}"
        return result
