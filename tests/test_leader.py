"""LeaderElector against the fake API over real loopback HTTP: acquire, renew, take over, release, conflicts, outages.

Rounds are driven by hand with fake clocks wherever time matters; two tests run the real threads briefly, one of
them on a fake clock too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from syncer.kube.client import KubeClient
from syncer.kube.kubeconfig import ClusterConfig, Credential
from syncer.run.leader import LeaderElector, check_timing, default_identity, micro_time
from tests.fakeapi import TEST_TOKEN, FakeKubeAPI, RecordedRequest

NS, NAME = "ingress-syncer", "ingress-syncer"
LEASE, RENEW, RETRY = 2.0, 1.0, 0.2  # the fake clocks make these cost nothing


class StaticToken:
    def current(self) -> Credential:
        return Credential(token=TEST_TOKEN)

    def invalidate(self) -> None:
        pass


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class WallClock:
    """MicroTime strings from a fixed start, a millisecond apart per call: every write changes renewTime."""

    def __init__(self, start: datetime) -> None:
        self.start, self.calls = start, 0

    def __call__(self) -> str:
        self.calls += 1
        return micro_time(self.start + timedelta(milliseconds=self.calls))


@pytest.fixture(autouse=True)
def syncer_logs_reach_caplog(monkeypatch: pytest.MonkeyPatch) -> None:
    # configure_logging (CLI tests in this process) turns propagation off; caplog listens on the root logger.
    monkeypatch.setattr(logging.getLogger("syncer"), "propagate", True)


@pytest.fixture
def clients(fake_api: FakeKubeAPI) -> Iterator[Callable[[], KubeClient]]:
    """A KubeClient per elector (a client is not thread-safe), retries without real sleeping."""
    made: list[KubeClient] = []

    def make() -> KubeClient:
        cluster = ClusterConfig(server=fake_api.url, credentials=StaticToken())
        client = KubeClient(cluster, connect_timeout=1.0, read_timeout=2.0, backoff_base=0.01, sleep=lambda s: None)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def elector(
    clients: Callable[[], KubeClient],
    identity: str,
    clock: FakeClock | None = None,
    wall: Callable[[], str] | None = None,
    **timing: float,
) -> LeaderElector:
    return LeaderElector(
        clients(),
        NS,
        NAME,
        identity,
        **{"lease_duration": LEASE, "renew_deadline": RENEW, "retry_period": RETRY, **timing},
        clock=clock or FakeClock(),
        wall_clock=wall or WallClock(datetime(2026, 5, 1, tzinfo=timezone.utc)),
    )


def spec(api: FakeKubeAPI) -> dict[str, Any]:
    (lease,) = api.objects("Lease")
    assert (lease["metadata"]["namespace"], lease["metadata"]["name"]) == (NS, NAME)
    result: dict[str, Any] = lease["spec"]
    return result


def methods(api: FakeKubeAPI) -> list[str]:
    return [f"{r.method} {r.status}" for r in api.requests]


# --- timing and identity ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lease", "renew", "retry", "problem"),
    [
        (15, 10, 2, None),
        (1.5, 1, 0.2, None),
        (10, 10, 2, "lease duration .* longer than the renew deadline"),
        (15, 2.4, 2, r"renew deadline \(2.4s\) must be longer than 1.2 x the retry period \(2s\)"),
        (15, 10, 0, "retry period must be positive"),
    ],
)
def test_timing_rule(lease: float, renew: float, retry: float, problem: str | None) -> None:
    if problem is None:
        check_timing(lease, renew, retry)
    else:
        with pytest.raises(ValueError, match=problem):
            check_timing(lease, renew, retry)


def test_constructor_checks_timing_and_defaults_identity(clients: Callable[[], KubeClient]) -> None:
    with pytest.raises(ValueError, match="renew deadline"):
        LeaderElector(clients(), NS, NAME, lease_duration=10, renew_deadline=10)
    first, second = LeaderElector(clients(), NS, NAME), LeaderElector(clients(), NS, NAME)
    assert first.identity != second.identity and first.identity.rsplit("_", 1)[0] == default_identity().split("_")[0]
    assert (first.lease_duration, first.renew_deadline, first.retry_period) == (15.0, 10.0, 2.0)
    assert elector(clients, "a", lease_duration=1.5).lease_seconds == 2  # whole seconds, rounded up


def test_micro_time_format() -> None:
    when = datetime(2026, 5, 1, 12, 30, 5, 123456, tzinfo=timezone(timedelta(hours=2)))
    assert micro_time(when) == "2026-05-01T10:30:05.123456Z"


# --- acquire and renew -----------------------------------------------------------------------------


def test_single_elector_creates_the_lease_then_renews_it(
    fake_api: FakeKubeAPI, clients: Callable[[], KubeClient], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "syncer.run.leader")
    clock = FakeClock()
    a = elector(clients, "a", clock)
    assert not a.is_leader()
    assert a.try_acquire_or_renew() and a.is_leader()
    created = spec(fake_api)
    assert created["holderIdentity"] == "a" and created["leaseTransitions"] == 0
    assert created["leaseDurationSeconds"] == 2 and created["acquireTime"] == created["renewTime"]
    assert methods(fake_api) == ["GET 404", "POST 201"]

    for _ in range(3):
        clock.advance(RETRY)
        assert a.try_acquire_or_renew() and a.is_leader()
    renewed = spec(fake_api)
    assert renewed["renewTime"] > created["renewTime"]
    assert (renewed["acquireTime"], renewed["leaseTransitions"]) == (created["acquireTime"], 0)
    assert methods(fake_api)[2:] == ["PUT 200"] * 3  # a leader renews without reading first
    became = [r.getMessage() for r in caplog.records if "leader" in r.getMessage()]
    assert became == [f"became leader of Lease {NS}/{NAME} as a"]
    assert TEST_TOKEN not in caplog.text


def test_a_second_candidate_waits_while_the_first_renews(
    fake_api: FakeKubeAPI, clients: Callable[[], KubeClient]
) -> None:
    clock_a, clock_b = FakeClock(), FakeClock(50.0)
    a, b = elector(clients, "a", clock_a), elector(clients, "b", clock_b)
    assert a.try_acquire_or_renew()
    for _ in range(10):  # 5 s by b's clock, 2.5 lease durations: the record keeps changing, so it stands
        assert not b.try_acquire_or_renew() and not b.is_leader()
        clock_a.advance(0.5)
        clock_b.advance(0.5)
        assert a.try_acquire_or_renew() and a.is_leader()
    assert spec(fake_api)["holderIdentity"] == "a" and spec(fake_api)["leaseTransitions"] == 0


def test_takeover_after_the_lease_duration_by_the_candidates_own_clock(
    fake_api: FakeKubeAPI, clients: Callable[[], KubeClient], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "syncer.run.leader")
    clock_b = FakeClock()
    a, b = elector(clients, "a"), elector(clients, "b", clock_b)
    assert a.try_acquire_or_renew()
    before = spec(fake_api)
    assert not b.try_acquire_or_renew()  # b sees the record for the first time now
    a.stop(release=False)  # a stops renewing and does not let go: like a hung or killed process
    assert not a.is_leader() and spec(fake_api) == before
    clock_b.advance(LEASE - 0.1)
    assert not b.try_acquire_or_renew()
    clock_b.advance(0.2)
    assert b.try_acquire_or_renew() and b.is_leader()
    after = spec(fake_api)
    assert after["holderIdentity"] == "b" and after["leaseTransitions"] == 1
    assert after["acquireTime"] == after["renewTime"] and after["acquireTime"] != before["acquireTime"]
    messages = [r.getMessage() for r in caplog.records]
    assert f"lost leadership of Lease {NS}/{NAME} as a: stopped without releasing the Lease" in messages
    assert f"became leader of Lease {NS}/{NAME} as b" in messages


def test_release_lets_the_other_take_over_at_its_next_try(
    fake_api: FakeKubeAPI, clients: Callable[[], KubeClient], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "syncer.run.leader")
    a, b = elector(clients, "a"), elector(clients, "b")
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    a.stop()  # release=True
    released = spec(fake_api)
    assert released["holderIdentity"] == "" and released["leaseDurationSeconds"] == 1
    assert released["leaseTransitions"] == 0 and not a.is_leader()
    assert b.try_acquire_or_renew() and b.is_leader()  # no clock moved: an empty holder is free at once
    assert spec(fake_api)["holderIdentity"] == "b" and spec(fake_api)["leaseTransitions"] == 1
    assert spec(fake_api)["leaseDurationSeconds"] == 2
    assert f"lost leadership of Lease {NS}/{NAME} as a: released it" in caplog.text
    a.release()  # nothing of a's left: no request
    assert [r.method for r in fake_api.requests].count("PUT") == 2


def test_release_retries_a_conflict_and_leaves_someone_elses_lease_alone(
    fake_api: FakeKubeAPI, clients: Callable[[], KubeClient]
) -> None:
    a = elector(clients, "a")
    assert a.try_acquire_or_renew()
    fake_api.inject(409, match=lambda r: r.method == "PUT")
    assert a.release()
    assert spec(fake_api)["holderIdentity"] == ""
    assert methods(fake_api)[2:] == ["PUT 409", "GET 200", "PUT 200"]

    b = elector(clients, "b")
    assert b.try_acquire_or_renew()
    lease = fake_api.objects("Lease")[0]
    fake_api.add("Lease", {**lease, "spec": {**lease["spec"], "holderIdentity": "c"}})  # c won meanwhile
    assert b.release() and spec(fake_api)["holderIdentity"] == "c"


def test_a_conflict_on_update_means_not_leader(fake_api: FakeKubeAPI, clients: Callable[[], KubeClient]) -> None:
    clock = FakeClock()
    a = elector(clients, "a", clock)
    assert a.try_acquire_or_renew()
    # Both the optimistic renewal and the one after reading the Lease again are refused.
    fake_api.inject(409, times=2, match=lambda r: r.method == "PUT")
    clock.advance(RETRY)
    assert not a.try_acquire_or_renew() and not a.is_leader()
    assert methods(fake_api)[2:] == ["PUT 409", "GET 200", "PUT 409"]
    clock.advance(RETRY)
    assert a.try_acquire_or_renew() and a.is_leader()  # the Lease still names a: renewing it is safe


def test_another_writer_in_between_means_not_leader(fake_api: FakeKubeAPI, clients: Callable[[], KubeClient]) -> None:
    clock = FakeClock()
    a = elector(clients, "a", clock)
    assert a.try_acquire_or_renew()
    lease = fake_api.objects("Lease")[0]
    fake_api.add("Lease", {**lease, "spec": {**lease["spec"], "holderIdentity": "b"}})  # b took it over
    clock.advance(RETRY)
    assert not a.try_acquire_or_renew() and not a.is_leader()
    assert methods(fake_api)[2:] == ["PUT 409", "GET 200"]  # b's unexpired record stands: no write
    assert spec(fake_api)["holderIdentity"] == "b"


def test_losing_the_create_race_is_not_leading(fake_api: FakeKubeAPI, clients: Callable[[], KubeClient]) -> None:
    a = elector(clients, "a")

    def b_creates_it_first(request: RecordedRequest) -> None:
        if request.method == "POST":
            fake_api.add("Lease", {"metadata": {"name": NAME, "namespace": NS}, "spec": {"holderIdentity": "b"}})

    fake_api.on_request = b_creates_it_first
    assert not a.try_acquire_or_renew() and not a.is_leader()
    assert methods(fake_api) == ["GET 404", "POST 409"]
    fake_api.on_request = None
    assert not a.try_acquire_or_renew()  # b's Lease, new to a: it stands for a whole lease duration


def test_an_outage_longer_than_the_renew_deadline_ends_leadership(
    fake_api: FakeKubeAPI, clients: Callable[[], KubeClient], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, "syncer.run.leader")
    clock = FakeClock()
    a = elector(clients, "a", clock)
    assert a.try_acquire_or_renew()
    fake_api.down()
    clock.advance(0.5)
    assert not a.try_acquire_or_renew()
    assert a.is_leader()  # 0.5 s without renewal: within the deadline
    clock.advance(0.6)
    assert not a.is_leader()  # past the deadline, with no round needed to notice
    assert not a.try_acquire_or_renew()
    lost = [r.getMessage() for r in caplog.records if r.getMessage().startswith("lost leadership")]
    assert len(lost) == 1 and "not renewed within 1s (last failure: API server unavailable" in lost[0]
    assert len([r for r in caplog.records if "could not be read or written" in r.getMessage()]) == 2
    assert [r.levelno for r in caplog.records if "could not be read" in r.getMessage()] == [30, 10]
    fake_api.up()
    clock.advance(0.5)  # 1.6 s since the last renewal: the Lease has not expired for anyone else either
    assert a.try_acquire_or_renew() and a.is_leader()
    assert spec(fake_api)["holderIdentity"] == "a" and spec(fake_api)["leaseTransitions"] == 0
    assert caplog.text.count("became leader") == 2 and TEST_TOKEN not in caplog.text


def test_forbidden_is_logged_with_the_verb_and_never_raised(
    fake_api: FakeKubeAPI, clients: Callable[[], KubeClient], caplog: pytest.LogCaptureFixture
) -> None:
    fake_api.forbid("leases", "create")
    a = elector(clients, "a")
    assert not a.try_acquire_or_renew() and not a.try_acquire_or_renew()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and 'grant verb "create" on resource "leases"' in warnings[0]


# --- clock skew ------------------------------------------------------------------------------------


def test_a_changing_lease_stands_however_old_its_renew_time(
    fake_api: FakeKubeAPI, clients: Callable[[], KubeClient]
) -> None:
    """The holder's wall clock is 25 years behind: expiry is judged by observing changes, not by renewTime."""
    clock_a, clock_b = FakeClock(), FakeClock()
    a = elector(clients, "a", clock_a, WallClock(datetime(2001, 1, 1, tzinfo=timezone.utc)))
    b = elector(clients, "b", clock_b)
    assert a.try_acquire_or_renew()
    assert spec(fake_api)["renewTime"].startswith("2001-01-01T")
    for _ in range(8):
        clock_a.advance(0.5)
        clock_b.advance(0.5)
        assert a.try_acquire_or_renew()
        assert not b.try_acquire_or_renew()
    assert spec(fake_api)["holderIdentity"] == "a"
    clock_b.advance(LEASE + 0.1)  # a stops renewing: now the record is stale by b's clock
    assert b.try_acquire_or_renew()


