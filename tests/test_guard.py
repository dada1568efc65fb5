"""The mass-removal guard: a glitch does not empty the proxy; a real mass deletion still converges."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

import pytest

from syncer.errors import RemovalHeld
from syncer.model import RoutingModel
from syncer.output.guard import RemovalGuard
from syncer.output.writer import FileWriter
from syncer.run.cycle import Syncer
from syncer.run.metrics import Metrics
from syncer.source import DirectorySource

DEMO = Path(__file__).resolve().parent.parent / "fixtures" / "demo"


@pytest.mark.parametrize(
    ("previous", "new", "writes"),
    [(None, 0, True), (0, 0, True), (10, 10, True), (10, 12, True), (10, 5, True), (10, 4, False), (10, 0, False)],
)
def test_ratio(previous: int | None, new: int, writes: bool) -> None:
    assert RemovalGuard(max_ratio=0.5).decide(previous, new, "f", None).write is writes


def test_same_model_confirmed_on_consecutive_cycles() -> None:
    guard = RemovalGuard(max_ratio=0.5, confirmations=3)
    first = guard.decide(10, 0, "empty", None)
    second = guard.decide(10, 0, "empty", first.pending)
    assert not first.write and not second.write and second.pending == {"fingerprint": "empty", "seen": 2}
    assert guard.decide(10, 0, "empty", second.pending).write
    # A different small model starts counting again.
    assert guard.decide(10, 1, "other", second.pending).pending == {"fingerprint": "other", "seen": 1}


def test_allow_mass_removal_writes_at_once() -> None:
    decision = RemovalGuard(allow_mass_removal=True).decide(10, 0, "f", None)
    assert decision.write and "allowed" in decision.message


class HostsRenderer:
    name = "hosts"

    def render(self, model: RoutingModel) -> Mapping[str, bytes]:
        return {"hosts.txt": "".join(f"{v.hostname}\n" for v in model.virtual_hosts).encode()}


def delete_all_ingresses(manifests: Path) -> None:
    (manifests / "ingresses.yaml").write_text(
        "kind: IngressClass\nmetadata: {name: syncer}\nspec: {controller: ingress-syncer.dev/controller}\n"
    )


def test_a_vanished_cluster_is_held_then_confirmed(tmp_path: Path) -> None:
    manifests = Path(shutil.copytree(DEMO, tmp_path / "manifests"))
    out = tmp_path / "out"
    out.mkdir()
    metrics = Metrics()

    def syncer() -> Syncer:  # a new process each time: the guard's memory is in the manifest
        guard = RemovalGuard(max_ratio=0.5, confirmations=3)
        return Syncer(DirectorySource(manifests), HostsRenderer(), FileWriter(out), guard=guard, metrics=metrics)

    syncer().cycle()
    good = (out / "hosts.txt").read_bytes()
    assert b"shop.example.com" in good
    delete_all_ingresses(manifests)
    for seen in (1, 2):
        with pytest.raises(RemovalHeld, match=f"seen {seen} of 3"):
            syncer().cycle()
        assert (out / "hosts.txt").read_bytes() == good
    assert b"syncer_removal_guard_holding 1.0" in metrics.exposition()
    syncer().cycle()  # the third sighting of the same model: written
    assert (out / "hosts.txt").read_bytes() == b""
    assert b"syncer_removal_guard_holding 0.0" in metrics.exposition()
    assert b"syncer_removal_guard_held_cycles_total 2.0" in metrics.exposition()


def test_a_glitch_that_recovers_is_never_written(tmp_path: Path) -> None:
    manifests = Path(shutil.copytree(DEMO, tmp_path / "manifests"))
    out = tmp_path / "out"
    out.mkdir()
    syncer = Syncer(DirectorySource(manifests), HostsRenderer(), FileWriter(out), guard=RemovalGuard())
    syncer.cycle()
    good = (out / "hosts.txt").read_bytes()
    original = (manifests / "ingresses.yaml").read_text()
    delete_all_ingresses(manifests)
    with pytest.raises(RemovalHeld):
        syncer.cycle()
    (manifests / "ingresses.yaml").write_text(original)  # the glitch is over
    syncer.cycle()
    assert (out / "hosts.txt").read_bytes() == good
    delete_all_ingresses(manifests)
    with pytest.raises(RemovalHeld, match="seen 1 of 3"):  # counting starts again
        syncer.cycle()
