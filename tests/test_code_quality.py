"""The code stays `mypy --strict` and `ruff` clean (STYLE.md): checked like any other behaviour."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run_tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=300)


def test_mypy_strict_is_clean() -> None:
    result = run_tool("mypy", "--no-incremental")  # files and strictness come from setup.cfg
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_is_clean() -> None:
    result = run_tool("ruff", "check", "--no-cache", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_module_but_kube_imports_requests() -> None:
    """The HTTP library stays behind one module, so its exceptions cannot leak anywhere else."""
    offenders = [
        str(path.relative_to(REPO))
        for folder in ("syncer", "renderers")
        for path in sorted((REPO / folder).rglob("*.py"))
        if path.name != "kube.py" and ("import requests" in path.read_text() or "from requests" in path.read_text())
    ]
    assert offenders == []


def test_renderers_never_see_kubernetes_objects() -> None:
    """Kubernetes semantics live in the translator: renderers import the model, never snapshots or sources."""
    forbidden = ("syncer.snapshot", "syncer.source", "syncer.translate", "syncer.kube.client", "syncer.kube.resources")
    offenders = [
        f"{path.name}: {name}"
        for path in sorted((REPO / "renderers").rglob("*.py"))
        for name in forbidden
        if name in path.read_text()
    ]
    assert offenders == []
