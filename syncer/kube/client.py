"""The Kubernetes API client: retried LISTs, Ingress status PATCHes, Lease reads and writes. Network I/O; the only
module importing requests.

Everything `requests`/`urllib3` can raise is turned into the KubeError tree here (kopf's rule: the HTTP
library stays behind one module). Error messages and log lines name the resource, the URL path and the
server's Status message; never a token, a key, or a request header.
"""

from __future__ import annotations

import functools
import http.client
import json
import logging
import os
import random
import shutil
import ssl
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NoReturn

import requests
import urllib3
from requests.adapters import HTTPAdapter
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_before_delay,
)

from syncer import __version__, jsoncodec
from syncer.errors import (
    ConfigError,
    KubeBadResponse,
    KubeConflict,
    KubeError,
    KubeExpired,
    KubeForbidden,
    KubeNotFound,
    KubeRequestError,
    KubeUnauthorized,
    KubeUnavailable,
)
from syncer.kube.kubeconfig import ClusterConfig, Credential
from syncer.kube.resources import INGRESS, LEASE, ResourceKind, resolve_kind

log = logging.getLogger("syncer.kube.client")

Obj = dict[str, Any]
_ListKey = tuple[str, str, str | None, str, str]  # (group, plural, namespace, labelSelector, fieldSelector)

MERGE_PATCH = "application/merge-patch+json"  # the API server answers 415 to a plain application/json PATCH
INGRESS_STATUS_RESOURCE = "ingresses/status"  # how an RBAC rule names the subresource (group networking.k8s.io)
_PATCH_MAX_WAIT = 1.0  # seconds between status PATCH / Lease attempts, Retry-After included: nothing may wait long
JSON = "application/json"


@dataclass(frozen=True, slots=True)
class ListResult:
    """One consistent LIST: every item was read at `resource_version` (a cluster-wide revision, not a change marker)."""

    kind: ResourceKind
    items: tuple[Obj, ...]
    resource_version: str


@dataclass(frozen=True, slots=True)
class _Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class _Call:
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


class _Transient(Exception):
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


class _TooLargeResourceVersion(KubeUnavailable):
    """NotOlderThan kept answering 504 "Too large resource version": the list falls back to RV unset."""


class _ClusterAdapter(HTTPAdapter):
    """Pins TLS to one SSLContext: trust, client certificate and verify name come from the kubeconfig only.

    requests lets REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE replace a Session's `verify`, and a CA path that reaches
    urllib3 is *added* to the context (load_verify_locations). Both paths are cut here: the pool key always
    carries our context and the per-connection CA/cert attributes are cleared.
    """

    def __init__(self, context: ssl.SSLContext, server_hostname: str | None) -> None:
        self._context = context
        self._tls_kwargs: dict[str, Any] = {"ssl_context": context}
        if server_hostname:
            self._tls_kwargs["server_hostname"] = server_hostname  # SNI and the name the certificate must carry
        super().__init__(max_retries=0)  # tenacity retries; urllib3 must not retry behind its back

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any) -> None:
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs, **self._tls_kwargs)

    def build_connection_pool_key_attributes(
        self, request: requests.PreparedRequest, verify: object, cert: object = None
    ) -> tuple[Any, Any]:
        # Any: the pool kwargs carry server_hostname, which the requests stubs' TypedDict does not list.
        host_params, _ = super().build_connection_pool_key_attributes(request, True, None)
        return host_params, {**self._tls_kwargs, "cert_reqs": self._cert_reqs()}

    def cert_verify(self, conn: Any, url: str, verify: object, cert: object) -> None:
        conn.cert_reqs = self._cert_reqs()
        conn.ca_certs = conn.ca_cert_dir = None
        conn.cert_file = conn.key_file = None

    def _cert_reqs(self) -> str:
        return "CERT_NONE" if self._context.verify_mode == ssl.CERT_NONE else "CERT_REQUIRED"


