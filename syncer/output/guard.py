"""The mass-removal guard: a new model that drops most routes at once is held until it is seen again. Pure.

A list that comes back short (an API glitch, a namespace briefly missing from RBAC, a half-restored etcd)
looks exactly like a mass deletion. Writing it would empty the proxy; holding it costs a real mass
deletion a few intervals. So a model that removes more than `max_ratio` of the routes last written is
written only once the same model (by content) has been seen on `confirmations` consecutive cycles, or at
once when the operator allows it. The state lives in the writer's manifest, so one-shot runs count too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class GuardDecision:
    write: bool
    pending: dict[str, Any] | None  # what to remember for the next cycle (None: nothing pending)
    message: str = ""


@dataclass(frozen=True, slots=True)
class RemovalGuard:
    max_ratio: float = 0.5
    confirmations: int = 3
    allow_mass_removal: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_ratio <= 1.0:
            raise ValueError("--max-removal-ratio must be between 0 and 1")
        if self.confirmations < 1:
            raise ValueError("--removal-confirmations must be at least 1")

    def decide(
        self, previous_routes: int | None, new_routes: int, fingerprint: str, pending: Mapping[str, Any] | None
    ) -> GuardDecision:
        if not previous_routes or new_routes >= previous_routes:
            return GuardDecision(True, None)
        ratio = (previous_routes - new_routes) / previous_routes
        if ratio <= self.max_ratio:
            return GuardDecision(True, None)
        summary = f"the new model removes {previous_routes - new_routes} of {previous_routes} routes ({ratio:.0%})"
        if self.allow_mass_removal:
            return GuardDecision(True, None, f"{summary}; written because mass removal is allowed")
        seen = int(pending.get("seen", 0)) + 1 if pending and pending.get("fingerprint") == fingerprint else 1
        if seen >= self.confirmations:
            return GuardDecision(True, None, f"{summary}; written after {seen} consecutive cycles saw it")
        return GuardDecision(
            False,
            {"fingerprint": fingerprint, "seen": seen},
            f"{summary}, more than --max-removal-ratio {self.max_ratio}: NOT written (seen {seen} of "
            f"{self.confirmations} times; --allow-mass-removal writes it at once)",
        )
