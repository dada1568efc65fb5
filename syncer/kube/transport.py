"""One API server connection: the session, TLS and credentials, one request with its 401 refresh, retries with
backoff, and the translation of every `requests`/`urllib3` failure into the KubeError tree. Network I/O.

Error messages and log lines name the resource, the URL path and the server's Status message; never a token,
a key, or a request header (every credential string is scrubbed from what is raised or logged).
"""

from __future__ import annotations

import functools
import http.client
import logging
import random
import ssl
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import NoReturn, TypeVar

import requests
import urllib3
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt, stop_before_delay
from tenacity.stop import stop_base

from syncer import __version__
from syncer.deadline import Deadline
from syncer.errors import (
    KubeBadResponse,
    KubeDeadlineExceeded,
    KubeError,
    KubeRequestError,
    KubeUnauthorized,
    KubeUnavailable,
)
from syncer.kube.kubeconfig import ClusterConfig, Credential
from syncer.kube.replies import (
    Call,
    Failure,
    Reply,
    TooLargeResourceVersion,
    Transient,
    describe_tls_error,
    describe_transport_error,
    is_certificate_error,
    status_of,
    transient_failure,
)
from syncer.kube.tls import ClusterAdapter, build_ssl_context

log = logging.getLogger("syncer.kube.client")

SHORT_MAX_WAIT = 1.0  # seconds between single-object attempts (status, Lease), Retry-After included
T = TypeVar("T")


class _StopAtDeadline(stop_base):
    """Stops retrying when the next pause would end at or past the deadline (no sleeping past it); remembers it."""

    def __init__(self, deadline: Deadline) -> None:
        self.deadline = deadline
        self.hit = False

    def __call__(self, retry_state: RetryCallState) -> bool:
        self.hit = retry_state.upcoming_sleep >= self.deadline.remaining()
        return self.hit


