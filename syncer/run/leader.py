"""Leader election with a coordination.k8s.io/v1 Lease, client-go's algorithm. Network I/O via its client, in a thread.

Only the leader writes Ingress status; every replica keeps writing its own files. The rules, from client-go's
`tools/leaderelection` (notes/kubernetes.md section 6):

- Expiry is judged by the local monotonic clock since the Lease record was last seen to *change*, never by
  comparing its `renewTime` with our wall clock: replicas whose clocks disagree still agree on who leads.
- A leader that has not renewed within `renew_deadline` stops acting as leader (`is_leader()` turns False
  on its own, even while a request hangs), before anyone may take over at `lease_duration`.
- Every write is a PUT conditional on the resourceVersion read; a 409 means someone else wrote first: lost.
- Releasing on shutdown writes `holderIdentity: ""` and `leaseDurationSeconds: 1`: the next candidate takes
  over at its next try instead of waiting out the lease.
"""

from __future__ import annotations

import copy
import logging
import math
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, Protocol

from syncer.errors import KubeConflict, KubeError

log = logging.getLogger("syncer.run.leader")

Obj = dict[str, Any]

LEASE_DURATION = 15.0  # kubernetes/component-base defaults for every control-plane component
RENEW_DEADLINE = 10.0
RETRY_PERIOD = 2.0
JITTER_FACTOR = 1.2  # client-go: a candidate waits RetryPeriod * (1 + rand * 1.2) between tries
RELEASED_LEASE_SECONDS = 1  # what client-go writes on release


class LeaseClient(Protocol):
    """What the elector needs of a client: `syncer.kube.KubeClient` provides it."""

    def get_lease(self, namespace: str, name: str) -> Obj | None: ...

    def create_lease(self, namespace: str, body: Obj) -> Obj: ...

    def update_lease(self, namespace: str, name: str, body: Obj) -> Obj: ...


def micro_time(when: datetime | None = None) -> str:
    """A metav1.MicroTime (`2006-01-02T15:04:05.000000Z07:00`) in UTC; now when `when` is None."""
    moment = datetime.now(timezone.utc) if when is None else when.astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def default_identity() -> str:
    """Hostname (the pod name in a cluster) and a random suffix: unique per process, even after a restart."""
    return f"{socket.gethostname()}_{uuid.uuid4().hex[:10]}"


def check_timing(lease_duration: float, renew_deadline: float, retry_period: float) -> None:
    """client-go's rule: lease duration > renew deadline > 1.2 x retry period > 0. Raises ValueError."""
    if not retry_period > 0:
        raise ValueError(f"the retry period must be positive, not {retry_period:g}s")
    if not lease_duration > renew_deadline:
        raise ValueError(
            f"the lease duration ({lease_duration:g}s) must be longer than the renew deadline ({renew_deadline:g}s)"
        )
    if not renew_deadline > JITTER_FACTOR * retry_period:
        raise ValueError(
            f"the renew deadline ({renew_deadline:g}s) must be longer than {JITTER_FACTOR:g} x the retry period "
            f"({retry_period:g}s)"
        )


def _spec(lease: Obj | None) -> Obj:
    spec = (lease or {}).get("spec")
    return spec if isinstance(spec, dict) else {}


def _holder(lease: Obj | None) -> str:
    holder = _spec(lease).get("holderIdentity")
    return holder if isinstance(holder, str) else ""


def _transitions(lease: Obj | None) -> int:
    value = _spec(lease).get("leaseTransitions")
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _with_spec(lease: Obj, **changes: Any) -> Obj:
    """The Lease as read (metadata.resourceVersion included, so the PUT is conditional) with spec fields changed."""
    body = copy.deepcopy(lease)
    body["apiVersion"], body["kind"] = "coordination.k8s.io/v1", "Lease"
    body["spec"] = {**_spec(lease), **changes}
    return body


