"""End to end: `syncer once` to Envoy xDS files, a real Envoy on them, real requests. Process and network I/O."""

from __future__ import annotations

import base64
import collections
import contextlib
import http.client
import json
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from renderers.envoy.bootstrap import bootstrap_config
from syncer.output.lock import LOCK_NAME
from tests.demo import API, DEMO_SOURCE, MANIFEST_FILE, WEB, run_syncer_once, serve_demo_backends
from tests.envoy_proxy import EnvoyProcess, EnvoyStartError, find_envoy, referenced_files, rendered_versions
from tests.proxies import LOOPBACK, EchoServer, Reply, decode_cert, free_port, request

RDS_FILE = "rds/http.json"
HTTPS_RDS_FILE = "rds/https.json"
SDS_FILE = "sds/shop__shop-tls.json"


@dataclass(frozen=True)
class EnvoyRun:
    envoy: EnvoyProcess
    output_dir: Path
    source: Path
    http_port: int
    https_port: int
    cli_seconds: float

    @property
    def http_url(self) -> str:
        return f"http://{LOOPBACK}:{self.http_port}"

    @property
    def https_url(self) -> str:
        return f"https://{LOOPBACK}:{self.https_port}"


def render_envoy(
    source: Path, output_dir: Path, http_port: int, https_port: int
) -> tuple[subprocess.CompletedProcess[str], float]:
    """`syncer once` with the Envoy renderer, its listeners on LOOPBACK:`http_port` and LOOPBACK:`https_port`."""
    renderer_opts = {
        "envoy.address": LOOPBACK,
        "envoy.http-port": str(http_port),
        "envoy.https-port": str(https_port),
    }
    return run_syncer_once(source, output_dir, "envoy", renderer_opts)


def file_states(output_dir: Path) -> dict[str, tuple[bytes, int]]:
    """Every file below the folder (manifest included, not the lock overlapping runs take turns on, which is no
    output): relative name -> (bytes, mtime_ns)."""
    return {
        name: (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(output_dir.rglob("*"))
        if p.is_file() and (name := str(p.relative_to(output_dir))) != LOCK_NAME
    }


@contextlib.contextmanager
def start_envoy_on(source: Path, base: Path, binary: str) -> Iterator[EnvoyRun]:
    """Renders `source` into base/xds, runs Envoy on the `syncer bootstrap envoy` command's bootstrap for that
    folder until every rendered version is live, then yields."""
    output_dir, work_dir = base / "xds", base / "envoy"
    output_dir.mkdir(parents=True)
    for attempt in range(3):
        # free_port() races with other processes; a listener port taken in between is worth another try
        # (EnvoyProcess retries a taken admin port itself).
        http_port, https_port = free_port(), free_port()
        _, cli_seconds = render_envoy(source, output_dir, http_port, https_port)
        envoy = EnvoyProcess(
            work_dir / "bootstrap.json", work_dir, xds_dir=output_dir, bootstrap_cli=True, binary=binary
        )
        try:
            envoy.start()
        except EnvoyStartError as exc:
            if "ddress already in use" in str(exc) and attempt < 2:
                continue
            raise
        try:
            envoy.wait_for_rendered(output_dir, timeout=10)
            assert envoy.update_rejected_total() == 0, envoy.stats(r"\.update_rejected$")
            yield EnvoyRun(envoy, output_dir, source, http_port, https_port, cli_seconds)
        finally:
            envoy.stop()
        return
    raise AssertionError("unreachable")


def test_envoy_binary_installed() -> None:
    # A failure in the fixtures below is reported as a setup error; this makes a missing binary a plain FAIL too.
    assert find_envoy()


@pytest.fixture(scope="module")
def backends() -> Iterator[dict[str, EchoServer]]:
    with serve_demo_backends() as servers:
        yield servers


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory, backends: dict[str, EchoServer]) -> Iterator[EnvoyRun]:
    with start_envoy_on(DEMO_SOURCE, tmp_path_factory.mktemp("demo-envoy"), find_envoy()) as run:
        yield run


def test_syncer_once_output(demo: EnvoyRun) -> None:
    print(f"\n`syncer once` on the demo (cold, subprocess incl. interpreter start): {demo.cli_seconds:.3f} s")
    assert sorted(file_states(demo.output_dir)) == [
        MANIFEST_FILE,
        "cds.json",
        "eds/shop__api__8080.json",
        "eds/shop__legacy__80.json",  # the demo's deliberately missing Service: a cluster with no endpoints
        "eds/shop__web__80.json",
        "lds.json",
        RDS_FILE,
        HTTPS_RDS_FILE,
        SDS_FILE,
    ]
    # The secret file holds the demo's private key: owner-only.
    assert (demo.output_dir / SDS_FILE).stat().st_mode & 0o777 == 0o600


