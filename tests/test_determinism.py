"""Same objects, any order: the same model, the same problems and the same bytes from every built-in renderer."""

from __future__ import annotations

import functools
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from renderers.envoy import EnvoyRenderer
from renderers.traefik import TraefikRenderer
from syncer.model import RoutingModel, model_to_plain
from syncer.render.contract import Renderer
from syncer.snapshot import KubeObject, Snapshot, fingerprint
from syncer.source import DirectorySource
from syncer.translate import TranslateOptions, translate

CASES = Path(__file__).resolve().parent.parent / "fixtures" / "cases"
RENDERERS: dict[str, type[Renderer]] = {"traefik": TraefikRenderer, "envoy": EnvoyRenderer}
Outcome = tuple[RoutingModel, dict[str, object], list[str], dict[str, bytes]]


def case_names() -> list[str]:
    return sorted(p.name for p in CASES.iterdir() if (p / "input.yaml").is_file())


@functools.cache
def case_input(name: str) -> tuple[dict[str, list[KubeObject]], dict[str, Any]]:
    """The case's objects by kind, in file order, and its options.yaml."""
    case = CASES / name
    options_file = case / "options.yaml"
    options = (yaml.safe_load(options_file.read_text()) or {}) if options_file.is_file() else {}
    snapshot = DirectorySource(case).read_files([case / "input.yaml"])
    by_kind: dict[str, list[KubeObject]] = {}
    for key, obj in snapshot.objects.items():
        by_kind.setdefault(key.kind, []).append(obj)
    return by_kind, options


def outcome(snapshot: Snapshot, options: Mapping[str, Any]) -> Outcome:
    translation = translate(snapshot, TranslateOptions(**options.get("translate", {})))
    files = {
        f"{name}/{file_name}": content
        for name, factory in RENDERERS.items()
        for file_name, content in factory(options.get(name, {}), output_dir="/x").render(translation.model).items()
    }
    return translation.model, model_to_plain(translation.model), [str(p) for p in translation.problems], files


@functools.cache
def expected(name: str) -> Outcome:
    by_kind, options = case_input(name)
    return outcome(Snapshot.build(by_kind), options)


def reordered(value: Any, rng: random.Random) -> Any:
    """The same object with every mapping's keys in a random order; lists keep their (meaningful) order."""
    if isinstance(value, Mapping):
        keys = list(value)
        rng.shuffle(keys)
        return {key: reordered(value[key], rng) for key in keys}
    if isinstance(value, list):
        return [reordered(item, rng) for item in value]
    return value


def shuffled(by_kind: Mapping[str, list[KubeObject]], rng: random.Random) -> dict[str, list[KubeObject]]:
    kinds = list(by_kind)
    rng.shuffle(kinds)
    result = {}
    for kind in kinds:
        objects = [reordered(obj, rng) for obj in by_kind[kind]]
        rng.shuffle(objects)
        result[kind] = objects
    return result


def assert_same(got: Outcome, want: Outcome) -> None:
    got_model, got_plain, got_problems, got_files = got
    want_model, want_plain, want_problems, want_files = want
    assert got_plain == want_plain
    assert got_model == want_model  # what the plain form leaves out too: key bytes, Route.source
    assert got_problems == want_problems
    assert sorted(got_files) == sorted(want_files)
    for file_name, content in want_files.items():
        assert got_files[file_name] == content, f"{file_name} differs"


def test_there_are_cases() -> None:
    assert case_names()


@pytest.mark.parametrize("name", case_names())
@settings(max_examples=10, deadline=None, derandomize=True, database=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_object_order_changes_nothing(name: str, seed: int) -> None:
    rng = random.Random(seed)  # a plain Random: Hypothesis's own records every call, 10x slower here
    by_kind, options = case_input(name)
    snapshot = Snapshot.build(shuffled(by_kind, rng))
    assert_same(outcome(snapshot, options), expected(name))
    # Snapshot.build sorts; the translator must not need it to (an API source may one day skip that step).
    items = list(snapshot.objects.items())
    rng.shuffle(items)
    unsorted = Snapshot(objects=dict(items), fingerprints={key: fingerprint(obj) for key, obj in items})
    assert_same(outcome(unsorted, options), expected(name))
