"""Golden cases: fixtures/cases/<behaviour>/input.yaml -> model.yaml and one folder of files per built-in renderer.

`pytest --update-golden` rewrites the expected files (and deletes those no case produces); review the diff.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from renderers.envoy import EnvoyRenderer
from renderers.traefik import TraefikRenderer
from syncer.model import model_to_plain
from syncer.source import DirectorySource
from syncer.translate import TranslateOptions, translate

CASES = Path(__file__).resolve().parent.parent / "fixtures" / "cases"
XDS_DIR = "/var/lib/ingress-syncer"  # the folder as a golden Envoy would see it
RENDERERS = {"traefik": TraefikRenderer, "envoy": EnvoyRenderer}


def case_names() -> list[str]:
    return sorted(p.name for p in CASES.iterdir() if (p / "input.yaml").is_file())


def load_options(case: Path) -> dict[str, Any]:
    path = case / "options.yaml"
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}


def expected_outputs(case: Path) -> dict[str, bytes]:
    """model.yaml and <renderer>/<file> as produced now by the code under test."""
    options = load_options(case)
    snapshot = DirectorySource(case).read_files([case / "input.yaml"])
    translation = translate(snapshot, TranslateOptions(**options.get("translate", {})))
    plain = {**model_to_plain(translation.model), "problems": [str(p) for p in translation.problems]}
    outputs = {"model.yaml": yaml.safe_dump(plain, sort_keys=False, width=1 << 20).encode()}
    for name, factory in RENDERERS.items():
        renderer = factory(options.get(name, {}), output_dir=XDS_DIR)
        for file_name, content in renderer.render(translation.model).items():
            outputs[f"{name}/{file_name}"] = content
    return outputs


def on_disk(case: Path) -> dict[str, bytes]:
    found = {"model.yaml": (case / "model.yaml").read_bytes()} if (case / "model.yaml").is_file() else {}
    for name in RENDERERS:
        for path in sorted((case / name).rglob("*")) if (case / name).is_dir() else []:
            if path.is_file():
                found[str(path.relative_to(case))] = path.read_bytes()
    return found


@pytest.mark.parametrize("name", case_names())
def test_golden_case(name: str, update_golden: bool) -> None:
    case = CASES / name
    produced = expected_outputs(case)
    if update_golden:
        for stale in set(on_disk(case)) - set(produced):
            (case / stale).unlink()
        for relative, content in produced.items():
            (case / relative).parent.mkdir(parents=True, exist_ok=True)
            (case / relative).write_bytes(content)
    existing = on_disk(case)
    assert sorted(existing) == sorted(produced), "files differ; run pytest --update-golden and review the diff"
    for relative, content in produced.items():
        assert existing[relative].decode() == content.decode(), f"{name}/{relative} differs"


def test_there_are_cases() -> None:
    assert len(case_names()) >= 3
