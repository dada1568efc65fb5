"""End to end: fake API -> ApiSource -> Syncer -> a real Envoy on the xDS files. Process and network I/O.

Every object lives in a FakeKubeAPI; each change goes through `Syncer.cycle()` with the Envoy renderer and the
real FileWriter, and one Envoy (started on `bootstrap_config`, never restarted) serves it. All traffic stays on
127.0.0.0/8: every EndpointSlice points at echo servers this module started on loopback.
"""

from __future__ import annotations

import collections
import contextlib
import http.client
import json
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests
import trustme
from cryptography import x509

from renderers.envoy import EnvoyRenderer
from renderers.envoy.bootstrap import bootstrap_config
from syncer.kube.client import KubeClient
from syncer.kube.kubeconfig import ClusterConfig, Credential
from syncer.output.writer import FileWriter
from syncer.run.cycle import CycleResult, Syncer
from syncer.source import ApiSource
from tests import live_objects
from tests.envoy_proxy import EnvoyProcess, EnvoyStartError, find_envoy
from tests.fakeapi import TEST_TOKEN, FakeKubeAPI
from tests.live_objects import (
    CLASS,
    NS,
    Obj,
    backend_of,
    backend_ref,
    default_backend_ingress,
    ingress_class,
    serial_of,
    service,
    tls_secret,
)
from tests.proxies import LOOPBACK, EchoServer, Reply, free_port, request, start_echo_servers

PROPAGATION_LIMIT = 2.0  # seconds from the end of a cycle to the new state answering requests
POLL_TIMEOUT = 10.0  # how long a poll keeps trying before it reports what it saw last
_POLL_INTERVAL = 0.005

# One echo server per name, each on its own loopback address; they all share one port (the EndpointSlices
# of a Service carry one port for all their endpoints).
BACKEND_ADDRESSES = {
    "a": "127.0.0.161",
    "b": "127.0.0.162",
    "fallback": "127.0.0.163",
    "plain": "127.0.0.164",
    "lb-1": "127.0.0.171",
    "lb-2": "127.0.0.172",
    "lb-3": "127.0.0.173",
    "lb-not-ready": "127.0.0.174",
    "lb-terminating": "127.0.0.175",
    "stable": "127.0.0.181",
    "new": "127.0.0.182",
    "gone": "127.0.0.183",
    "scale-1": "127.0.0.191",
    "scale-2": "127.0.0.192",
    "scale-3": "127.0.0.193",
}

Timing = tuple[str, float, float]  # what changed, seconds from the end of the cycle to it answering, cycle seconds
T = TypeVar("T")


# --- the environment ----------------------------------------------------------------------------------


class StaticToken:
    def __init__(self, token: str) -> None:
        self.token = token

    def current(self) -> Credential:
        return Credential(token=self.token)

    def invalidate(self) -> None:
        pass


def cluster(service_name: str) -> str:
    """The Envoy cluster of a Service port: the translator's `namespace/service/port`."""
    return f"{NS}/{service_name}/80"


def eds_file(service_name: str) -> str:
    return f"eds/{NS}__{service_name}__80.json"


def sds_file(secret_name: str) -> str:
    return f"sds/{NS}__{secret_name}.json"


@dataclass
class Live:
    api: FakeKubeAPI
    client: KubeClient
    envoy: EnvoyProcess
    xds_dir: Path
    backends: dict[str, EchoServer]
    port: int  # every echo server's port
    http_port: int
    https_port: int

    @property
    def http_url(self) -> str:
        return f"http://{LOOPBACK}:{self.http_port}"

    @property
    def https_url(self) -> str:
        return f"https://{LOOPBACK}:{self.https_port}"

    def syncer(self) -> Syncer:
        return make_syncer(self.client, self.xds_dir, self.http_port, self.https_port)

    def sync(self, syncer: Syncer) -> CycleResult:
        """One cycle, then waits until Envoy runs exactly what it wrote."""
        result = syncer.cycle()
        wait_until_live(self.envoy, self.xds_dir)
        return result

    def assert_envoy_accepted_everything(self) -> None:
        """Counters are cumulative since Envoy started: this covers the whole run so far."""
        assert self.envoy.update_rejected_total() == 0, self.envoy.stats(r"\.update_rejected$")
        assert [line for line in self.envoy.log_problems() if "rejected" in line] == []


