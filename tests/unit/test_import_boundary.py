"""tenant_runtime imports neither pulumi, typer nor tenantctl: proven in a fresh
interpreter where those modules cannot be imported at all."""

from __future__ import annotations

import subprocess
import sys

BLOCKED = ("pulumi", "pulumi_aws", "typer", "tenantctl", "starlette", "fastapi", "jinja2", "rich", "moto")

PROBE = f"""
import importlib.abc, sys

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {BLOCKED!r}:
            raise ImportError("blocked by the import-boundary test: " + name)
        return None

sys.meta_path.insert(0, Block())
import tenant_runtime, tenant_runtime.asgi, tenant_runtime.runtime
print(sorted(m for m in sys.modules if m.split(".")[0] in {BLOCKED!r}))
"""


def test_runtime_imports_without_the_provisioning_stack():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_the_probe_does_block():
    # The finder is not a no-op: importing tenantctl under it fails.
    probe = PROBE.replace("import tenant_runtime, tenant_runtime.asgi, tenant_runtime.runtime", "import tenantctl")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "blocked by the import-boundary test" in out.stderr


def test_every_exported_name_resolves_lazily() -> None:
    import tenant_runtime

    assert set(tenant_runtime.__all__) == set(tenant_runtime._EXPORTS)
    for name in tenant_runtime.__all__:
        assert getattr(tenant_runtime, name).__name__ == name
