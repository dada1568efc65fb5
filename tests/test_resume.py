"""A fresh process whose input the files on disk were already written from leaves them alone (and says so).

Each `Syncer` here stands for one process (`syncer once` from cron, a restarted sidecar): it starts without a
previous snapshot and can only compare its input with what the writer stored beside the files.
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

from syncer.deadline import Deadline
from syncer.errors import RemovalHeld
from syncer.model import RoutingModel
from syncer.output.guard import RemovalGuard
from syncer.output.identity import code_digest, run_identity
from syncer.output.writer import FileWriter
from syncer.run.cycle import Syncer
from syncer.run.metrics import Metrics
from syncer.source import DirectorySource
from tests.test_writer import edit_in_place_later

IDENTITY = "code and settings of this test"


class CountingRenderer:
    name = "counting"

    def __init__(self) -> None:
        self.calls = 0

    def holds_secret(self, name: str) -> bool:
        return False  # declared: without it every file would be written 0600 (syncer.render.contract)

    def render(self, model: RoutingModel) -> Mapping[str, bytes]:
        self.calls += 1
        return {
            "hosts.txt": "".join(f"{v.hostname}\n" for v in model.virtual_hosts).encode(),
            f"routes/{model.route_count()}.txt": b"routes\n",
        }


def process(
    manifests: Path, out: Path, identity: str | None = IDENTITY, **extra: object
) -> tuple[Syncer, CountingRenderer]:
    """A new 'process': nothing in memory but what it is given."""
    renderer = CountingRenderer()
    syncer = Syncer(DirectorySource(manifests), renderer, FileWriter(out), identity=identity, **extra)  # type: ignore[arg-type]
    return syncer, renderer


def folder_state(folder: Path) -> dict[str, tuple[bytes, int, int]]:
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_ino, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_second_process_with_the_same_input_renders_and_writes_nothing(
    manifests: Path, out: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first, first_renderer = process(manifests, out)
    assert first.cycle().write is not None and first_renderer.calls == 1
    written = folder_state(out)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="syncer.run.cycle"):
        second, renderer = process(manifests, out)
        result = second.cycle()
    assert renderer.calls == 0 and not result.changed_input and result.write is None
    assert folder_state(out) == written  # bytes, inodes and mtimes: the manifest included
    assert "nothing to write" in caplog.text
    # The problems of the demo are reported again, as a full cycle would: an operator reading this run's log
    # must not conclude that the broken Ingress was fixed.
    assert "problem: Ingress shop/mistakes: spec.rules[0].host" in caplog.text
    # ...and the process goes on from that snapshot: an unchanged second cycle does nothing either.
    assert not second.cycle().changed_input and renderer.calls == 0


def test_metrics_of_a_process_that_found_nothing_to_do_match_the_writing_one(manifests: Path, out: Path) -> None:
    writing = Metrics()
    process(manifests, out, metrics=writing)[0].cycle()
    resumed = Metrics()
    syncer, renderer = process(manifests, out, metrics=resumed)
    syncer.cycle()
    assert renderer.calls == 0

    def gauges(metrics: Metrics) -> dict[str, float]:
        return {
            f"{sample.name}{sorted(sample.labels.items())}": sample.value
            for family in metrics.registry.collect()
            if family.name in ("syncer_rendered", "syncer_problems", "syncer_objects")
            for sample in family.samples
        }

    assert gauges(resumed) == gauges(writing)
    assert gauges(resumed)["syncer_rendered[('what', 'routes')]"] > 0
    assert resumed.files_ever_written  # the files are in place: a restarted `run` is ready without a change


@pytest.mark.parametrize(
    "change",
    ["input", "identity", "file deleted", "file edited in place", "file mode", "no identity", "dry run"],
)
def test_anything_but_the_same_input_code_settings_and_files_renders_again(
    manifests: Path, out: Path, change: str
) -> None:
    process(manifests, out)[0].cycle()
    identity: str | None = IDENTITY
    extra: dict[str, object] = {}
    if change == "input":
        ingresses = manifests / "ingresses.yaml"
        ingresses.write_text(ingresses.read_text().replace("shop.example.com", "store.example.com"))
    elif change == "identity":
        identity = IDENTITY + " with another renderer option"
    elif change == "file deleted":
        (out / "hosts.txt").unlink()
    elif change == "file edited in place":
        edit_in_place_later(out / "hosts.txt", b"X")  # same inode, same size, a later mtime
    elif change == "file mode":
        (out / "hosts.txt").chmod(0o600)
    elif change == "no identity":
        identity = None
    else:
        extra["dry_run"] = True
    syncer, renderer = process(manifests, out, identity=identity, **extra)
    syncer.cycle()
    assert renderer.calls == 1
    if change != "dry run":
        text = (out / "hosts.txt").read_text()
        assert ("store.example.com" if change == "input" else "shop.example.com") in text
        assert not text.startswith("X") and (out / "hosts.txt").stat().st_mode & 0o777 == 0o644


class RecordingPublisher:
    def __init__(self) -> None:
        self.served: list[tuple[str, ...]] = []

    def publish(self, snapshot: object, served: tuple[object, ...], deadline: Deadline | None = None) -> None:
        self.served.append(tuple(str(ref) for ref in served))


def test_status_write_back_still_learns_which_ingresses_are_served(manifests: Path, out: Path) -> None:
    process(manifests, out)[0].cycle()
    publisher = RecordingPublisher()
    syncer, _ = process(manifests, out, publisher=publisher)
    syncer.cycle()
    assert publisher.served and "Ingress shop/storefront" in publisher.served[0]
    assert folder_state(out)  # and the files are as they were


def test_a_model_held_by_the_removal_guard_is_judged_again_by_the_next_process(manifests: Path, out: Path) -> None:
    process(manifests, out, guard=RemovalGuard(0.5, 3, False))[0].cycle()
    for path in manifests.glob("*.yaml"):
        if path.name != "ingressclass.yaml":
            path.write_text(path.read_text().replace("ingressClassName: syncer", "ingressClassName: other"))
    for expected_calls in (1, 1):
        syncer, renderer = process(manifests, out, guard=RemovalGuard(0.5, 3, False))
        with pytest.raises(RemovalHeld):
            syncer.cycle()
        assert renderer.calls == expected_calls
    syncer, renderer = process(manifests, out, guard=RemovalGuard(0.5, 3, False))
    syncer.cycle()  # the third sighting of the same model: confirmed and written
    assert renderer.calls == 1 and (out / "hosts.txt").read_text() == "*.shop.example.com\n"  # what is left


class DrainingRenderer(CountingRenderer):
    name = "draining"

    def __init__(self, produce: tuple[str, ...]) -> None:
        super().__init__()
        self.produce = produce

    def render(self, model: RoutingModel) -> Mapping[str, bytes]:
        self.calls += 1
        return {name: b"x\n" for name in self.produce}

    def prune_delay(self, name: str) -> float:
        return 60.0


def test_a_file_kept_for_draining_goes_when_its_time_is_up_even_if_nothing_changes(manifests: Path, out: Path) -> None:
    now = [1000.0]
    writer = FileWriter(out, clock=lambda: now[0])
    Syncer(DirectorySource(manifests), DrainingRenderer(("a.json", "b.json")), writer).cycle()
    syncer = Syncer(DirectorySource(manifests), DrainingRenderer(("a.json",)), writer)
    syncer.cycle()
    assert (out / "b.json").exists()  # still read by draining listeners
    now[0] += 30
    syncer.cycle()  # nothing changed, not yet due
    assert (out / "b.json").exists()
    now[0] += 31
    result = syncer.cycle()  # nothing changed in the input, but the delay is over
    assert not result.changed_input and not (out / "b.json").exists() and (out / "a.json").exists()
    assert writer.owned_files() == ["a.json"]


def test_a_file_edited_by_hand_is_restored_by_the_next_process_even_after_a_prune(manifests: Path, out: Path) -> None:
    now = [1000.0]
    Syncer(DirectorySource(manifests), DrainingRenderer(("a.json", "b.json")), FileWriter(out), identity="v1").cycle()
    running = Syncer(
        DirectorySource(manifests), DrainingRenderer(("a.json",)), FileWriter(out, clock=lambda: now[0]), identity="v2"
    )
    running.cycle()
    edit_in_place_later(out / "a.json", b"y")  # by hand: same size, same inode, a later mtime
    now[0] += 61
    assert not running.cycle().changed_input and not (out / "b.json").exists()  # the prune rewrote the manifest
    restarted = Syncer(DirectorySource(manifests), DrainingRenderer(("a.json",)), FileWriter(out), identity="v2")
    restarted.cycle()
    assert (out / "a.json").read_bytes() == b"x\n"


def test_run_identity_covers_settings_and_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    renderer = CountingRenderer()
    base = run_identity({"renderer": "traefik", "options": {}}, renderer)
    assert base == run_identity({"renderer": "traefik", "options": {}}, renderer)
    assert base != run_identity({"renderer": "traefik", "options": {"redirect-https": "true"}}, renderer)
    package = tmp_path / "resume_plugin_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.import_module("resume_plugin_pkg")
    try:
        before = code_digest(["resume_plugin_pkg"])
        (package / "__init__.py").write_text("VALUE = 2\n")  # an edited plugin or checkout, same version
        assert code_digest(["resume_plugin_pkg"]) != before
    finally:
        sys.modules.pop("resume_plugin_pkg", None)