class Transport:
    """Sends requests to one API server with one credential source; the list and write calls build on it.

    Not thread-safe: one per thread (the leader elector's thread gets a client of its own).
    """

    def __init__(
        self,
        cluster: ClusterConfig,
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        max_backoff: float = 30.0,
        backoff_base: float = 0.5,
        retry_after_cap: float = 32.0,
        max_elapsed: float = 120.0,
        on_response: Callable[[str, str], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        user_agent: str = f"ingress-syncer/{__version__}",
    ) -> None:
        self._cluster = cluster
        self._server = cluster.server.rstrip("/")
        self._timeout = (connect_timeout, read_timeout)
        self._max_backoff = max_backoff
        self._backoff_base = backoff_base
        self._retry_after_cap = retry_after_cap
        self._max_elapsed = max_elapsed
        self._on_response = on_response
        self._sleep = sleep
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
        self._mount(build_ssl_context(cluster, None))

    def _mount(self, context: ssl.SSLContext) -> None:
        adapter = ClusterAdapter(context, self._cluster.tls_server_name)
        for prefix in ("https://", "http://"):
            old = self._session.adapters.get(prefix)
            self._session.mount(prefix, adapter)
            if old is not None and old is not adapter:
                old.close()

    def _use_credential(self, cred: Credential) -> dict[str, str]:
        """Headers for this credential; rebuilds the TLS context when an exec plugin rotated the client cert."""
        cert = (cred.client_cert_pem, cred.client_key_pem) if cred.client_cert_pem and cred.client_key_pem else None
        if cert != self._client_cert:
            self._mount(build_ssl_context(self._cluster, cert))
            self._client_cert = cert
        headers = dict(self._headers)
        if cred.token:
            self._secrets.add(cred.token)
            headers["Authorization"] = f"Bearer {cred.token}"
        return headers

    def scrub(self, text: str) -> str:
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
        call: Call,
        method: str,
        path: str,
        headers: Mapping[str, str],
        params: Mapping[str, str] | None = None,
        body: bytes | None = None,
        deadline: Deadline | None = None,
    ) -> Reply:
        url = self._server + path
        try:
            reply = self._request(call, method, url, headers, params, body, deadline)
        except (Transient, KubeError) as exc:
            self._observe(call, "error")
            if isinstance(exc, Transient) and deadline is not None and deadline.expired():
                # A timeout the deadline capped (or any failure past it): no retry could help.
                raise KubeDeadlineExceeded(
                    f"{deadline} passed while {call.doing} ({method} {path}): {exc.reason}", resource=call.resource
                ) from None
            raise
        self._observe(call, str(reply.status))
        return reply

    def _observe(self, call: Call, code: str) -> None:
        """Counts every request for the metrics: by resource and HTTP status (or "error" without one)."""
        if self._on_response is not None:
            self._on_response(call.resource, code)

    def _request(
        self,
        call: Call,
        method: str,
        url: str,
        headers: Mapping[str, str],
        params: Mapping[str, str] | None,
        body: bytes | None,
        deadline: Deadline | None,
    ) -> Reply:
        timeout = self._timeout
        if deadline is not None:
            # Each socket wait (connect, and every read) ends by the deadline; a server trickling bytes slower
            # than that could still stretch one request, which the next request's check then stops.
            left = deadline.remaining()
            if left <= 0:
                raise KubeDeadlineExceeded(f"{deadline} passed before {call.doing}", resource=call.resource)
            timeout = (min(timeout[0], left), min(timeout[1], left))
        try:
            with self._quiet_insecure():
                response = self._session.request(
                    method,
                    url,
                    params=params,
                    data=body,
                    headers=headers,
                    timeout=timeout,
                    proxies=self._proxies,
                    allow_redirects=False,
                )
                with response:
                    content = response.content  # reads the whole body: truncation and gzip errors surface here
            return Reply(response.status_code, response.headers, content)
        except requests.exceptions.SSLError as exc:
            if is_certificate_error(exc):
                # A wrong CA or name does not fix itself: fail now instead of retrying.
                raise KubeUnavailable(
                    f"TLS verification of {self._server} failed while {call.doing}: "
                    f"{self.scrub(describe_tls_error(exc))}; check certificate-authority(-data) and "
                    f"tls-server-name in {self._cluster.describe or 'the cluster config'}",
                    resource=call.resource,
                ) from None
            raise Transient(f"TLS error: {self.scrub(describe_transport_error(exc))}") from None
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
            raise Transient(f"connect timed out after {timeout[0]:.3g}s") from None
        except requests.exceptions.ReadTimeout:
            raise Transient(f"read timed out after {timeout[1]:.3g}s") from None
        except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError) as exc:
            raise Transient(
                f"response body broken: {self.scrub(describe_transport_error(exc))}", bad_body=True
            ) from None
        except (
            requests.exceptions.RequestException,
            urllib3.exceptions.HTTPError,
            http.client.HTTPException,
            OSError,
        ) as exc:
            raise Transient(self.scrub(describe_transport_error(exc))) from None

    def send_authorized(
        self,
        call: Call,
        method: str,
        path: str,
        refreshed: list[bool],
        params: Mapping[str, str] | None = None,
        body: bytes | None = None,
        content_type: str | None = None,
        deadline: Deadline | None = None,
    ) -> Reply:
        """One request with the current credential; on a 401, refreshes it once per call (retries included).
        With a `deadline`, its timeouts end by it, and past it no request is sent (KubeDeadlineExceeded)."""

        def send() -> Reply:
            headers = self._use_credential(self._cluster.credentials.current())
            if content_type:
                headers["Content-Type"] = content_type
            return self._send(call, method, path, headers, params, body, deadline)

        reply = send()
        if reply.status == 401 and not refreshed[0]:
            # Tokens rotate (projected service-account tokens, exec plugins): refresh once, like client-go.
            refreshed[0] = True
            log.info("401 Unauthorized %s; refreshing credentials and retrying once", call.doing)
            self._cluster.credentials.invalidate()
            reply = send()
        self._log_warnings(reply, call)
        return reply

    def failure(self, call: Call, reply: Reply) -> Failure:
        """What a refused request's Status says (scrubbed); a 401 is raised here, the same for every call."""
        message, reason, details = status_of(reply)
        failure = Failure(reply.status, self.scrub(message), reason, details)
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
    def refused(call: Call, reply: Reply, failure: Failure, what: str) -> NoReturn:
        """The end of every error mapping: 429 and 5xx are worth a retry, anything else is final."""
        if reply.status == 429 or reply.status >= 500:
            raise transient_failure(reply, failure.message, failure.reason, failure.details)
        raise KubeRequestError(
            f"{what} refused: HTTP {reply.status} {failure.reason}".rstrip() + failure.server_said,
            resource=call.resource,
            status=reply.status,
        )

    def _log_warnings(self, reply: Reply, call: Call) -> None:
        text = reply.headers.get("Warning")
        if text and text not in self._warnings_seen:
            self._warnings_seen.add(text)
            log.warning("API server warning while %s: %s", call.doing, self.scrub(text))

    def _wait(self, state: RetryCallState, *, retry_after_cap: float, max_backoff: float) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, Transient) and exc.retry_after is not None:
            # APF computes Retry-After per priority level (1-32 s); a little jitter spreads the herd.
            return min(exc.retry_after, retry_after_cap) + random.uniform(0, self._backoff_base)
        window = min(max_backoff, self._backoff_base * 2.0 ** (state.attempt_number - 1))
        return window / 2 + random.uniform(0, window / 2)  # "equal jitter": never zero, never in lockstep

    def retried(
        self,
        call: Call,
        path: str,
        once: Callable[[], T],
        *,
        attempts: int,
        short: bool = False,
        deadline: Deadline | None = None,
    ) -> T:
        """`once()` up to `attempts` times while it fails with a Transient, with backoff or the server's Retry-After
        (both capped, at SHORT_MAX_WAIT for a `short` single-object call), within `max_elapsed`; never pausing
        past `deadline`. Raises what `once` raises, or the KubeError a Transient becomes when the tries end."""
        cap = min(self._retry_after_cap, SHORT_MAX_WAIT) if short else self._retry_after_cap
        backoff = min(self._max_backoff, SHORT_MAX_WAIT) if short else self._max_backoff

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome is not None else None
            wait = state.next_action.sleep if state.next_action is not None else 0.0
            log.warning(
                "%s at %s: %s; retry %d/%d in %.2fs", call.action, path, exc, state.attempt_number + 1, attempts, wait
            )

        at_deadline = _StopAtDeadline(deadline) if deadline is not None else None
        stop = stop_after_attempt(attempts) | stop_before_delay(self._max_elapsed)
        retrying = Retrying(
            stop=stop if at_deadline is None else stop | at_deadline,
            wait=functools.partial(self._wait, retry_after_cap=cap, max_backoff=backoff),
            retry=retry_if_exception_type(Transient),
            sleep=self._sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        started = time.monotonic()
        try:
            return retrying(once)
        except Transient as exc:
            failed = exc
        text = (
            f"{call.action} at {self._server}{path} failed after {retrying.statistics.get('attempt_number', 1)} "
            f"attempt(s) in {time.monotonic() - started:.1f}s; last failure: {failed.reason}"
        )
        log.warning("giving up: %s", text)
        if at_deadline is not None and at_deadline.hit:
            raise KubeDeadlineExceeded(f"{deadline} would pass before the next try: {text}", resource=call.resource)
        if failed.bad_body:
            raise KubeBadResponse(f"bad response: {text}", resource=call.resource, status=failed.status)
        error = TooLargeResourceVersion if failed.too_large_rv else KubeUnavailable
        raise error(f"API server unavailable: {text}", resource=call.resource, status=failed.status)

    # --- lifecycle -------------------------------------------------------------------------------
    @property
    def cluster(self) -> ClusterConfig:
        """The cluster this client talks to: a second KubeClient for another thread is built from it."""
        return self._cluster

    def close(self) -> None:
        self._session.close()
