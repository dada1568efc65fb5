"""End to end: `syncer once` on the demo, a real Traefik on its output, real requests. Process and network I/O."""

from __future__ import annotations

import base64
import collections
import contextlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.demo import API, DEMO_SOURCE, MANIFEST_FILE, REPO_ROOT, WEB, run_syncer_once, serve_demo_backends
from tests.proxies import EchoServer, TraefikProcess, find_traefik, request

CONFIG_FILE = "ingress-syncer.yaml"


@dataclass(frozen=True)
class Demo:
    traefik: TraefikProcess
    backends: dict[str, EchoServer]
    output_dir: Path
    cli_seconds: float


def generation_rule(config_file: Path) -> str:
    rule = yaml.safe_load(config_file.read_bytes())["http"]["routers"]["zz-generation"]["rule"]
    assert re.fullmatch(r'Host\("g-[0-9a-f]+\.generation\.invalid"\)', rule), rule
    return str(rule)


def demo_ca_file(directory: Path) -> Path:
    """The demo Secret's certificate, self-signed, as a CA bundle: lets HTTPS requests verify chain and name."""
    documents = [d for d in yaml.safe_load_all((DEMO_SOURCE / "secrets.yaml").read_text()) if d]
    secret = next(d for d in documents if d.get("kind") == "Secret" and d["metadata"]["name"] == "shop-tls")
    pem = secret.get("stringData", {}).get("tls.crt") or base64.b64decode(secret["data"]["tls.crt"]).decode()
    path = directory / "shop-ca.pem"
    path.write_text(pem)
    return path


def test_traefik_binary_installed() -> None:
    # A failure in the fixture below is reported as a setup error; this makes a missing binary a plain FAIL too.
    assert find_traefik()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    binary = find_traefik()
    base = tmp_path_factory.mktemp("demo-traefik")
    output_dir, work_dir = base / "dynamic", base / "traefik"
    output_dir.mkdir()
    with contextlib.ExitStack() as stack:
        backends = stack.enter_context(serve_demo_backends())
        _, cli_seconds = run_syncer_once(DEMO_SOURCE, output_dir, "traefik")
        traefik = stack.enter_context(TraefikProcess(output_dir, work_dir, binary=binary))
        traefik.wait_for_generation(generation_rule(output_dir / CONFIG_FILE), timeout=15)
        yield Demo(traefik, backends, output_dir, cli_seconds)


def test_syncer_once_output(demo: Demo) -> None:
    source = DEMO_SOURCE.relative_to(REPO_ROOT)
    print(f"\n`syncer once` on {source} (cold, subprocess incl. interpreter start): {demo.cli_seconds:.3f} s")
    assert sorted(os.listdir(demo.output_dir)) == [".ingress-syncer", "certs", CONFIG_FILE]
    # The demo's certificate and key are files of their own; the key is owner-only, in an owner-only folder.
    certs = sorted(os.listdir(demo.output_dir / "certs"))
    assert [name.rsplit(".", 1)[1] for name in certs] == ["crt", "key"]
    assert (demo.output_dir / "certs").stat().st_mode & 0o777 == 0o700
    assert (demo.output_dir / "certs" / certs[1]).stat().st_mode & 0o777 == 0o600
    assert b"PRIVATE KEY" not in (demo.output_dir / CONFIG_FILE).read_bytes()


HTTP_CASES = [
    # (id, Host header, path incl. query, backends allowed to answer)
    ("root", "shop.example.com", "/", WEB),
    ("prefix-api", "shop.example.com", "/api", API),
    ("prefix-api-slash", "shop.example.com", "/api/", API),
    ("prefix-api-child", "shop.example.com", "/api/x", API),
    ("prefix-api-query", "shop.example.com", "/api?q=1", API),
    ("prefix-is-element-wise", "shop.example.com", "/apix", WEB),
    ("host-with-port", "shop.example.com:8080", "/api/x", API),
    ("host-case-insensitive", "SHOP.Example.COM", "/api", API),
    ("host-trailing-dot", "shop.example.com.", "/api", API),
    ("path-case-sensitive", "shop.example.com", "/API", WEB),
    ("wildcard-exact", "a.shop.example.com", "/catalog/feed", API),
    ("wildcard-exact-query", "a.shop.example.com", "/catalog/feed?page=2", API),
    ("wildcard-with-port-and-case", "A.Shop.Example.com:8080", "/catalog/feed", API),
    ("wildcard-exact-not-prefix", "a.shop.example.com", "/catalog/feed/", WEB),
    ("wildcard-exact-child", "a.shop.example.com", "/catalog/feed/x", WEB),
    ("wildcard-other-path", "a.shop.example.com", "/", WEB),
    ("wildcard-single-label", "b.a.shop.example.com", "/catalog/feed", WEB),
    ("wildcard-not-apex", "shop.example.com", "/catalog/feed", WEB),
    ("unknown-host-default-backend", "unknown.example.org", "/api", WEB),
]


