"""The cyclic garbage collector around sync cycles: paused while a cycle runs, given one look between cycles."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

# Seconds between full garbage collections in `run` (see `reclaim`): a cyclic leak waits at most this long, and
# the collection (0.3-0.5 s of CPU at 10,000 Services) is paid once a minute, not once per cycle.
RECLAIM_EVERY = 60.0


@contextmanager
def collector_paused() -> Iterator[None]:
    """No automatic garbage collection during a cycle.

    A cycle allocates a million small, acyclic objects at 10,000 Services (decoded JSON, the model, the
    rendered files); reference counting frees them all. The cyclic collector would walk the growing heap
    again and again while they are made (measured: half of a cycle's CPU time), and once more, all of it at
    once, at the first allocation after it is switched back on (0.4 s). So what the cycle made is frozen
    before the collector resumes: later collections skip it, and reference counting still frees it.
    `reclaim` gives it the one look for cyclic garbage it has not had, between cycles of a long run.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def reclaim() -> None:
    """Collects the cyclic garbage frozen by `collector_paused` since the last call, then freezes the survivors
    (the snapshot kept for the next diff) again. A full collection: `RunLoop` calls it at most once a minute."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
