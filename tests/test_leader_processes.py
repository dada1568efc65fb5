"""Two real `syncer run --leader-elect` processes against one fake API: one status writer, failover, release.

Each process has a token of its own, so every recorded request says which process sent it.
"""

from __future__ import annotations

import base64
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster import SyncerProcess
from tests.fakeapi import FakeKubeAPI, RecordedRequest
from tests.test_api_source import load_demo

REPO = Path(__file__).resolve().parent.parent
TOKENS = {"a": "tok-a-41c7-do-not-log", "b": "tok-b-93e2-do-not-log"}
ADDRESS = "203.0.113.7"
SERVED = {"storefront", "catalog", "fallback", "mistakes"}  # the demo Ingresses of class syncer
LEASE, RENEW, RETRY = 2.0, 1.5, 0.3
LEASE_NS, LEASE_NAME = "ingress-syncer", "syncer-leader"


def wait_until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Polls `condition` until it gives something truthy, which is returned; fails after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.02)


class Replica(SyncerProcess):
    """One `python -m syncer run --leader-elect` process with its own output folder and credentials."""

    def __init__(self, name: str, api: FakeKubeAPI, root: Path) -> None:
        self.name = name
        self.out = root / f"out-{name}"
        self.out.mkdir()
        kubeconfig = root / f"kubeconfig-{name}"
        kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [
                        {
                            "name": "fake",
                            "cluster": {
                                "server": api.url,
                                "certificate-authority-data": base64.b64encode(api.ca_pem).decode(),
                            },
                        }
                    ],
                    "users": [{"name": name, "user": {"token": TOKENS[name]}}],
                    "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": name}}],
                    "current-context": "fake",
                }
            )
        )
        args = [
            *("run", "--interval", "0.3", "--kubeconfig", str(kubeconfig), "--output-dir", str(self.out)),
            *("--publish-address", ADDRESS, "--leader-elect"),
            *("--leader-elect-namespace", LEASE_NS, "--leader-elect-name", LEASE_NAME),
            *("--leader-elect-lease-duration", str(LEASE), "--leader-elect-renew-deadline", str(RENEW)),
            *("--leader-elect-retry-period", str(RETRY)),
        ]
        super().__init__(args)

    def identity(self) -> str | None:
        found = re.search(rf"leader election for Lease {LEASE_NS}/{LEASE_NAME} as (\S+) ", self.log)
        return found.group(1) if found else None

    def files(self) -> list[str]:
        return sorted(str(p.relative_to(self.out)) for p in self.out.rglob("*") if p.is_file())


@pytest.fixture
def api() -> Iterator[FakeKubeAPI]:
    with FakeKubeAPI(tls=True, tokens=TOKENS.values()) as fake:
        load_demo(fake)
        yield fake


@pytest.fixture
def replicas(api: FakeKubeAPI, tmp_path: Path) -> Iterator[dict[str, Replica]]:
    started: dict[str, Replica] = {}
    try:
        for name in TOKENS:
            started[name] = Replica(name, api, tmp_path)
        yield started
    finally:
        for replica in started.values():
            replica.close()


def lease_spec(api: FakeKubeAPI) -> dict[str, Any]:
    leases = api.objects("Lease")
    return dict(leases[0]["spec"]) if leases else {}


def published(api: FakeKubeAPI) -> dict[str, Any]:
    return {
        o["metadata"]["name"]: (o.get("status") or {}).get("loadBalancer", {}).get("ingress")
        for o in api.objects("Ingress")
    }


def all_published(api: FakeKubeAPI) -> bool:
    status = published(api)
    return all(status[name] == [{"ip": ADDRESS}] for name in SERVED) and status["not-ours"] is None


def clear_status(api: FakeKubeAPI) -> None:
    for obj in api.objects("Ingress"):
        if obj["metadata"]["name"] in SERVED:
            api.add("Ingress", {k: v for k, v in obj.items() if k != "status"})


def patches_since(api: FakeKubeAPI, index: int) -> list[RecordedRequest]:
    return [r for r in api.requests[index:] if r.method == "PATCH"]


def busy_since(api: FakeKubeAPI, index: int, lease_requests: int, cycles: int) -> set[str]:
    """The replicas that have made at least `lease_requests` Lease requests and listed Ingresses (one list a cycle)
    at least `cycles` times since request `index`."""
    by_token = {token: name for name, token in TOKENS.items()}
    leases: dict[str, int] = {}
    lists: dict[str, int] = {}
    for r in api.requests[index:]:
        name = by_token.get(r.token or "")
        if name is None:
            continue
        if "/leases/" in r.path:
            leases[name] = leases.get(name, 0) + 1
        elif r.method == "GET" and r.path.endswith("/ingresses"):
            lists[name] = lists.get(name, 0) + 1
    return {name for name in TOKENS if leases.get(name, 0) >= lease_requests and lists.get(name, 0) >= cycles}


def senders(requests: list[RecordedRequest]) -> set[str]:
    by_token = {token: name for name, token in TOKENS.items()}
    return {by_token[r.token] for r in requests if r.token in by_token}


