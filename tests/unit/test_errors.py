"""Every exit code the CLI can return is documented, in code and in the README."""

import re
from pathlib import Path

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