def make_syncer(client: KubeClient, xds_dir: Path, http_port: int, https_port: int) -> Syncer:
    """The real pipeline: API source, Envoy renderer with loopback listeners, the atomic file writer."""
    options = {"address": LOOPBACK, "http-port": str(http_port), "https-port": str(https_port)}
    renderer = EnvoyRenderer(options, output_dir=str(xds_dir))
    return Syncer(ApiSource(client), renderer, FileWriter(xds_dir))


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_bytes())
    return data


def rendered_versions(xds_dir: Path) -> dict[str, str]:
    """`*.version_text` stat -> the `version_info` Envoy reports once that file is live.

    The stat names and file paths follow the references inside lds.json and cds.json (HCM `rds`, SDS secret
    configs, EDS config sources), not the renderer's constants.
    """
    lds = _load(xds_dir / "lds.json")
    versions = {
        "listener_manager.lds.version_text": lds["version_info"],
        "cluster_manager.cds.version_text": _load(xds_dir / "cds.json")["version_info"],
    }
    for listener in lds["resources"]:
        chains = [
            *listener["filter_chains"],
            *([listener["default_filter_chain"]] if "default_filter_chain" in listener else []),
        ]
        for chain in chains:
            for network_filter in chain["filters"]:
                hcm = network_filter["typed_config"]
                rds = hcm["rds"]
                rds_file = Path(rds["config_source"]["path_config_source"]["path"])
                stat = f"http.{hcm['stat_prefix']}.rds.{rds['route_config_name']}.version_text"
                versions[stat] = _load(rds_file)["version_info"]
            tls = chain.get("transport_socket", {}).get("typed_config", {}).get("common_tls_context", {})
            for sds in tls.get("tls_certificate_sds_secret_configs", []):
                sds_path = Path(sds["sds_config"]["path_config_source"]["path"])
                versions[f"sds.{sds['name']}.version_text"] = _load(sds_path)["version_info"]
    for cds_cluster in _load(xds_dir / "cds.json")["resources"]:
        if cds_cluster.get("type") == "EDS":
            eds_path = Path(cds_cluster["eds_cluster_config"]["eds_config"]["path_config_source"]["path"])
            versions[f"cluster.{cds_cluster['name']}.version_text"] = _load(eds_path)["version_info"]
    return versions


def wait_until_live(envoy: EnvoyProcess, xds_dir: Path) -> None:
    """Every file's version accepted, and every listener of lds.json active (not warming)."""
    for stat, version in rendered_versions(xds_dir).items():
        envoy.wait_for_version(stat, version, timeout=POLL_TIMEOUT)
    listeners = len(_load(xds_dir / "lds.json")["resources"])

    def active() -> bool | None:
        stats = envoy.stats(r"^listener_manager\.total_listeners_(active|warming)$")
        warming = stats.get("listener_manager.total_listeners_warming")
        return (stats.get("listener_manager.total_listeners_active") == listeners and warming == 0) or None

    poll_until(active, f"{listeners} active listener(s)")


def endpoint_slice(
    live: Live, service_name: str, ready: Sequence[str], not_ready: Sequence[str] = (), terminating: Sequence[str] = ()
) -> Obj:
    return live_objects.endpoint_slice(BACKEND_ADDRESSES, live.port, service_name, ready, not_ready, terminating)


def test_envoy_binary_installed() -> None:
    # A failure in the fixture below is reported as a setup error; this makes a missing binary a plain FAIL too.
    assert find_envoy()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    binary = find_envoy()
    base = tmp_path_factory.mktemp("envoy-live")
    with contextlib.ExitStack() as stack:
        backend_stack, backends, port = start_echo_servers(BACKEND_ADDRESSES)
        stack.enter_context(backend_stack)
        api = stack.enter_context(FakeKubeAPI(tokens=[TEST_TOKEN]))
        api.set_objects("IngressClass", [ingress_class()])
        cluster_config = ClusterConfig(server=api.url, credentials=StaticToken(TEST_TOKEN))
        client = stack.enter_context(KubeClient(cluster_config, backoff_base=0.01, max_backoff=0.05))
        for attempt in range(1, 4):
            # free_port() races with other processes: a port taken in between is worth another try.
            xds_dir, work_dir = base / f"xds-{attempt}", base / f"envoy-{attempt}"
            xds_dir.mkdir()
            work_dir.mkdir()
            http_port, https_port, admin_port = free_port(), free_port(), free_port()
            # Envoy exits when lds.json or cds.json is missing: the first cycle writes them before it starts.
            first = make_syncer(client, xds_dir, http_port, https_port).cycle()
            assert first.write is not None and {"lds.json", "cds.json"} <= set(first.write.written), first
            bootstrap = work_dir / "bootstrap.json"
            bootstrap.write_text(
                json.dumps(bootstrap_config(str(xds_dir), admin_address=f"{LOOPBACK}:{admin_port}"), indent=1) + "\n",
                encoding="utf-8",
            )
            try:
                envoy = stack.enter_context(EnvoyProcess(bootstrap, work_dir, admin_port, binary=binary, listeners=1))
            except EnvoyStartError as exc:
                if "ddress already in use" in str(exc) and attempt < 3:
                    continue
                raise
            wait_until_live(envoy, xds_dir)
            yield Live(api, client, envoy, xds_dir, backends, port, http_port, https_port)
            return
        raise AssertionError("unreachable")


