"""Every golden case through one real Traefik: it must route as the reference matcher says. Process and network I/O.

Per case: translate input.yaml (as tests/test_golden.py does), point every backend that has endpoints at
loopback echo servers instead of the case's made-up addresses, render, write atomically into the watched
folder, wait for that render's generation marker, then send the reference matcher's generated requests and
the case's requests.yaml through Traefik's HTTP entry point. Nothing here ever sends traffic off loopback.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import random
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
import yaml
from requests.adapters import HTTPAdapter

from renderers.traefik import CONFIG_FILE, GENERATION_ROUTER, TraefikRenderer
from syncer.model import Backend, Endpoint, RoutingModel
from syncer.output.writer import FileWriter
from syncer.source import DirectorySource
from syncer.translate import TranslateOptions, translate
from tests.proxies import LOOPBACK, EchoServer, TraefikProcess, find_traefik
from tests.reference_matcher import answer, generate_requests
from tests.test_golden import CASES, case_names, load_options

GENERATED_REQUESTS = 250
ENDPOINTS_PER_BACKEND = 2  # at most: a backend with one endpoint gets one echo server


class EchoPool:
    """Loopback echo servers by backend name, started on first use and shared by every case naming that backend."""

    def __init__(self) -> None:
        self._servers: dict[str, list[EchoServer]] = {}

    def servers_for(self, backend: str, count: int) -> list[EchoServer]:
        servers = self._servers.setdefault(backend, [])
        while len(servers) < count:
            # Port 0: the kernel picks a free one, no race with other processes.
            servers.append(EchoServer(LOOPBACK, 0, backend).start())
        return servers[:count]

    def stop_all(self) -> None:
        servers = [s for group in self._servers.values() for s in group]
        self._servers.clear()
        # Each stop waits for its serve_forever poll (50 ms): in parallel, not one after the other.
        with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(EchoServer.stop, servers))


@dataclasses.dataclass(frozen=True)
class Rig:
    traefik: TraefikProcess
    writer: FileWriter
    dynamic_dir: Path
    session: requests.Session
    echoes: EchoPool


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    binary = find_traefik()
    base = tmp_path_factory.mktemp("traefik-cases")
    dynamic_dir, work_dir = base / "dynamic", base / "traefik"
    dynamic_dir.mkdir()
    with contextlib.ExitStack() as stack:
        echoes = EchoPool()
        stack.callback(echoes.stop_all)
        # The static configuration comes from the `syncer bootstrap traefik` command itself.
        traefik = stack.enter_context(TraefikProcess(dynamic_dir, work_dir, binary=binary, bootstrap_cli=True))
        session = stack.enter_context(requests.Session())
        session.trust_env = False  # Traefik is on loopback: never through an HTTP(S)_PROXY
        session.mount("http://", HTTPAdapter(max_retries=0))
        yield Rig(traefik, FileWriter(dynamic_dir), dynamic_dir, session, echoes)


def test_static_config_is_the_bootstrap_output(rig: Rig) -> None:
    static = yaml.safe_load(rig.traefik.static_config.read_text())
    assert static["providers"]["file"] == {"directory": str(rig.dynamic_dir.resolve()), "watch": True}
    assert static["providers"]["providersThrottleDuration"] == "200ms"
    assert static["ping"] == {"entryPoint": "traefik"}
    assert static["global"] == {"checkNewVersion": False, "sendAnonymousUsage": False}
    assert {name: ep["address"] for name, ep in static["entryPoints"].items()} == {
        "web": f"{LOOPBACK}:{rig.traefik.web_port}",
        "websecure": f"{LOOPBACK}:{rig.traefik.websecure_port}",
        "traefik": f"{LOOPBACK}:{rig.traefik.api_port}",
    }
    assert static["log"] == {"level": "INFO", "format": "json", "filePath": str(rig.traefik.log_file)}


# --- per case ------------------------------------------------------------------------------------------------


def translate_case(case: Path) -> RoutingModel:
    options = load_options(case)
    snapshot = DirectorySource(case).read_files([case / "input.yaml"])
    return translate(snapshot, TranslateOptions(**options.get("translate", {}))).model


def on_loopback(model: RoutingModel, echoes: EchoPool) -> RoutingModel:
    """The model with every backend that has endpoints served by loopback echo servers; empty ones stay empty."""
    backends: list[Backend] = []
    for backend in model.backends:
        if backend.endpoints:
            servers = echoes.servers_for(backend.name, min(ENDPOINTS_PER_BACKEND, len(backend.endpoints)))
            endpoints = tuple(sorted(Endpoint(LOOPBACK, s.port) for s in servers))
            backend = dataclasses.replace(backend, endpoints=endpoints, external_name=None)
        backends.append(backend)
    rewritten = dataclasses.replace(model, backends=tuple(backends))
    rewritten.validate()
    return rewritten


def off_loopback_addresses(node: Any) -> list[str]:
    """Every `url` or `address` anywhere in the rendered config that is not on 127.0.0.1."""
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("url", "address") and isinstance(value, str):
                host = urlsplit(value if "://" in value else f"//{value}").hostname
                if host != LOOPBACK:
                    found.append(value)
            else:
                found += off_loopback_addresses(value)
    elif isinstance(node, list):
        for item in node:
            found += off_loopback_addresses(item)
    return found


def server_urls(config: dict[str, Any]) -> list[str]:
    services = config.get("http", {}).get("services", {})
    return [s["url"] for svc in services.values() for s in svc.get("loadBalancer", {}).get("servers", [])]


def names_with_at(config: dict[str, Any]) -> list[str]:
    return [
        f"{protocol}.{section}.{name}"
        for protocol in ("http", "tcp", "udp")
        for section in ("routers", "services", "middlewares")
        for name in (config.get(protocol) or {}).get(section) or {}
        if "@" in name
    ]


def expectation(model: RoutingModel, backend: str | None) -> tuple[int, str | None]:
    """(status, answering backend): 404 for no backend, 503 for one without endpoints, else 200 from it."""
    if backend is None:
        return (404, None)
    if not next(b for b in model.backends if b.name == backend).endpoints:
        return (503, None)
    return (200, backend)


def describe(outcome: tuple[int, str | None]) -> str:
    status, backend = outcome
    return f"{status} from {backend}" if backend is not None else str(status)


def send(rig: Rig, host: str, path: str) -> tuple[int, str | None]:
    """One GET through Traefik's HTTP entry point on the shared keep-alive session: (status, echo backend)."""
    response = rig.session.get(rig.traefik.http_url + path, headers={"Host": host}, timeout=10, allow_redirects=False)
    backend: str | None = None
    if response.status_code == 200:
        try:
            body = response.json()
        except ValueError:
            body = None
        backend = str(body.get("backend")) if isinstance(body, dict) else f"<not an echo: {response.text[:80]!r}>"
    return (response.status_code, backend)


