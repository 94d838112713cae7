"""Target selection: precedence env > tenantctl.toml > sandbox default, and an
aws target never reaching the LocalEngine (nor a sandbox one the PulumiEngine)."""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tenantctl import engines as engines_mod
from tenantctl.engines import open_engine
from tenantctl.errors import InvalidInput
from tenantctl.project import Project, ensure_project_file
from tenantctl.project import find_root as project_root
from tenantctl.target import Target, find_config, load_target, render_config

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    (tmp_path / "Pulumi.yaml").write_text("name: tenantctl\nruntime: python\nmain: infra/\nstackConfigDir: stacks\n")
    (tmp_path / "stacks").mkdir()
    return tmp_path


def write_config(folder: Path, text: str) -> Path:
    path = folder / "tenantctl.toml"
    path.write_text(text)
    return path


def test_nothing_configured_is_the_sandbox(project: Path) -> None:
    target = load_target(project, environ={})
    assert (target.kind, target.source) == ("sandbox", "default")
    assert target.aws.backend_url is None


def test_aws_credentials_in_the_shell_do_not_switch_to_aws(project: Path) -> None:
    env = {"AWS_PROFILE": "prod", "AWS_REGION": "eu-west-1", "PULUMI_BACKEND_URL": "s3://state"}
    target = load_target(project, environ=env)
    assert target.kind == "sandbox"
    assert (target.aws.profile, target.aws.region, target.aws.backend_url) == ("prod", "eu-west-1", "s3://state")


def test_file_selects_aws_with_its_settings(project: Path) -> None:
    path = write_config(project, 'target = "aws"\n[aws]\nregion = "ap-northeast-1"\nprofile = "ops"\n'
                                 'backend_url = "s3://tenantctl-state"\nsecrets_provider = "awskms://alias/tenantctl"\n')
    target = load_target(project / "stacks", environ={})  # found from a subdirectory too
    assert (target.kind, target.source) == ("aws", str(path))
    assert target.aws.region == "ap-northeast-1"
    assert target.aws.secrets_provider == "awskms://alias/tenantctl"


def test_env_overrides_the_file_field_by_field(project: Path) -> None:
    write_config(project, 'target = "aws"\n[aws]\nregion = "eu-west-1"\nprofile = "ops"\nbackend_url = "s3://a"\n')
    env = {"AWS_REGION": "us-east-1", "PULUMI_BACKEND_URL": "file:///tmp/state", "PULUMI_ORG": "acme",
           "TENANTCTL_SECRETS_PROVIDER": "passphrase"}
    target = load_target(project, environ=env)
    assert target.aws.region == "us-east-1"
    assert target.aws.profile == "ops"  # not overridden
    assert target.aws.backend_url == "file:///tmp/state"
    assert (target.aws.org, target.aws.secrets_provider) == ("acme", "passphrase")


def test_aws_region_wins_over_aws_default_region(project: Path) -> None:
    target = load_target(project, environ={"AWS_DEFAULT_REGION": "eu-west-1", "AWS_REGION": "us-west-2"})
    assert target.aws.region == "us-west-2"
    assert load_target(project, environ={"AWS_DEFAULT_REGION": "eu-west-1"}).aws.region == "eu-west-1"


def test_tenantctl_target_env_overrides_the_file_kind(project: Path) -> None:
    write_config(project, 'target = "aws"\n')
    target = load_target(project, environ={"TENANTCTL_TARGET": "Sandbox"})
    assert (target.kind, target.source) == ("sandbox", "env")


def test_config_above_the_project_root_is_not_read(tmp_path: Path) -> None:
    write_config(tmp_path, 'target = "aws"\n')
    inner = tmp_path / "repo"
    inner.mkdir()
    (inner / "Pulumi.yaml").write_text("name: tenantctl\n")
    assert find_config(inner) is None
    assert load_target(inner, environ={}).kind == "sandbox"


def test_relative_paths_are_relative_to_the_file(project: Path) -> None:
    write_config(project, '[sandbox]\nstate_dir = ".tenantctl/sandbox"\n[aws]\npulumi_root = "tools/pulumi"\n')
    target = load_target(project / "stacks", environ={})
    assert target.sandbox.state_dir == project / ".tenantctl/sandbox"
    assert target.aws.pulumi_root == project / "tools/pulumi"


@pytest.mark.parametrize("text, needle", [
    ('target = "gcp"\n', "kind"),
    ('target = "aws"\n[aws]\nregoin = "x"\n', "regoin"),
    ('[clouds]\n', "unknown key"),
    ('target = \n', "not valid TOML"),
])
def test_bad_config_is_refused_with_the_file_named(project: Path, text: str, needle: str) -> None:
    path = write_config(project, text)
    with pytest.raises(InvalidInput) as err:
        load_target(project, environ={})
    assert str(path) in str(err.value) and needle in str(err.value)


def test_bad_target_env_is_refused(project: Path) -> None:
    with pytest.raises(InvalidInput, match="TENANTCTL_TARGET"):
        load_target(project, environ={"TENANTCTL_TARGET": "prod"})


def test_rendered_config_reads_back_as_the_same_target(project: Path) -> None:
    wanted = Target.model_validate({"kind": "aws", "aws": {"region": "eu-west-1", "backend_url": "s3://b/p",
                                                             "secrets_provider": 'awskms://alias/x?region="eu"'}})
    path = write_config(project, render_config(wanted))
    got = load_target(project, environ={})
    assert got.model_dump(exclude={"source"}) == wanted.model_dump(exclude={"source"})
    assert got.source == str(path)