def test_bootstrap_is_the_syncer_command_output(demo: EnvoyRun) -> None:
    # The file Envoy runs on is what `syncer bootstrap envoy` printed (a subprocess), which must in turn be
    # what renderers.envoy.bootstrap builds for the same arguments.
    bootstrap = demo.envoy.bootstrap
    admin_address = f"{LOOPBACK}:{demo.envoy.admin_port}"
    assert bootstrap == bootstrap_config(str(demo.output_dir), admin_address=admin_address, node_id=demo.envoy.node_id)
    watched = {"watched_directory": {"path": str(demo.output_dir)}}
    assert bootstrap["dynamic_resources"] == {
        f"{kind}_config": {
            "resource_api_version": "V3",
            "path_config_source": {"path": str(demo.output_dir / f"{kind}.json"), **watched},
        }
        for kind in ("lds", "cds")
    }


def test_every_rendered_file_is_live(demo: EnvoyRun) -> None:
    versions = rendered_versions(demo.output_dir)
    # Every file Envoy reads, by the stat that echoes its version_info: nothing rendered goes unchecked.
    assert referenced_files(demo.output_dir) == {
        demo.output_dir / name for name in file_states(demo.output_dir) if name != MANIFEST_FILE
    }
    assert sorted(versions) == [
        "cluster.shop/api/8080.version_text",
        "cluster.shop/legacy/80.version_text",
        "cluster.shop/web/80.version_text",
        "cluster_manager.cds.version_text",
        "http.http.rds.http.version_text",
        "http.https.rds.https.version_text",
        "listener_manager.lds.version_text",
        "sds.shop/shop-tls.version_text",
    ]
    for stat, version in versions.items():
        assert demo.envoy.stat(stat) == version, stat


def test_envoy_accepts_every_file(demo: EnvoyRun) -> None:
    envoy = demo.envoy
    assert envoy.update_rejected_total() == 0, envoy.stats(r"\.update_rejected$")
    assert envoy.update_failure_total() == 0, envoy.stats(r"\.update_failure$")
    assert envoy.log_problems() == []
    assert envoy.listener_addresses() == {"http": (LOOPBACK, demo.http_port), "https": (LOOPBACK, demo.https_port)}
    assert envoy.stat("listener_manager.total_listeners_active") == 2
    # Name-agnostic: whatever the clusters are called, the not-ready address is in none of them.
    hosts = [h for cluster_hosts in envoy.cluster_hosts().values() for h in cluster_hosts]
    assert {"127.0.0.11:18081", "127.0.0.12:18081", "127.0.0.21:18082"} <= set(hosts), hosts
    assert not [h for h in hosts if h.startswith("127.0.0.13:")], hosts


HTTP_CASES = [
    # (id, Host header, path incl. query, backends allowed to answer)
    ("root", "shop.example.com", "/", WEB),
    ("prefix-api", "shop.example.com", "/api", API),
    ("prefix-api-slash", "shop.example.com", "/api/", API),
    ("prefix-api-child", "shop.example.com", "/api/x", API),
    ("prefix-api-query", "shop.example.com", "/api?q=1", API),
    ("prefix-is-element-wise", "shop.example.com", "/apix", WEB),
    ("host-with-port", "shop.example.com:8080", "/api", API),
    ("host-case-insensitive", "SHOP.Example.COM", "/api", API),
    ("path-case-sensitive", "shop.example.com", "/API", WEB),
    ("wildcard-exact", "a.shop.example.com", "/catalog/feed", API),
    ("wildcard-exact-query", "a.shop.example.com", "/catalog/feed?page=2", API),
    ("wildcard-with-port", "a.shop.example.com:8080", "/catalog/feed", API),
    ("wildcard-host-case-insensitive", "a.Shop.Example.COM", "/catalog/feed", API),
    ("wildcard-exact-not-prefix", "a.shop.example.com", "/catalog/feed/", WEB),
    ("wildcard-exact-child", "a.shop.example.com", "/catalog/feed/x", WEB),
    ("wildcard-other-path", "a.shop.example.com", "/", WEB),
    ("wildcard-single-label", "b.a.shop.example.com", "/catalog/feed", WEB),
    ("wildcard-not-apex", "shop.example.com", "/catalog/feed", WEB),
    ("unknown-host-default-backend", "unknown.example.org", "/api", WEB),
]


def _strip_port(host: str) -> str:
    return host.rsplit(":", 1)[0] if ":" in host else host


