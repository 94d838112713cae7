"""What people read off a terminal (a pipe, a CI log) is what the cells hold, markup aside."""

from __future__ import annotations

import pytest

from tenantctl.cli import output

SECRET_ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:tenantctl/acme/db-uDVuqy"


def test_a_plain_table_keeps_colon_words_that_look_like_emoji_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert not output.console.is_terminal  # captured: the plain path
    output.table("acme", ["field", "value"], [("db secret", SECRET_ARN), ("note", ":warning: kept :smile:")])

    printed = capsys.readouterr().out
    assert SECRET_ARN in printed  # rich would turn ":secret:" into an emoji, breaking a copied ARN
    assert ":warning: kept :smile:" in printed


def test_a_plain_table_still_drops_markup(capsys: pytest.CaptureFixture[str]) -> None:
    output.table("plan", ["op", "name"], [("[bold red]replace ⚠[/]", "queue")])

    printed = capsys.readouterr().out
    assert "replace ⚠" in printed and "[bold red]" not in printed


class _Tty:
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


@pytest.mark.parametrize(("env", "tty", "expected"), [
    ({}, False, False),
    ({}, True, True),
    ({"FORCE_COLOR": "1"}, False, True),  # rich's overrides still win off a terminal ...
    ({"TTY_COMPATIBLE": "1"}, False, True),
    ({"TTY_COMPATIBLE": "0"}, True, False),  # ... and on one
])
def test_the_console_answers_is_terminal_as_rich_does(monkeypatch: pytest.MonkeyPatch, env: dict[str, str],
                                                      tty: bool, expected: bool) -> None:
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    if tty:
        monkeypatch.setattr("sys.stdout", _Tty())
    assert output.LazyConsole().is_terminal is expected


@pytest.mark.parametrize(("text", "markup"), [
    ("[red]invalid tenant id 'Bad'[/] (charset rule): registry record; `tenantctl forget Bad --yes` removes it", True),
    ("more: --cursor " + "eyJ0ZW5hbnRfaWQiOiB7IlMiOiAic3luLTAwMDQ5In19" * 3, True),  # over 80 columns: kept whole
    (r"a literal \[bracket] and :secret: kept", True),
    ("two\nlines", True),
    ("[   0.1s] plan: 1 unchanged", True),  # a stamp is no tag
    ("[   0.1s] \\[1/3] acme: [green]ok[/] (0.4s)", True),
    ("[   0.3s] provisioning acme: waiting on [/tmp/x.lock] :secret:", False),  # a progress line: text as it is
])
def test_a_line_off_a_terminal_is_what_rich_would_print_there(capsys: pytest.CaptureFixture[str], text: str,
                                                              markup: bool) -> None:
    import io

    from rich.console import Console

    lazy = output.LazyConsole()
    lazy.print(text, highlight=False, markup=markup)
    printed = capsys.readouterr().out
    assert lazy._console is None  # written without making rich's console

    rich_out = io.StringIO()
    Console(file=rich_out, emoji=False, soft_wrap=True).print(text, highlight=False, markup=markup)
    assert printed == rich_out.getvalue()


@pytest.mark.parametrize("text", ["plain words: acme", "queue [tenantctl-acme-jobs] gone", "a path ending C:\\",
                                  r"already \[escaped]"])
def test_escape_is_riches(text: str) -> None:
    from rich.markup import escape

    assert output.escape(text) == escape(text)


def test_a_line_rich_would_rewrite_is_left_to_rich(capsys: pytest.CaptureFixture[str]) -> None:
    import io

    from rich.console import Console

    text = "pg_dump said:\tline one\r\nline two\x07"  # a tab expanded, control characters dropped
    output.LazyConsole().print(text, highlight=False)
    rich_out = io.StringIO()
    Console(file=rich_out, emoji=False, soft_wrap=True).print(text, highlight=False)
    assert capsys.readouterr().out == rich_out.getvalue() != text + "\n"


def test_an_error_keeps_its_brackets(capsys: pytest.CaptureFixture[str]) -> None:
    output.error("region: String should match pattern '^[a-z]{2}(-gov)?-[a-z]+-\\d$'")
    assert capsys.readouterr().err == "error: region: String should match pattern '^[a-z]{2}(-gov)?-[a-z]+-\\d$'\n"


def test_a_plain_table_keeps_each_row_on_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    output.table("acme · drift", ["op", "resource"],
                 [("update", "queue"), ("", "delaySeconds: 0 → 30\nvisibility: 30 → 5")])
    rows = capsys.readouterr().out.splitlines()
    assert rows[3].split() == ["delaySeconds:", "0", "→", "30;", "visibility:", "30", "→", "5"] and len(rows) == 5
