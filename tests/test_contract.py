"""The renderer contract (syncer.render.contract): the built-ins offer what they claim, the pipeline asks for each
capability by type, and a renderer that says nothing about secrets gets owner-only files.

This module is also type-checked by mypy (setup.cfg `files`): the assignments in `typed_conformance` fail the
mypy test when a built-in renderer drifts from a Protocol it is meant to satisfy.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

from renderers.envoy import EnvoyRenderer
from renderers.traefik import TraefikRenderer
from syncer.model import RoutingModel
from syncer.output.writer import FileWriter
from syncer.render.contract import (
    Bootstraps,
    ChecksFiles,
    DeclaresSecrets,
    DelaysPruning,
    Renderer,
    TransitionsFiles,
    bootstrap_options_of,
    secret_files_of,
)
from syncer.render.plugins import load_renderer, load_renderer_class
from syncer.run.cycle import Syncer
from syncer.source import DirectorySource
from syncer.translate import translate

REPO = Path(__file__).resolve().parent.parent
CASES = REPO / "fixtures" / "cases"
TLS_CASES = ("tls-certificate-chain", "tls-hosts-secret", "tls-without-hosts", "tls-conflict-oldest-wins")


def typed_conformance(traefik: TraefikRenderer, envoy: EnvoyRenderer) -> tuple[object, ...]:
    """Never called: mypy checks that each built-in satisfies the Protocols it is listed under."""
    required: tuple[Renderer, Renderer] = (traefik, envoy)
    bootstraps: tuple[Bootstraps, Bootstraps] = (traefik, envoy)
    secrets: tuple[DeclaresSecrets, DeclaresSecrets] = (traefik, envoy)
    envoy_only: tuple[ChecksFiles, TransitionsFiles, DelaysPruning] = (envoy, envoy, envoy)
    return (required, bootstraps, secrets, envoy_only)


CAPABILITIES = {
    "traefik": {"Bootstraps", "DeclaresSecrets"},
    "envoy": {"Bootstraps", "DeclaresSecrets", "ChecksFiles", "TransitionsFiles", "DelaysPruning"},
}


@pytest.mark.parametrize("name", sorted(CAPABILITIES))
def test_built_ins_load_through_entry_points_with_the_capabilities_they_claim(name: str, tmp_path: Path) -> None:
    renderer = load_renderer(name, {}, output_dir=str(tmp_path))
    found = {
        protocol.__name__
        for protocol in (Bootstraps, ChecksFiles, DeclaresSecrets, DelaysPruning, TransitionsFiles)
        if isinstance(renderer, protocol)
    }
    assert found == CAPABILITIES[name]
    assert isinstance(renderer, Bootstraps)
    assert bootstrap_options_of(load_renderer_class(name)) == renderer.bootstrap_options


@pytest.mark.parametrize("name", sorted(CAPABILITIES))
@pytest.mark.parametrize("case", TLS_CASES)
def test_the_secret_declaration_covers_every_file_holding_a_key(name: str, case: str, tmp_path: Path) -> None:
    """The writer no longer reads bytes to pick a mode, so the declaration must name every key file, and only those."""
    model = translate(DirectorySource(CASES / case).fetch()).model
    assert model.certificates, "a case with certificates"
    renderer = load_renderer(name, {}, output_dir=str(tmp_path))
    files = renderer.render(model)
    secret = secret_files_of(renderer)
    assert {n for n in files if secret(n)} == {n for n, content in files.items() if b"PRIVATE KEY-----" in content}


class SilentRenderer:
    """A third-party renderer that says nothing about secrets."""

    name = "silent"

    def render(self, model: RoutingModel) -> Mapping[str, bytes]:
        return {"hosts/list.txt": "".join(f"{v.hostname}\n" for v in model.virtual_hosts).encode()}


class DeclaringRenderer(SilentRenderer):
    def holds_secret(self, name: str) -> bool:
        return False


def test_a_renderer_that_declares_no_secrets_gets_owner_only_files(manifests: Path, out: Path) -> None:
    Syncer(DirectorySource(manifests), SilentRenderer(), FileWriter(out)).cycle()  # type: ignore[arg-type]
    assert (out / "hosts/list.txt").stat().st_mode & 0o777 == 0o600
    assert (out / "hosts").stat().st_mode & 0o777 == 0o700
    other = out.parent / "declared"
    other.mkdir()
    Syncer(DirectorySource(manifests), DeclaringRenderer(), FileWriter(other)).cycle()  # type: ignore[arg-type]
    assert (other / "hosts/list.txt").stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize(
    ("name", "settings", "renderer_options"),
    [
        ("traefik", {"http-address": "127.0.0.1:8000", "throttle": "50ms"}, {"entrypoint-http": "plain"}),
        ("envoy", {"admin-address": "127.0.0.1:9999", "node-id": "edge-1"}, {}),
    ],
)
def test_bootstrap_command_prints_what_the_plugin_returns(
    name: str, settings: dict[str, str], renderer_options: dict[str, str], tmp_path: Path
) -> None:
    args = [arg for flag, value in settings.items() for arg in (f"--{flag}", value)]
    args += [arg for key, value in renderer_options.items() for arg in ("--renderer-opt", f"{name}.{key}={value}")]
    result = subprocess.run(
        [sys.executable, "-m", "syncer", "bootstrap", name, "--output-dir", str(tmp_path), *args],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    renderer = load_renderer(name, renderer_options, output_dir=str(tmp_path))
    assert isinstance(renderer, Bootstraps)
    defaults = {flag: default for flag, (default, _) in renderer.bootstrap_options.items()}
    assert result.stdout == renderer.bootstrap(str(tmp_path), defaults | settings)
    assert result.stdout != renderer.bootstrap(str(tmp_path), defaults)  # the flags reached the plugin
    assert str(tmp_path) in result.stdout