def test_an_unchanging_lease_expires_however_new_its_renew_time(
    fake_api: FakeKubeAPI, clients: Callable[[], KubeClient]
) -> None:
    future = "2099-01-01T00:00:00.000000Z"
    fake_api.add(
        "Lease",
        {
            "metadata": {"name": NAME, "namespace": NS, "resourceVersion": "1"},
            "spec": {"holderIdentity": "ghost", "leaseDurationSeconds": 2, "renewTime": future, "leaseTransitions": 4},
        },
    )
    clock = FakeClock()
    b = elector(clients, "b", clock)
    assert not b.try_acquire_or_renew()
    clock.advance(2.1)
    assert b.try_acquire_or_renew()
    assert spec(fake_api)["holderIdentity"] == "b" and spec(fake_api)["leaseTransitions"] == 5


# --- the threads ------------------------------------------------------------------------------------
# Real threads on a shared fake clock: they campaign on their own (a real retry period of 20 ms), but leases
# expire only when the test moves the clock, and every check waits for the rounds it relies on, never a time.


def wait_for(*conditions: Callable[[], object], timeout: float = 10.0) -> None:
    """Polls until every one of `conditions` holds; fails after `timeout` seconds, which only a hang can reach."""
    deadline = time.monotonic() + timeout
    while not all(condition() for condition in conditions):
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