class LeaderElector:
    """Campaigns for one Lease in a daemon thread; `is_leader()` says whether to act as leader right now.

    `start()` tries once at once (so a lone replica leads from its first cycle), then every `retry_period`
    (with client-go's jitter while not holding the Lease). `stop()` ends the thread and releases the Lease.
    `clock` (monotonic seconds) and `wall_clock` (MicroTime strings written to the Lease) are injectable.
    `try_acquire_or_renew()` and `release()` are public for tests that drive rounds by hand.
    """

    def __init__(
        self,
        client: LeaseClient,
        namespace: str,
        name: str,
        identity: str | None = None,
        lease_duration: float = LEASE_DURATION,
        renew_deadline: float = RENEW_DEADLINE,
        retry_period: float = RETRY_PERIOD,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], str] = micro_time,
    ) -> None:
        check_timing(lease_duration, renew_deadline, retry_period)
        self.namespace = namespace
        self.name = name
        self.identity = identity or default_identity()
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        # The Lease holds whole seconds; rounding up never lets another replica take over early.
        self.lease_seconds = max(1, math.ceil(lease_duration))
        self._client = client
        self._clock = clock
        self._wall_clock = wall_clock
        self._round = threading.Lock()  # one round (or release) at a time: the client is not thread-safe
        self._state = threading.Lock()  # guards what is_leader() reads from other threads
        self._lease: Obj | None = None  # as last read or written: its resourceVersion conditions our next PUT
        self._observed_spec: Obj | None = None
        self._observed_at = 0.0  # local clock when the record was last seen to change
        self._renewed_at: float | None = None  # local clock at the start of our last successful write as holder
        self._stopped = False
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._reported = False  # the leadership last logged
        self._loss_reason = ""
        self._last_failure: str | None = None

    @property
    def lease(self) -> str:
        return f"{self.namespace}/{self.name}"

    # --- what the rest of the process asks -------------------------------------------------------
    def is_leader(self) -> bool:
        """True while the Lease names us and our last renewal is less than `renew_deadline` old."""
        with self._state:
            return (
                not self._stopped
                and _holder(self._lease) == self.identity
                and self._renewed_at is not None
                and self._clock() - self._renewed_at < self.renew_deadline
            )

    def start(self) -> None:
        """One round now, then the background thread. Never raises for API errors: they are logged."""
        if self._thread is not None:
            raise RuntimeError("the leader elector is already running")
        log.info(
            "leader election for Lease %s as %s (lease %gs, renew deadline %gs, retry every %gs)",
            self.lease,
            self.identity,
            self.lease_duration,
            self.renew_deadline,
            self.retry_period,
        )
        self._stopping.clear()
        self.try_acquire_or_renew()
        self._thread = threading.Thread(target=self._run, name=f"leader-election-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, release: bool = True, timeout: float | None = None) -> None:
        """Ends the thread (waiting at most `timeout`, default the renew deadline), then releases if we lead.

        From here on `is_leader()` is False. A thread still stuck in a request keeps the Lease unreleased:
        the client is not safe to share, and the other replicas take over once the Lease expires.
        """
        self._stopping.set()
        with self._state:
            self._stopped = True
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(self.renew_deadline if timeout is None else timeout)
            if thread.is_alive():
                log.warning(
                    "Lease %s not released: the election thread is still waiting for the API server; "
                    "the other replicas take over when the lease expires",
                    self.lease,
                )
                return
        if release:
            self.release()
            return
        with self._round:
            self._loss_reason = "stopped without releasing the Lease"
            self._report()

    # --- one round -----------------------------------------------------------------------------
    def try_acquire_or_renew(self) -> bool:
        """client-go's tryAcquireOrRenew: True when we hold the Lease after this round."""
        with self._round:
            started = self._clock()
            try:
                won = self._attempt(started)
            except KubeConflict as exc:
                # Someone wrote the Lease between our read and our write: most likely another candidate won.
                self._lose(f"another replica wrote the Lease first ({exc.reason or 'Conflict'})")
                won = False
            except KubeError as exc:
                self._note_failure(exc)
                won = False
            else:
                self._last_failure = None
                if won:
                    self._loss_reason = ""
            self._report()
            return won

    def _attempt(self, started: float) -> bool:
        stamp = self._wall_clock()
        # 1. Fast path: renew the Lease as we last wrote it, trusting its resourceVersion.
        if self._lease is not None and _holder(self._lease) == self.identity and self._lease_valid(started):
            body = _with_spec(self._lease, renewTime=stamp, leaseDurationSeconds=self.lease_seconds)
            try:
                written = self._client.update_lease(self.namespace, self.name, body)
            except KubeError as exc:
                log.debug("renewing Lease %s without reading it failed (%s); reading it", self.lease, exc)
            else:
                self._observe(written, written_at=started)
                return True
        # 2. Read it; create it when there is none.
        current = self._client.get_lease(self.namespace, self.name)
        if current is None:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": {
                    "holderIdentity": self.identity,
                    "leaseDurationSeconds": self.lease_seconds,
                    "acquireTime": stamp,
                    "renewTime": stamp,
                    "leaseTransitions": 0,
                },
            }
            self._observe(self._client.create_lease(self.namespace, body), written_at=started)
            return True
        # 3. Remember when the record last changed, by our clock; an unexpired Lease of someone else stands.
        self._observe(current)
        holder = _holder(current)
        if holder and holder != self.identity and self._lease_valid(self._clock()):
            self._lose(f"held by {holder}")
            return False
        # 4. Renew our own, or take over an expired or released one.
        if holder == self.identity:
            body = _with_spec(current, renewTime=stamp, leaseDurationSeconds=self.lease_seconds)
        else:
            body = _with_spec(
                current,
                holderIdentity=self.identity,
                leaseDurationSeconds=self.lease_seconds,
                acquireTime=stamp,
                renewTime=stamp,
                leaseTransitions=_transitions(current) + 1,
            )
        self._observe(self._client.update_lease(self.namespace, self.name, body), written_at=started)
        return True

    def _lease_valid(self, now: float) -> bool:
        """Whether the record last observed has not yet expired: its own leaseDurationSeconds, our clock."""
        seconds = _spec(self._lease).get("leaseDurationSeconds")
        if not isinstance(seconds, int) or isinstance(seconds, bool) or seconds <= 0:
            seconds = self.lease_duration
        return bool(self._observed_at + seconds > now)

    def _observe(self, lease: Obj, written_at: float | None = None) -> None:
        """Keeps the Lease read or written; `written_at` is when a write of ours that succeeded started."""
        spec = _spec(lease)
        with self._state:
            if written_at is not None or spec != self._observed_spec:
                self._observed_at = self._clock()
            self._observed_spec = copy.deepcopy(spec)
            self._lease = lease
            if written_at is not None:
                self._renewed_at = written_at if _holder(lease) == self.identity else None

    def _lose(self, reason: str) -> None:
        with self._state:
            self._renewed_at = None
        self._loss_reason = reason

    def _note_failure(self, exc: KubeError) -> None:
        """An API failure is logged once per distinct message; the same one again at debug."""
        text = " ".join(str(exc).split())
        level = logging.DEBUG if text == self._last_failure else logging.WARNING
        self._last_failure = text
        log.log(level, "leader election: Lease %s could not be read or written: %s", self.lease, text)
        if _holder(self._lease) == self.identity:
            self._loss_reason = f"not renewed within {self.renew_deadline:g}s (last failure: {text})"

    def _report(self) -> None:
        """The one log line per change of leadership, from the election's side (callers hold _round)."""
        leading = self.is_leader()
        if leading == self._reported:
            return
        self._reported = leading
        if leading:
            log.info("became leader of Lease %s as %s", self.lease, self.identity)
        else:
            reason = self._loss_reason or f"not renewed within {self.renew_deadline:g}s"
            log.warning("lost leadership of Lease %s as %s: %s", self.lease, self.identity, reason)
        self._loss_reason = ""

    # --- release ----------------------------------------------------------------------------------
    def release(self) -> bool:
        """Gives the Lease up if it names us: holder "" and a 1 s lease, so a candidate takes over at once.

        A 409 means the Lease was written since we read it: read it again and retry once if it still names
        us. Returns whether nothing of ours is left held; failures are logged, never raised.
        """
        with self._round:
            try:
                return self._release()
            except KubeError as exc:
                log.warning(
                    "Lease %s not released (%s); the other replicas take over when it expires",
                    self.lease,
                    " ".join(str(exc).split()),
                )
                return False
            finally:
                self._report()

    def _release(self) -> bool:
        lease = self._lease
        for _ in range(2):
            if lease is None or _holder(lease) != self.identity:
                self._lose("held by someone else before it was released")
                return True
            stamp = self._wall_clock()
            body = _with_spec(
                lease,
                holderIdentity="",
                leaseDurationSeconds=RELEASED_LEASE_SECONDS,
                acquireTime=stamp,
                renewTime=stamp,
            )
            try:
                written = self._client.update_lease(self.namespace, self.name, body)
            except KubeConflict:
                lease = self._client.get_lease(self.namespace, self.name)
                if lease is not None:
                    self._observe(lease)
                continue
            self._observe(written)
            self._lose("released it")
            return True
        log.warning("Lease %s not released: it kept changing under us; it expires on its own", self.lease)
        return False

    # --- the thread -----------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            if _holder(self._lease) == self.identity:
                delay = self.retry_period  # renewing: client-go's renew loop does not jitter
            else:
                delay = self.retry_period * (1 + random.random() * JITTER_FACTOR)
            if self._stopping.wait(delay):
                return
            try:
                self.try_acquire_or_renew()
            except Exception:  # a bug must not end the campaign silently; is_leader() decays on its own
                log.exception("leader election round for Lease %s failed", self.lease)
