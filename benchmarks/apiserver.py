"""The fake Kubernetes API in a process of its own, loaded with a synthetic cluster. Loopback and pipe I/O.

Run as a script (`python benchmarks/apiserver.py --ingresses N`) it serves `tests.fakeapi.FakeKubeAPI` on
127.0.0.1 (plain HTTP, bearer token, 500-item pages as the client asks), prints one JSON line
`{"url": ..., "token": ...}` and then answers JSON commands, one a line, on stdin:

    {"op": "stats"}                                     -> {"requests": n, "bytes": b} (responses, on the wire)
    {"op": "set_path", "index": i, "path": p, "service": s}  -> Ingress i's second path is p, to Service s
    {"op": "set_endpoints", "index": i, "addresses": [...], "port": p}  -> EndpointSlice i's endpoints
    {"op": "quit"}

It stops on `quit`, at the end of stdin (its parent died) or after `--max-seconds`, whichever comes first.
A process of its own so that its CPU (JSON encoding, gzip) is never counted as the client's. `ApiServer` is
the parent's handle on it.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.cluster import generate, with_endpoints, with_path  # noqa: E402
from tests.fakeapi import TEST_TOKEN, FakeKubeAPI  # noqa: E402

_STARTUP_TIMEOUT = 600.0  # generating and loading 10,000 of each kind takes seconds; this only bounds a hang
_COMMAND_TIMEOUT = 60.0


class _CountingWriter:
    """Wraps a handler's `wfile`: counts every byte of every response (headers, gzipped bodies) it sends."""

    def __init__(self, inner: Any, api: CountingKubeAPI) -> None:
        self._inner = inner
        self._api = api

    def write(self, data: bytes) -> int:
        written: int = self._inner.write(data)
        self._api.count_bytes(len(data))
        return written

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class CountingKubeAPI(FakeKubeAPI):
    """FakeKubeAPI that also counts the bytes it sends (its own log counts the requests)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.bytes_sent = 0
        self._bytes_lock = threading.Lock()

    def count_bytes(self, count: int) -> None:
        with self._bytes_lock:
            self.bytes_sent += count

    def start(self) -> CountingKubeAPI:
        super().start()
        server = self._server
        assert server is not None
        # Swapped before anyone knows the port: every connection gets the counting handler.
        base: type[BaseHTTPRequestHandler] = server.RequestHandlerClass  # type: ignore[assignment]
        api = self

        class CountingHandler(base):  # type: ignore[valid-type,misc]
            def setup(self) -> None:
                super().setup()
                self.wfile = _CountingWriter(self.wfile, api)  # type: ignore[has-type]

        server.RequestHandlerClass = CountingHandler
        return self


def serve(count: int, max_seconds: float, commands: IO[str], replies: IO[str]) -> int:
    cluster = generate(count)
    api = CountingKubeAPI(tokens=[TEST_TOKEN])
    api.start()
    try:
        api.replace_all(dict(cluster.by_kind()))  # type: ignore[arg-type]
        watchdog = threading.Timer(max_seconds, lambda: os._exit(3))  # a forgotten server never outlives its run
        watchdog.daemon = True
        watchdog.start()
        _reply(
            replies, {"url": api.url, "token": TEST_TOKEN, "objects": {k: len(v) for k, v in cluster.by_kind().items()}}
        )
        for line in commands:
            command = json.loads(line)
            op = command.get("op")
            if op == "quit":
                _reply(replies, {"ok": True})
                break
            if op == "stats":
                with api._lock:
                    requests = len(api.requests)
                _reply(replies, {"requests": requests, "bytes": api.bytes_sent})
            elif op == "set_path":
                index = int(command["index"])
                changed = with_path(cluster.ingresses[index], str(command["path"]), command.get("service"))
                api.add("Ingress", changed)
                _reply(replies, {"revision": api.revision})
            elif op == "set_endpoints":
                index = int(command["index"])
                changed = with_endpoints(
                    cluster.endpoint_slices[index], list(command["addresses"]), command.get("port")
                )
                api.add("EndpointSlice", changed)
                _reply(replies, {"revision": api.revision})
            else:
                _reply(replies, {"error": f"unknown op {op!r}"})
    finally:
        api.close()
    return 0


def _reply(out: IO[str], message: dict[str, Any]) -> None:
    out.write(json.dumps(message) + "\n")
    out.flush()


class ApiServer:
    """The parent's handle: starts the server process, sends commands, stops it. Every wait is bounded."""

    def __init__(self, count: int, log_path: Path, *, max_seconds: float = 4 * 3600) -> None:
        self.count = count
        self._log = open(log_path, "w", encoding="utf-8")
        self._process = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "--ingresses",
                str(count),
                "--max-seconds",
                str(max_seconds),
            ],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        self._lines: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        try:
            hello = self._next(_STARTUP_TIMEOUT)
        except BaseException:
            self.stop()
            raise
        self.url: str = hello["url"]
        self.token: str = hello["token"]
        self.objects: dict[str, int] = hello["objects"]

    @property
    def pid(self) -> int:
        return self._process.pid

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            self._lines.put(line)

    def _next(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=0.2)
                break
            except queue.Empty:
                if self._process.poll() is not None:
                    raise RuntimeError(f"the API server exited with code {self._process.returncode}") from None
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the API server did not answer within {timeout:g}s") from None
        message: dict[str, Any] = json.loads(line)
        if "error" in message:
            raise RuntimeError(f"the API server refused a command: {message['error']}")
        return message

    def call(self, op: str, **arguments: Any) -> dict[str, Any]:
        assert self._process.stdin is not None
        self._process.stdin.write(json.dumps({"op": op, **arguments}) + "\n")
        self._process.stdin.flush()
        return self._next(_COMMAND_TIMEOUT)

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the server process has used so far, from /proc (0.0 where there is none)."""
        try:
            fields = Path(f"/proc/{self._process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime

    def stats(self) -> tuple[int, int]:
        """(requests served, response bytes sent) so far."""
        reply = self.call("stats")
        return int(reply["requests"]), int(reply["bytes"])

    def stop(self) -> None:
        if self._process.poll() is None:
            try:
                self.call("quit")
            except (OSError, RuntimeError, TimeoutError, ValueError):
                pass
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=10)
        for stream in (self._process.stdin, self._process.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        self._log.close()

    def __enter__(self) -> ApiServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--ingresses", type=int, required=True, help="N: Ingresses, Services and EndpointSlices")
    parser.add_argument("--max-seconds", type=float, default=4 * 3600, help="exit after this long, whatever happens")
    args = parser.parse_args(argv)
    return serve(args.ingresses, args.max_seconds, sys.stdin, sys.stdout)


if __name__ == "__main__":
    sys.exit(main())