# --- objects ------------------------------------------------------------------------------------------


def ingress(name: str, host: str, service_name: str, *, path: str = "/", tls_secret: str | None = None) -> Obj:
    spec: Obj = {
        "ingressClassName": CLASS,
        "rules": [
            {
                "host": host,
                "http": {"paths": [{"path": path, "pathType": "Prefix", "backend": backend_ref(service_name)}]},
            }
        ],
    }
    if tls_secret is not None:
        spec["tls"] = [{"hosts": [host], "secretName": tls_secret}]
    return {"metadata": {"name": name, "namespace": NS}, "spec": spec}


# --- clients and probes -------------------------------------------------------------------------------


def poll_until(check: Callable[[], T | None], what: str, timeout: float = POLL_TIMEOUT) -> tuple[T, float]:
    """Calls `check` until it returns something other than None; that value and the monotonic time it came."""
    deadline = time.monotonic() + timeout
    last = "condition not met"
    while True:
        try:
            value = check()
        except (requests.RequestException, OSError, http.client.HTTPException) as exc:
            value, last = None, f"{type(exc).__name__}: {exc}"
        if value is not None:
            return value, time.monotonic()
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not observed within {timeout}s (last: {last})")
        time.sleep(_POLL_INTERVAL)


def tls_context(ca_file: str, *, check_hostname: bool = True) -> ssl.SSLContext:
    """Verifies the chain against `ca_file` (and the name against the SNI when `check_hostname`)."""
    context = ssl.create_default_context(cafile=ca_file)
    context.check_hostname = check_hostname
    return context


class KeepAlive(http.client.HTTPConnection):
    """One HTTP/1.1 connection to Envoy reused for every request, optionally TLS with `sni` (None: no SNI at all).

    http.client reconnects on its own only after the server announced `Connection: close`; `opened` counts
    the TCP connections that took, so a test can tell whether requests really shared one connection.
    """

    def __init__(self, port: int, *, context: ssl.SSLContext | None = None, sni: str | None = None) -> None:
        super().__init__(LOOPBACK, port, timeout=5)
        self._context = context
        self._sni = sni
        self.opened = 0

    def connect(self) -> None:
        super().connect()
        if self._context is not None:
            self.sock = self._context.wrap_socket(self.sock, server_hostname=self._sni)
        self.opened += 1

    def get(self, host: str, path: str) -> Reply:
        self.request("GET", path, headers={"Host": host})
        response = self.getresponse()
        content = response.read()
        try:
            body: Any = json.loads(content)
        except ValueError:
            body = content.decode("utf-8", "replace")
        return Reply(response.status, body, None)

    @property
    def local_port(self) -> int | None:
        return int(self.sock.getsockname()[1]) if self.sock is not None else None

    def peer_serial(self) -> int:
        assert isinstance(self.sock, ssl.SSLSocket), "not a TLS connection (or not open)"
        der = self.sock.getpeercert(binary_form=True)
        assert der is not None
        return x509.load_der_x509_certificate(der).serial_number


def answers_with(url: str, host: str, path: str, backend: str) -> Callable[[], bool | None]:
    """A poll check: True once a fresh connection to `url` gets `host` + `path` answered by `backend`."""
    return lambda: backend_of(request(url, host, path=path)) == backend or None


