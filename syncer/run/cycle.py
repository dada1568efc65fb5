"""One sync cycle (fetch -> diff -> translate -> render -> write) within its deadline, the output folder locked for
the write."""

from __future__ import annotations

import hashlib
import logging
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, TextIO

from syncer.deadline import DEFAULT_CYCLE_TIMEOUT, Deadline
from syncer.errors import KubeError, RemovalHeld, RenderError, SourceError, SyncerError, WriteError
from syncer.model import RoutingModel, SourceRef
from syncer.output.guard import RemovalGuard
from syncer.output.identity import input_key
from syncer.output.writer import FileWriter, WriteResult
from syncer.render.contract import ChecksFiles, Renderer, TransitionsFiles, prune_delay_of, secret_files_of
from syncer.run.heap import collector_paused
from syncer.run.leader import LeaderElector
from syncer.run.metrics import Metrics
from syncer.run.status import StatusPublisher
from syncer.snapshot import Snapshot, diff
from syncer.source import Source
from syncer.translate import TranslateOptions, translate

log = logging.getLogger("syncer.run.cycle")

# Problems kept with the files, for a later run that finds nothing new to repeat them: enough for any real
# cluster, bounded for a hostile one.
MAX_KEPT_PROBLEMS = 1000


@dataclass(frozen=True, slots=True)
class CycleResult:
    changed_input: bool
    write: WriteResult | None = None
    seconds: float = 0.0


