"""One cycle: fetch -> diff -> translate -> render -> write, and what happens when a stage fails."""

from __future__ import annotations

import gc
import io
import os
import signal
import weakref
from collections.abc import Mapping
from pathlib import Path

import pytest

from syncer.deadline import Deadline
from syncer.errors import RenderError, SourceError
from syncer.model import RoutingModel
from syncer.output.writer import FileWriter
from syncer.run.cycle import Syncer
from syncer.run.heap import collector_paused, reclaim
from syncer.run.loop import RunLoop
from syncer.source import DirectorySource


class CountingRenderer:
    name = "counting"

    def __init__(self, fail_with: Exception | None = None) -> None:
        self.calls = 0
        self.fail_with = fail_with

    def render(self, model: RoutingModel) -> Mapping[str, bytes]:
        self.calls += 1
        if self.fail_with is not None:
            raise self.fail_with
        hosts = "".join(f"{v.hostname}\n" for v in model.virtual_hosts)
        return {"hosts.txt": hosts.encode()}


def test_nothing_changed_means_nothing_rendered(manifests: Path, out: Path) -> None:
    renderer = CountingRenderer()
    syncer = Syncer(DirectorySource(manifests), renderer, FileWriter(out))
    first = syncer.cycle()
    assert first.changed_input and first.write is not None and first.write.written == ("hosts.txt",)
    second = syncer.cycle()
    assert not second.changed_input and second.write is None
    assert renderer.calls == 1
    ingresses = manifests / "ingresses.yaml"
    ingresses.write_text(ingresses.read_text().replace("shop.example.com", "store.example.com"))
    third = syncer.cycle()
    assert third.changed_input and renderer.calls == 2
    assert "store.example.com" in (out / "hosts.txt").read_text()


def test_a_failing_renderer_writes_nothing_and_is_retried(manifests: Path, out: Path) -> None:
    good = Syncer(DirectorySource(manifests), CountingRenderer(), FileWriter(out))
    good.cycle()
    before = (out / "hosts.txt").read_bytes()
    broken = CountingRenderer(fail_with=ValueError("boom"))
    syncer = Syncer(DirectorySource(manifests), broken, FileWriter(out))
    with pytest.raises(RenderError, match="renderer 'counting' failed: ValueError: boom"):
        syncer.cycle()
    assert (out / "hosts.txt").read_bytes() == before
    assert syncer.last_snapshot is None  # not advanced: the next cycle renders again
    with pytest.raises(RenderError):
        syncer.cycle()
    assert broken.calls == 2


def test_a_failing_source_keeps_the_last_snapshot(manifests: Path, out: Path) -> None:
    syncer = Syncer(DirectorySource(manifests), CountingRenderer(), FileWriter(out))
    syncer.cycle()
    kept = syncer.last_snapshot
    (manifests / "broken.yaml").write_text("{")
    with pytest.raises(SourceError):
        syncer.cycle()
    assert syncer.last_snapshot is kept


def test_dry_run_previews_and_does_not_advance_files(manifests: Path, out: Path) -> None:
    preview = io.StringIO()
    syncer = Syncer(DirectorySource(manifests), CountingRenderer(), FileWriter(out), dry_run=True, preview_out=preview)
    syncer.cycle()
    assert "+shop.example.com" in preview.getvalue()
    assert list(out.iterdir()) == []


class RecordingPublisher:
    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def publish(self, snapshot: object, served: tuple[object, ...], deadline: Deadline | None = None) -> None:
        assert deadline is not None and not deadline.expired()  # the cycle's, for the status writes
        self.calls.append(tuple(str(ref) for ref in served))


def test_status_is_published_after_every_good_cycle_even_without_changes(manifests: Path, out: Path) -> None:
    publisher = RecordingPublisher()
    syncer = Syncer(DirectorySource(manifests), CountingRenderer(), FileWriter(out), publisher=publisher)  # type: ignore[arg-type]
    syncer.cycle()
    syncer.cycle()  # unchanged input: still published (a failed write or a new address is still due)
    assert len(publisher.calls) == 2
    assert publisher.calls[0] == publisher.calls[1]
    assert "Ingress shop/storefront" in publisher.calls[0] and "Ingress shop/not-ours" not in publisher.calls[0]
    (manifests / "broken.yaml").write_text("{")
    with pytest.raises(SourceError):
        syncer.cycle()
    assert len(publisher.calls) == 2  # a failed cycle publishes nothing


