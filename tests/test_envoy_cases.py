"""Every golden case through one real Envoy: it must route as the reference matcher says. Process and network I/O.

Per case: translate input.yaml (as tests/test_golden.py does), point every backend that has endpoints at
loopback echo servers of this case instead of the case's made-up addresses, render, write with FileWriter
into the folder Envoy watches, wait until every rendered file's `version_info` is live, then send the
reference matcher's generated requests and the case's requests.yaml through Envoy's HTTP listener on one
keep-alive connection. Nothing here ever sends traffic off loopback. Separately, every case's render of its
original model passes `envoy --mode validate` (which binds nothing and sends nothing).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import json
import random
import time
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from requests.adapters import HTTPAdapter

from renderers.envoy import EnvoyRenderer
from renderers.envoy.bootstrap import validate_with_envoy
from syncer.model import Backend, Endpoint, RoutingModel
from syncer.output.writer import FileWriter
from syncer.source import DirectorySource
from syncer.translate import TranslateOptions, translate
from tests.envoy_proxy import EnvoyProcess, find_envoy, referenced_files
from tests.proxies import LOOPBACK, EchoServer, free_port
from tests.reference_matcher import answer, generate_requests
from tests.test_golden import CASES, case_names, load_options

GENERATED_REQUESTS = 250
ENDPOINTS_PER_BACKEND = 2  # at most: a backend with one endpoint gets one echo server


@dataclasses.dataclass(frozen=True)
class Rig:
    envoy: EnvoyProcess
    xds_dir: Path
    writer: FileWriter
    http_port: int
    https_port: int
    session: requests.Session

    @property
    def http_url(self) -> str:
        return f"http://{LOOPBACK}:{self.http_port}"

    def renderer(self, options: Mapping[str, str]) -> EnvoyRenderer:
        ports = {"address": LOOPBACK, "http-port": str(self.http_port), "https-port": str(self.https_port)}
        return EnvoyRenderer({**options, **ports}, output_dir=str(self.xds_dir))


def test_envoy_binary_installed() -> None:
    # A failure in the fixture below is reported as a setup error; this makes a missing binary a plain FAIL too.
    assert find_envoy()


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    base = tmp_path_factory.mktemp("envoy-cases")
    xds_dir, work_dir = base / "xds", base / "envoy"
    xds_dir.mkdir()
    http_port, https_port = free_port(), free_port()
    writer = FileWriter(xds_dir)
    # LDS and CDS must exist before Envoy starts: an empty model's render (the HTTP listener answering 404).
    empty = EnvoyRenderer(
        {"address": LOOPBACK, "http-port": str(http_port), "https-port": str(https_port)}, output_dir=str(xds_dir)
    )
    writer.write(empty.render(RoutingModel()))
    with contextlib.ExitStack() as stack:
        envoy = stack.enter_context(EnvoyProcess(work_dir / "bootstrap.json", work_dir, xds_dir=xds_dir))
        envoy.wait_for_rendered(xds_dir)
        session = stack.enter_context(requests.Session())
        session.trust_env = False  # Envoy is on loopback: never through an HTTP(S)_PROXY
        session.mount("http://", HTTPAdapter(max_retries=0))
        yield Rig(envoy, xds_dir, writer, http_port, https_port, session)


def test_bootstrap_is_the_syncer_one(rig: Rig) -> None:
    dynamic = rig.envoy.bootstrap["dynamic_resources"]
    assert {name: source["path_config_source"] for name, source in dynamic.items()} == {
        "lds_config": {"path": str(rig.xds_dir / "lds.json"), "watched_directory": {"path": str(rig.xds_dir)}},
        "cds_config": {"path": str(rig.xds_dir / "cds.json"), "watched_directory": {"path": str(rig.xds_dir)}},
    }
    assert rig.envoy.bootstrap["admin"]["address"]["socket_address"] == {
        "address": LOOPBACK,
        "port_value": rig.envoy.admin_port,
    }


# --- per case ------------------------------------------------------------------------------------------------


def case_options(case: Path) -> tuple[TranslateOptions, dict[str, str]]:
    options = load_options(case)
    return TranslateOptions(**options.get("translate", {})), {k: str(v) for k, v in options.get("envoy", {}).items()}


def translate_case(case: Path) -> RoutingModel:
    snapshot = DirectorySource(case).read_files([case / "input.yaml"])
    return translate(snapshot, case_options(case)[0]).model


@contextlib.contextmanager
def echo_servers(model: RoutingModel) -> Iterator[dict[str, list[EchoServer]]]:
    """Fresh loopback echo servers, named for their backend, for every backend of `model` that has endpoints.

    Fresh per case: a request still routed by an earlier case's configuration meets no server of this case.
    """
    servers: dict[str, list[EchoServer]] = {}
    try:
        for backend in model.backends:
            if backend.endpoints:
                count = min(ENDPOINTS_PER_BACKEND, len(backend.endpoints))
                # Port 0: the kernel picks a free one, no race with other processes.
                servers[backend.name] = [EchoServer(LOOPBACK, 0, backend.name).start() for _ in range(count)]
        yield servers
    finally:
        # Each stop waits for its serve_forever poll (50 ms): in parallel, not one after the other.
        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(EchoServer.stop, [s for group in servers.values() for s in group]))


def on_loopback(model: RoutingModel, servers: Mapping[str, list[EchoServer]]) -> RoutingModel:
    """The model with every backend that has endpoints served by its echo servers; empty ones stay empty."""
    backends: list[Backend] = []
    for backend in model.backends:
        if backend.endpoints:
            endpoints = tuple(sorted(Endpoint(LOOPBACK, s.port) for s in servers[backend.name]))
            backend = dataclasses.replace(backend, endpoints=endpoints, external_name=None)
        backends.append(backend)
    rewritten = dataclasses.replace(model, backends=tuple(backends))
    rewritten.validate()
    return rewritten


def socket_addresses(node: Any) -> list[tuple[str, int]]:
    """Every `socket_address` anywhere in a rendered resource tree, as (address, port)."""
    found: list[tuple[str, int]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "socket_address" and isinstance(value, dict):
                found.append((str(value.get("address")), int(value.get("port_value", 0))))
            else:
                found += socket_addresses(value)
    elif isinstance(node, list):
        for item in node:
            found += socket_addresses(item)
    return found


def check_loopback_only(files: Mapping[str, bytes], servers: Mapping[str, list[EchoServer]], rig: Rig) -> None:
    """Safety first: nothing but this case's echo servers (and our own listeners) may appear as an address."""
    echo_ports = {s.port for group in servers.values() for s in group}
    for name, content in files.items():
        addresses = socket_addresses(json.loads(content))
        off_loopback = [a for a in addresses if a[0] != LOOPBACK]
        assert not off_loopback, f"{name} names addresses off loopback: {off_loopback}"
        allowed = {rig.http_port, rig.https_port} if name == "lds.json" else echo_ports
        strangers = [a for a in addresses if a[1] not in allowed]
        assert not strangers, f"{name} names loopback ports that are not ours: {strangers}"
    clusters = json.loads(files["cds.json"])["resources"]
    not_eds = [c["name"] for c in clusters if c.get("type") != "EDS"]
    assert not not_eds, f"clusters that would resolve names or carry their own addresses: {not_eds}"