def test_project_root_walks_up_else_a_new_project_in_cwd(project: Path, tmp_path_factory) -> None:
    deep = project / "a" / "b"
    deep.mkdir(parents=True)
    assert project_root(deep) == project.resolve()
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    assert project_root(elsewhere) == elsewhere.resolve()
    ensure_project_file(elsewhere)
    written = yaml.safe_load((elsewhere / "Pulumi.yaml").read_text())
    assert written["stackConfigDir"] == "stacks" and written["name"] == yaml.safe_load(
        (REPO / "Pulumi.yaml").read_text())["name"]
    # The installed program through a relative entry point: the file works on any machine that installed tenantctl.
    assert not Path(written["main"]).is_absolute() and str(Path.home()) not in (elsewhere / "Pulumi.yaml").read_text()
    entry = elsewhere / written["main"] / "__main__.py"
    assert "from infra.program import main" in entry.read_text()
    assert Project.load(elsewhere).main == elsewhere / "tenantctl_program"
    assert project_root(elsewhere / "sub") == elsewhere.resolve()


def test_the_project_file_is_parsed_once_until_it_changes(project: Path, monkeypatch) -> None:
    parses = []
    real_load = yaml.load
    monkeypatch.setattr(yaml, "load", lambda *a, **k: parses.append(1) or real_load(*a, **k))
    first = Project.load(project)
    first.stacks_dir = project / "elsewhere"  # a caller's copy: changing it changes nobody else's
    assert [Project.load(project).stacks_dir for _ in range(5)] == [project / "stacks"] * 5
    assert len(parses) == 1
    (project / "Pulumi.yaml").write_text("name: tenantctl\nruntime: python\nmain: infra/\nstackConfigDir: committed\n")
    assert Project.load(project).stacks_dir == project / "committed" and len(parses) == 2


def test_an_absolute_program_path_written_earlier_is_made_portable_in_place(tmp_path: Path) -> None:
    import infra

    old = (f"# our tenants\nname: tenantctl\nruntime: python\nmain: {Path(infra.__file__).parent}  # machine-specific\n"
           "stackConfigDir: stacks\nextra: kept\n")
    (tmp_path / "Pulumi.yaml").write_text(old)
    ensure_project_file(tmp_path)
    text = (tmp_path / "Pulumi.yaml").read_text()
    # ruamel keeps the comment's column when it can: the gap before it depends on the old path's length.
    expected = old.replace(str(Path(infra.__file__).parent), "tenantctl_program/")
    assert re.sub(r" +#", " #", text) == re.sub(r" +#", " #", expected)
    assert (tmp_path / "tenantctl_program" / "__main__.py").is_file()
    ensure_project_file(tmp_path)  # idempotent
    assert (tmp_path / "Pulumi.yaml").read_text() == text


def test_aws_target_opens_the_pulumi_engine_and_never_the_local_one(project: Path, monkeypatch) -> None:
    from tenantctl.engines.pulumi.engine import PulumiEngine

    def no_local(*args, **kwargs):
        raise AssertionError("an aws target reached the LocalEngine")

    monkeypatch.setattr(engines_mod, "_open_local", no_local)
    engine = open_engine(load_target(project, environ={"TENANTCTL_TARGET": "aws"}), project)
    assert isinstance(engine, PulumiEngine)


def test_sandbox_target_never_opens_the_pulumi_engine(project: Path, monkeypatch) -> None:
    opened = []

    def no_pulumi(*args, **kwargs):
        raise AssertionError("a sandbox target reached the PulumiEngine")

    monkeypatch.setattr(engines_mod, "_open_pulumi", no_pulumi)
    monkeypatch.setattr(engines_mod, "_open_local",
                        lambda target, project_dir, gate, sandbox: opened.append((target.kind, project_dir)))
    open_engine(load_target(project, environ={}), project)
    assert opened == [("sandbox", project)]


def test_pulumi_engine_refuses_a_sandbox_target(project: Path) -> None:
    from tenantctl.engines.pulumi.engine import PulumiEngine

    with pytest.raises(InvalidInput, match="aws target only"):
        PulumiEngine(load_target(project, environ={}), project)


@pytest.mark.skipif(importlib.util.find_spec("tenantctl.engines.local") is None
                    or importlib.util.find_spec("tenantctl.sandbox") is None,
                    reason="the LocalEngine / sandbox modules are not in this checkout yet")
def test_local_engine_contract_matches_what_open_engine_calls() -> None:
    from tenantctl.engines.local import LocalEngine
    from tenantctl.sandbox import ensure_running

    params = inspect.signature(LocalEngine).parameters
    assert list(params)[:2] == ["project_dir", "endpoints"] and "state_dir" in params
    assert len(inspect.signature(ensure_running).parameters) >= 1


def _cli(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("TENANTCTL_", "PULUMI_", "AWS_"))}
    return subprocess.run([sys.executable, "-c", "from tenantctl.cli.app import main; main()", *args],
                          cwd=cwd, env={**clean, **env}, capture_output=True, text=True, timeout=60)


def test_target_set_then_show_round_trip_through_the_cli(project: Path) -> None:
    done = _cli(["target", "set", "aws", "--backend-url", "https://api.pulumi.com", "--org", "acme",
                 "--region", "eu-west-1"], project)
    assert done.returncode == 0, done.stderr
    shown = _cli(["target", "show", "--json"], project, HOME=str(project), PATH="/nonexistent")
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert (data["kind"], data["backend"], data["platform_stack"]) == ("aws", "cloud", "acme/tenantctl/platform")
    assert data["config_file"] == str((project / "tenantctl.toml").resolve())
    assert data["pulumi_cli"] is False
    refused = _cli(["target", "set", "gcp"], project)
    assert refused.returncode == 3 and "kind" in refused.stderr
