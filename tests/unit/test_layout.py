"""The package's shape: module-level imports form no circle, infra/ stays a
program (no policy, nothing of the CLI), and nothing reaches into another
package's private names."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ROOTS = {"tenantctl": REPO / "src" / "tenantctl", "tenant_runtime": REPO / "src" / "tenant_runtime",
         "infra": REPO / "infra"}


def _modules() -> dict[str, Path]:
    out = {}
    for package, root in ROOTS.items():
        for path in root.rglob("*.py"):
            parts = [package, *path.relative_to(root).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _top_level_imports(path: Path, name: str, known: set[str]) -> dict[str, list[str]]:
    """Module -> imported names, for imports that run when the module loads
    (module body, class bodies; not functions, not `if TYPE_CHECKING:`)."""
    tree = ast.parse(path.read_text())
    found: dict[str, list[str]] = {}
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, (ast.If, ast.Try, ast.With)):
                visit(getattr(node, "body", []) + getattr(node, "orelse", []) + getattr(node, "finalbody", []))
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)
            elif isinstance(node, ast.ClassDef):
                visit(node.body)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    found.setdefault(alias.name, [])
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    found.setdefault(sub if sub in known else base, []).append(alias.name)

    visit(tree.body)
    return found


def _graph() -> dict[str, dict[str, list[str]]]:
    modules = _modules()
    known = set(modules)
    return {name: {m: names for m, names in _top_level_imports(path, name, known).items() if m in known}
            for name, path in modules.items()}


def _all_imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every module of ours ``name`` imports, at load time or inside a function."""
    deps = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            deps |= {a.name for a in node.names if a.name in known}
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                deps.add(sub if sub in known else node.module)
    return (deps & known) - {name}


def test_no_import_circle_even_through_lazy_imports() -> None:
    modules = _modules()
    graph = {name: _all_imports(name, path, set(modules)) for name, path in modules.items()}
    done: set[str] = set()
    cycles: list[str] = []

    def walk(node: str, stack: list[str]) -> None:
        for dep in sorted(graph[node]):
            if dep in stack:
                cycles.append(" -> ".join(stack[stack.index(dep):] + [dep]))
            elif dep not in done:
                walk(dep, stack + [dep])
        done.add(node)

    for module in sorted(graph):
        if module not in done:
            walk(module, [module])
    assert not cycles, "import circles: " + "; ".join(sorted(set(cycles)))


def test_infra_is_a_program_not_a_client_of_the_control_side() -> None:
    graph = _graph()
    offenders = {m: sorted(d for d in deps if d.startswith(("tenantctl.policy", "tenantctl.cli", "tenantctl.operations",
                                                            "tenantctl.engines", "tenantctl.workspace")))
                 for m, deps in graph.items() if m.startswith("infra")}
    assert not {m: d for m, d in offenders.items() if d}, offenders


def test_no_module_imports_private_names_of_another_package() -> None:
    """Across tenantctl, tenant_runtime and infra, private names stay in their package."""
    problems = []
    for name, path in _modules().items():
        own = ".".join(name.split(".")[:2])
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ROOTS):
                continue
            if ".".join(node.module.split(".")[:2]) == own:
                continue
            problems += [f"{name} imports {node.module}.{a.name}" for a in node.names
                         if a.name.startswith("_") and a.name != "__version__"]
    assert not problems, problems


def test_no_two_test_modules_share_a_basename() -> None:
    # The test directories are not packages: pytest imports each module under
    # its basename, and a second module of the same name fails the whole run's collection.
    seen: dict[str, Path] = {}
    for path in sorted((REPO / "tests").rglob("test_*.py")):
        assert path.name not in seen, f"{path} and {seen[path.name]} share a basename"
        seen[path.name] = path