def served_serial(port: int, sni: str, ca_file: str) -> int:
    """Serial number of the certificate served for `sni`, verified against `ca_file` (chain and name)."""
    context = tls_context(ca_file)
    with (
        socket.create_connection((LOOPBACK, port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=sni) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


@dataclass
class _Client:
    label: str
    connection: KeepAlive
    requests: int = 0
    ports: set[int] = field(default_factory=set)


class StableProbe:
    """Background threads, each sending a bounded loop of requests over ONE keep-alive connection to a route
    that must keep answering; records every connection error, 5xx and answer from another backend."""

    def __init__(
        self,
        connections: dict[str, KeepAlive],
        host: str,
        backends: Collection[str],
        *,
        path: str = "/stable",
        pause: float = 0.002,
        max_seconds: float = 60.0,
    ) -> None:
        self.host, self.backends, self.path, self.max_seconds = host, set(backends), path, max_seconds
        self.pause = pause  # between requests, so the probe does not starve Envoy's single worker
        self.clients = [_Client(label, connection) for label, connection in connections.items()]
        self.failures: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(c,), name=f"stable-probe-{c.label}", daemon=True)
            for c in self.clients
        ]

    def _fail(self, client: _Client, what: str) -> None:
        with self._lock:
            self.failures.append(f"{client.label} request {client.requests}: {what}")

    def _run(self, client: _Client) -> None:
        deadline = time.monotonic() + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            client.requests += 1
            try:
                reply = client.connection.get(self.host, self.path)
            except (OSError, http.client.HTTPException) as exc:
                self._fail(client, f"connection error: {type(exc).__name__}: {exc}")
                client.connection.close()
                continue
            if client.connection.local_port is not None:
                client.ports.add(client.connection.local_port)
            if reply.status >= 500:
                self._fail(client, f"HTTP {reply.status}: {reply.body!r}")
            elif backend_of(reply) not in self.backends:
                self._fail(client, f"wrong answer: {reply}")
            if self.pause:
                self._stop.wait(self.pause)

    @property
    def requests(self) -> int:
        return sum(c.requests for c in self.clients)

    def __enter__(self) -> StableProbe:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        assert not any(t.is_alive() for t in self._threads), "stable probe did not stop"
        for client in self.clients:
            client.connection.close()


def print_timings(timings: Sequence[Timing]) -> None:
    print("\npropagation: end of cycle -> new state answering (and the cycle itself: fetch, render, write):")
    for what, seconds, cycle_seconds in timings:
        print(f"  {what:<48} {seconds * 1000:6.1f} ms  [cycle {cycle_seconds * 1000:5.1f} ms]")


def apply_change(
    live: Live,
    syncer: Syncer,
    what: str,
    check: Callable[[], T | None],
    *,
    written: set[str],
    removed: Sequence[str] = (),
    timings: list[Timing],
) -> T:
    """One cycle that rewrites exactly `written` (and deletes `removed`); then the new state must answer
    within PROPAGATION_LIMIT of the cycle's end. Appends (what, seconds after the cycle, cycle seconds)."""
    result = syncer.cycle()
    done = time.monotonic()
    assert result.changed_input and result.write is not None, result
    assert (set(result.write.written), set(result.write.removed)) == (written, set(removed)), (what, result.write)
    value, seen = poll_until(check, what)
    timings.append((what, seen - done, result.seconds))
    assert seen - done <= PROPAGATION_LIMIT, f"{what}: took {seen - done:.3f}s after the cycle"
    wait_until_live(live.envoy, live.xds_dir)
    return value


# --- 1. TLS -------------------------------------------------------------------------------------------


@dataclass
class Certs:
    ca_file: str
    a: trustme.LeafCert
    b: trustme.LeafCert


def make_certs(directory: Path) -> Certs:
    ca = trustme.CA()
    ca_file = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return Certs(
        str(ca_file),
        ca.issue_cert("a.tls.test", common_name="a.tls.test"),
        ca.issue_cert("b.tls.test", common_name="b.tls.test"),
    )


