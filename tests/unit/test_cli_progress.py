"""The live progress line on a terminal shows the stack and the engine's words as they are."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from tenantctl.cli import progress
from tenantctl.engines.base import EngineEvent, Op


def live_line(view: progress.ProgressView) -> str:
    assert view.live is not None
    screen = Console(file=io.StringIO(), force_terminal=True, width=200, record=True)
    screen.print(view.live.make_tasks_table(view.live.tasks))
    return screen.export_text()


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> Console:
    console = Console(file=io.StringIO(), force_terminal=True, width=200, emoji=False)
    monkeypatch.setattr(progress, "err_console", console)
    return console


def test_the_live_line_names_the_stack_being_changed(terminal: Console) -> None:
    view = progress.ProgressView("provisioning acme")
    view(EngineEvent(stack="acme.k1", kind="resource-pre", op=Op.create, type="aws:kms/key:Key", name="key"))

    assert "provisioning acme [acme.k1]: create aws:kms/key:Key key" in live_line(view)


def test_a_phase_with_brackets_is_shown_not_parsed(terminal: Console) -> None:
    view = progress.ProgressView("provisioning acme")
    view(EngineEvent(stack="acme", kind="phase", message="waiting on [/tmp/x.lock] :secret:"))

    assert "provisioning acme: waiting on [/tmp/x.lock] :secret:" in live_line(view)  # no MarkupError either
