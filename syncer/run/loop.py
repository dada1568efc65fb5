"""The interval loop of `syncer run`: a cycle every interval (with jitter), SIGTERM/SIGINT to stop, SIGHUP to sync."""

from __future__ import annotations

import logging
import random
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType

from syncer.errors import SyncerError
from syncer.run.cycle import Syncer
from syncer.run.heap import RECLAIM_EVERY, reclaim

log = logging.getLogger("syncer.run.loop")


class _StopRequested(BaseException):
    """Raised from the signal handler to abandon a cycle in progress; writes are atomic, so this is safe."""


class RunLoop:
    """Starts a cycle every `interval` seconds (±10% jitter; at once after a cycle that took longer) until
    SIGTERM or SIGINT; SIGHUP runs a cycle at once.

    `clock` (monotonic seconds) and `wait` (the pause between cycles, given its length in seconds) are injectable
    for tests; by default the pause is on the event that SIGHUP, SIGTERM and SIGINT set, so they cut it short.
    """

    def __init__(
        self,
        syncer: Syncer,
        interval: float,
        *,
        jitter: float = 0.1,
        on_cycle: Callable[[bool], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wait: Callable[[float], object] | None = None,
    ) -> None:
        self.syncer = syncer
        self.interval = interval
        self.jitter = jitter
        self.on_cycle = on_cycle
        self._wake = threading.Event()
        self._clock = clock
        self._wait = wait or self._wake.wait
        self._stopping = False
        self._in_cycle = False
        self._reclaimed = clock()

    def _handle_stop(self, signum: int, frame: FrameType | None) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        self._stopping = True
        self._wake.set()
        if self._in_cycle:
            raise _StopRequested()

    def _handle_hup(self, signum: int, frame: FrameType | None) -> None:
        log.info("received SIGHUP, syncing now")
        self._wake.set()

    def run(self) -> int:
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
        signal.signal(signal.SIGTERM, self._handle_stop)
        signal.signal(signal.SIGINT, self._handle_stop)
        signal.signal(signal.SIGHUP, self._handle_hup)
        try:
            while not self._stopping:
                started = self._clock()
                ok = self._one_cycle()
                if self.on_cycle is not None:
                    self.on_cycle(ok)
                if self._stopping:
                    break
                # The interval runs from start to start: a change waits at most one interval (plus one cycle)
                # to be served, however long the cycles themselves take.
                period = self.interval * (1 + random.uniform(-self.jitter, self.jitter))
                self._wait(max(0.0, period - (self._clock() - started)))
                self._wake.clear()
        except _StopRequested:
            pass
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        log.info("stopped")
        return 0

    def _one_cycle(self) -> bool:
        self._in_cycle = True
        try:
            self.syncer.cycle()
            return True
        except SyncerError as exc:
            log.error("cycle failed, last good files kept: %s", exc)
            return False
        finally:
            self._in_cycle = False
            if self._clock() - self._reclaimed >= RECLAIM_EVERY:
                reclaim()
                self._reclaimed = self._clock()