def test_tls_by_sni_and_default_chain(live: Live, tmp_path: Path) -> None:
    certs = make_certs(tmp_path)
    live.api.replace_all(
        {
            "IngressClass": [ingress_class()],
            "Service": [service(n) for n in ("a", "b", "fallback", "plain")],
            "EndpointSlice": [endpoint_slice(live, n, [n]) for n in ("a", "b", "fallback", "plain")],
            "Secret": [tls_secret("a-tls", certs.a), tls_secret("b-tls", certs.b)],
            "Ingress": [
                ingress("a", "a.tls.test", "a", tls_secret="a-tls"),
                ingress("b", "b.tls.test", "b", tls_secret="b-tls"),
                ingress("plain", "plain.tls.test", "plain"),
                default_backend_ingress("fallback", "fallback"),
            ],
        }
    )
    live.sync(live.syncer())
    https, http_url = live.https_url, live.http_url

    # Each SNI gets its own certificate (chain and name verified against the CA) and its own backend.
    for host, leaf in (("a.tls.test", certs.a), ("b.tls.test", certs.b)):
        reply = request(https, host, path="/p?q=1", sni=host, verify=certs.ca_file)
        assert (reply.status, backend_of(reply)) == (200, host[0]), reply
        assert reply.body["path"] == "/p?q=1"
        assert reply.cert is not None and reply.cert.dns_names == (host,), reply.cert
        assert served_serial(live.https_port, host, certs.ca_file) == serial_of(leaf)
    # The same hosts over plain HTTP, and a host without TLS there.
    for host, backend in (("a.tls.test", "a"), ("b.tls.test", "b"), ("plain.tls.test", "plain")):
        reply = request(http_url, host, path="/h")
        assert (reply.status, backend_of(reply)) == (200, backend), reply
    assert backend_of(request(http_url, "unknown.tls.test")) == "fallback"

    # An unknown SNI: the default chain (one of the configured certificates, chaining to the CA), never a
    # reset, and an HTTP answer from the default backend.
    ours = {serial_of(certs.a), serial_of(certs.b)}
    for host in ("unknown.tls.test", "plain.tls.test"):  # a host without a certificate is unknown to HTTPS
        context = tls_context(certs.ca_file, check_hostname=False)
        connection = KeepAlive(live.https_port, context=context, sni=host)
        try:
            reply = connection.get(host, "/d")
            assert (reply.status, backend_of(reply)) == (200, "fallback"), (host, reply)
            assert connection.peer_serial() in ours, host
        finally:
            connection.close()

    # No SNI at all (an HTTPS client given an IP address): the default chain and the default backend too.
    no_sni_before = live.envoy.stat("tls_inspector.sni_not_found") or 0
    connection = KeepAlive(live.https_port, context=tls_context(certs.ca_file, check_hostname=False), sni=None)
    try:
        for _ in range(2):  # and the connection stays usable
            reply = connection.get(f"{LOOPBACK}:{live.https_port}", "/no-sni")
            assert (reply.status, backend_of(reply)) == (200, "fallback"), reply
            assert reply.body["path"] == "/no-sni"
        assert connection.peer_serial() in ours
        assert connection.opened == 1
    finally:
        connection.close()
    no_sni_after = live.envoy.stat("tls_inspector.sni_not_found")
    assert isinstance(no_sni_after, int) and no_sni_after > int(no_sni_before), "the client did send an SNI"
    # Nothing was refused for want of a filter chain.
    no_chain = live.envoy.stats(r"no_filter_chain_match$")
    assert all(v == 0 for v in no_chain.values()), no_chain
    live.assert_envoy_accepted_everything()


# --- 2. load balancing --------------------------------------------------------------------------------


def test_load_balancing_over_ready_endpoints_only(live: Live) -> None:
    live.api.replace_all(
        {
            "IngressClass": [ingress_class()],
            "Service": [service("lb")],
            "EndpointSlice": [
                endpoint_slice(
                    live, "lb", ["lb-1", "lb-2", "lb-3"], not_ready=["lb-not-ready"], terminating=["lb-terminating"]
                )
            ],
            "Ingress": [ingress("lb", "lb.live.test", "lb")],
        }
    )
    live.sync(live.syncer())
    excluded = ("lb-not-ready", "lb-terminating")
    before = {name: live.backends[name].served for name in excluded}
    membership = live.envoy.stats(rf"^cluster\.{re.escape(cluster('lb'))}\.membership_(total|healthy)$")
    assert set(membership.values()) == {3}, membership

    answered = collections.Counter(backend_of(request(live.http_url, "lb.live.test")) for _ in range(100))

    print(f"\nload balancing, 100 requests: {dict(sorted(answered.items(), key=lambda kv: str(kv[0])))}")
    assert set(answered) == {"lb-1", "lb-2", "lb-3"}, answered
    assert min(answered.values()) >= 1
    assert {name: live.backends[name].served for name in excluded} == before == {n: 0 for n in excluded}
    live.assert_envoy_accepted_everything()