def _load_cert_chain(context: ssl.SSLContext, cert_pem: bytes, key_pem: bytes) -> None:
    """ssl only loads client certificates from files: a private 0700 dir, 0600 files, deleted right after."""
    folder = tempfile.mkdtemp(prefix="syncer-tls-")  # mkdtemp creates it 0700
    try:
        paths = []
        for name, data in (("client.crt", cert_pem), ("client.key", key_pem)):
            path = os.path.join(folder, name)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            paths.append(path)
        context.load_cert_chain(paths[0], paths[1])
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@dataclass(frozen=True, slots=True)
class _Failure:
    status: int
    message: str  # scrubbed of credentials
    reason: str
    details: Obj

    @property
    def server_said(self) -> str:
        return f"; server said: {self.message}" if self.message else ""


def _status_of(reply: _Reply) -> tuple[str, str, Obj]:
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


def _transient(reply: _Reply, message: str, reason: str, details: Obj) -> _Transient:
    """A 429 or 5xx: worth retrying, after the Retry-After header or the Status's retryAfterSeconds if given."""
    hint = details.get("retryAfterSeconds")
    retry_after = _retry_after(reply.headers.get("Retry-After"))
    if retry_after is None and isinstance(hint, (int, float)) and not isinstance(hint, bool):
        retry_after = float(hint)
    causes = details.get("causes")
    causes = causes if isinstance(causes, list) else []
    too_large = (
        any(isinstance(c, dict) and c.get("reason") == "ResourceVersionTooLarge" for c in causes)
        or "Too large resource version" in message
    )
    server_said = f"; server said: {message}" if message else ""
    return _Transient(
        f"HTTP {reply.status} {reason or http.client.responses.get(reply.status, '')}".strip() + server_said,
        retry_after=retry_after,
        status=reply.status,
        too_large_rv=too_large,
    )


def _decode_json(reply: _Reply) -> Any:
    """The body of a 200, decoded; a body that is not JSON (a proxy's error page, a cut-off reply) is worth a retry."""
    try:
        return jsoncodec.loads(reply.body)
    except ValueError:
        ctype = reply.headers.get("Content-Type", "?")
        raise _Transient(
            f"response is not JSON (Content-Type {ctype}, {len(reply.body)} bytes)", bad_body=True
        ) from None


def _retry_after(value: str | None) -> float | None:
    try:
        seconds = float(value) if value else None
    except ValueError:
        return None  # an HTTP-date: the API server never sends one; plain backoff applies
    return seconds if seconds is not None and seconds >= 0 else None


def _exception_chain(exc: BaseException) -> Iterator[BaseException]:
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


def _describe_transport_error(exc: BaseException) -> str:
    chain = list(_exception_chain(exc))
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


