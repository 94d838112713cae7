"""The record of issued contexts (what ``verified`` checks against) holds a
context only while it lives, and only that very object passes."""

from __future__ import annotations

import gc

import pytest
from runtime_fixtures import Registry, context, record

from tenant_runtime import context as context_module
from tenant_runtime.context import TenantContext, from_registry, verified
from tenant_runtime.errors import UntrustedContext


def test_a_context_leaves_the_record_with_its_last_reference():
    gc.collect()
    before = len(context_module._ISSUED)
    issued = [context(f"t{i}") for i in range(50)]
    assert len(context_module._ISSUED) == before + 50
    assert all(verified(ctx) is ctx for ctx in issued)
    del issued
    gc.collect()
    assert len(context_module._ISSUED) == before


def test_only_the_issued_object_passes_not_a_copy_of_its_slots():
    genuine = context("acme")
    forged = TenantContext.__new__(TenantContext)
    for name in ("tenant_id", "record", "subject", "claims", "workspace", "key", "resources"):
        object.__setattr__(forged, name, getattr(genuine, name))
    with pytest.raises(UntrustedContext, match="not a TenantContext the runtime resolved"):
        verified(forged)
    # Nor is a forgery given back as the context to reuse.
    registry = Registry(record("acme"))
    assert from_registry(registry, "acme", reuse=forged) is not forged
    assert verified(genuine) is genuine
