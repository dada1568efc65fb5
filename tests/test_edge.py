"""Edge behaviour every user notices, one table through BOTH real proxies: WebSocket upgrades, HTTP/2 by ALPN on
HTTPS, and the HTTP -> HTTPS redirect of hosts with a certificate (`traefik.redirect-https`,
`envoy.redirect-https`).

Each proxy serves the same hand-built model (rendered by its own renderer) in front of one loopback backend that
answers plain requests with JSON and performs a real WebSocket handshake and echo (RFC 6455).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import json
import socket
import ssl
import struct
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
import trustme

from renderers.envoy import EnvoyRenderer
from renderers.traefik import CONFIG_FILE, GENERATION_ROUTER, TraefikRenderer
from syncer.model import Backend, Endpoint, PathMatch, Route, RoutingModel, SourceRef, TLSCert, VirtualHost
from syncer.output.writer import FileWriter
from syncer.render.contract import secret_files_of
from tests.envoy_proxy import EnvoyProcess
from tests.proxies import LOOPBACK, TraefikProcess, find_traefik, free_port
from tests.proxies import _SNIAdapter as SNIAdapter

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3
PLAIN_HOST, TLS_HOST, WILDCARD = "plain.edge.test", "tls.edge.test", "*.w.edge.test"
TIMEOUT = 10.0
FORWARDED = ("x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-port", "x-real-ip")
SPOOFED = {
    "X-Forwarded-For": "6.6.6.6",
    "X-Real-IP": "6.6.6.6",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "evil.test",
    "X-Forwarded-Port": "1",
}


# --- the backend -------------------------------------------------------------------------------------------


class _BackendHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.headers.get("Upgrade", "").lower() == "websocket":
            self._websocket()
            return
        if self.path.startswith("/slow/"):
            time.sleep(float(self.path.removeprefix("/slow/")))  # a backend that thinks before it answers
        forwarded = {name.lower(): value for name, value in self.headers.items() if name.lower() in FORWARDED}
        body = json.dumps(
            {"backend": "edge", "path": self.path, "host": self.headers.get("Host"), **forwarded}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def _websocket(self) -> None:
        accept = base64.b64encode(hashlib.sha1((self.headers["Sec-WebSocket-Key"] + WS_GUID).encode()).digest())
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept.decode())
        self.end_headers()
        self.wfile.flush()
        payload = read_frame(self.rfile.read)
        self.wfile.write(frame(b"echo: " + payload, masked=False))
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        pass


def frame(payload: bytes, *, masked: bool) -> bytes:
    """One final text frame (payloads under 126 bytes: all this test sends)."""
    assert len(payload) < 126
    if not masked:
        return bytes([0x81, len(payload)]) + payload
    mask = b"\x01\x02\x03\x04"
    return bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def read_frame(read: Any) -> bytes:
    first, second = struct.unpack("!BB", read(2))
    assert first & 0x0F == 0x1, f"not a text frame: {first:#x}"
    length = second & 0x7F
    assert length < 126
    mask = read(4) if second & 0x80 else b""
    data: bytes = read(length)
    return bytes(b ^ mask[i % 4] for i, b in enumerate(data)) if mask else data


# --- the model and the two proxies ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Edge:
    name: str
    http_port: int
    https_port: int
    ca: trustme.CA


def edge_model(backend_port: int, ca: trustme.CA) -> RoutingModel:
    source = SourceRef("Ingress", "edge", "app")
    backend = Backend("edge/app/80", "edge", "app", "80", (Endpoint(LOOPBACK, backend_port),))

    def cert(name: str, host: str) -> TLSCert:
        issued = ca.issue_cert(host)
        key = issued.private_key_pem.bytes()
        return TLSCert(name, b"".join(c.bytes() for c in issued.cert_chain_pems), key, source)

    def vhost(host: str, tls: str | None) -> VirtualHost:
        return VirtualHost(host, (Route(f"{host}/prefix/", "/", PathMatch.PREFIX, backend.name, source),), tls)

    model = RoutingModel(
        virtual_hosts=(vhost(PLAIN_HOST, None), vhost(TLS_HOST, "edge/tls"), vhost(WILDCARD, "edge/wild")),
        backends=(backend,),
        certificates=(cert("edge/tls", TLS_HOST), cert("edge/wild", WILDCARD)),
    )
    model.validate()
    return model


@pytest.fixture(scope="module")
def backend_port() -> Iterator[int]:
    server = ThreadingHTTPServer((LOOPBACK, 0), _BackendHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def traefik_edge(backend_port: int, ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    base = tmp_path_factory.mktemp("edge-traefik")
    dynamic = base / "dynamic"
    dynamic.mkdir()
    renderer = TraefikRenderer({"redirect-https": "true"}, output_dir=str(dynamic.resolve()))
    files = renderer.render(edge_model(backend_port, ca))
    with TraefikProcess(dynamic, base / "traefik", binary=find_traefik()) as traefik:
        FileWriter(dynamic).write(files, secret=secret_files_of(renderer))
        marker = json.loads(files[CONFIG_FILE])["http"]["routers"][GENERATION_ROUTER]["rule"]
        traefik.wait_for_generation(lambda rule: marker in rule, timeout=30)
        yield Edge("traefik", traefik.web_port, traefik.websecure_port, ca)


@pytest.fixture(scope="module")
def envoy_edge(backend_port: int, ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    base = tmp_path_factory.mktemp("edge-envoy")
    xds = base / "xds"
    xds.mkdir()
    http_port, https_port = free_port(), free_port()
    options = {"address": LOOPBACK, "http-port": str(http_port), "https-port": str(https_port)}
    renderer = EnvoyRenderer({**options, "redirect-https": "true"}, output_dir=str(xds))
    writer = FileWriter(xds)
    secret = secret_files_of(renderer)
    writer.write(renderer.render(RoutingModel()), secret=secret)  # LDS and CDS exist before Envoy starts
    with EnvoyProcess(base / "envoy" / "bootstrap.json", base / "envoy", xds_dir=xds) as envoy:
        envoy.wait_for_rendered(xds)
        before = envoy.update_problems()
        writer.write(renderer.render(edge_model(backend_port, ca)), secret=secret)
        envoy.wait_for_rendered(xds, timeout=30, problems_before=before)
        yield Edge("envoy", http_port, https_port, ca)


@pytest.fixture(params=["traefik", "envoy"])
def edge(request: pytest.FixtureRequest) -> Edge:
    rig: Edge = request.getfixturevalue(f"{request.param}_edge")
    return rig


# --- clients ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def connect(edge: Edge, host: str, *, tls: bool, alpn: list[str] | None = None) -> Iterator[socket.socket]:
    raw = socket.create_connection((LOOPBACK, edge.https_port if tls else edge.http_port), timeout=TIMEOUT)
    if not tls:
        with raw:
            yield raw
        return
    context = ssl.create_default_context()
    edge.ca.configure_trust(context)
    if alpn is not None:
        context.set_alpn_protocols(alpn)
    with context.wrap_socket(raw, server_hostname=host) as wrapped:
        yield wrapped


def websocket_echo(edge: Edge, host: str, *, tls: bool) -> tuple[int, bytes]:
    """Handshake through the proxy, one masked frame out: the status line's code and the frame echoed back."""
    key = base64.b64encode(b"ingress-syncer-k").decode()
    with connect(edge, host, tls=tls, alpn=["http/1.1"]) as conn:
        conn.sendall(
            f"GET /chat HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        stream = conn.makefile("rb")
        status = int(stream.readline().split()[1])
        headers = {}
        for line in iter(stream.readline, b"\r\n"):
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        if status != 101:
            return status, b""
        expected = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        assert headers.get("sec-websocket-accept") == expected, headers
        conn.sendall(frame(b"hello through the edge", masked=True))
        return status, read_frame(stream.read)


# --- the table -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("host", "tls"), [(PLAIN_HOST, False), (TLS_HOST, True), ("a.w.edge.test", True)])
def test_websocket_upgrades_on_every_route(edge: Edge, host: str, tls: bool) -> None:
    assert websocket_echo(edge, host, tls=tls) == (101, b"echo: hello through the edge")


@pytest.mark.parametrize(
    ("offered", "chosen"), [(["h2", "http/1.1"], "h2"), (["http/1.1"], "http/1.1"), (["h2"], "h2")]
)
def test_https_offers_http2_and_http1_by_alpn(edge: Edge, offered: list[str], chosen: str) -> None:
    with connect(edge, TLS_HOST, tls=True, alpn=offered) as conn:
        assert isinstance(conn, ssl.SSLSocket)
        assert conn.selected_alpn_protocol() == chosen
        if chosen == "h2":
            # The connection preface and an empty SETTINGS frame: an HTTP/2 server answers with SETTINGS.
            conn.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
            header = conn.makefile("rb").read(9)
            assert len(header) == 9 and header[3] == 0x4, header


@pytest.mark.parametrize("host", [TLS_HOST, "a.w.edge.test"])
def test_hosts_with_a_certificate_redirect_plain_http_to_https(edge: Edge, host: str) -> None:
    with requests.Session() as session:
        session.trust_env = False
        response = session.get(
            f"http://{LOOPBACK}:{edge.http_port}/some/path?x=1&y=two",
            headers={"Host": host},
            allow_redirects=False,
            timeout=TIMEOUT,
        )
    assert response.status_code == 301, (response.status_code, response.text[:200])
    target = urlsplit(response.headers["Location"])
    assert (target.scheme, target.hostname, target.path, target.query) == ("https", host, "/some/path", "x=1&y=two")


@pytest.mark.parametrize("host", [PLAIN_HOST, "deeper.a.w.edge.test"])
def test_hosts_without_a_certificate_are_served_over_plain_http(edge: Edge, host: str) -> None:
    """The redirect belongs to the certificate's own hosts: a deeper name than the wildcard's one label is not."""
    with requests.Session() as session:
        session.trust_env = False
        response = session.get(
            f"http://{LOOPBACK}:{edge.http_port}/p", headers={"Host": host}, allow_redirects=False, timeout=TIMEOUT
        )
    expected = (200, "edge") if host == PLAIN_HOST else (404, None)
    body = response.json() if response.headers.get("Content-Type") == "application/json" else {}
    assert (response.status_code, body.get("backend")) == expected


def test_the_edge_model_is_what_both_proxies_were_given(tmp_path: Path, ca: trustme.CA) -> None:
    """The table above is only meaningful if both renderers really got the redirect and the TLS hosts."""
    model = edge_model(1, ca)
    traefik = TraefikRenderer({"redirect-https": "true"}, output_dir=str(tmp_path)).render(model)
    assert b"redirect-https" in traefik[CONFIG_FILE]
    envoy = EnvoyRenderer({"redirect-https": "true"}, output_dir=str(tmp_path)).render(model)
    assert b'"https_redirect":true' in envoy["rds/http.json"] and b"alpn_protocols" in envoy["lds.json"]
    assert b"upgrade_configs" in envoy["lds.json"]


@pytest.mark.parametrize(("host", "tls"), [(PLAIN_HOST, False), (TLS_HOST, True)])
def test_forwarded_headers_come_from_the_connection_not_the_client(edge: Edge, host: str, tls: bool) -> None:
    """A client that claims another address, scheme and host: the backend still learns the real ones.

    X-Forwarded-For keeps what the client sent (both proxies append to it, as every proxy does) but never ends
    with it. Envoy appends its own node address, not the peer's, when the peer is on loopback (as every client of
    this test is); a real client's own address is appended.
    """
    scheme = "https" if tls else "http"
    with requests.Session() as session, edge.ca.cert_pem.tempfile() as ca_file:
        session.trust_env = False
        if tls:
            session.mount("https://", SNIAdapter(host, check_hostname=True))
        port = edge.https_port if tls else edge.http_port
        response = session.get(
            f"{scheme}://{LOOPBACK}:{port}/who",
            headers={"Host": host, **SPOOFED},
            verify=ca_file,
            allow_redirects=False,
            timeout=TIMEOUT,
        )
    seen = response.json()
    real = (seen["x-real-ip"], seen["x-forwarded-proto"], seen["x-forwarded-host"], seen["x-forwarded-port"])
    assert real == (LOOPBACK, scheme, host, "443" if tls else "80"), seen
    assert seen["x-forwarded-for"].replace(" ", "").split(",")[-1] != "6.6.6.6", seen


SLOW_BACKEND_SECONDS = 20.0  # beyond Envoy's 15 s default route timeout, within the 60 s both renderers set


def test_a_slow_backend_is_waited_for(traefik_edge: Edge, envoy_edge: Edge) -> None:
    """A backend that answers after 20 s gets its answer through: both proxies at once, so the test costs 20 s."""

    def slow(edge: Edge) -> tuple[int, str]:
        with requests.Session() as session:
            session.trust_env = False
            response = session.get(
                f"http://{LOOPBACK}:{edge.http_port}/slow/{SLOW_BACKEND_SECONDS}",
                headers={"Host": PLAIN_HOST},
                timeout=SLOW_BACKEND_SECONDS + 30,
            )
        return response.status_code, response.text

    with ThreadPoolExecutor(max_workers=2) as pool:
        replies = dict(zip(("traefik", "envoy"), pool.map(slow, (traefik_edge, envoy_edge)), strict=True))
    assert {name: status for name, (status, _) in replies.items()} == {"traefik": 200, "envoy": 200}, replies