# --- 3. hot reload ------------------------------------------------------------------------------------


def test_hot_reload_without_restart(live: Live, tmp_path: Path) -> None:
    ca = trustme.CA()
    ca_file = str(tmp_path / "ca.pem")
    ca.cert_pem.write_to_path(ca_file)
    first = ca.issue_cert("a.tls.test", common_name="a.tls.test")
    stable_leaf = ca.issue_cert("stable.live.test", common_name="stable.live.test")
    live.api.replace_all(
        {
            "IngressClass": [ingress_class()],
            "Service": [service(n) for n in ("stable", "new", "gone", "scale", "a")],
            "EndpointSlice": [
                endpoint_slice(live, "stable", ["stable"]),
                endpoint_slice(live, "new", ["new"]),
                endpoint_slice(live, "gone", ["gone"]),
                endpoint_slice(live, "scale", ["scale-1", "scale-2"]),
                endpoint_slice(live, "a", ["a"]),
            ],
            "Secret": [tls_secret("a-tls", first), tls_secret("stable-tls", stable_leaf)],
            "Ingress": [
                ingress("stable", "stable.live.test", "stable", tls_secret="stable-tls"),
                ingress("gone", "gone.live.test", "gone"),
                ingress("scale", "scale.live.test", "scale"),
                ingress("a", "a.tls.test", "a", path="/v1", tls_secret="a-tls"),
            ],
        }
    )
    syncer = live.syncer()
    live.sync(syncer)
    envoy = live.envoy
    pid = envoy.pid
    timings: list[Timing] = []

    def get(host: str, path: str = "/r") -> Reply:
        return request(live.http_url, host, path=path)

    def change(what: str, written: set[str], check: Callable[[], T | None], removed: Sequence[str] = ()) -> T:
        return apply_change(live, syncer, what, check, written=written, removed=removed, timings=timings)

    def answered_by(host: str, names: set[str]) -> str | None:
        name = backend_of(get(host))
        return name if name in names else None

    def collect(host: str, expected: set[str], rounds: int = 30) -> set[str]:
        """Asks until every one of `expected` answered; any other answer fails."""
        seen: set[str] = set()
        for _ in range(rounds):
            name = backend_of(get(host))
            assert name in expected, f"{host}: answered by {name!r}, expected one of {sorted(expected)}"
            seen.add(name)
            if seen == expected:
                break
        return seen

    assert backend_of(get("stable.live.test", "/stable")) == "stable"
    assert get("new.live.test").status == 404
    assert backend_of(get("gone.live.test")) == "gone"
    assert served_serial(live.https_port, "a.tls.test", ca_file) == serial_of(first)
    listener_changes = envoy.stats(r"^listener_manager\.listener_(modified|in_place_updated|removed)$")

    probe_connections = {
        "http-1": KeepAlive(live.http_port),
        "http-2": KeepAlive(live.http_port),
        "https": KeepAlive(live.https_port, context=tls_context(ca_file), sni="stable.live.test"),
    }
    with StableProbe(probe_connections, "stable.live.test", {"stable"}) as probe:
        # (a) a new Ingress: its host is served. Its Service's endpoints get a file, then CDS, then the route.
        live.api.add("Ingress", ingress("new", "new.live.test", "new"))
        change(
            "(a) Ingress added -> served",
            {eds_file("new"), "cds.json", "rds/http.json"},
            lambda: backend_of(get("new.live.test")) == "new" or None,
        )

        # (b) an Ingress deleted: its host answers 404 (no default backend here); its cluster and file go.
        live.api.delete("Ingress", NS, "gone")
        change(
            "(b) Ingress deleted -> 404",
            {"cds.json", "rds/http.json"},
            lambda: get("gone.live.test").status == 404 or None,
            removed=[eds_file("gone")],
        )

        # (c) endpoints 2 -> 3 -> 0 -> 2 (another pair): only the Service's EDS file is rewritten.
        assert {backend_of(get("scale.live.test")) for _ in range(6)} == {"scale-1", "scale-2"}
        three = {"scale-1", "scale-2", "scale-3"}
        live.api.add("EndpointSlice", endpoint_slice(live, "scale", sorted(three)))
        change(
            "(c) endpoints 2 -> 3: the third answers",
            {eds_file("scale")},
            lambda: answered_by("scale.live.test", {"scale-3"}),
        )
        assert collect("scale.live.test", three) == three

        live.api.add("EndpointSlice", endpoint_slice(live, "scale", []))
        change(
            "(c) endpoints 3 -> 0: 503",
            {eds_file("scale")},
            lambda: get("scale.live.test").status == 503 or None,
        )
        assert [get("scale.live.test").status for _ in range(3)] == [503] * 3

        final_pair = {"scale-2", "scale-3"}
        scale_1_served = live.backends["scale-1"].served
        live.api.add("EndpointSlice", endpoint_slice(live, "scale", sorted(final_pair)))
        change(
            "(c) endpoints 0 -> 2: served again",
            {eds_file("scale")},
            lambda: answered_by("scale.live.test", final_pair),
        )
        assert collect("scale.live.test", final_pair) == final_pair
        assert live.backends["scale-1"].served == scale_1_served  # the endpoint that left gets nothing

        # (d) the certificate of a.tls.test rotated (same CA, new serial): only its SDS file is rewritten; a
        # TLS connection opened before keeps working.
        old_tls = KeepAlive(live.https_port, context=tls_context(ca_file), sni="a.tls.test")
        assert backend_of(old_tls.get("a.tls.test", "/v1")) == "a"
        assert old_tls.peer_serial() == serial_of(first)
        rotated = ca.issue_cert("a.tls.test", common_name="a.tls.test")
        assert serial_of(rotated) != serial_of(first)
        live.api.add("Secret", tls_secret("a-tls", rotated))
        change(
            "(d) certificate rotated -> new one served",
            {sds_file("a-tls")},
            lambda: served_serial(live.https_port, "a.tls.test", ca_file) == serial_of(rotated) or None,
        )
        reply = request(live.https_url, "a.tls.test", path="/v1/after-rotation", verify=ca_file)
        assert (reply.status, backend_of(reply)) == (200, "a"), reply
        assert reply.cert is not None and reply.cert.dns_names == ("a.tls.test",)
        assert backend_of(old_tls.get("a.tls.test", "/v1")) == "a"
        assert old_tls.opened == 1
        old_tls.close()

        # (e) a route's path changed on an existing host: connections opened BEFORE the change (HTTP and
        # HTTPS) see the new route on their very next request, without reconnecting.
        old_connections = {
            "http": KeepAlive(live.http_port),
            "https": KeepAlive(live.https_port, context=tls_context(ca_file), sni="a.tls.test"),
        }
        for connection in old_connections.values():
            assert backend_of(connection.get("a.tls.test", "/v1/x")) == "a"
            assert connection.get("a.tls.test", "/v2/x").status == 404
        ports = {label: c.local_port for label, c in old_connections.items()}
        live.api.add("Ingress", ingress("a", "a.tls.test", "a", path="/v2", tls_secret="a-tls"))
        change(
            "(e) route path changed -> new path served",
            {"rds/http.json", "rds/https.json"},
            lambda: backend_of(get("a.tls.test", "/v2/x")) == "a" or None,
        )
        for label, connection in old_connections.items():
            assert backend_of(connection.get("a.tls.test", "/v2/x")) == "a", label
            assert connection.get("a.tls.test", "/v1/x").status == 404, label
            assert (connection.opened, connection.local_port) == (1, ports[label]), f"{label} reconnected"
            connection.close()

    print_timings(timings)
    per_connection = ", ".join(
        f"{c.label}: {c.requests} requests on {len(c.ports)} connection(s)" for c in probe.clients
    )
    print(f"stable route during the reloads: {per_connection}; {len(probe.failures)} failures")
    assert all(c.requests > 0 for c in probe.clients)
    assert probe.failures == [], probe.failures[:10]
    # Routes, clusters, endpoints and certificates all changed without touching a listener: nothing drained,
    # so no keep-alive connection was closed, and Envoy was never restarted.
    assert all(len(c.ports) == 1 for c in probe.clients), [(c.label, c.ports) for c in probe.clients]
    assert envoy.stats(r"^listener_manager\.listener_(modified|in_place_updated|removed)$") == listener_changes
    assert envoy.pid == pid
    live.assert_envoy_accepted_everything()


