"""The code stays `mypy --strict` and `ruff` clean (STYLE.md): checked like any other behaviour."""

from __future__ import annotations

import ast
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


# The import rule of each folder: the project modules (and, for the HTTP stack, libraries) it may import. A folder
# not listed here (cli/, run/) may import anything but is imported by nothing below it.
HTTP_LIBRARIES = ("requests", "urllib3", "tenacity")
ALLOWED: dict[str, tuple[str, ...]] = {
    "syncer/kube": (
        "syncer.__version__",
        "syncer.deadline",
        "syncer.errors",
        "syncer.jsoncodec",
        "syncer.kube",
        *HTTP_LIBRARIES,
    ),
    "syncer/translate": ("syncer.model", "syncer.snapshot", "syncer.errors", "syncer.translate"),
    "syncer/output": (
        "syncer.__version__",
        "syncer.deadline",
        "syncer.errors",
        "syncer.jsoncodec",
        "syncer.snapshot",
        "syncer.output",
    ),
    "syncer/render": ("syncer.model", "syncer.errors", "syncer.render"),
    "syncer/model.py": (),
    "syncer/errors.py": (),
    "syncer/deadline.py": (),
    "syncer/jsoncodec.py": (),
    "syncer/snapshot.py": ("syncer.jsoncodec", "syncer.kube.resources"),
    "syncer/source.py": ("syncer.deadline", "syncer.errors", "syncer.kube.resources", "syncer.snapshot"),
    "renderers/traefik.py": ("syncer.model", "syncer.errors", "syncer.jsoncodec", "renderers.options"),
    "renderers/options.py": ("syncer.errors",),
    "renderers/envoy": ("syncer.model", "syncer.errors", "syncer.jsoncodec", "renderers.options", "renderers.envoy"),
}
WATCHED_PREFIXES = ("syncer", "renderers", *HTTP_LIBRARIES)


def imported_modules(path: Path) -> set[str]:
    """Every name an `import` or `from ... import` statement of the file takes, dotted (absolute imports only)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.update(f"{node.module}.{alias.name}" for alias in node.names)  # `from syncer import jsoncodec`
    return found


def allowed(module: str, rule: tuple[str, ...]) -> bool:
    return any(module == entry or module.startswith(entry + ".") for entry in rule)


def rule_for(relative: str) -> tuple[str, ...] | None:
    for folder, rule in ALLOWED.items():
        if relative == folder or relative.startswith(folder + "/"):
            return rule
    return None


def python_files() -> list[Path]:
    return [path for folder in ("syncer", "renderers") for path in sorted((REPO / folder).rglob("*.py"))]


def test_each_folder_imports_only_what_its_rule_allows() -> None:
    offenders = []
    for path in python_files():
        relative = str(path.relative_to(REPO))
        rule = rule_for(relative)
        if rule is None:
            continue
        for module in sorted(imported_modules(path)):
            if module.partition(".")[0] in WATCHED_PREFIXES and not allowed(module, rule):
                offenders.append(f"{relative}: {module}")
    assert offenders == []


def test_nothing_outside_kube_imports_the_http_stack() -> None:
    """The HTTP library stays behind one package, so its exceptions cannot leak anywhere else (kopf's rule)."""
    offenders = [
        f"{path.relative_to(REPO)}: {module}"
        for path in python_files()
        if not str(path.relative_to(REPO)).startswith("syncer/kube/")
        for module in imported_modules(path)
        if module.partition(".")[0] in HTTP_LIBRARIES
    ]
    assert offenders == []


def test_nothing_below_the_command_line_and_the_loop_imports_them() -> None:
    """cli/ wires everything and run/ drives the pipeline: a stage that imported either would turn the flow around."""
    offenders = [
        f"{path.relative_to(REPO)}: {module}"
        for path in python_files()
        if not str(path.relative_to(REPO)).startswith(("syncer/cli/", "syncer/run/", "syncer/config.py"))
        and path.name != "__main__.py"
        for module in imported_modules(path)
        if allowed(module, ("syncer.cli",)) or allowed(module, ("syncer.run",))
    ]
    assert offenders == []


def test_the_rule_checker_sees_a_forbidden_import(tmp_path: Path) -> None:
    """The checker itself can fail: an import a renderer may not make is reported."""
    sample = tmp_path / "sample.py"
    sample.write_text("from syncer.snapshot import Snapshot\nimport requests\nfrom syncer.model import Route\n")
    modules = imported_modules(sample)
    rule = ALLOWED["renderers/traefik.py"]
    assert sorted(m for m in modules if not allowed(m, rule)) == ["requests", "syncer.snapshot.Snapshot"]


def test_no_module_is_longer_than_400_lines() -> None:
    long = [f"{p.relative_to(REPO)}: {n}" for p in python_files() if (n := len(p.read_text().splitlines())) > 400]
    assert long == []
