"""Every exit code the CLI can return is documented, in code and in the README."""

import re
from pathlib import Path

import pytest

from tenantctl import errors


def _error_classes(cls=errors.TenantctlError):
    for sub in cls.__subclasses__():
        yield sub
        yield from _error_classes(sub)


def test_every_error_class_has_a_documented_exit_code():
    undocumented = {c.__name__: c.exit_code for c in _error_classes() if c.exit_code not in errors.EXIT_CODES}
    assert undocumented == {}


def test_readme_exit_code_table_lists_exactly_the_codes():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("### Exit codes", 1)[1].split("\n## ", 1)[0]
    documented = {int(code) for code in re.findall(r"^\| (\d+) \|", section, flags=re.M)}
    assert documented == set(errors.EXIT_CODES)


def exit_code_of_a_run(tmp_path, body: str) -> tuple[int, str]:
    """The exit code (and stderr) of a module run as the CLI runs (`python -m`: a script's
    SystemExit takes another path out) that handles SIGTERM as the CLI does and runs ``body``
    (indented lines) in its try block: 128 + the signal when it unwound the run (SIGINT: no SIGTERM)."""
    import subprocess
    import sys

    (tmp_path / "run.py").write_text(
        "import os, signal, sys, time, types\n"
        "from tenantctl.errors import interrupt_on_sigterm, terminated\n"
        # Ctrl-C handled as in a terminal: a test run started in the background (`cmd &` in a
        # script) passes SIGINT on ignored, and Python then installs no handler for it.
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "interrupt_on_sigterm()\n"
        "try:\n" + body +
        "except KeyboardInterrupt:\n"
        "    sys.exit(128 + (terminated() or signal.SIGINT))\n"
        "sys.exit(1)\n")
    done = subprocess.run([sys.executable, "-m", "run"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    return done.returncode, done.stderr


def test_a_sigterm_caught_inside_code_run_from_a_string_still_exits_with_the_chosen_code(tmp_path):
    """SIGTERM landing while the main thread runs code from ``exec`` of a string (a dataclass's
    generated methods being defined as a module loads) and handled as the CLI does: the process
    ends with the code chosen (143), not killed by SIGINT (CPython 3.11 flags a plain
    KeyboardInterrupt raised there as unhandled, whoever catches it)."""
    code, err = exit_code_of_a_run(tmp_path, (
        "    exec('import os, signal\\nos.kill(os.getpid(), signal.SIGTERM)\\n"
        "for _ in range(10**7): pass')\n"))
    assert code == 143, err


def signalled_in_a_weakref_callback(tmp_path, signum: str) -> tuple[int, str]:
    return exit_code_of_a_run(tmp_path, (
        "    class Box: pass\n"
        "    box = Box()\n"
        "    def dying(_):  # the signal arrives while the callback runs: its raise is ignored\n"
        f"        os.kill(os.getpid(), signal.{signum})\n"
        "        time.sleep(0.2)\n"
        "    ref = types.SimpleNamespace(ref=__import__('weakref').ref(box, dying))\n"
        "    del box\n"
        "    deadline = time.monotonic() + 10\n"
        "    while time.monotonic() < deadline: time.sleep(0.01)\n"))


@pytest.mark.parametrize(("signum", "exit_code"), [("SIGTERM", 143), ("SIGINT", 130)])
def test_a_signal_landing_where_python_ignores_exceptions_is_delivered_again_not_lost(tmp_path, signum, exit_code):
    """A SIGTERM or Ctrl-C handled while the main thread runs a weakref callback (the import lock's,
    a WeakSet's, asyncio's set of tasks during a Pulumi program: seen in whole-suite runs and by
    hand) raises where Python ignores the exception ("Exception ignored in ..."), and the run went
    on to finish (exit 0). Such an ignored interrupt now has its signal sent again a moment later,
    ending the run as any SIGTERM / Ctrl-C does."""
    code, err = signalled_in_a_weakref_callback(tmp_path, signum)
    assert code == exit_code, err
    assert "Exception ignored" not in err


def test_a_pool_workers_interrupts_unwind_its_task_and_are_ignored_between_tasks(tmp_path):
    """``interrupts_within`` (a pool worker's task): SIGTERM and Ctrl-C inside the block unwind it;
    after it, between tasks, the worker ignores them (the pool's process, signalled with its group,
    shuts the pool down) instead of dying in the pool's loop with a traceback; each task, however
    many, wraps the unraisable hook once."""
    code, err = exit_code_of_a_run(tmp_path, (
        "    from tenantctl.errors import Terminated, interrupts_within\n"
        "    for signum, raised in ((signal.SIGTERM, Terminated), (signal.SIGINT, KeyboardInterrupt)):\n"
        "        try:\n"
        "            with interrupts_within():\n"
        "                os.kill(os.getpid(), signum)\n"
        "                time.sleep(5)\n"
        "            sys.exit(2)  # not interrupted\n"
        "        except raised:\n"
        "            pass\n"
        "        os.kill(os.getpid(), signum)  # between tasks\n"
        "        time.sleep(0.1)\n"
        "    hook = sys.unraisablehook\n"
        "    with interrupts_within():\n"
        "        pass\n"
        "    sys.exit(0 if sys.unraisablehook is hook else 3)\n"))
    assert code == 0, err


@pytest.mark.parametrize("tenant_id, all_, cell, says", [
    (None, False, None, "Missing argument 'ID'"),
    ("acme", True, None, "'--all' cannot be used with a tenant id"),
    ("acme", False, "eu", "'--cell' cannot be used with a tenant id or --all"),
    (None, True, "eu", "'--cell' cannot be used with a tenant id or --all"),
])
def test_one_of_a_tenant_id_all_and_a_cell_is_required(tenant_id, all_, cell, says):
    with pytest.raises(errors.UsageError, match=says) as refused:
        errors.require_one_or_all(tenant_id, all_, cell)
    assert refused.value.exit_code == 2
    errors.require_one_or_all(None, False, "eu")  # a cell alone is a selection