class GcObservingRenderer(CountingRenderer):
    def render(self, model: RoutingModel) -> Mapping[str, bytes]:
        self.collector_was_on = gc.isenabled()
        return super().render(model)


def test_the_cyclic_collector_is_off_during_a_cycle_and_restored_after(manifests: Path, out: Path) -> None:
    renderer = GcObservingRenderer()
    assert gc.isenabled()
    Syncer(DirectorySource(manifests), renderer, FileWriter(out)).cycle()
    assert renderer.collector_was_on is False and gc.isenabled()
    (manifests / "broken.yaml").write_text("{")
    with pytest.raises(SourceError):
        Syncer(DirectorySource(manifests), renderer, FileWriter(out)).cycle()
    assert gc.isenabled()  # restored on failure too


def test_a_cycles_objects_are_frozen_and_reclaim_collects_their_cyclic_garbage() -> None:
    class Node:
        other: object = None

    try:
        with collector_paused():
            first, second = Node(), Node()
            first.other, second.other = second, first
            witness = weakref.ref(first)
            del first, second
        gc.collect()
        assert witness() is not None  # frozen with everything else the block made: no collection walks it
        reclaim()
        assert witness() is None  # the one look it gets, between cycles: the garbage cycle is gone
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


class FakeTime:
    """A monotonic clock for RunLoop that moves only when a cycle "takes" time or the loop waits."""

    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now

    def wait(self, seconds: float) -> bool:
        self.waits.append(seconds)
        self.now += seconds
        return False


class TimedCycles:
    """Stands in for a Syncer: each cycle takes `seconds` of `clock`; stops the loop after `count` cycles."""

    def __init__(self, clock: FakeTime, seconds: float, count: int) -> None:
        self.clock, self.seconds, self.count = clock, seconds, count
        self.starts: list[float] = []
        self.ends: list[float] = []

    def cycle(self) -> None:
        self.starts.append(self.clock())
        self.clock.now += self.seconds
        self.ends.append(self.clock())
        if len(self.starts) == self.count:
            os.kill(os.getpid(), signal.SIGTERM)  # RunLoop's handler stops the loop after this cycle


def run_timed(seconds: float, interval: float, count: int) -> TimedCycles:
    clock = FakeTime()
    timed = TimedCycles(clock, seconds, count)
    loop = RunLoop(timed, interval=interval, jitter=0.0, clock=clock, wait=clock.wait)  # type: ignore[arg-type]
    assert loop.run() == 0
    assert len(timed.starts) == count and len(clock.waits) == count - 1
    return timed


def test_the_interval_runs_from_the_start_of_one_cycle_to_the_start_of_the_next() -> None:
    timed = run_timed(seconds=0.2, interval=0.3, count=4)
    # A pause of a full interval after each cycle would put the starts 0.5 s apart.
    assert timed.clock.waits == pytest.approx([0.1] * 3)
    assert timed.starts == pytest.approx([0.0, 0.3, 0.6, 0.9])


def test_a_cycle_longer_than_the_interval_is_followed_at_once() -> None:
    timed = run_timed(seconds=0.3, interval=0.1, count=3)
    assert timed.clock.waits == [0.0, 0.0]
    assert timed.starts == pytest.approx([0.0, 0.3, 0.6])


def test_a_replaced_snapshot_is_freed_at_once_without_the_cyclic_collector(manifests: Path, out: Path) -> None:
    """The collector is paused during cycles and looks at their objects once a minute (syncer.run.heap): a reference
    cycle through a translation would keep every replaced snapshot (hundreds of MB at 10,000 Services) until then."""
    syncer = Syncer(DirectorySource(manifests), CountingRenderer(), FileWriter(out))
    syncer.cycle()
    assert syncer.last_snapshot is not None
    replaced = weakref.ref(syncer.last_snapshot)
    ingresses = manifests / "ingresses.yaml"
    ingresses.write_text(ingresses.read_text().replace("shop.example.com", "store.example.com"))
    enabled = gc.isenabled()
    gc.disable()
    try:
        assert syncer.cycle().changed_input
        assert replaced() is None
    finally:
        if enabled:
            gc.enable()