# --- 4. found while testing: what the reload order and the pruning of files cost --------------------


def test_backend_switch_keeps_serving(live: Live) -> None:
    """An Ingress moved from one Service to another (the old one no longer used) must never answer 5xx.

    The cluster of the old Service leaves cds.json in the same cycle that rds/http.json stops routing to it;
    until both are applied some requests meet a route to a cluster Envoy no longer has.
    """
    live.api.replace_all(
        {
            "IngressClass": [ingress_class()],
            "Service": [service("new"), service("gone")],
            "EndpointSlice": [endpoint_slice(live, "new", ["new"]), endpoint_slice(live, "gone", ["gone"])],
            "Ingress": [ingress("switch", "switch.live.test", "gone")],
        }
    )
    syncer = live.syncer()
    live.sync(syncer)
    timings: list[Timing] = []
    connections = {f"http-{i}": KeepAlive(live.http_port) for i in range(1, 4)}
    with StableProbe(connections, "switch.live.test", {"new", "gone"}, path="/switch", pause=0) as probe:
        for round_number in range(10):
            target, previous = ("new", "gone") if round_number % 2 == 0 else ("gone", "new")
            live.api.add("Ingress", ingress("switch", "switch.live.test", target))
            apply_change(
                live,
                syncer,
                f"backend switch {round_number + 1}: {previous} -> {target}",
                answers_with(live.http_url, "switch.live.test", "/switch", target),
                written={eds_file(target), "cds.json", "rds/http.json"},
                removed=[eds_file(previous)],
                timings=timings,
            )
    print_timings(timings)
    print(f"switching route: {probe.requests} requests, {len(probe.failures)} failures")
    assert all(c.requests > 0 for c in probe.clients)
    assert probe.failures == [], (
        f"{len(probe.failures)} of {probe.requests} requests failed while the route moved between Services "
        f"(cds.json drops the old cluster before rds/http.json stops using it): {probe.failures[:5]}"
    )
    live.assert_envoy_accepted_everything()