class Syncer:
    """Holds the last good snapshot; a cycle that fails leaves it (and the files on disk) as they were."""

    def __init__(
        self,
        source: Source,
        renderer: Renderer,
        writer: FileWriter,
        translate_options: TranslateOptions | None = None,
        *,
        dry_run: bool = False,
        preview_out: TextIO | None = None,
        publisher: StatusPublisher | None = None,
        guard: RemovalGuard | None = None,
        metrics: Metrics | None = None,
        elector: LeaderElector | None = None,
        identity: str | None = None,
        cycle_timeout: float = DEFAULT_CYCLE_TIMEOUT,
    ) -> None:
        self.source = source
        self.renderer = renderer
        self.writer = writer
        self.translate_options = translate_options or TranslateOptions()
        self.dry_run = dry_run
        self.preview_out = preview_out or sys.stdout
        self.publisher = publisher
        self.guard = guard
        self.metrics = metrics
        self.elector = elector  # with one, only the leader writes Ingress status; every replica writes its files
        # syncer.output.identity.run_identity of the code and settings; with one, a fresh process whose snapshot the
        # files on disk were already written from leaves them alone (no translation, no rendering).
        self.identity = identity
        # What a cycle may wait in all: API requests, their retries and pauses, the output folder's lock. The status
        # write-back after the files shares it; the leader elector's thread has timing of its own.
        self.cycle_timeout = cycle_timeout
        self.last_snapshot: Snapshot | None = None
        self.last_served: tuple[SourceRef, ...] = ()
        self.reported_problems: set[str] = set()

    def cycle(self) -> CycleResult:
        started = time.monotonic()
        deadline = Deadline(
            started + self.cycle_timeout, f"the cycle deadline (--cycle-timeout {self.cycle_timeout:g}s)"
        )
        try:
            with collector_paused():
                result = self._cycle(started, deadline)
        except SyncerError as exc:
            if self.metrics is not None:
                self.metrics.cycle_failed(_failure_reason(exc), time.monotonic() - started)
            raise
        if self.metrics is not None:
            self.metrics.cycle_succeeded(result.seconds)
        return result

    def _cycle(self, started: float, deadline: Deadline) -> CycleResult:
        snapshot = self.source.fetch(deadline)
        changes = diff(self.last_snapshot, snapshot)
        log.info("cycle: %s", changes.summary())
        if self.last_snapshot is not None and changes.is_empty:
            self._prune(deadline)
            # Status is not part of the diff: a failed write, or a new load-balancer address, is still due.
            self._publish(snapshot, deadline)
            return CycleResult(changed_input=False, seconds=time.monotonic() - started)
        key = input_key(self.identity, snapshot) if self.identity is not None else None
        # Read without the lock: it writes nothing, and a writer that goes on meanwhile only ran after this process.
        if self.last_snapshot is None and self._already_written(key, snapshot):
            self.last_snapshot = snapshot
            self._prune(deadline)
            return CycleResult(changed_input=False, seconds=time.monotonic() - started)
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        translation = translate(snapshot, self.translate_options, now)
        problems = [(p.source.kind, str(p)) for p in translation.problems]
        self._report_problems([text for _, text in problems])
        files = self._render(translation.model)
        counts = _counts(translation.model)
        self._observe(snapshot, counts, [kind for kind, _ in problems])
        if self.dry_run:
            preview = self.writer.preview(files)
            self.preview_out.write(preview or "# no changes\n")
            self.preview_out.flush()
            result = None
        else:
            meta = {"routes": counts["routes"], "counts": counts, "problems": problems[:MAX_KEPT_PROBLEMS]}
            if key is not None:
                meta["input"] = key
            # Another process writing the same folder (cron's `once` overlapping): the guard's memory, the files
            # and the manifest are read and rewritten by one process at a time, or they mix.
            with self.writer.locked(deadline):
                self._check_removal(translation.model, files)
                result = self._write(files, meta)
            if self.metrics is not None:
                self.metrics.files_written.inc(len(result.written))
                self.metrics.files_removed.inc(len(result.removed))
                self.metrics.files_ever_written = True
                self.metrics.removal_held.set(0)
            log.info(
                "wrote %d file(s), %d unchanged, %d removed in %s (%d routes, %d backends, %d problems; cycle %.3fs)",
                len(result.written),
                len(result.unchanged),
                len(result.removed),
                self.writer.output_dir,
                translation.model.route_count(),
                len(translation.model.backends),
                len(translation.problems),
                time.monotonic() - started,
            )
        self.last_snapshot = snapshot
        self.last_served = translation.ingresses
        if not self.dry_run:
            self._publish(snapshot, deadline)
        return CycleResult(changed_input=True, write=result, seconds=time.monotonic() - started)

    def _publish(self, snapshot: Snapshot, deadline: Deadline) -> None:
        """Status write-back after a good cycle, by the leader only; it logs its own failures, never fails the cycle."""
        leading = self.elector is None or self.elector.is_leader()
        if self.metrics is not None:
            self.metrics.leader.set(1 if leading else 0)
        if self.publisher is not None and leading and not self.dry_run:
            outcome = self.publisher.publish(snapshot, self.last_served, deadline)
            if self.metrics is not None and outcome is not None:
                for name in ("written", "cleared", "failed"):
                    self.metrics.status_writes.labels(name).inc(getattr(outcome, name, 0))

    def _already_written(self, key: str | None, snapshot: Snapshot) -> bool:
        """Whether the files on disk were written from this very input, by this code with these settings, and
        are still as written: then the first cycle of a process has nothing to do. It repeats what the run
        that wrote them reported (problems, counts), as a full cycle would."""
        if key is None or self.dry_run or self.publisher is not None:
            return False  # status write-back needs the translation (which Ingresses are served)
        meta = self.writer.meta()
        if meta.get("input") != key or not self.writer.intact():
            return False
        counts = meta.get("counts")
        counts = counts if isinstance(counts, dict) else {}
        stored = meta.get("problems")
        stored = stored if isinstance(stored, list) else []
        problems = [(str(p[0]), str(p[1])) for p in stored if isinstance(p, list) and len(p) == 2]
        self._report_problems([text for _, text in problems])
        self._observe(snapshot, counts, [kind for kind, _ in problems])
        if self.metrics is not None:
            self.metrics.files_ever_written = True  # they are in place: /readyz must not wait for a change
            self.metrics.removal_held.set(0)
        log.info(
            "input unchanged since the files in %s were written from it (%s routes, %s backends): nothing to write",
            self.writer.output_dir,
            counts.get("routes", "?"),
            counts.get("backends", "?"),
        )
        return True

    def _prune(self, deadline: Deadline) -> None:
        """Files kept past their last use (Envoy's draining listeners still read them) go once their delay is
        over, even when no new input arrives to trigger a write."""
        if self.dry_run or not self.writer.has_stale():  # the lock only when there may be something to remove
            return
        with self.writer.locked(deadline):
            removed = self.writer.prune(prune_delay_of(self.renderer))
        if removed:
            log.info("removed %d file(s) no longer in use from %s", len(removed), self.writer.output_dir)
            if self.metrics is not None:
                self.metrics.files_removed.inc(len(removed))

    def _check_removal(self, model: RoutingModel, files: Mapping[str, bytes]) -> None:
        """RemovalHeld when the guard holds this model back (its memory is in the writer's meta)."""
        meta = self.writer.meta()
        routes = model.route_count()
        if self.guard is None:
            return
        previous = meta.get("routes")
        digest = hashlib.sha256()
        for name, content in files.items():
            digest.update(name.encode() + b"\0" + hashlib.sha256(content).digest())
        decision = self.guard.decide(
            previous if isinstance(previous, int) else None, routes, digest.hexdigest(), meta.get("pending_removal")
        )
        if not decision.write:
            self.writer.save_meta({**meta, "pending_removal": decision.pending})
            # The next cycle must judge again even if its input equals the last good snapshot: that is how
            # a glitch that is over clears the count.
            self.last_snapshot = None
            if self.metrics is not None:
                self.metrics.removal_held.set(1)
                self.metrics.removal_held_cycles.inc()
            raise RemovalHeld(f"mass-removal guard: {decision.message}")
        if decision.message:
            log.warning("mass-removal guard: %s", decision.message)

    def _observe(self, snapshot: Snapshot, counts: Mapping[str, Any], problem_kinds: list[str]) -> None:
        if self.metrics is None:
            return
        kinds: dict[str, int] = {}
        for key in snapshot.objects:
            kinds[key.kind] = kinds.get(key.kind, 0) + 1
        for kind in ("IngressClass", "Ingress", "Service", "EndpointSlice", "Secret"):
            self.metrics.objects.labels(kind).set(kinds.get(kind, 0))
        for kind in ("IngressClass", "Ingress", "Service", "EndpointSlice", "Secret"):  # any kind can be malformed
            self.metrics.problems.labels(kind).set(problem_kinds.count(kind))
        for name in ("routes", "backends", "endpoints", "certificates"):
            value = counts.get(name)
            self.metrics.rendered.labels(name).set(value if isinstance(value, int) else 0)

    def _write(self, files: dict[str, bytes], meta: Mapping[str, Any] | None = None) -> WriteResult:
        """The renderer's intermediate steps first (if it has any), then the files themselves."""
        steps: list[Mapping[str, bytes]] = []
        secret = secret_files_of(self.renderer)
        if isinstance(self.renderer, TransitionsFiles):
            try:
                steps = list(self.renderer.transition(self.writer.read, files))
            except Exception as exc:  # a third-party renderer may fail in any way; nothing written yet
                raise RenderError(
                    f"renderer {self.renderer.name!r} transition failed: {type(exc).__name__}: {exc}"
                ) from exc
        written: list[str] = []
        for step in steps:
            written.extend(self.writer.write(step, prune=False, secret=secret).written)
        final = self.writer.write(files, prune_delay=prune_delay_of(self.renderer), meta=meta, secret=secret)
        written = list(dict.fromkeys([*written, *final.written]))
        unchanged = tuple(name for name in final.unchanged if name not in written)
        return WriteResult(tuple(written), unchanged, final.removed)

    def _report_problems(self, problems: list[str]) -> None:
        """Each problem is logged once, when it first appears, and once more when it is gone."""
        current = set(problems)
        for text in sorted(current - self.reported_problems):
            log.warning("problem: %s", text)
        for text in sorted(self.reported_problems - current):
            log.info("resolved: %s", text)
        self.reported_problems = current

    def _render(self, model: RoutingModel) -> dict[str, bytes]:
        try:
            rendered = self.renderer.render(model)
            files = {str(name): bytes(content) for name, content in rendered.items()}
            # An optional pre-write check (Envoy's validate mode, for one): it may do I/O; render may not.
            if isinstance(self.renderer, ChecksFiles) and not self.dry_run:
                self.renderer.check(files)
        except SyncerError:
            raise
        except Exception as exc:  # a third-party renderer may fail in any way; nothing gets written
            raise RenderError(f"renderer {self.renderer.name!r} failed: {type(exc).__name__}: {exc}") from exc
        return files


def _counts(model: RoutingModel) -> dict[str, int]:
    return {
        "routes": model.route_count(),
        "backends": len(model.backends),
        "endpoints": sum(len(b.endpoints) for b in model.backends),
        "certificates": len(model.certificates),
    }


def _failure_reason(exc: SyncerError) -> str:
    """A small, fixed set of metric labels: what stage failed."""
    if isinstance(exc, (SourceError, KubeError)):
        return "source"
    if isinstance(exc, RenderError):
        return "render"
    if isinstance(exc, RemovalHeld):
        return "removal_guard"
    if isinstance(exc, WriteError):
        return "write"
    return "other"
