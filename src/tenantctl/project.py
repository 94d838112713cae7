"""The project a command runs in: the directory holding Pulumi.yaml, whose
`stackConfigDir` holds the committed stacks. Every reader of Pulumi.yaml goes
through ``Project.load``."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from tenantctl.errors import InvalidInput, TargetUnavailable

PROJECT_FILE = "Pulumi.yaml"


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
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise InvalidInput(f"{path}: not valid YAML ({exc})") from None
        if not isinstance(data, dict) or not data.get("name"):
            raise InvalidInput(f"{path}: a Pulumi project file needs a `name`")
        return cls(dir=Path(project_dir), name=data["name"],
                   stacks_dir=Path(project_dir) / (data.get("stackConfigDir") or "."),
                   main=Path(project_dir) / (data.get("main") or "."))

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


def ensure_project_file(project_dir: Path) -> None:
    """Write Pulumi.yaml for a new project, its program the installed `infra`
    package, so an installed tenantctl never writes into its own checkout."""
    import importlib.util

    from tenantctl.templates import render

    path = project_dir / PROJECT_FILE
    if path.is_file():
        return
    spec = importlib.util.find_spec("infra")
    if spec is None or spec.origin is None:
        raise TargetUnavailable("the infra program is not installed next to tenantctl (reinstall the package)")
    path.write_text(render("project.yaml.j2", main=str(Path(spec.origin).parent)) + "\n")