def _is_certificate_error(exc: BaseException) -> bool:
    return any(
        isinstance(e, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(e)
        for e in _exception_chain(exc)
    )


class KubeClient:
    """LISTs watched resources from one API server, PATCHes Ingress status, reads and writes Leases.

    Not thread-safe: one per thread (the leader elector's thread gets its own, see `cluster`).
    """

    def __init__(
        self,
        cluster: ClusterConfig,
        *,
        page_size: int = 500,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        max_attempts: int = 5,
        patch_attempts: int = 2,  # for every single-object call: status PATCH, Lease get/create/update
        max_backoff: float = 30.0,
        backoff_base: float = 0.5,
        retry_after_cap: float = 32.0,
        max_elapsed: float = 120.0,
        max_restarts: int = 3,
        max_pages: int = 10_000,
        on_response: Callable[[str, str], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        user_agent: str = f"ingress-syncer/{__version__}",
    ) -> None:
        self._cluster = cluster
        self._server = cluster.server.rstrip("/")
        self._page_size = page_size
        self._timeout = (connect_timeout, read_timeout)
        self._max_attempts = max(1, max_attempts)
        self._patch_attempts = max(1, patch_attempts)
        self._max_backoff = max_backoff
        self._backoff_base = backoff_base
        self._retry_after_cap = retry_after_cap
        self._max_elapsed = max_elapsed
        self._max_restarts = max_restarts
        self._max_pages = max_pages
        self._on_response = on_response
        self._sleep = sleep
        self._last_rv: dict[_ListKey, str] = {}
        self._warnings_seen: set[str] = set()
        self._secrets: set[str] = set()  # credential strings scrubbed from any text we raise or log
        self._headers = {
            "User-Agent": user_agent,
            "Accept": "application/json",
            # The API server gzips only above 128 KiB; disable-compression trades bandwidth for CPU.
            "Accept-Encoding": "identity" if cluster.disable_compression else "gzip",
        }
        self._client_cert: tuple[bytes, bytes] | None = None
        # trust_env=False: no REQUESTS_CA_BUNDLE override of our CA, no ~/.netrc Authorization replacing the
        # bearer token. Proxies are then explicit: kubeconfig proxy-url, else HTTPS_PROXY/HTTP_PROXY/NO_PROXY read
        # once here (what client-go does with http.ProxyFromEnvironment).
        self._session = requests.Session()
        self._session.trust_env = False
        if cluster.proxy_url:
            self._proxies = {"http": cluster.proxy_url, "https": cluster.proxy_url}
        else:
            self._proxies = dict(requests.utils.get_environ_proxies(self._server))
        if self._proxies:
            log.info(
                "using a proxy for %s (%s)",
                self._server,
                "kubeconfig proxy-url" if cluster.proxy_url else "HTTPS_PROXY/HTTP_PROXY environment",
            )
        if cluster.insecure_skip_tls_verify:
            log.warning("TLS verification of %s is disabled (insecure-skip-tls-verify)", self._server)
        self._mount(self._build_context(None))

    # --- TLS -------------------------------------------------------------------------------------
    def _build_context(self, client_cert: tuple[bytes, bytes] | None) -> ssl.SSLContext:
        cluster = self._cluster
        try:
            if cluster.insecure_skip_tls_verify:
                context = ssl.create_default_context()
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            elif cluster.ca_pem:
                # Only the cluster CA, like client-go: the system store does not vouch for an API server.
                context = ssl.create_default_context(cadata=cluster.ca_pem.decode("ascii", "replace"))
            else:
                context = ssl.create_default_context()
        except (ssl.SSLError, ValueError) as exc:
            raise ConfigError(
                f"the certificate authority of {cluster.describe or self._server} is not valid PEM: {exc}"
            ) from None
        if client_cert is not None:
            try:
                _load_cert_chain(context, *client_cert)
            except (ssl.SSLError, OSError, ValueError) as exc:
                raise KubeRequestError(
                    f"the client certificate/key of {cluster.describe or self._server} could "
                    f"not be loaded ({type(exc).__name__}: {getattr(exc, 'reason', '') or 'bad PEM'}"
                    f"); check client-certificate-data/client-key-data"
                ) from None
        return context

    def _mount(self, context: ssl.SSLContext) -> None:
        adapter = _ClusterAdapter(context, self._cluster.tls_server_name)
        for prefix in ("https://", "http://"):
            old = self._session.adapters.get(prefix)
            self._session.mount(prefix, adapter)
            if old is not None and old is not adapter:
                old.close()

    def _use_credential(self, cred: Credential) -> dict[str, str]:
        """Headers for this credential; rebuilds the TLS context when an exec plugin rotated the client cert."""
        cert = (cred.client_cert_pem, cred.client_key_pem) if cred.client_cert_pem and cred.client_key_pem else None
        if cert != self._client_cert:
            self._mount(self._build_context(cert))
            self._client_cert = cert
        headers = dict(self._headers)
        if cred.token:
            self._secrets.add(cred.token)
            headers["Authorization"] = f"Bearer {cred.token}"
        return headers

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "<redacted>")
        return text

    # --- one HTTP request ------------------------------------------------------------------------
    @contextmanager
    def _quiet_insecure(self) -> Iterator[None]:
        # The operator chose insecure-skip-tls-verify and was warned once at start; not once per request.
        with warnings.catch_warnings():
            if self._cluster.insecure_skip_tls_verify:
                warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
            yield

    def _send(
        self,
        call: _Call,
        method: str,
        path: str,
        headers: Mapping[str, str],
        params: Mapping[str, str] | None = None,
        body: bytes | None = None,
    ) -> _Reply:
        url = self._server + path
        try:
            reply = self._request(call, method, url, headers, params, body)
        except (_Transient, KubeError):
            self._observe(call, "error")
            raise
        self._observe(call, str(reply.status))
        return reply

    def _observe(self, call: _Call, code: str) -> None:
        """Counts every request for the metrics: by resource and HTTP status (or "error" without one)."""
        if self._on_response is not None:
            self._on_response(call.resource, code)

    def _request(
        self,
        call: _Call,
        method: str,
        url: str,
        headers: Mapping[str, str],
        params: Mapping[str, str] | None,
        body: bytes | None,
    ) -> _Reply:
        try:
            with self._quiet_insecure():
                response = self._session.request(
                    method,
                    url,
                    params=params,
                    data=body,
                    headers=headers,
                    timeout=self._timeout,
                    proxies=self._proxies,
                    allow_redirects=False,
                )
                with response:
                    content = response.content  # reads the whole body: truncation and gzip errors surface here
            return _Reply(response.status_code, response.headers, content)
        except requests.exceptions.SSLError as exc:
            if _is_certificate_error(exc):
                # A wrong CA or name does not fix itself: fail now instead of retrying.
                raise KubeUnavailable(
                    f"TLS verification of {self._server} failed while {call.doing}: "
                    f"{self._scrub(_describe_tls_error(exc))}; check certificate-authority(-data) and "
                    f"tls-server-name in {self._cluster.describe or 'the cluster config'}",
                    resource=call.resource,
                ) from None
            raise _Transient(f"TLS error: {self._scrub(_describe_transport_error(exc))}") from None
        except requests.exceptions.InvalidHeader:
            # requests quotes the offending header value (the token) in its message: never pass it on.
            raise KubeRequestError(
                f"cannot {call.action}: the credential holds characters not allowed in an "
                "HTTP header (a stray newline in the token?)",
                resource=call.resource,
            ) from None
        except (
            requests.exceptions.InvalidURL,
            requests.exceptions.MissingSchema,
            requests.exceptions.InvalidSchema,
            requests.exceptions.InvalidProxyURL,
        ) as exc:
            raise KubeRequestError(
                f"cannot {call.action}: invalid API server or proxy URL ({type(exc).__name__})",
                resource=call.resource,
            ) from None
        except requests.exceptions.ConnectTimeout:
            raise _Transient(f"connect timed out after {self._timeout[0]}s") from None
        except requests.exceptions.ReadTimeout:
            raise _Transient(f"read timed out after {self._timeout[1]}s") from None
        except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError) as exc:
            raise _Transient(
                f"response body broken: {self._scrub(_describe_transport_error(exc))}", bad_body=True
            ) from None
        except (
            requests.exceptions.RequestException,
            urllib3.exceptions.HTTPError,
            http.client.HTTPException,
            OSError,
        ) as exc:
            raise _Transient(self._scrub(_describe_transport_error(exc))) from None

    def _send_authorized(
        self,
        call: _Call,
        method: str,
        path: str,
        refreshed: list[bool],
        params: Mapping[str, str] | None = None,
        body: bytes | None = None,
        content_type: str | None = None,
    ) -> _Reply:
        """One request with the current credential; on a 401, refreshes it once per call (retries included)."""

        def send() -> _Reply:
            headers = self._use_credential(self._cluster.credentials.current())
            if content_type:
                headers["Content-Type"] = content_type
            return self._send(call, method, path, headers, params, body)

        reply = send()
        if reply.status == 401 and not refreshed[0]:
            # Tokens rotate (projected service-account tokens, exec plugins): refresh once, like client-go.
            refreshed[0] = True
            log.info("401 Unauthorized %s; refreshing credentials and retrying once", call.doing)
            self._cluster.credentials.invalidate()
            reply = send()
        self._log_warnings(reply, call)
        return reply

    def _failure(self, call: _Call, reply: _Reply) -> _Failure:
        """What a refused request's Status says (scrubbed); a 401 is raised here, the same for every call."""
        message, reason, details = _status_of(reply)
        failure = _Failure(reply.status, self._scrub(message), reason, details)
        if reply.status == 401:
            raise KubeUnauthorized(
                f"unauthorized: the API server refused the credentials from "
                f"{self._cluster.describe or 'the cluster config'} for {call.action}, even after "
                f"refreshing them{failure.server_said}",
                resource=call.resource,
                status=reply.status,
            )
        return failure

    @staticmethod
    def _refused(call: _Call, reply: _Reply, failure: _Failure, what: str) -> NoReturn:
        """The end of every error mapping: 429 and 5xx are worth a retry, anything else is final."""
        if reply.status == 429 or reply.status >= 500:
            raise _transient(reply, failure.message, failure.reason, failure.details)
        raise KubeRequestError(
            f"{what} refused: HTTP {reply.status} {failure.reason}".rstrip() + failure.server_said,
            resource=call.resource,
            status=reply.status,
        )

    def _get_once(
        self, path: str, params: Mapping[str, str], kind: ResourceKind, namespace: str | None, refreshed: list[bool]
    ) -> Obj:
        resource = kind.rbac_resource
        call = _Call("list", resource, resource)
        reply = self._send_authorized(call, "GET", path, refreshed, params)
        if reply.status == 200:
            return self._parse_list(reply)
        failure = self._failure(call, reply)
        server_said, reason, status = failure.server_said, failure.reason, reply.status
        scope = f'namespace "{namespace}"' if namespace and kind.namespaced else "cluster-wide"
        if status == 403:
            group = f'API group "{kind.group}"' if kind.group else 'the core API group ("")'
            raise KubeForbidden(
                f'forbidden: cannot list {resource} ({scope}): grant verb "list" on resource '
                f'"{kind.plural}" in {group}{server_said}',
                resource=resource,
                verb="list",
                status=status,
            )
        if status == 404:
            raise KubeNotFound(
                f"not found: {resource} is not served at {path} (is API version "
                f"{kind.api_version} enabled on this cluster?){server_said}",
                resource=resource,
                status=status,
            )
        if status == 410:
            raise KubeExpired(
                f"expired: list of {resource} ({reason or 'Gone'}){server_said}", resource=resource, status=status
            )
        self._refused(call, reply, failure, f"list {resource}")

    def _parse_list(self, reply: _Reply) -> Obj:
        body = _decode_json(reply)
        meta = body.get("metadata") if isinstance(body, dict) else None
        items = body.get("items") if isinstance(body, dict) else None
        if items is None and isinstance(body, dict):
            items = []  # Go encodes an empty slice as null
        if (
            not isinstance(meta, dict)
            or not isinstance(items, list)
            or not all(isinstance(i, dict) for i in items)
            or not isinstance(meta.get("resourceVersion", ""), str)
            or not isinstance(meta.get("continue", ""), str)
        ):
            raise _Transient("response is JSON but not a list (no metadata/items)", bad_body=True)
        return {"metadata": meta, "items": items}

    def _log_warnings(self, reply: _Reply, call: _Call) -> None:
        text = reply.headers.get("Warning")
        if text and text not in self._warnings_seen:
            self._warnings_seen.add(text)
            log.warning("API server warning while %s: %s", call.doing, self._scrub(text))

    def _wait(self, state: RetryCallState, *, retry_after_cap: float, max_backoff: float) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, _Transient) and exc.retry_after is not None:
            # APF computes Retry-After per priority level (1-32 s); a little jitter spreads the herd.
            return min(exc.retry_after, retry_after_cap) + random.uniform(0, self._backoff_base)
        window = min(max_backoff, self._backoff_base * 2.0 ** (state.attempt_number - 1))
        return window / 2 + random.uniform(0, window / 2)  # "equal jitter": never zero, never in lockstep

    def _retrying(self, call: _Call, path: str, attempts: int, retry_after_cap: float, max_backoff: float) -> Retrying:
        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome is not None else None
            wait = state.next_action.sleep if state.next_action is not None else 0.0
            log.warning(
                "%s at %s: %s; retry %d/%d in %.2fs", call.action, path, exc, state.attempt_number + 1, attempts, wait
            )

        return Retrying(
            stop=stop_after_attempt(attempts) | stop_before_delay(self._max_elapsed),
            wait=functools.partial(self._wait, retry_after_cap=retry_after_cap, max_backoff=max_backoff),
            retry=retry_if_exception_type(_Transient),
            sleep=self._sleep,
            before_sleep=before_sleep,
            reraise=True,
        )

    def _give_up(self, call: _Call, path: str, exc: _Transient, retrying: Retrying, started: float) -> KubeError:
        attempts = retrying.statistics.get("attempt_number", 1)
        text = (
            f"{call.action} at {self._server}{path} failed after {attempts} attempt(s) in "
            f"{time.monotonic() - started:.1f}s; last failure: {exc.reason}"
        )
        log.warning("giving up: %s", text)
        if exc.bad_body:
            return KubeBadResponse(f"bad response: {text}", resource=call.resource, status=exc.status)
        error = _TooLargeResourceVersion if exc.too_large_rv else KubeUnavailable
        return error(f"API server unavailable: {text}", resource=call.resource, status=exc.status)

    def _get(self, path: str, params: Mapping[str, str], kind: ResourceKind, namespace: str | None) -> Obj:
        call = _Call("list", kind.rbac_resource, kind.rbac_resource)
        refreshed = [False]  # the 401 refresh happens once per request, retries included
        retrying = self._retrying(call, path, self._max_attempts, self._retry_after_cap, self._max_backoff)
        started = time.monotonic()
        try:
            return retrying(self._get_once, path, params, kind, namespace, refreshed)
        except _Transient as exc:
            raise self._give_up(call, path, exc, retrying, started) from None

    # --- PATCH status ----------------------------------------------------------------------------
    def patch_ingress_status(
        self, namespace: str, name: str, load_balancer_ingress: list[dict[str, str]] | None
    ) -> None:
        """Sets `status.loadBalancer.ingress` of one Ingress (None clears it) through its status subresource.

        A JSON merge patch replaces the list wholesale and touches nothing else; on `/status` the API server
        ignores any spec in it. Needs verb "patch" on "ingresses/status". The same patch twice is harmless, so
        a 429/5xx or a dropped connection is retried, but only `patch_attempts` times with short waits: a
        status write must never hold a sync cycle up for long. Raises KubeForbidden (RBAC), KubeNotFound (the
        Ingress is gone), KubeRequestError (409/415/422, with the server's message), KubeUnavailable.
        """
        path = INGRESS.object_path(namespace, name, "status")
        call = _Call("patch", INGRESS_STATUS_RESOURCE, f"the status of Ingress {namespace}/{name}")
        patch = {"status": {"loadBalancer": {"ingress": load_balancer_ingress}}}
        body = json.dumps(patch, sort_keys=True, separators=(",", ":")).encode()
        refreshed = [False]
        retrying = self._short_retrying(call, path)
        started = time.monotonic()
        try:
            retrying(self._patch_once, call, path, namespace, name, body, refreshed)
        except _Transient as exc:
            raise self._give_up(call, path, exc, retrying, started) from None

    def _short_retrying(self, call: _Call, path: str) -> Retrying:
        """Retries of a single-object call: `patch_attempts` tries, never more than _PATCH_MAX_WAIT apart."""
        return self._retrying(
            call,
            path,
            self._patch_attempts,
            min(self._retry_after_cap, _PATCH_MAX_WAIT),
            min(self._max_backoff, _PATCH_MAX_WAIT),
        )

    def _patch_once(
        self, call: _Call, path: str, namespace: str, name: str, body: bytes, refreshed: list[bool]
    ) -> None:
        reply = self._send_authorized(call, "PATCH", path, refreshed, body=body, content_type=MERGE_PATCH)
        if 200 <= reply.status < 300:
            return
        failure = self._failure(call, reply)
        server_said, status = failure.server_said, reply.status
        if status == 403:
            raise KubeForbidden(
                f'forbidden: cannot {call.action}: grant verb "patch" on resource "{INGRESS_STATUS_RESOURCE}" '
                f'in API group "{INGRESS.group}" (namespace "{namespace}" or cluster-wide){server_said}',
                resource=call.resource,
                verb="patch",
                status=status,
            )
        if status == 404:
            raise KubeNotFound(
                f"not found: Ingress {namespace}/{name} (deleted since it was listed?){server_said}",
                resource=call.resource,
                status=status,
            )
        self._refused(call, reply, failure, call.action)

    # --- Leases (leader election) ----------------------------------------------------------------
    def get_lease(self, namespace: str, name: str) -> Obj | None:
        """The Lease `namespace/name`, or None when there is none (404). Needs verb "get" on leases.

        Like every Lease call: retried briefly (`patch_attempts`, waits capped at 1 s), since an elector
        that waits long misses its renew deadline anyway. Raises KubeForbidden, KubeUnavailable, ...
        """
        call = _Call("get", LEASE.rbac_resource, f"Lease {namespace}/{name}")
        return self._lease_call(call, "GET", LEASE.object_path(namespace, name), namespace, None)

    def create_lease(self, namespace: str, body: Obj) -> Obj:
        """POSTs a new Lease (`body` names it) and returns it as stored, with its resourceVersion.

        Needs verb "create" on leases. A Lease of that name already there is a KubeConflict (reason
        AlreadyExists): another candidate created it first.
        """
        name = str((body.get("metadata") or {}).get("name", ""))
        call = _Call("create", LEASE.rbac_resource, f"Lease {namespace}/{name}")
        lease = self._lease_call(call, "POST", LEASE.list_path(namespace), namespace, body)
        assert lease is not None  # only a GET answers None
        return lease

    def update_lease(self, namespace: str, name: str, body: Obj) -> Obj:
        """PUTs the whole Lease; `body` must carry the metadata.resourceVersion it was read at.

        Needs verb "update" on leases. A Lease written since that version is a KubeConflict (reason
        Conflict): someone else wrote it first, read it again. Returns the Lease as stored.
        """
        call = _Call("update", LEASE.rbac_resource, f"Lease {namespace}/{name}")
        lease = self._lease_call(call, "PUT", LEASE.object_path(namespace, name), namespace, body)
        assert lease is not None  # only a GET answers None
        return lease

    def _lease_call(self, call: _Call, method: str, path: str, namespace: str, body: Obj | None) -> Obj | None:
        data = None if body is None else json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        refreshed = [False]
        retrying = self._short_retrying(call, path)
        started = time.monotonic()
        try:
            result: Obj | None = retrying(self._object_once, call, LEASE, method, path, namespace, data, refreshed)
        except _Transient as exc:
            raise self._give_up(call, path, exc, retrying, started) from None
        return result

    def _object_once(
        self,
        call: _Call,
        kind: ResourceKind,
        method: str,
        path: str,
        namespace: str,
        body: bytes | None,
        refreshed: list[bool],
    ) -> Obj | None:
        """One GET/POST/PUT of a single object: the object answered, or None for a GET's 404."""
        content_type = JSON if body is not None else None
        reply = self._send_authorized(call, method, path, refreshed, body=body, content_type=content_type)
        if 200 <= reply.status < 300:
            return self._parse_object(reply, kind)
        failure = self._failure(call, reply)
        server_said, reason, status = failure.server_said, failure.reason, reply.status
        if status == 403:
            group = f'API group "{kind.group}"' if kind.group else 'the core API group ("")'
            raise KubeForbidden(
                f'forbidden: cannot {call.action}: grant verb "{call.verb}" on resource "{kind.plural}" in '
                f'{group} (namespace "{namespace}"){server_said}',
                resource=call.resource,
                verb=call.verb,
                status=status,
            )
        if status == 404:
            if method == "GET":
                return None
            raise KubeNotFound(f"not found: cannot {call.action}{server_said}", resource=call.resource, status=status)
        if status == 409:
            raise KubeConflict(
                f"conflict: cannot {call.action}: HTTP 409 {reason}".rstrip() + server_said,
                resource=call.resource,
                reason=reason,
                status=status,
            )
        self._refused(call, reply, failure, call.action)

    def _parse_object(self, reply: _Reply, kind: ResourceKind) -> Obj:
        body = _decode_json(reply)
        meta = body.get("metadata") if isinstance(body, dict) else None
        if not isinstance(meta, dict) or not isinstance(meta.get("resourceVersion", ""), str):
            raise _Transient(f"response is JSON but not a {kind.kind} (no metadata)", bad_body=True)
        return dict(body)

    # --- LIST ------------------------------------------------------------------------------------
    def list(
        self,
        kind: str | ResourceKind,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> ListResult:
        """All items of `kind` (cluster-wide, or in `namespace`) matching the selectors, from one revision.

        Which revision: the first list of a (resource, namespace, selectors) key leaves resourceVersion unset,
        the most recent state, served paginated. Later lists of the same key send
        `resourceVersionMatch=NotOlderThan&resourceVersion=<RV of the last list of that key>`: the API server
        answers from its watch cache (cheap, unlike a quorum read of etcd) and never with anything older than
        what we already saw, so a diff against the previous snapshot cannot see phantom deletes. RV=0 would be
        as cheap but may go back in time (another apiserver, a stale cache) and ignores `limit`.
        A 410 (continue token or RV too old) restarts the whole list with RV unset; collected pages are
        dropped, never spliced with pages from another revision.
        """
        rk = resolve_kind(kind)
        ns = namespace if rk.namespaced else None
        fields = ",".join(s for s in (rk.field_selector, field_selector) if s)
        key: _ListKey = (rk.group, rk.plural, ns, label_selector or "", fields)
        params = {"labelSelector": label_selector or "", "fieldSelector": fields}
        params = {k: v for k, v in params.items() if v}
        if self._page_size > 0:
            params["limit"] = str(self._page_size)
        since = self._last_rv.get(key)
        last: KubeError | None = None
        for restart in range(max(0, self._max_restarts) + 1):
            try:
                result = self._list_pages(rk, ns, params, since)
            except KubeExpired as exc:
                log.warning(
                    "list %s: %s; restarting the list from scratch (%d/%d)",
                    rk.rbac_resource,
                    exc,
                    restart + 1,
                    self._max_restarts,
                )
                last = exc
            except _TooLargeResourceVersion as exc:
                if since is None:  # nothing to fall back from: a plain outage
                    raise KubeUnavailable(str(exc), resource=exc.resource, status=exc.status) from None
                # The cluster's revision went backwards (etcd restored from backup?) or this apiserver's cache
                # is stuck behind: what we saw last is no longer a usable lower bound.
                log.warning("list %s: %s; listing with resourceVersion unset instead", rk.rbac_resource, exc)
                last = exc
            else:
                self._last_rv[key] = result.resource_version
                return result
            since = None
        raise KubeExpired(
            f"list {rk.rbac_resource} could not complete: {self._max_restarts + 1} tries in a row "
            f"expired or were refused (last: {last}); the collection may be too large to page "
            f"through before continue tokens expire, try a bigger page size",
            resource=rk.rbac_resource,
            status=last.status if last else None,
        )

    def _list_pages(
        self, kind: ResourceKind, namespace: str | None, params: Mapping[str, str], since: str | None
    ) -> ListResult:
        path = kind.list_path(namespace)
        first = dict(params)
        if since:
            first.update(resourceVersionMatch="NotOlderThan", resourceVersion=since)
        items: list[Obj] = []
        list_rv: str | None = None
        page_params = first
        tokens_seen: set[str] = set()
        for _ in range(self._max_pages):
            page = self._get(path, page_params, kind, namespace)
            for item in page["items"]:
                # Server-side apply bookkeeping: often a third of an object, read by no part of the syncer. Dropped
                # as each page arrives (as client-go users do with an informer transform), it never adds up.
                metadata = item.get("metadata")
                if type(metadata) is dict:
                    metadata.pop("managedFields", None)
            items.extend(page["items"])
            meta = page["metadata"]
            if list_rv is None:
                list_rv = str(meta.get("resourceVersion", ""))
            token = meta.get("continue") or ""
            if not token:  # only `continue` says "more": pages may be short or empty with selectors
                return ListResult(kind, tuple(items), list_rv)
            if token in tokens_seen:
                raise KubeBadResponse(
                    f"bad response: list {kind.rbac_resource} at {path} returned the same continue token twice",
                    resource=kind.rbac_resource,
                )
            tokens_seen.add(token)
            # Continuation pages repeat the query except resourceVersion(Match): the token pins the revision,
            # and the API server refuses both together (400/422), as client-go's pager knows.
            page_params = {**params, "continue": token}
        raise KubeBadResponse(
            f"bad response: list {kind.rbac_resource} at {path} did not end after {self._max_pages} pages",
            resource=kind.rbac_resource,
        )

    # --- lifecycle -------------------------------------------------------------------------------
    @property
    def cluster(self) -> ClusterConfig:
        """The cluster this client talks to: a second KubeClient for another thread is built from it."""
        return self._cluster

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> KubeClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _describe_tls_error(exc: BaseException) -> str:
    for error in _exception_chain(exc):
        if isinstance(error, ssl.SSLCertVerificationError):
            return f"{error.verify_message or error.reason} (certificate verify failed)"
    return _describe_transport_error(exc)