def expectation(model: RoutingModel, backend: str | None) -> tuple[int, str | None]:
    """(status, answering backend): 404 for no backend, 503 for one without endpoints, else 200 from it."""
    if backend is None:
        return (404, None)
    if not next(b for b in model.backends if b.name == backend).endpoints:
        return (503, None)
    return (200, backend)


def send(rig: Rig, host: str, path: str) -> tuple[str, tuple[int, str | None]]:
    """One GET through Envoy's HTTP listener on the shared keep-alive session: (path sent, (status, echo backend))."""
    prepared = rig.session.prepare_request(requests.Request("GET", rig.http_url + path, headers={"Host": host}))
    response = rig.session.send(prepared, timeout=10, allow_redirects=False)
    backend: str | None = None
    if response.status_code == 200:
        try:
            body = response.json()
        except ValueError:
            body = None
        backend = str(body.get("backend")) if isinstance(body, dict) else f"<not an echo: {response.text[:80]!r}>"
    return str(prepared.path_url), (response.status_code, backend)


def _describe(outcome: tuple[int, str | None]) -> str:
    status, backend = outcome
    return f"{status} from {backend}" if backend is not None else str(status)


@pytest.mark.parametrize("name", case_names())
def test_case_routes_through_envoy(rig: Rig, name: str) -> None:
    case = CASES / name
    original = translate_case(case)
    with echo_servers(original) as servers:
        model = on_loopback(original, servers)
        files = rig.renderer(case_options(case)[1]).render(model)
        check_loopback_only(files, servers, rig)

        problems_before = rig.envoy.update_problems()
        rig.writer.write(files)
        versions = rig.envoy.wait_for_rendered(rig.xds_dir, problems_before=problems_before)
        problems = rig.envoy.update_problems()
        rejected = {k: v for k, v in problems.items() if k.endswith(".update_rejected") and v}
        assert not rejected, f"{name}: Envoy rejected an update (in this case or an earlier one): {rejected}"
        # Failures (a file that cannot be read) of this render's own files; those of files a draining listener
        # still reads are test_pruned_files_are_not_read_by_draining_listeners' business.
        subscriptions = {stat.removesuffix(".version_text") for stat in versions}
        failed = {
            k: v
            for k, v in problems.items()
            if v > problems_before.get(k, 0) and k.rpartition(".update_")[0] in subscriptions
        }
        assert not failed, f"{name}: Envoy could not read rendered files: {failed}"
        # Every file written is one Envoy reads, and Envoy reads nothing that was not written.
        on_disk = {rig.xds_dir / f for f in files}
        assert referenced_files(rig.xds_dir) == on_disk, f"{name}: files written but never read, or missing"
        listeners = {"http": (LOOPBACK, rig.http_port)}
        if model.certificates:
            listeners["https"] = (LOOPBACK, rig.https_port)
        assert rig.envoy.listener_addresses() == listeners

        cases: list[tuple[str, str, str | None, str]] = [
            (host, path, None, "generated")
            for host, path in generate_requests(model, random.Random(zlib.crc32(name.encode())), GENERATED_REQUESTS)
        ]
        requests_file = case / "requests.yaml"
        if requests_file.is_file():
            cases += [
                (str(r["host"]), str(r["path"]), r["backend"], "requests.yaml")
                for r in yaml.safe_load(requests_file.read_text()) or []
            ]
        mismatches: list[str] = []
        seen: set[tuple[str, str]] = set()
        for host, path, listed, origin in cases:
            wire_path, got = send(rig, host, path)
            # The reference on the path as sent (requests drops `.` and `..` segments before sending).
            backend = listed if origin == "requests.yaml" else answer(model, host, wire_path)
            want = expectation(model, backend)
            if got != want and (host, path) not in seen:
                seen.add((host, path))
                sent = f" (sent as {wire_path!r})" if wire_path != path else ""
                mismatches.append(
                    f"Host {host!r} path {path!r}{sent} ({origin}): expected {_describe(want)}, got {_describe(got)}"
                )
        assert not mismatches, f"{name}: {len(mismatches)} request(s) answered wrongly:\n" + "\n".join(mismatches)


