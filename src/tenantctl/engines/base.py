"""The one interface both engines implement: preview / up / destroy / outputs.

A stack is named by its id (`platform` or a tenant id); its desired state is the
committed stacks/Pulumi.<stack>.yaml. Engines report progress through
``on_event`` so the CLI can draw it without knowing which engine runs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from enum import Enum
from typing import Any, Callable

from pydantic import BaseModel, Field


class Op(str, Enum):
    create = "create"
    update = "update"
    delete = "delete"
    same = "same"
    replace = "replace"


class ResourceChange(BaseModel):
    op: Op
    type: str
    name: str
    urn: str = ""


class ChangeSet(BaseModel):
    """What preview found (or what up/destroy did)."""

    stack: str
    changes: list[ResourceChange] = Field(default_factory=list)

    def count(self, op: Op) -> int:
        return sum(1 for c in self.changes if c.op is op)

    @property
    def has_changes(self) -> bool:
        return any(c.op is not Op.same for c in self.changes)

    def summary(self) -> dict[str, int]:
        return {op.value: self.count(op) for op in Op if self.count(op)}


class EngineEvent(BaseModel):
    """One step of progress: a resource starting/finishing, or a diagnostic."""

    stack: str
    kind: str  # "resource-pre" | "resource-done" | "diagnostic" | "summary"
    op: Op | None = None
    type: str = ""
    name: str = ""
    message: str = ""


EventSink = Callable[[EngineEvent], None]


class UpResult(BaseModel):
    stack: str
    outputs: dict[str, Any]
    changes: ChangeSet


class EngineError(RuntimeError):
    """A failure the CLI reports as one line (exit code 4)."""


class Engine(ABC):
    """Applies the infra/ program for one stack at a time."""

    name: str

    @abstractmethod
    def preview(self, stack: str, on_event: EventSink | None = None) -> ChangeSet: ...

    @abstractmethod
    def up(self, stack: str, on_event: EventSink | None = None) -> UpResult: ...

    @abstractmethod
    def destroy(self, stack: str, on_event: EventSink | None = None) -> ChangeSet: ...

    @abstractmethod
    def outputs(self, stack: str) -> dict[str, Any]:
        """The stack's outputs from its last successful up; {} if never applied."""
