"""The light commands as processes against their floors, on a fresh sandbox of its own.

    python bench/light.py                        # 200 registry records, 7 rounds
    python bench/light.py --records 50 --rounds 3  # quick run

- `tenantctl --help` against a bare Typer app declaring the same command tree
  (every group, command, argument and option with its help text, generated
  from tenantctl's own), run with `--help`: what is left is tenantctl's own
  import and start-up cost.
- `tenantctl list` (one page) and `tenantctl status ID` against a script that
  imports boto3 and makes the same registry call (its parameters captured from
  tenantctl's own call: one Scan page, one GetItem) and prints what it read.

Every side is its own process importing compiled modules (as an installed
package does); sides interleaved, `--rounds` times; min and median, and their
ratio (goal <= 1.3x). The records are synthetic: an active record and a stack
file each (as `bench/fleet.py` writes them), as `list` reads both.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

from common import bench_sandbox, compile_sources, interleaved_processes

FLOOR_CALL_ENV = "LIGHT_BENCH_CALL"  # the floor child's registry call: {"operation", "params"}


# -- the --help floor: a bare Typer app with the same commands ------------------------------
def _option_src(param: Any, name: str) -> str:
    """One parameter of the generated function: the same declarations, help and flags."""
    help_ = getattr(param, "help", None)
    hidden = getattr(param, "hidden", False)
    if param.param_type_name == "argument":
        many = param.nargs == -1
        kind = "list[str]" if many else "str"
        default = "..." if param.required else "None"
        return (f"{name}: {kind if param.required else f'Optional[{kind}]'} = typer.Argument("
                f"{default}, metavar={(param.metavar or param.name.upper())!r}, help={help_!r}, hidden={hidden})")
    decls = list(param.opts)
    if param.is_flag and param.secondary_opts:
        decls = [f"{param.opts[-1]}/{param.secondary_opts[0]}", *param.opts[:-1]]
    declared = ", ".join(repr(d) for d in decls)
    if param.is_flag:
        return f"{name}: bool = typer.Option(False, {declared}, help={help_!r}, hidden={hidden})"
    kind = "list[str]" if param.multiple else "str"
    return (f"{name}: Optional[{kind}] = typer.Option(None, {declared}, metavar={param.metavar!r}, "
            f"help={help_!r}, hidden={hidden})")


def bare_typer_source(root: Any) -> str:
    """Python source of a Typer app with ``root``'s click tree: groups, commands, parameters, help."""
    counter = itertools.count()
    lines = ["from typing import Optional", "", "import typer", ""]

    def function(decorator: str, command: Any) -> None:
        n = next(counter)
        params = [_option_src(p, f"p{n}_{i}") for i, p in enumerate(command.params) if p.name != "help"]
        lines.extend([decorator, f"def f{n}({', '.join(params)}) -> None:", "    pass", ""])

    def group(var: str, node: Any) -> None:
        for name, command in node.commands.items():
            if hasattr(command, "commands"):
                sub = f"g{next(counter)}"
                lines.append(f"{sub} = typer.Typer(help={command.help!r}, no_args_is_help=True, "
                             f"rich_markup_mode=None)")
                if command.params:
                    function(f"@{sub}.callback()", command)
                group(sub, command)
                lines.append(f"{var}.add_typer({sub}, name={name!r}, hidden={command.hidden})")
            else:
                function(f"@{var}.command({name!r}, help={command.help!r}, hidden={command.hidden})", command)

    lines.append(f"app = typer.Typer(name={root.name!r}, help={root.help!r}, no_args_is_help=True, "
                 "pretty_exceptions_enable=False, rich_markup_mode=None)")
    function("@app.callback()", root)
    group("app", root)
    lines.extend(["", "if __name__ == '__main__':", "    app(prog_name='tenantctl')", ""])
    return "\n".join(lines)


