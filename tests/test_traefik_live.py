"""End to end: fake API -> ApiSource -> Syncer -> a real Traefik -> real requests. Process and network I/O.

Every object lives in a FakeKubeAPI; each change goes through `Syncer.cycle()` with the Traefik renderer and the
real FileWriter, and a Traefik watching the output folder serves it. All traffic stays on 127.0.0.0/8: every
EndpointSlice points at echo servers this module started on loopback.
"""

from __future__ import annotations

import collections
import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import pytest
import requests
import trustme
import yaml
from cryptography import x509

from renderers.traefik import CONFIG_FILE, GENERATION_ROUTER, TraefikRenderer
from syncer.kube.client import KubeClient
from syncer.kube.kubeconfig import ClusterConfig, Credential
from syncer.kube.resources import ResourceKind
from syncer.output.writer import FileWriter
from syncer.run.cycle import Syncer
from syncer.source import ApiSource
from tests import live_objects
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
from tests.proxies import EchoServer, Reply, TraefikProcess, find_traefik, request, start_echo_servers

DEFAULT_CERT_CN = "TRAEFIK DEFAULT CERT"
PROPAGATION_LIMIT = 3.0  # seconds from the end of a cycle to the new state answering requests
POLL_TIMEOUT = 10.0  # how long a poll keeps trying before it reports what it saw last
_POLL_INTERVAL = 0.01

# One echo server per name, each on its own loopback address; they all share one port (the EndpointSlices
# of a Service carry one port for all their endpoints).
BACKEND_ADDRESSES = {
    "a": "127.0.0.61",
    "b": "127.0.0.62",
    "w": "127.0.0.63",
    "fallback": "127.0.0.64",
    "plain": "127.0.0.65",
    "lb-1": "127.0.0.71",
    "lb-2": "127.0.0.72",
    "lb-3": "127.0.0.73",
    "lb-not-ready": "127.0.0.74",
    "lb-terminating": "127.0.0.75",
    "stable": "127.0.0.81",
    "new": "127.0.0.82",
    "gone": "127.0.0.83",
    "scale-1": "127.0.0.91",
    "scale-2": "127.0.0.92",
    "scale-3": "127.0.0.93",
}

T = TypeVar("T")


# --- the environment ----------------------------------------------------------------------------------


class StaticToken:
    def __init__(self, token: str) -> None:
        self.token = token

    def current(self) -> Credential:
        return Credential(token=self.token)

    def invalidate(self) -> None:
        pass


@dataclass
class Live:
    api: FakeKubeAPI
    client: KubeClient
    traefik: TraefikProcess
    dynamic_dir: Path
    backends: dict[str, EchoServer]
    port: int  # every echo server's port

    def syncer(self, options: Mapping[str, str] | None = None) -> Syncer:
        return Syncer(
            ApiSource(self.client),
            TraefikRenderer(dict(options or {}), output_dir=str(self.dynamic_dir.resolve())),
            FileWriter(self.dynamic_dir),
        )

    def sync(self, syncer: Syncer) -> None:
        """One cycle, then waits until Traefik serves exactly the revision it wrote."""
        syncer.cycle()
        self.traefik.wait_for_generation(generation_rule(self.dynamic_dir / CONFIG_FILE), timeout=POLL_TIMEOUT)

    def assert_no_traefik_errors(self) -> None:
        assert self.traefik.router_errors() == []
        assert self.traefik.log_errors() == []


def generation_rule(config_file: Path) -> str:
    rule = yaml.safe_load(config_file.read_bytes())["http"]["routers"][GENERATION_ROUTER]["rule"]
    return str(rule)


def endpoint_slice(
    live: Live, service_name: str, ready: Sequence[str], not_ready: Sequence[str] = (), terminating: Sequence[str] = ()
) -> Obj:
    return live_objects.endpoint_slice(BACKEND_ADDRESSES, live.port, service_name, ready, not_ready, terminating)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    binary = find_traefik()
    base = tmp_path_factory.mktemp("traefik-live")
    dynamic_dir, work_dir = base / "dynamic", base / "traefik"
    dynamic_dir.mkdir()
    with contextlib.ExitStack() as stack:
        backend_stack, backends, port = start_echo_servers(BACKEND_ADDRESSES)
        stack.enter_context(backend_stack)
        api = stack.enter_context(FakeKubeAPI(tokens=[TEST_TOKEN]))
        cluster = ClusterConfig(server=api.url, credentials=StaticToken(TEST_TOKEN))
        client = stack.enter_context(KubeClient(cluster, backoff_base=0.01, max_backoff=0.05))
        traefik = stack.enter_context(TraefikProcess(dynamic_dir, work_dir, binary=binary))
        env = Live(api, client, traefik, dynamic_dir, backends, port)
        yield env


