"""The appended Message is built from values the append checked, without
validating them again: it must be the Message validation would give."""

from __future__ import annotations

import enum
from datetime import UTC, datetime

import pytest
from pydantic import BaseModel, Field, PrivateAttr, field_validator

from tenant_runtime.prevalidated import builder
from tenant_runtime.store import Message, _appended

NOW = datetime(2026, 12, 6, 8, 30, tzinfo=UTC)


def validated(conversation_id, role, content, meta, seq=7, created=NOW) -> Message:
    return Message(conversation_id=conversation_id, seq=seq, role=role, content=content, metadata=meta,
                   created_at=created)


def test_the_appended_message_is_the_one_validation_gives():
    meta = {"k": [1, {"n": None}], "é": "✓"}
    built = _appended("c1", "assistant", "hello", meta, (7, NOW))
    expected = validated("c1", "assistant", "hello", meta)
    assert built == expected and type(built) is Message
    assert built.model_dump() == expected.model_dump()
    assert built.model_dump_json() == expected.model_dump_json()
    assert built.model_fields_set == expected.model_fields_set == set(Message.model_fields)
    assert repr(built) == repr(expected)
    assert Message.model_validate(built.model_dump()) == built
    # The metadata is copied, as validation copies it: the caller's later edits do not reach the Message.
    meta["k"] = "changed"
    assert built.metadata["k"] == [1, {"n": None}]
    # And the model behaves as one: a copy with an update, its own fields set.
    moved = built.model_copy(update={"seq": 8})
    assert moved.seq == 8 and built.seq == 7


def test_values_validation_would_change_are_validated():
    class Role(str, enum.Enum):
        user = "user"

    class Text(str):
        pass

    built = _appended(Text("c1"), Role.user, Text("hi"), {}, (1, NOW))
    # Validation turns a str subclass into a str: so does the append's Message.
    assert type(built.role) is str and type(built.content) is str and type(built.conversation_id) is str
    assert built == validated("c1", "user", "hi", {}, seq=1)


@pytest.mark.parametrize("model", ["validator", "alias", "private", "extra"])
def test_a_model_whose_validation_changes_values_has_no_builder(model):
    class WithValidator(BaseModel):
        name: str

        @field_validator("name")
        @classmethod
        def lower(cls, value: str) -> str:
            return value.lower()

    class WithAlias(BaseModel):
        name: str = Field(alias="Name")

    class WithPrivate(BaseModel):
        name: str
        _seen: int = PrivateAttr(default=0)

    class WithExtra(BaseModel, extra="allow"):
        name: str

    models = {"validator": WithValidator, "alias": WithAlias, "private": WithPrivate, "extra": WithExtra}
    with pytest.raises(TypeError, match="build it with its constructor"):
        builder(models[model])