# Case id -> renderer bug. Strict xfail: once the renderer is fixed the pass fails the run; then drop the entry.
@pytest.mark.parametrize(
    ("host", "path", "allowed"),
    [pytest.param(*case[1:], id=case[0]) for case in HTTP_CASES],
)
def test_http_routing(demo: EnvoyRun, host: str, path: str, allowed: frozenset[str]) -> None:
    reply = request(demo.http_url, host, path=path)
    assert reply.status == 200, reply
    assert isinstance(reply.body, dict), reply
    assert reply.body["backend"] in allowed, reply
    assert reply.body["path"] == path
    # strip_any_host_port (so `host:8080` matches `host`) also takes the port off the Host sent upstream.
    assert reply.body["host"] == _strip_port(host)


NORMALISATION_CASES = [
    # (id, path sent, path the backend receives): normalize_path and merge_slashes, so no route is bypassed
    ("dot-segments", "/x/../api/y", "/api/y"),
    ("double-slash", "//api", "/api"),
    ("percent-encoded-unreserved", "/%61pi", "/api"),
]


@pytest.mark.parametrize(
    ("path", "upstream_path"), [c[1:] for c in NORMALISATION_CASES], ids=[c[0] for c in NORMALISATION_CASES]
)
def test_paths_are_normalised_before_matching(demo: EnvoyRun, path: str, upstream_path: str) -> None:
    reply = request(demo.http_url, "shop.example.com", path=path)
    assert (reply.status, reply.body["backend"], reply.body["path"]) == (200, "api", upstream_path), reply


def test_load_balancing_skips_not_ready_endpoint(demo: EnvoyRun, backends: dict[str, EchoServer]) -> None:
    before = backends["web-not-ready"].served
    answered = collections.Counter(
        request(demo.http_url, "shop.example.com", path="/").body["backend"] for _ in range(20)
    )
    assert set(answered) == WEB, answered
    assert backends["web-not-ready"].served == before == 0


def demo_ca_file(directory: Path) -> Path:
    """The demo Secret's certificate, self-signed, as a CA bundle: lets HTTPS requests verify chain and name."""
    documents = [d for d in yaml.safe_load_all((DEMO_SOURCE / "secrets.yaml").read_text()) if d]
    secret = next(d for d in documents if d.get("kind") == "Secret" and d["metadata"]["name"] == "shop-tls")
    pem = secret.get("stringData", {}).get("tls.crt") or base64.b64decode(secret["data"]["tls.crt"]).decode()
    path = directory / "shop-ca.pem"
    path.write_text(pem)
    return path