# --- objects ------------------------------------------------------------------------------------------


def ingress(name: str, host: str, service_name: str, *, tls_secret: str | None = None) -> Obj:
    spec: Obj = {
        "ingressClassName": CLASS,
        "rules": [
            {
                "host": host,
                "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": backend_ref(service_name)}]},
            }
        ],
    }
    if tls_secret is not None:
        spec["tls"] = [{"hosts": [host], "secretName": tls_secret}]
    return {"metadata": {"name": name, "namespace": NS}, "spec": spec}


# --- probes -------------------------------------------------------------------------------------------


def poll_until(check: Callable[[], T | None], what: str, timeout: float = POLL_TIMEOUT) -> tuple[T, float]:
    """Calls `check` until it returns something other than None; that value and the monotonic time it came."""
    deadline = time.monotonic() + timeout
    last = "condition not met"
    while True:
        try:
            value = check()
        except (requests.RequestException, OSError) as exc:
            value, last = None, f"{type(exc).__name__}: {exc}"
        if value is not None:
            return value, time.monotonic()
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not observed within {timeout}s (last: {last})")
        time.sleep(_POLL_INTERVAL)


def redirect_of(url: str, host: str, path: str) -> tuple[int, str | None]:
    """Status and Location of one request that does not follow redirects (request() does not show headers)."""
    with requests.Session() as session:
        session.trust_env = False
        response = session.get(url + path, headers={"Host": host}, allow_redirects=False, timeout=5)
        return response.status_code, response.headers.get("Location")