def test_one_writer_then_failover_on_kill_then_release_on_sigterm(
    api: FakeKubeAPI, replicas: dict[str, Replica]
) -> None:
    started = time.monotonic()
    # The log line comes after the whole write (the manifest claims new files before they are renamed in).
    wrote = re.compile(r"wrote \d+ file\(s\)")
    wait_until(lambda: all(wrote.search(r.log) for r in replicas.values()), 30, "both replicas to write their files")
    assert "ingress-syncer.yaml" in replicas["a"].files()
    assert replicas["a"].files() == replicas["b"].files()
    ids = {name: wait_until(r.identity, 10, f"the identity of {name}") for name, r in replicas.items()}
    wait_until(lambda: lease_spec(api).get("holderIdentity") in ids.values(), 10, "a leader")
    wait_until(lambda: all_published(api), 10, "the status to be published")
    leader_name = next(name for name, identity in ids.items() if identity == lease_spec(api)["holderIdentity"])
    other_name = "b" if leader_name == "a" else "a"
    leader, other = replicas[leader_name], replicas[other_name]
    startup = time.monotonic() - started

    # A window of several lease renewals and cycles: the status is cleared twice, and only the leader rewrites it.
    window = len(api.requests)
    for _ in range(2):
        clear_status(api)
        wait_until(lambda: all_published(api), 5, "the leader to rewrite the status")
    # More cycles and renewals of both (counted, not waited out): a second writer would show up here.
    more = len(api.requests)
    wait_until(lambda: busy_since(api, more, lease_requests=3, cycles=2) == set(TOKENS), 30, "more rounds of both")
    assert senders(patches_since(api, 0)) == {leader_name}
    assert len(patches_since(api, window)) == 2 * len(SERVED)  # each clear rewritten once, nothing more
    assert lease_spec(api)["holderIdentity"] == ids[leader_name]
    assert senders([r for r in api.requests[window:] if "/leases/" in r.path]) == {"a", "b"}  # both campaign
    assert f"became leader of Lease {LEASE_NS}/{LEASE_NAME} as {ids[leader_name]}" in leader.log
    assert "became leader" not in other.log

    # The leader dies without a word: the other takes over once the lease has expired by its clock. When exactly
    # is the elector's rule (tests/test_leader.py, on fake clocks); here the settings must reach the elector and
    # the Lease (checked below), and the takeover must come (30 s: a guard against a hang, ~10x the lease + retries).
    for replica in replicas.values():
        assert f"(lease {LEASE:g}s, renew deadline {RENEW:g}s, retry every {RETRY:g}s)" in replica.log
    assert lease_spec(api)["leaseDurationSeconds"] == int(LEASE)
    transitions = lease_spec(api)["leaseTransitions"]
    leader.proc.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    leader.proc.wait(timeout=5)
    clear_status(api)
    wait_until(lambda: lease_spec(api)["holderIdentity"] == ids[other_name], 30, "the other to take over")
    takeover = time.monotonic() - killed  # reported, not asserted
    assert lease_spec(api)["leaseTransitions"] == transitions + 1
    after_kill = len(api.requests)
    wait_until(lambda: all_published(api), 5, "the new leader to write the status")
    assert senders(patches_since(api, after_kill)) == {other_name}
    assert f"became leader of Lease {LEASE_NS}/{LEASE_NAME} as {ids[other_name]}" in other.log

    # SIGTERM: the new leader releases the Lease on its way out.
    other.proc.send_signal(signal.SIGTERM)
    assert other.proc.wait(timeout=10) == 0
    released = lease_spec(api)
    assert released["holderIdentity"] == "" and released["leaseDurationSeconds"] == 1
    assert f"lost leadership of Lease {LEASE_NS}/{LEASE_NAME} as {ids[other_name]}: released it" in other.log
    assert not any(token in r.log for r in replicas.values() for token in TOKENS.values())
    print(f"startup {startup:.2f}s, takeover after SIGKILL {takeover:.2f}s")


def syncer(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SYNCER_", "KUBECONFIG", "KUBERNETES_"))}
    return subprocess.run(
        [sys.executable, "-m", "syncer", *args],
        cwd=REPO,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_once_leads_publishes_and_releases(api: FakeKubeAPI, tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "f", "cluster": {"server": api.url, "certificate-authority": api.ca_path}}],
                "users": [{"name": "u", "user": {"token": TOKENS["a"]}}],
                "contexts": [{"name": "f", "context": {"cluster": "f", "user": "u"}}],
                "current-context": "f",
            }
        )
    )
    out = tmp_path / "out"
    out.mkdir()
    args = ("once", "--kubeconfig", str(kubeconfig), "--output-dir", str(out), "--publish-address", ADDRESS)
    result = syncer(*args, env={"SYNCER_LEADER_ELECT": "true", "SYNCER_LEADER_ELECT_NAMESPACE": "ops"})
    assert result.returncode == 0, result.stderr
    assert all_published(api) and list(out.iterdir())
    (lease,) = api.objects("Lease")
    assert (lease["metadata"]["namespace"], lease["metadata"]["name"]) == ("ops", "ingress-syncer")
    assert lease["spec"]["holderIdentity"] == "" and lease["spec"]["leaseTransitions"] == 0
    assert "became leader of Lease ops/ingress-syncer" in result.stderr and "released it" in result.stderr


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--source", str(REPO / "fixtures" / "demo")), "--leader-elect elects a leader through a Lease in the API"),
        (("--leader-elect-renew-deadline", "20"), "lease duration (15s) must be longer than the renew deadline (20s)"),
        (("--leader-elect-retry-period", "9"), "must be longer than 1.2 x the retry period (9s)"),
    ],
)
def test_leader_election_usage_errors(tmp_path: Path, extra: tuple[str, ...], message: str) -> None:
    result = syncer("once", "--output-dir", str(tmp_path), "--leader-elect", *extra)
    assert result.returncode == 2 and message in " ".join(result.stderr.split()), result.stderr
