"""The cycle deadline (`--cycle-timeout`): against a stalled or failing API a cycle fails by then with the files
untouched, and no request, retry pause, page or list restart outlasts it. Loopback I/O against the fake API.

Time is asserted only where it tells a hang from a deadline: a 2 s deadline against a 40 s stall, checked with
the subprocess's 30 s timeout. Everything else counts requests or compares planned pauses with the deadline.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from syncer.deadline import Deadline
from syncer.errors import KubeDeadlineExceeded
from syncer.kube.client import KubeClient
from syncer.kube.kubeconfig import ClusterConfig
from tests.cluster import CHANGED_PATH, Cluster, folder_state, make_dir, mentions
from tests.fakeapi import TEST_TOKEN, FakeKubeAPI, RecordedRequest
from tests.test_api_source import StaticToken, client_for, load_demo

STALL = 40.0  # seconds the stalled API takes to answer a request: far past every deadline here
DEADLINE_MESSAGE = "the cycle deadline (--cycle-timeout 2s) passed while listing ingressclasses"


@pytest.mark.timeout(90)
@pytest.mark.parametrize("given", ["flag", "environment"])
def test_once_fails_at_the_deadline_against_a_stalled_api(given: str, tmp_path: Path) -> None:
    with Cluster(tmp_path / "cluster", "traefik") as cluster:
        out = make_dir(tmp_path / "out")
        with cluster.start("once", out) as good:
            assert good.wait() == 0, good.log
        before = folder_state(out)
        cluster.change_demo()
        cluster.inject_while_faulty("delay", delay=STALL)  # every request of every list
        extra, env = (["--cycle-timeout", "2"], None) if given == "flag" else ([], {"SYNCER_CYCLE_TIMEOUT": "2"})
        with cluster.start("once", out, *extra, env=env) as stalled:
            # Far less than one stalled answer, let alone 5 attempts with 30 s read timeouts: only a hang fails this.
            assert stalled.wait(timeout=30) == 1, stalled.log
        line = stalled.wait_for_log("cycle failed, files untouched")
        assert "cannot list ingressclasses" in line and DEADLINE_MESSAGE in line, stalled.log
        assert folder_state(out) == before  # bytes and mtimes, the manifest's included


@pytest.mark.timeout(90)
def test_run_fails_a_stalled_cycle_and_the_next_interval_writes(tmp_path: Path) -> None:
    with Cluster(tmp_path / "cluster", "envoy") as cluster:
        out = make_dir(tmp_path / "out")
        with cluster.start("run", out, "--interval", "1", "--cycle-timeout", "2") as run:
            run.wait_for_log("wrote ")
            before = folder_state(out)
            cluster.change_demo()
            cluster.inject_while_faulty("delay", delay=STALL)
            run.wait_for_log("cycle failed, last good files kept", DEADLINE_MESSAGE)
            assert folder_state(out) == before
            assert run.proc.poll() is None
            recovery = len(run.lines)
            cluster.faulty.clear()
            run.wait_for_log("wrote ", since=recovery)
            assert mentions(out, CHANGED_PATH)
            assert run.stop() == 0, run.log


class PlannedSleeps(list[tuple[float, float]]):
    """Sleeps for real, recording (when it began, how long) of each pause between attempts."""

    def __call__(self, seconds: float) -> None:
        self.append((time.monotonic(), seconds))
        time.sleep(seconds)


@pytest.mark.parametrize(
    "fault",
    [
        {"fault": 503},  # backoff 0.1-0.2 s, then doubling: the fourth or fifth pause would cross the deadline
        {"fault": 429, "retry_after": 10},  # the server asks for 10 s: not one pause fits
    ],
    ids=["backoff", "retry-after"],
)
def test_no_retry_pause_ends_past_the_deadline(fault: dict[str, Any], fake_api: FakeKubeAPI) -> None:
    load_demo(fake_api)
    fake_api.inject(times=1000, path_contains="/ingresses", **fault)
    sleeps = PlannedSleeps()
    deadline = Deadline.after(1.5, "the test's deadline")
    cluster = ClusterConfig(server=fake_api.url, credentials=StaticToken(TEST_TOKEN))
    with KubeClient(cluster, max_attempts=50, backoff_base=0.2, max_backoff=5.0, sleep=sleeps) as client:
        with pytest.raises(KubeDeadlineExceeded, match="the test's deadline would pass before the next try: list ingr"):
            client.list("Ingress", deadline=deadline)
    assert all(began + seconds < deadline.at for began, seconds in sleeps), sleeps
    asked = [r for r in fake_api.requests if r.path.endswith("/ingresses")]
    assert len(asked) == len(sleeps) + 1
    if fault["fault"] == 429:
        assert sleeps == []


def many_services(api: FakeKubeAPI, count: int = 600) -> None:
    api.set_objects("Service", [{"metadata": {"name": f"s-{i:04d}", "namespace": "ns"}} for i in range(count)])


def test_a_slow_paginated_list_stops_paging_at_the_deadline(fake_api: FakeKubeAPI) -> None:
    many_services(fake_api)
    fake_api.inject("delay", times=1000, path_contains="/services", delay=0.4)
    with client_for(fake_api, page_size=100) as client:
        with pytest.raises(KubeDeadlineExceeded, match=r"the test's deadline passed (while|before) listing services"):
            client.list("Service", deadline=Deadline.after(1.0, "the test's deadline"))
    pages = [r for r in fake_api.requests if r.path.endswith("/services")]
    assert 1 <= len(pages) < 6, [r.query for r in pages]  # six pages of 0.4 s each take 2.4 s


def test_list_restarts_after_410_stop_at_the_deadline(fake_api: FakeKubeAPI) -> None:
    many_services(fake_api)
    fake_api.inject("delay", times=1000, path_contains="/services", delay=0.2)

    def expire_on_continue(req: RecordedRequest) -> None:
        if "continue" in req.query:
            fake_api.expire_continue_tokens()  # every second page answers 410: the list restarts from scratch

    fake_api.on_request = expire_on_continue
    with client_for(fake_api, page_size=100, max_restarts=100) as client:
        with pytest.raises(KubeDeadlineExceeded, match=r"the test's deadline passed (while|before) listing services"):
            client.list("Service", deadline=Deadline.after(1.5, "the test's deadline"))
    asked = [r for r in fake_api.requests if r.path.endswith("/services")]
    assert 2 <= len(asked) < 20  # 101 tries of two pages would be 202 requests and 40 s