# --- offline validation of the unrewritten render ------------------------------------------------------------


@pytest.mark.parametrize("name", case_names())
def test_case_render_passes_envoy_validate(name: str, tmp_path: Path) -> None:
    # The case's own made-up addresses: `--mode validate` binds no port and sends no traffic.
    case = CASES / name
    files = EnvoyRenderer(case_options(case)[1], output_dir=str(tmp_path)).render(translate_case(case))
    validate_with_envoy(find_envoy(), files)


# --- files pruned under a draining listener -----------------------------------------------------------------

# Each step drops a certificate (or the HTTPS listener) of the one before and writes new files beside it.
PRUNING_SEQUENCE = (
    "tls-certificate-chain",
    "tls-hosts-secret",
    "tls-conflict-oldest-wins",
    "host-less-rules",
    "hosts-and-paths",
)


def test_pruned_files_are_not_read_by_draining_listeners(tmp_path: Path) -> None:
    """The `sds/` and `rds/https.json` files a new `lds.json` stopped naming stay for the drain time. The
    filter chains (or the whole HTTPS listener) that named them drain for Envoy's --drain-time-s (600 s by
    default) and keep their subscriptions; with `watched_directory` every later rename into `sds/` or
    `rds/` makes those re-read their file: had it been deleted, that would be an `update_failure` and an
    `Invalid path` warning per rename, for as long as the drain lasts.
    """
    xds_dir, work_dir = tmp_path / "xds", tmp_path / "envoy"
    xds_dir.mkdir()
    ports = {"address": LOOPBACK, "http-port": str(free_port()), "https-port": str(free_port())}
    renderer = EnvoyRenderer(ports, output_dir=str(xds_dir))
    writer = FileWriter(xds_dir)

    def without_endpoints(model: RoutingModel) -> RoutingModel:
        # This Envoy gets no requests; no endpoints at all, so none could ever be off loopback.
        backends = tuple(dataclasses.replace(b, endpoints=(), external_name=None) for b in model.backends)
        return dataclasses.replace(model, backends=backends)

    steps = [without_endpoints(translate_case(CASES / name)) for name in PRUNING_SEQUENCE]
    assert steps[0].certificates and not steps[-1].certificates
    for model in steps:
        for file_name, content in renderer.render(model).items():
            off_loopback = [a for a in socket_addresses(json.loads(content)) if a[0] != LOOPBACK]
            assert not off_loopback, f"{file_name} names addresses off loopback: {off_loopback}"
    writer.write(renderer.render(steps[0]), prune_delay=renderer.prune_delay)
    with EnvoyProcess(work_dir / "bootstrap.json", work_dir, xds_dir=xds_dir) as envoy:
        envoy.wait_for_rendered(xds_dir)
        failures: list[str] = []
        for name, model in zip(PRUNING_SEQUENCE[1:], steps[1:], strict=True):
            before = envoy.update_problems()
            result = writer.write(renderer.render(model), prune_delay=renderer.prune_delay)
            envoy.wait_for_rendered(xds_dir, problems_before=before)
            risen = {k: v - before.get(k, 0) for k, v in envoy.update_problems().items() if v > before.get(k, 0)}
            if risen:
                failures.append(f"after writing {name} (pruned {list(result.removed)}): {risen}")
        warnings = envoy.log_problems()
        deadline = time.monotonic() + 1.0
        while failures and not warnings and time.monotonic() < deadline:
            time.sleep(0.05)  # the log reaches its file up to 50 ms late; only its lines are still awaited here
            warnings = envoy.log_problems()
        reasons = [line.rsplit("] ", 1)[-1] for line in warnings]
        assert not failures, "Envoy re-read files FileWriter had pruned:\n" + "\n".join(failures + reasons)
