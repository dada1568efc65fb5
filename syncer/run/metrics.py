"""Prometheus metrics and the /healthz, /readyz, /metrics endpoints. Serves HTTP (network I/O)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

log = logging.getLogger("syncer.run.metrics")


class Metrics:
    """Everything an operator graphs or alerts on; one registry per process (no global state)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.cycle_seconds = Histogram(
            "syncer_cycle_duration_seconds", "Duration of sync cycles.", registry=r,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )  # fmt: skip
        self.last_success = Gauge("syncer_last_success_timestamp_seconds", "When a cycle last succeeded.", registry=r)
        self.cycle_failures = Counter("syncer_cycle_failures_total", "Failed cycles by reason.", ["reason"], registry=r)
        self.api_requests = Counter(
            "syncer_api_requests_total", "Kubernetes API requests by resource and HTTP code.", ["resource", "code"],
            registry=r,
        )  # fmt: skip
        self.objects = Gauge("syncer_objects", "Objects in the last snapshot by kind.", ["kind"], registry=r)
        self.problems = Gauge("syncer_problems", "Current problems by kind of object.", ["kind"], registry=r)
        self.rendered = Gauge(
            "syncer_rendered", "What the last written model holds.", ["what"], registry=r
        )  # routes, backends, endpoints, certificates
        self.files_written = Counter("syncer_files_written_total", "Files replaced in the output folder.", registry=r)
        self.files_removed = Counter("syncer_files_removed_total", "Files removed from the output folder.", registry=r)
        self.removal_held = Gauge(
            "syncer_removal_guard_holding", "1 while the mass-removal guard holds back a model.", registry=r
        )
        self.removal_held_cycles = Counter(
            "syncer_removal_guard_held_cycles_total", "Cycles whose model the mass-removal guard held back.", registry=r
        )
        self.leader = Gauge("syncer_leader", "1 while this replica leads (writes Ingress status).", registry=r)
        self.status_writes = Counter(
            "syncer_status_writes_total", "Ingress status writes by outcome.", ["outcome"], registry=r
        )
        self.files_ever_written = False
        self.last_success_monotonic: float | None = None

    def count_api_request(self, resource: str, code: str) -> None:
        self.api_requests.labels(resource, code).inc()

    def cycle_succeeded(self, seconds: float) -> None:
        self.cycle_seconds.observe(seconds)
        self.last_success.set(time.time())
        self.last_success_monotonic = time.monotonic()

    def cycle_failed(self, reason: str, seconds: float) -> None:
        self.cycle_seconds.observe(seconds)
        self.cycle_failures.labels(reason).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class HealthServer:
    """/healthz: the process answers. /readyz: a cycle succeeded within `ready_window` seconds and the files
    were written at least once. /metrics: Prometheus text format. Runs in daemon threads."""

    def __init__(self, address: str, metrics: Metrics, ready_window: Callable[[], float]) -> None:
        host, _, port = address.rpartition(":")
        if not port.isdigit():
            raise ValueError(f"--metrics-address {address!r} must be HOST:PORT")
        self.metrics = metrics
        self.ready_window = ready_window
        self._server = ThreadingHTTPServer((host.strip("[]") or "0.0.0.0", int(port)), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="health", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()
        log.info("serving /healthz, /readyz and /metrics on port %d", self.port)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def is_ready(self) -> tuple[bool, str]:
        last = self.metrics.last_success_monotonic
        if not self.metrics.files_ever_written:
            return False, "no files written yet"
        if last is None or time.monotonic() - last > self.ready_window():
            return False, "no successful cycle recently"
        return True, "ok"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/healthz":
                    self._send(200, b"ok\n", "text/plain")
                elif path == "/readyz":
                    ready, why = server.is_ready()
                    self._send(200 if ready else 503, f"{why}\n".encode(), "text/plain")
                elif path == "/metrics":
                    self._send(200, server.metrics.exposition(), CONTENT_TYPE_LATEST)
                else:
                    self._send(404, b"not found\n", "text/plain")

            def _send(self, code: int, body: bytes, content_type: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # probes every few seconds would drown the operator's log

        return Handler