@pytest.mark.parametrize(("host", "path", "allowed"), [c[1:] for c in HTTP_CASES], ids=[c[0] for c in HTTP_CASES])
def test_http_routing(demo: Demo, host: str, path: str, allowed: frozenset[str]) -> None:
    reply = request(demo.traefik.http_url, host, path=path)
    assert reply.status == 200, reply
    assert isinstance(reply.body, dict), reply
    assert reply.body["backend"] in allowed, reply
    # Traefik passes the request on untouched: same path and query, the client's Host header.
    assert reply.body["path"] == path
    assert reply.body["host"] == host


HTTPS_CASES = [
    # (id, SNI and Host, path, backends allowed, names the served certificate must carry)
    ("tls-api", "shop.example.com", "/api", API, {"shop.example.com"}),
    ("tls-root", "shop.example.com", "/", WEB, {"shop.example.com"}),
    ("tls-unknown-sni-default-backend", "unknown.example.org", "/", WEB, {"TRAEFIK DEFAULT CERT"}),
]


@pytest.mark.parametrize(
    ("host", "path", "allowed", "cert_names"), [c[1:] for c in HTTPS_CASES], ids=[c[0] for c in HTTPS_CASES]
)
def test_https_routing(demo: Demo, host: str, path: str, allowed: frozenset[str], cert_names: set[str]) -> None:
    reply = request(demo.traefik.https_url, host, path=path, sni=host)
    assert reply.status == 200, reply
    assert reply.body["backend"] in allowed, reply
    assert reply.cert is not None
    assert cert_names <= reply.cert.names, reply.cert


def test_https_certificate_verifies_for_sni(demo: Demo, tmp_path: Path) -> None:
    # Not just the right names: the chain verifies against the demo Secret and the name matches the SNI.
    reply = request(demo.traefik.https_url, "shop.example.com", path="/api/v", verify=str(demo_ca_file(tmp_path)))
    assert (reply.status, reply.body["backend"]) == (200, "api")
    assert reply.cert is not None
    assert reply.cert.common_name == "shop.example.com"
    assert "shop.example.com" in reply.cert.dns_names


def test_load_balancing_skips_not_ready_endpoint(demo: Demo) -> None:
    before = demo.backends["web-not-ready"].served
    answered = collections.Counter(
        request(demo.traefik.http_url, "shop.example.com", path="/").body["backend"] for _ in range(20)
    )
    assert set(answered) == WEB, answered
    assert demo.backends["web-not-ready"].served == before == 0


def test_traefik_reports_no_errors(demo: Demo) -> None:
    assert demo.traefik.router_errors() == []
    assert demo.traefik.service_errors() == []
    assert demo.traefik.log_errors() == []
    # Name-agnostic: whatever the services are called, the not-ready address is in none of them.
    urls = [s["url"] for svc in demo.traefik.services() for s in svc.get("loadBalancer", {}).get("servers", [])]
    assert "http://127.0.0.11:18081" in urls and "http://127.0.0.21:18082" in urls, urls
    assert not [u for u in urls if "127.0.0.13" in u], urls


def test_second_run_changes_nothing(demo: Demo) -> None:
    config, manifest = demo.output_dir / CONFIG_FILE, demo.output_dir / MANIFEST_FILE
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (config, manifest)}
    listing = sorted(os.listdir(demo.output_dir))
    _, seconds = run_syncer_once(DEMO_SOURCE, demo.output_dir, "traefik")
    print(f"\n`syncer once` again, nothing to change: {seconds:.3f} s")
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (config, manifest)} == before
    assert sorted(os.listdir(demo.output_dir)) == listing  # no temp file left behind
    assert demo.traefik.log_errors() == []


def test_broken_demo_objects_degrade_without_breaking_anything(demo: Demo) -> None:
    # A route whose Service does not exist answers 503 instead of vanishing (and falling through).
    assert request(demo.traefik.http_url, "legacy.example.com", path="/old").status == 503
    # The skipped `/api` of the younger Ingress did not take over: the older one still answers.
    assert request(demo.traefik.http_url, "shop.example.com", path="/api").body["backend"] == "api"
    # The rule with an invalid host was skipped; that host gets the default backend like any unknown host.
    assert request(demo.traefik.http_url, "bad_host.example.com", path="/").body["backend"] in WEB
    # Another controller's Ingress is not served.
    assert request(demo.traefik.http_url, "nginx.example.com", path="/").body["backend"] in WEB
