"""One cycle: fetch -> diff -> translate -> render -> write, and what happens when a stage fails."""

from __future__ import annotations

import io
import shutil
from collections.abc import Mapping
from pathlib import Path

import pytest

from syncer.errors import RenderError, SourceError
from syncer.loop import Syncer
from syncer.model import RoutingModel
from syncer.source import DirectorySource
from syncer.writer import FileWriter

DEMO = Path(__file__).resolve().parent.parent / "fixtures" / "demo"


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


@pytest.fixture
def manifests(tmp_path: Path) -> Path:
    return Path(shutil.copytree(DEMO, tmp_path / "manifests"))


@pytest.fixture
def out(tmp_path: Path) -> Path:
    (tmp_path / "out").mkdir()
    return tmp_path / "out"


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

    def publish(self, snapshot: object, served: tuple[object, ...]) -> None:
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