# -- the list / status floor: boto3 and the same registry call --------------------------------
def registry_call(registry: Any, run: Any) -> dict[str, Any]:
    """The DynamoDB call ``run()`` makes through ``registry``'s client, as {"operation", "params"}."""
    client = registry.client
    made: list[dict[str, Any]] = []

    def capture(model: Any, params: dict[str, Any], **_: Any) -> None:
        made.append({"operation": model.name, "params": params})

    client.meta.events.register("provide-client-params.dynamodb.*", capture)
    try:
        run()
    finally:
        client.meta.events.unregister("provide-client-params.dynamodb.*", capture)
    if len(made) != 1:
        sys.exit(f"expected one registry call, saw {[m['operation'] for m in made]}")
    return made[0]


def floor_registry() -> None:
    """The floor child: boto3, the one call, each item printed as a line of its plain values."""
    import boto3

    call = json.loads(os.environ[FLOOR_CALL_ENV])
    client = boto3.client("dynamodb", endpoint_url=os.environ["AWS_ENDPOINT_URL"],
                          region_name=os.environ["AWS_DEFAULT_REGION"])
    answer = getattr(client, _snake(call["operation"]))(**call["params"])
    items = answer.get("Items") or ([answer["Item"]] if "Item" in answer else [])
    for item in items:
        print("  ".join(f"{k}={next(iter(v.values()))}" for k, v in sorted(item.items())
                        if isinstance(next(iter(v.values())), str)))


def _snake(operation: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in operation).lstrip("_")


# -- the run ---------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200, help="registry records and stack files (default 200)")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (default 7)")
    parser.add_argument("--floor-registry", action="store_true", help=argparse.SUPPRESS)  # the floor's child
    args = parser.parse_args()
    if args.floor_registry:
        floor_registry()
        return

    import typer
    from fleet import write_synthetic

    from tenantctl.cli.app import app

    with bench_sandbox("light") as (endpoints, ws, project):
        print("applying the platform stack ...", file=sys.stderr)
        ws.ensure_platform()
        write_synthetic(ws, project, 0, args.records)
        tenant = "syn-00003"
        registry = ws.registry  # the project's, as the CLI's commands open it
        listed = registry_call(registry, registry.list)
        shown = registry_call(registry, lambda: registry.require(tenant))
        help_app = project.parent / "bare_typer_app.py"
        help_app.write_text(bare_typer_source(typer.main.get_command(app)))
        print(compile_sources(), file=sys.stderr)

        cli = [sys.executable, "-m", "tenantctl"]
        floor = [sys.executable, str(Path(__file__).resolve()), "--floor-registry"]
        cases = {
            "--help": {"tenantctl": (cli + ["--help"], {}),
                       "floor: bare Typer app, same commands": ([sys.executable, str(help_app), "--help"], {})},
            "list": {"tenantctl": (cli + ["list"], {}),
                     "floor: boto3 + the same Scan": (floor, {FLOOR_CALL_ENV: json.dumps(listed)})},
            f"status {tenant}": {"tenantctl": (cli + ["status", tenant], {}),
                                 "floor: boto3 + the same GetItem": (floor, {FLOOR_CALL_ENV: json.dumps(shown)})},
        }
        env = {**os.environ, "PYTHONWARNINGS": "ignore"}
        print(f"{args.rounds} interleaved rounds ...", file=sys.stderr)
        times = interleaved_processes(cases, env, project, args.rounds)

        print(f"light commands as processes, {args.records} records, {args.rounds} interleaved rounds "
              f"(min / median s; ratio of mins / of medians; goal <= 1.3x)")
        print(f"{'':22}{'tenantctl':>20}{'floor':>20}{'ratio':>18}   floor")
        for case, sides in times.items():
            (_, mine), (floor_name, base) = sides.items()
            print(f"{case:22}{min(mine):10.3f}{statistics.median(mine):10.3f}"
                  f"{min(base):10.3f}{statistics.median(base):10.3f}"
                  f"{min(mine) / min(base):8.2f}x{statistics.median(mine) / statistics.median(base):9.2f}x   "
                  f"{floor_name}")
        print(f"(load average {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