def served_serial(https_url: str, sni: str, ca_file: str) -> int:
    """Serial number of the certificate served for `sni`, verified against `ca_file` (chain and name)."""
    parts = urlsplit(https_url)
    assert parts.hostname is not None and parts.hostname.startswith("127."), https_url
    context = ssl.create_default_context(cafile=ca_file)
    with (
        socket.create_connection((parts.hostname, parts.port or 443), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=sni) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


class StableProbe:
    """A bounded background request loop against one route; records connection errors, 5xx and wrong backends."""

    def __init__(self, url: str, host: str, backend: str, max_seconds: float = 60.0) -> None:
        self.url, self.host, self.backend, self.max_seconds = url, host, backend, max_seconds
        self.requests = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stable-probe", daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                reply = request(self.url, self.host, path="/stable", timeout=5)
            except requests.RequestException as exc:
                self.failures.append(f"connection error: {type(exc).__name__}: {exc}")
                continue
            finally:
                self.requests += 1
            if reply.status >= 500:
                self.failures.append(f"HTTP {reply.status}: {reply.body!r}")
            elif backend_of(reply) != self.backend:
                self.failures.append(f"wrong answer: {reply}")

    def __enter__(self) -> StableProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        assert not self._thread.is_alive(), "stable probe did not stop"


# --- 1. TLS -------------------------------------------------------------------------------------------


@dataclass
class Certs:
    ca_file: str
    a: trustme.LeafCert
    b: trustme.LeafCert
    w: trustme.LeafCert


def tls_objects(live: Live, certs: Certs) -> dict[str | ResourceKind, list[Obj]]:
    return {
        "IngressClass": [ingress_class()],
        "Service": [service(n) for n in ("a", "b", "w", "fallback", "plain")],
        "EndpointSlice": [endpoint_slice(live, n, [n]) for n in ("a", "b", "w", "fallback", "plain")],
        "Secret": [tls_secret("a-tls", certs.a), tls_secret("b-tls", certs.b), tls_secret("w-tls", certs.w)],
        "Ingress": [
            ingress("a", "a.tls.test", "a", tls_secret="a-tls"),
            ingress("b", "b.tls.test", "b", tls_secret="b-tls"),
            ingress("w", "*.w.tls.test", "w", tls_secret="w-tls"),
            ingress("plain", "plain.tls.test", "plain"),
            default_backend_ingress("fallback", "fallback"),
        ],
    }


def make_certs(directory: Path) -> Certs:
    ca = trustme.CA()
    ca_file = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return Certs(
        str(ca_file),
        ca.issue_cert("a.tls.test", common_name="a.tls.test"),
        ca.issue_cert("b.tls.test", common_name="b.tls.test"),
        ca.issue_cert("*.w.tls.test", common_name="*.w.tls.test"),
    )


def test_tls_sni_default_cert_and_redirect(live: Live, tmp_path: Path) -> None:
    certs = make_certs(tmp_path)
    live.api.replace_all(tls_objects(live, certs))
    live.sync(live.syncer())
    https, http = live.traefik.https_url, live.traefik.http_url

    # Each SNI gets its own certificate (chain and name verified against the CA) and its own backend.
    for host, sni, backend in (
        ("a.tls.test", "a.tls.test", "a"),
        ("b.tls.test", "b.tls.test", "b"),
        ("x.w.tls.test", "x.w.tls.test", "w"),
    ):
        reply = request(https, host, path="/p?q=1", sni=sni, verify=certs.ca_file)
        assert (reply.status, backend_of(reply)) == (200, backend), reply
        assert reply.body["path"] == "/p?q=1"
        assert reply.cert is not None
        expected_name = "*.w.tls.test" if backend == "w" else host
        assert reply.cert.dns_names == (expected_name,), reply.cert
    assert served_serial(https, "a.tls.test", certs.ca_file) == serial_of(certs.a)
    assert served_serial(https, "b.tls.test", certs.ca_file) == serial_of(certs.b)

    # An unknown SNI: Traefik's own certificate, and the default backend.
    reply = request(https, "unknown.tls.test", sni="unknown.tls.test")
    assert (reply.status, backend_of(reply)) == (200, "fallback"), reply
    assert reply.cert is not None and reply.cert.common_name == DEFAULT_CERT_CN, reply.cert
    # A host without a certificate has no HTTPS route: over HTTPS it is an unknown host like any other.
    reply = request(https, "plain.tls.test")
    assert (reply.status, backend_of(reply)) == (200, "fallback"), reply
    assert reply.cert is not None and reply.cert.common_name == DEFAULT_CERT_CN

    # Without redirect, the HTTP entry point serves the TLS hosts too.
    for host, backend in (("a.tls.test", "a"), ("b.tls.test", "b"), ("x.w.tls.test", "w"), ("plain.tls.test", "plain")):
        reply = request(http, host, path="/h?x=1")
        assert (reply.status, backend_of(reply)) == (200, backend), reply
    assert backend_of(request(http, "unknown.tls.test")) == "fallback"
    live.assert_no_traefik_errors()

    # With redirect-https: TLS hosts are redirected to https with the same path and query.
    live.sync(live.syncer({"redirect-https": "true"}))
    for host in ("a.tls.test", "b.tls.test", "x.w.tls.test"):
        status, location = redirect_of(http, host, "/some/path?x=1&y=two")
        assert status in (301, 308), (host, status, location)
        assert location is not None
        target = urlsplit(location)
        assert (target.scheme, target.hostname, target.path, target.query) == (
            "https",
            host,
            "/some/path",
            "x=1&y=two",
        ), location
        # And where the redirect leads, the host is served.
        reply = request(https, host, path="/some/path?x=1&y=two", verify=certs.ca_file)
        assert reply.status == 200 and reply.body["path"] == "/some/path?x=1&y=two", reply
    # Hosts without a certificate, and the default backend, are not redirected.
    reply = request(http, "plain.tls.test", path="/some/path?x=1")
    assert (reply.status, backend_of(reply)) == (200, "plain"), reply
    reply = request(http, "unknown.tls.test", path="/some/path")
    assert (reply.status, backend_of(reply)) == (200, "fallback"), reply
    live.assert_no_traefik_errors()


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

    answered = collections.Counter(backend_of(request(live.traefik.http_url, "lb.live.test")) for _ in range(100))

    print(f"\nload balancing, 100 requests: {dict(sorted(answered.items(), key=lambda kv: str(kv[0])))}")
    assert set(answered) == {"lb-1", "lb-2", "lb-3"}, answered
    assert min(answered.values()) >= 1
    assert {name: live.backends[name].served for name in excluded} == before == {n: 0 for n in excluded}
    urls = [
        server["url"]
        for svc in live.traefik.api("/api/http/services?per_page=1000")
        for server in svc.get("loadBalancer", {}).get("servers", [])
    ]
    assert not [u for u in urls if any(BACKEND_ADDRESSES[n] in u for n in excluded)], urls
    live.assert_no_traefik_errors()


# --- 3. hot reload ------------------------------------------------------------------------------------


def test_hot_reload_without_restart(live: Live, tmp_path: Path) -> None:
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    first = ca.issue_cert("a.tls.test", common_name="a.tls.test")
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
            "Secret": [tls_secret("a-tls", first)],
            "Ingress": [
                ingress("stable", "stable.live.test", "stable"),
                ingress("gone", "gone.live.test", "gone"),
                ingress("scale", "scale.live.test", "scale"),
                ingress("a", "a.tls.test", "a", tls_secret="a-tls"),
            ],
        }
    )
    syncer = live.syncer()
    live.sync(syncer)
    traefik = live.traefik
    http, https = traefik.http_url, traefik.https_url
    timings: list[tuple[str, float]] = []

    def get(host: str) -> Reply:
        return request(http, host, path="/r")

    def change(what: str, check: Callable[[], T | None]) -> T:
        """One cycle; then the new state must answer within PROPAGATION_LIMIT of the cycle's end."""
        result = syncer.cycle()
        assert result.changed_input and result.write is not None and result.write.written, result
        done = time.monotonic()
        value, seen = poll_until(check, what)
        timings.append((what, seen - done))
        assert seen - done <= PROPAGATION_LIMIT, f"{what}: took {seen - done:.3f}s"
        return value

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

    assert backend_of(get("stable.live.test")) == "stable"
    assert get("new.live.test").status == 404
    assert backend_of(get("gone.live.test")) == "gone"
    assert served_serial(https, "a.tls.test", str(ca_file)) == serial_of(first)

    with StableProbe(http, "stable.live.test", "stable") as probe:
        # (a) a new Ingress: its host is served.
        live.api.add("Ingress", ingress("new", "new.live.test", "new"))
        change("(a) Ingress added -> served", lambda: backend_of(get("new.live.test")) == "new" or None)

        # (b) an Ingress deleted: its host answers 404 (no default backend here).
        live.api.delete("Ingress", NS, "gone")
        change("(b) Ingress deleted -> 404", lambda: get("gone.live.test").status == 404 or None)

        # (c) endpoints 2 -> 3 -> 0 -> 2 (another pair).
        assert {backend_of(get("scale.live.test")) for _ in range(6)} == {"scale-1", "scale-2"}
        three = {"scale-1", "scale-2", "scale-3"}
        live.api.add("EndpointSlice", endpoint_slice(live, "scale", sorted(three)))
        change("(c) endpoints 2 -> 3: the third answers", lambda: answered_by("scale.live.test", {"scale-3"}))
        assert collect("scale.live.test", three) == three

        live.api.add("EndpointSlice", endpoint_slice(live, "scale", []))
        change("(c) endpoints 3 -> 0: 503", lambda: get("scale.live.test").status == 503 or None)
        assert [get("scale.live.test").status for _ in range(3)] == [503] * 3

        final_pair = {"scale-2", "scale-3"}
        scale_1_served = live.backends["scale-1"].served
        live.api.add("EndpointSlice", endpoint_slice(live, "scale", sorted(final_pair)))
        change("(c) endpoints 0 -> 2: served again", lambda: answered_by("scale.live.test", final_pair))
        assert collect("scale.live.test", final_pair) == final_pair
        assert live.backends["scale-1"].served == scale_1_served  # the endpoint that left gets nothing

        # (d) the certificate of a.tls.test rotated: same CA, new serial.
        rotated = ca.issue_cert("a.tls.test", common_name="a.tls.test")
        assert serial_of(rotated) != serial_of(first)
        live.api.add("Secret", tls_secret("a-tls", rotated))
        change(
            "(d) certificate rotated -> new one served",
            lambda: served_serial(https, "a.tls.test", str(ca_file)) == serial_of(rotated) or None,
        )
        reply = request(https, "a.tls.test", path="/after-rotation", verify=str(ca_file))
        assert (reply.status, backend_of(reply)) == (200, "a"), reply
        assert served_serial(https, "a.tls.test", str(ca_file)) == serial_of(rotated)

    print("\npropagation, end of cycle -> new state answering:")
    for what, seconds in timings:
        print(f"  {what:<45} {seconds:.3f} s")
    print(f"stable route during the reloads: {probe.requests} requests, {len(probe.failures)} failures")
    assert probe.requests > 0
    assert probe.failures == [], probe.failures[:10]
    live.assert_no_traefik_errors()