def live_or_rejected(rig: Rig, rule: str, errors_before: list[dict[str, Any]]) -> Callable[[str], bool]:
    """For wait_for_generation: true once `rule` is live; fails at once when Traefik rejected the file instead.

    A rejected file leaves the previous revision live and is reported only in the log: without this the wait
    would run into its timeout.
    """

    def check(live_rule: str) -> bool:
        if rule in live_rule:
            return True
        rejected = [e for e in new_entries(errors_before, rig.traefik.log_errors()) if e.get("providerName") == "file"]
        if rejected:
            raise AssertionError(f"Traefik rejected the rendered file (the previous revision stays live): {rejected}")
        return False

    return check


def new_entries(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return after[len(before) :]


@pytest.mark.parametrize("name", case_names())
def test_case_routes_through_traefik(rig: Rig, name: str) -> None:
    case = CASES / name
    model = on_loopback(translate_case(case), rig.echoes)
    files = TraefikRenderer({}, output_dir=str(rig.dynamic_dir.resolve())).render(model)
    assert list(files)[-1] == CONFIG_FILE  # certificate files, if any, come first
    assert all(name.startswith("certs/") for name in list(files)[:-1])
    text = files[CONFIG_FILE].decode()
    config = yaml.safe_load(text)

    # Safety first: nothing but our loopback echo servers may ever receive traffic from this Traefik.
    off_loopback = off_loopback_addresses(config)
    assert not off_loopback, f"{name}: rendered config points off loopback: {off_loopback}"
    echo_urls = {s.url for b in model.backends for s in rig.echoes.servers_for(b.name, len(b.endpoints))}
    assert set(server_urls(config)) <= echo_urls, f"{name}: server URLs that are not our echo servers"
    assert "{{" not in text, f"{name}: '{{{{' in the rendered config (Traefik runs it through Go templates)"
    assert not names_with_at(config), f"{name}: '@' in object names: {names_with_at(config)}"

    errors_before = rig.traefik.log_errors()
    rig.writer.write(files)
    rig.traefik.wait_for_generation(
        live_or_rejected(rig, config["http"]["routers"][GENERATION_ROUTER]["rule"], errors_before), timeout=15
    )
    assert rig.traefik.router_errors() == [], f"{name}: routers Traefik did not enable"
    assert rig.traefik.service_errors() == [], f"{name}: services Traefik did not enable"
    middlewares = rig.traefik.api("/api/http/middlewares?per_page=1000")
    assert [m for m in middlewares if m.get("status") != "enabled"] == [], f"{name}: middlewares not enabled"
    assert new_entries(errors_before, rig.traefik.log_errors()) == [], f"{name}: Traefik logged errors on load"

    probes: list[tuple[str, str, str | None, str]] = [
        (host, path, answer(model, host, path), "generated")
        for host, path in generate_requests(model, random.Random(zlib.crc32(name.encode())), GENERATED_REQUESTS)
    ]
    requests_file = case / "requests.yaml"
    if requests_file.is_file():
        probes += [
            (str(r["host"]), str(r["path"]), r["backend"], "requests.yaml")
            for r in yaml.safe_load(requests_file.read_text()) or []
        ]
    errors_before = rig.traefik.log_errors()
    mismatches: list[str] = []
    seen: set[tuple[str, str]] = set()
    for host, path, backend, origin in probes:
        want = expectation(model, backend)
        got = send(rig, host, path)
        if got != want and (host, path) not in seen:
            seen.add((host, path))
            mismatches.append(
                f"{name}: Host {host!r} path {path!r} ({origin}): expected {describe(want)}, got {describe(got)}"
            )
    assert not mismatches, f"{len(mismatches)} request(s) answered wrongly:\n" + "\n".join(mismatches)
    assert new_entries(errors_before, rig.traefik.log_errors()) == [], f"{name}: Traefik logged errors on requests"