def test_pruned_files_are_not_read_again(live: Live, tmp_path: Path) -> None:
    """A file Envoy may still read is not deleted: removed files stay for the drain time.

    Envoy keeps a removed filter chain or listener draining (`--drain-time-s`, 600 s by default), and with it
    the SDS and RDS subscriptions it held; each later rename into their watched folder re-reads the path. Had
    the file been deleted, that would be an `update_failure` and an `Invalid path` warning every time.
    """
    certs = make_certs(tmp_path)
    live.api.replace_all(
        {
            "IngressClass": [ingress_class()],
            "Service": [service(n) for n in ("a", "b")],
            "EndpointSlice": [endpoint_slice(live, n, [n]) for n in ("a", "b")],
            "Secret": [tls_secret("a-tls", certs.a), tls_secret("b-tls", certs.b)],
            "Ingress": [
                ingress("a", "a.tls.test", "a", tls_secret="a-tls"),
                ingress("b", "b.tls.test", "b", tls_secret="b-tls"),
            ],
        }
    )
    syncer = live.syncer()
    live.sync(syncer)
    envoy = live.envoy

    def failures() -> dict[str, int]:
        return {k: v for k, v in envoy.stats(r"\.update_failure$").items() if isinstance(v, int)}

    before = failures()
    # b's certificate goes: its filter chain drains, its SDS file is deleted.
    live.api.delete("Ingress", NS, "b")
    live.api.delete("Secret", NS, "b-tls")
    result = live.sync(syncer)
    assert result.write is not None and sds_file("b-tls") not in result.write.removed, result.write
    assert (live.xds_dir / sds_file("b-tls")).is_file()  # kept for the drain time
    # Any later rename into sds/ (a's certificate rotated) makes every subscription on that folder re-read.
    live.api.add("Secret", tls_secret("a-tls", make_certs(tmp_path).a))
    live.sync(syncer)
    # TLS goes altogether: the https listener drains, rds/https.json is deleted; then a route changes.
    live.api.delete("Ingress", NS, "a")
    live.api.delete("Secret", NS, "a-tls")
    live.api.add("Ingress", ingress("b", "b.tls.test", "b"))
    result = live.sync(syncer)
    assert result.write is not None and "rds/https.json" not in result.write.removed, result.write
    assert (live.xds_dir / "rds/https.json").is_file()
    live.api.add("Ingress", ingress("b", "b2.tls.test", "b"))
    live.sync(syncer)
    assert backend_of(request(live.http_url, "b2.tls.test")) == "b"

    after = failures()
    grown = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
    draining = envoy.stats(r"^listener_manager\.total_(filter_chains|listeners)_draining$")
    assert grown == {}, f"Envoy re-read deleted files: update_failure grew by {grown}; still draining: {draining}"
    live.assert_envoy_accepted_everything()