class CountingLeases:
    """A LeaseClient that counts its elector's Lease reads and successful writes (one write per round won)."""

    def __init__(self, client: KubeClient) -> None:
        self.client = client
        self.reads = 0
        self.writes = 0

    def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        lease = self.client.get_lease(namespace, name)
        self.reads += 1  # after the reply: the round's expiry check, which comes next, reads the clock later
        return lease

    def create_lease(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        written = self.client.create_lease(namespace, body)
        self.writes += 1
        return written

    def update_lease(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        written = self.client.update_lease(namespace, name, body)
        self.writes += 1
        return written


def test_threads_elect_exactly_one_and_hand_over(fake_api: FakeKubeAPI, clients: Callable[[], KubeClient]) -> None:
    clock = FakeClock()
    leases = {identity: CountingLeases(clients()) for identity in "abc"}
    a, b, c = electors = [
        LeaderElector(
            leases[identity],
            NS,
            NAME,
            identity,
            lease_duration=1.0,
            renew_deadline=0.6,
            retry_period=0.02,
            clock=clock,
            wall_clock=WallClock(datetime(2026, 5, 1, tzinfo=timezone.utc)),
        )
        for identity in "abc"
    ]

    def next_rounds(identity: str, reads: int = 0, writes: int = 0) -> Callable[[], bool]:
        """Whether `identity` has made `reads` more reads and `writes` more writes than it has so far."""
        counts = leases[identity]
        target = (counts.reads + reads, counts.writes + writes)
        return lambda: counts.reads >= target[0] and counts.writes >= target[1]

    try:
        for each in electors:
            each.start()
        assert a.is_leader()  # start() tried once at once: the first one leads from the start
        # 5 steps of 0.3 s: past the renew deadline and the lease several times over. In each step the leader
        # renews (a round begun after the previous step) and both candidates finish a round: never two leaders.
        for _ in range(5):
            clock.advance(0.3)
            wait_for(next_rounds("a", writes=1), next_rounds("b", reads=2), next_rounds("c", reads=2))
            assert [e.is_leader() for e in electors] == [True, False, False]
        assert spec(fake_api)["leaseTransitions"] == 0

        a.stop()  # released: a candidate takes over at its next try, with no time passing on the clock
        wait_for(lambda: b.is_leader() or c.is_leader())
        assert spec(fake_api)["leaseTransitions"] == 1
        leader = b if b.is_leader() else c
        other = c if leader is b else b
        leader.stop(release=False)  # gone without a word: the other waits out the lease (1 s) by its clock
        for step in (0.0, 0.9):
            clock.advance(step)
            wait_for(next_rounds(other.identity, reads=2))  # a whole round of the other's at this time
            assert not other.is_leader() and spec(fake_api)["holderIdentity"] == leader.identity
        clock.advance(0.2)
        wait_for(other.is_leader)
        assert spec(fake_api)["holderIdentity"] == other.identity and spec(fake_api)["leaseTransitions"] == 2
    finally:
        for each in electors:
            each.stop()
    assert spec(fake_api)["holderIdentity"] == ""


def test_stop_is_bounded_when_the_thread_is_stuck(fake_api: FakeKubeAPI) -> None:
    cluster = ClusterConfig(server=fake_api.url, credentials=StaticToken())
    with KubeClient(cluster, connect_timeout=1.0, read_timeout=10.0, backoff_base=0.01, sleep=lambda s: None) as client:
        a = LeaderElector(client, NS, NAME, "a", lease_duration=1.0, renew_deadline=0.6, retry_period=0.1)
        a.start()
        fake_api.inject("delay", delay=60.0, times=2)  # both attempts of the next renewal hang (10 s read timeout)
        seen = len(fake_api.requests)
        wait_for(lambda: len(fake_api.requests) > seen)  # the thread is inside that renewal, for 20 s
        started = time.monotonic()
        a.stop(timeout=0.3)
        assert time.monotonic() - started < 5.0  # a guard against a hang: waiting for the thread takes 20 s
        assert not a.is_leader()
        assert spec(fake_api)["holderIdentity"] == "a"  # not released: the thread still had the client


def test_the_default_namespace_is_the_pods(tmp_path: Path) -> None:
    from syncer.kube.kubeconfig import in_cluster_namespace

    assert in_cluster_namespace(str(tmp_path)) is None  # outside a pod: the CLI falls back to "default"
    (tmp_path / "namespace").write_text("ingress-system\n")
    assert in_cluster_namespace(str(tmp_path)) == "ingress-system"
