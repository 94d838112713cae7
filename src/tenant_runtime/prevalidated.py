"""Pydantic models built from values that were checked already, the way their
validation would build them, without running it again.

For hot paths only (a warm append's Message): right after the database round
trips, pydantic's validation of six fields the append had just checked was about
a fifth of the routed append's own client time, most of it its Rust code being
brought back into the CPU's caches. The caller gives only values validation
would keep as they are (exact ``str``, ``int``, ``datetime``, a ``dict`` with
``str`` keys: validation turns a ``str`` subclass into a ``str``) and falls back
to the model's constructor for anything else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)

_set = object.__setattr__


def builder(model: type[M]) -> Callable[[dict[str, Any]], M]:
    """A function making ``model`` from a dict of all its fields' values, as
    ``model(**values)`` does for values validation keeps unchanged (fields set,
    no extra, no private attributes: what ``model_construct`` sets, without its
    per-field loop). TypeError for a model whose validation adds to or changes
    the values it is given (validators, aliases, private attributes, extra
    fields kept, a post-init, a root model): those must be validated."""
    decorators = model.__pydantic_decorators__
    if (decorators.validators or decorators.field_validators or decorators.root_validators
            or decorators.model_validators or model.__private_attributes__ or model.__pydantic_post_init__
            or model.__pydantic_root_model__ or model.model_config.get("extra") == "allow"
            or any(f.alias is not None or f.validation_alias is not None for f in model.model_fields.values())):
        raise TypeError(f"{model.__name__} changes what it validates: build it with its constructor")
    fields, new = frozenset(model.model_fields), model.__new__

    def build(values: dict[str, Any]) -> M:
        """``values``: every field's, nothing else (the caller's literal dict)."""
        instance = new(model)
        _set(instance, "__dict__", values)
        _set(instance, "__pydantic_fields_set__", set(fields))
        _set(instance, "__pydantic_extra__", None)
        _set(instance, "__pydantic_private__", None)
        return instance

    return build
