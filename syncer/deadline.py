"""A point in monotonic time a cycle must not wait past: what the kube transport and the output lock respect. No I/O.

It bounds waiting (API requests, retries and their pauses, the output folder's lock), not computation: a
translation or render that takes long is not cut short, or a cluster whose render costs more than the deadline
would never be written at all.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

DEFAULT_CYCLE_TIMEOUT = 60.0  # seconds; `--cycle-timeout`


@dataclass(frozen=True, slots=True)
class Deadline:
    """`at` on the `time.monotonic()` clock; `label` names it in error messages (what to raise, if anything)."""

    at: float
    label: str = "the deadline"

    @classmethod
    def after(cls, seconds: float, label: str = "the deadline") -> Deadline:
        return cls(time.monotonic() + seconds, label)

    def remaining(self) -> float:
        """Seconds left, never negative."""
        return max(0.0, self.at - time.monotonic())

    def expired(self) -> bool:
        return time.monotonic() >= self.at

    def cap(self, seconds: float) -> float:
        """`seconds`, or the time left if that is shorter: a timeout or a pause that must not outlast it."""
        return min(seconds, self.remaining())

    def __str__(self) -> str:
        return self.label