def request_without_sni(port: int, host_header: str, path: str = "/") -> Reply:
    """One HTTPS request to LOOPBACK:`port` whose ClientHello carries no server name at all."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # whatever certificate comes back is what the test inspects
    with socket.create_connection((LOOPBACK, port), timeout=5) as raw, context.wrap_socket(raw) as tls:
        der = tls.getpeercert(binary_form=True)
        assert der is not None, "the server presented no certificate"
        tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {host_header}\r\nConnection: close\r\n\r\n".encode())
        response = http.client.HTTPResponse(tls)  # reads through tls.makefile()
        response.begin()
        content = response.read()
    try:
        body: Any = json.loads(content)
    except ValueError:
        body = content.decode("utf-8", "replace")
    return Reply(response.status, body, decode_cert(der))


def test_https_certificate_verifies_for_sni(demo: EnvoyRun, tmp_path: Path) -> None:
    # Not just the right names: the chain verifies against the demo Secret and the name matches the SNI.
    reply = request(demo.https_url, "shop.example.com", path="/api", verify=str(demo_ca_file(tmp_path)))
    assert (reply.status, reply.body["backend"], reply.body["path"]) == (200, "api", "/api"), reply
    assert reply.cert is not None
    assert reply.cert.common_name == "shop.example.com"
    assert "shop.example.com" in reply.cert.dns_names


HTTPS_CASES = [
    # (id, SNI and Host, path, backends allowed to answer)
    ("tls-api", "shop.example.com", "/api", API),
    ("tls-api-child", "shop.example.com", "/api/x?q=1", API),
    ("tls-root", "shop.example.com", "/", WEB),
    ("tls-host-with-port", "shop.example.com:8443", "/api", API),
    # The default chain: an SNI no certificate names gets the first certificate and the default backend.
    ("tls-unknown-sni-default-backend", "unknown.example.org", "/api", WEB),
]


@pytest.mark.parametrize(("host", "path", "allowed"), [c[1:] for c in HTTPS_CASES], ids=[c[0] for c in HTTPS_CASES])
def test_https_routing(demo: EnvoyRun, host: str, path: str, allowed: frozenset[str]) -> None:
    reply = request(demo.https_url, host, path=path)
    assert reply.status == 200, reply
    assert reply.body["backend"] in allowed, reply
    assert reply.body["path"] == path
    assert reply.cert is not None
    assert reply.cert.common_name == "shop.example.com", reply.cert


def test_https_without_sni_gets_default_chain(demo: EnvoyRun) -> None:
    # No SNI at all (an IP-address client, curl -k https://127.0.0.1): the default chain answers, no reset.
    before = demo.envoy.stat("tls_inspector.sni_not_found")
    assert isinstance(before, int), before
    reply = request_without_sni(demo.https_port, "unknown.example.org", "/api")
    assert demo.envoy.stat("tls_inspector.sni_not_found") == before + 1
    assert reply.cert is not None
    assert reply.cert.common_name == "shop.example.com", reply.cert
    assert reply.status == 200, reply
    assert reply.body["backend"] in WEB, reply


def test_second_run_changes_nothing(demo: EnvoyRun) -> None:
    before = file_states(demo.output_dir)
    _, seconds = render_envoy(demo.source, demo.output_dir, demo.http_port, demo.https_port)
    print(f"\n`syncer once` again, nothing to change: {seconds:.3f} s")
    assert file_states(demo.output_dir) == before


def test_route_change_reaches_live_envoy(tmp_path: Path, backends: dict[str, EchoServer]) -> None:
    # Its own Envoy and folder (sharing the echo backends): the module's demo keeps its routes.
    source = tmp_path / "source"
    shutil.copytree(DEMO_SOURCE, source)
    ingresses = source / "ingresses.yaml"
    text = ingresses.read_text(encoding="utf-8")
    assert text.count("path: /api\n") == 1, "the demo's api path moved; update this test"
    with start_envoy_on(source, tmp_path / "run", find_envoy()) as run:
        assert request(run.http_url, "shop.example.com", path="/api").body["backend"] == "api"
        before = file_states(run.output_dir)
        old_versions = rendered_versions(run.output_dir)
        lds_attempts = run.envoy.stat("listener_manager.lds.update_attempt")

        ingresses.write_text(text.replace("path: /api\n", "path: /v2\n"), encoding="utf-8")
        started = time.monotonic()
        render_envoy(source, run.output_dir, run.http_port, run.https_port)
        new_versions = run.envoy.wait_for_rendered(run.output_dir, timeout=10)
        seconds = time.monotonic() - started
        print(f"\nroute change: `syncer once` until Envoy reports the new RDS versions: {seconds:.3f} s")

        # shop.example.com is served over both listeners: both route configurations changed, nothing else.
        assert {s for s in new_versions if new_versions[s] != old_versions[s]} == {
            "http.http.rds.http.version_text",
            "http.https.rds.https.version_text",
        }
        after = file_states(run.output_dir)
        assert sorted(after) == sorted(before)
        # (The manifest, which no proxy reads, also records the new route count for the removal guard.)
        changed = [name for name in sorted(after) if after[name] != before[name] and name != MANIFEST_FILE]
        assert changed == [RDS_FILE, HTTPS_RDS_FILE]
        assert run.envoy.update_rejected_total() == 0, run.envoy.stats(r"\.update_rejected$")
        # Nothing was renamed into the LDS file's folder, so the listeners were not even re-read: no drain.
        assert run.envoy.stat("listener_manager.lds.update_attempt") == lds_attempts

        for path, allowed in (("/v2", API), ("/v2/x", API), ("/api", WEB), ("/api/x", WEB)):
            for reply in (
                request(run.http_url, "shop.example.com", path=path),
                request(run.https_url, "shop.example.com", path=path),
            ):
                assert reply.status == 200, reply
                assert reply.body["backend"] in allowed, (path, reply)


def test_broken_demo_objects_degrade_without_breaking_anything(demo: EnvoyRun) -> None:
    url = f"http://{LOOPBACK}:{demo.http_port}"
    # A route whose Service does not exist answers 503 instead of vanishing (and falling through).
    assert request(url, "legacy.example.com", path="/old").status == 503
    # The skipped `/api` of the younger Ingress did not take over: the older one still answers.
    assert request(url, "shop.example.com", path="/api").body["backend"] == "api"
    # The rule with an invalid host was skipped; that host gets the default backend like any unknown host.
    assert request(url, "bad_host.example.com", path="/").body["backend"] in WEB
    # Another controller's Ingress is not served.
    assert request(url, "nginx.example.com", path="/").body["backend"] in WEB
