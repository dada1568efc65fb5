"""What a request is and what its reply means: the call description, Status bodies, transient failures, and
transport errors described without secrets. No I/O."""

from __future__ import annotations

import http.client
import ssl
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import urllib3

from syncer import jsoncodec
from syncer.errors import KubeUnavailable

Obj = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class Call:
    """What a request does, for errors and log lines: verb, the resource an RBAC rule names, the target."""

    verb: str  # "list", "patch", "get", "create", "update"
    resource: str  # KubeError.resource: `ingresses.networking.k8s.io`, `ingresses/status`
    target: str  # what messages name: `ingresses.networking.k8s.io`, `the status of Ingress default/web`

    @property
    def action(self) -> str:
        return f"{self.verb} {self.target}"

    @property
    def doing(self) -> str:
        stem = "gett" if self.verb == "get" else self.verb.removesuffix("e")  # getting, creating, updating
        return f"{stem}ing {self.target}"


class Transient(Exception):
    """A failure worth retrying; becomes KubeUnavailable (or KubeBadResponse) when the attempts run out."""

    def __init__(
        self,
        reason: str,
        *,
        retry_after: float | None = None,
        status: int | None = None,
        bad_body: bool = False,
        too_large_rv: bool = False,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.status = status
        self.bad_body = bad_body
        self.too_large_rv = too_large_rv


class TooLargeResourceVersion(KubeUnavailable):
    """NotOlderThan kept answering 504 "Too large resource version": the list falls back to RV unset."""


@dataclass(frozen=True, slots=True)
class Failure:
    status: int
    message: str  # scrubbed of credentials
    reason: str
    details: Obj

    @property
    def server_said(self) -> str:
        return f"; server said: {self.message}" if self.message else ""


def status_of(reply: Reply) -> tuple[str, str, Obj]:
    """(message, reason, details) of a Status body; plain-text bodies (APF 429s, proxies) give their first line."""
    try:
        body = jsoncodec.loads(reply.body)
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("kind") == "Status":
        details = body.get("details")
        return str(body.get("message", "")), str(body.get("reason", "")), details if isinstance(details, dict) else {}
    text = reply.body.decode("utf-8", "replace").strip().splitlines()
    return (text[0][:200] if text else ""), "", {}


def transient_failure(reply: Reply, message: str, reason: str, details: Obj) -> Transient:
    """A 429 or 5xx: worth retrying, after the Retry-After header or the Status's retryAfterSeconds if given."""
    hint = details.get("retryAfterSeconds")
    retry_after = parse_retry_after(reply.headers.get("Retry-After"))
    if retry_after is None and isinstance(hint, (int, float)) and not isinstance(hint, bool):
        retry_after = float(hint)
    causes = details.get("causes")
    causes = causes if isinstance(causes, list) else []
    too_large = (
        any(isinstance(c, dict) and c.get("reason") == "ResourceVersionTooLarge" for c in causes)
        or "Too large resource version" in message
    )
    server_said = f"; server said: {message}" if message else ""
    return Transient(
        f"HTTP {reply.status} {reason or http.client.responses.get(reply.status, '')}".strip() + server_said,
        retry_after=retry_after,
        status=reply.status,
        too_large_rv=too_large,
    )


def decode_json(reply: Reply) -> Any:
    """The body of a 200, decoded; a body that is not JSON (a proxy's error page, a cut-off reply) is worth a retry."""
    try:
        return jsoncodec.loads(reply.body)
    except ValueError:
        ctype = reply.headers.get("Content-Type", "?")
        raise Transient(
            f"response is not JSON (Content-Type {ctype}, {len(reply.body)} bytes)", bad_body=True
        ) from None


def parse_retry_after(value: str | None) -> float | None:
    try:
        seconds = float(value) if value else None
    except ValueError:
        return None  # an HTTP-date: the API server never sends one; plain backoff applies
    return seconds if seconds is not None and seconds >= 0 else None


def exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception and what it wraps (urllib3 nests reasons in args and `.reason`), bounded."""
    seen: list[BaseException] = []
    todo = [exc]
    while todo and len(seen) < 20:
        current = todo.pop(0)
        if any(current is s for s in seen):
            continue
        seen.append(current)
        yield current
        nested = [current.__cause__, current.__context__, getattr(current, "reason", None), *current.args]
        todo.extend(n for n in nested if isinstance(n, BaseException))


def describe_transport_error(exc: BaseException) -> str:
    chain = list(exception_chain(exc))
    checks: tuple[tuple[type[BaseException], str], ...] = (
        (ConnectionRefusedError, "connection refused"),
        (ConnectionResetError, "connection reset by peer"),
        (http.client.RemoteDisconnected, "server closed the connection without a response"),
        (urllib3.exceptions.NameResolutionError, "host name could not be resolved"),
        (urllib3.exceptions.ReadTimeoutError, "read timed out"),
        (urllib3.exceptions.ConnectTimeoutError, "connect timed out"),
        (http.client.IncompleteRead, "response body cut short"),
        (urllib3.exceptions.ProxyError, "proxy failed"),
    )
    for kind, text in checks:
        if any(isinstance(e, kind) for e in chain):
            return text
    root = chain[-1]
    return f"{type(root).__name__}: {str(root)[:200]}"


def is_certificate_error(exc: BaseException) -> bool:
    return any(
        isinstance(e, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(e)
        for e in exception_chain(exc)
    )


def describe_tls_error(exc: BaseException) -> str:
    for error in exception_chain(exc):
        if isinstance(error, ssl.SSLCertVerificationError):
            return f"{error.verify_message or error.reason} (certificate verify failed)"
    return describe_transport_error(exc)
