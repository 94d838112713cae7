"""The project a command runs in: the directory holding Pulumi.yaml, whose
`stackConfigDir` holds the committed stacks. Every reader of Pulumi.yaml goes
through ``Project.load``."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from tenantctl.errors import InvalidInput, TargetUnavailable

PROJECT_FILE = "Pulumi.yaml"
# Pulumi.yaml parsed, by (path, mtime, size): a provision reads it ~10 times
# (every stack file's path goes through it), each a YAML parse.
_PARSED: dict[tuple[str, int, int], Project] = {}


class Project(BaseModel):
    dir: Path
    name: str
    stacks_dir: Path
    main: Path  # the program: Pulumi.yaml `main` (a directory with __main__.py), else the project dir

    @classmethod
    def load(cls, project_dir: Path) -> Project:
        import yaml

        path = Path(project_dir) / PROJECT_FILE
        if not path.is_file():
            raise InvalidInput(f"{project_dir}: no {PROJECT_FILE} (run tenantctl from the project)")
        stat = path.stat()
        key = (str(path), stat.st_mtime_ns, stat.st_size)
        if key in _PARSED:
            return _PARSED[key].model_copy()
        try:
            data = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}  # noqa: S506
        except yaml.YAMLError as exc:
            raise InvalidInput(f"{path}: not valid YAML ({exc})") from None
        if not isinstance(data, dict) or not data.get("name"):
            raise InvalidInput(f"{path}: a Pulumi project file needs a `name`")
        _PARSED[key] = cls(dir=Path(project_dir), name=data["name"],
                           stacks_dir=Path(project_dir) / (data.get("stackConfigDir") or "."),
                           main=Path(project_dir) / (data.get("main") or "."))
        return _PARSED[key].model_copy()

    def stack_file(self, stack: str) -> Path:
        return self.stacks_dir / f"Pulumi.{stack}.yaml"


def find_root(cwd: Path | None = None) -> Path:
    """The directory holding Pulumi.yaml: cwd or its nearest parent, else cwd
    itself (a new project: ``ensure_project_file`` writes Pulumi.yaml there)."""
    start = (cwd or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if (folder / PROJECT_FILE).is_file():
            return folder
    return start


# A new project's program: a two-line entry point that imports the `infra`
# package installed with tenantctl, referenced by a relative `main`, so the
# committed Pulumi.yaml works on any machine or CI runner that installed
# tenantctl (an absolute path to site-packages works only where it was written).
PROGRAM_DIR = "tenantctl_program"
PROGRAM_SOURCE = '''"""Pulumi entry point of this project: the infra program installed with tenantctl."""
from infra.program import main

main()
'''


def ensure_project_file(project_dir: Path) -> None:
    """Write Pulumi.yaml for a new project, its program the installed `infra`
    package (an installed tenantctl never writes into its own checkout). A
    Pulumi.yaml an older tenantctl wrote, whose `main` is the absolute path of
    an installed infra package, is moved to the portable entry point in place
    (its comments and other keys kept)."""
    import importlib.util

    from tenantctl.templates import render

    path = project_dir / PROJECT_FILE
    if path.is_file():
        _make_program_portable(project_dir)
        return
    if importlib.util.find_spec("infra") is None:
        raise TargetUnavailable("the infra program is not installed next to tenantctl (reinstall the package)")
    _write_program(project_dir)
    path.write_text(render("project.yaml.j2", main=f"{PROGRAM_DIR}/") + "\n")


def _write_program(project_dir: Path) -> None:
    entry = project_dir / PROGRAM_DIR / "__main__.py"
    if not entry.is_file():
        entry.parent.mkdir(parents=True, exist_ok=True)
        entry.write_text(PROGRAM_SOURCE)


def _make_program_portable(project_dir: Path) -> None:
    path = project_dir / PROJECT_FILE
    text = path.read_text()
    if "/infra" not in text and "\\infra" not in text:
        return  # no absolute path ending in `infra` anywhere: portable, and every command spares yaml's import
    import yaml

    from tenantctl import yamledit

    try:
        main = (yaml.safe_load(text) or {}).get("main")
    except (yaml.YAMLError, AttributeError):
        return  # Project.load reports a broken file
    if not isinstance(main, str) or not Path(main).is_absolute() or Path(main).name != "infra":
        return  # a relative program (the repository's own `infra/`, or the entry point above): portable
    _write_program(project_dir)
    path.write_text(yamledit.edit(text, lambda doc: doc.__setitem__("main", f"{PROGRAM_DIR}/")))
