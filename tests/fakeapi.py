"""A fake Kubernetes API server for tests: real loopback HTTP(S), list semantics, faults. Does network I/O.

It copies the behaviour the client must cope with, not the whole API: one etcd-like revision counter,
paginated lists that are consistent snapshots, expiring continue tokens, selectors, Status error bodies,
APF-style plain-text 429s, gzip above a threshold, injectable transport faults, JSON merge PATCHes of
the `status` subresource (415 for other content types, 409 on a stale resourceVersion precondition, 422
for load-balancer entries the real validation rejects), and coordination.k8s.io/v1 Leases: GET, POST (409
AlreadyExists) and PUT with optimistic concurrency (409 Conflict on a stale resourceVersion, 422 without one).
"""

from __future__ import annotations

import base64
import copy
import gzip
import ipaddress
import json
import re
import select
import socket
import ssl
import struct
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import trustme

from syncer.kube.resources import LEASE, WATCHED_KINDS, ResourceKind, resolve_kind

Obj = dict[str, Any]
TEST_TOKEN = "tok-7f3a9c1e-do-not-log"  # the token the fixtures accept; tests assert it never leaks
_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",  # "AlreadyExists" on a create
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}
_RECORDED_HEADERS = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")
FAULTS = ("too_large_rv", "delay", "reset", "truncate", "not_json", "wrong_shape")  # besides HTTP status codes
MERGE_PATCH = "application/merge-patch+json"
_PATCH_TYPES = ("application/json-patch+json", MERGE_PATCH, "application/apply-patch+yaml")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_KINDS = (*WATCHED_KINDS, LEASE)  # what the fake stores: the watched kinds, and the Lease syncer writes
# metav1.MicroTime as the API server parses it (RFC 3339 with fractional seconds).
_MICRO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)$")


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # a few selected headers; never Authorization
    token: str | None  # the bearer token presented, for assertions (tests only)
    client_cn: str | None = None  # CN of a verified client certificate
    target: str = ""  # raw request target: absolute-form when the client went through a proxy
    status: int | None = None
    gzipped: bool = False
    body: bytes = b""  # the request body (PATCH)

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class _Fault:
    kind: str
    status: int
    times: int
    path_contains: str | None
    match: Callable[[RecordedRequest], bool] | None
    delay: float
    retry_after: int


@dataclass
class _Snapshot:
    """All items of one resource at one revision, kept while a paginated list is in flight."""

    items: list[tuple[str, Obj]]
    created: float = field(default_factory=time.monotonic)


class _Reply(Exception):
    """Raised inside the handler to answer with a Status body."""

    def __init__(self, code: int, message: str, reason: str | None = None, details: Obj | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.reason, self.details = code, message, reason or _REASONS.get(code, ""), details


def status_body(code: int, message: str, reason: str | None = None, details: Obj | None = None) -> Obj:
    body: Obj = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason or _REASONS.get(code, ""),
        "code": code,
    }
    if details:
        body["details"] = details
    return body


def _resolve(kind: str | ResourceKind) -> ResourceKind:
    """resolve_kind, plus the Lease (written by syncer, never watched)."""
    if kind in ("Lease", "leases"):
        return LEASE
    return resolve_kind(kind)


def _routes() -> list[tuple[re.Pattern[str], ResourceKind, bool]]:
    """(pattern, kind, single-object) for every list and get path of the stored kinds (and their `/status`)."""
    routes = []
    for kind in _KINDS:
        base = re.escape(kind.list_path(None).rsplit("/", 1)[0])
        plural = re.escape(kind.plural)
        if kind.namespaced:
            one = rf"{base}/namespaces/(?P<ns>[^/]+)/{plural}/(?P<name>[^/]+)"
            routes.append((re.compile(rf"^{base}/namespaces/(?P<ns>[^/]+)/{plural}$"), kind, False))
            routes.append((re.compile(rf"^{one}$"), kind, True))
            if kind is not LEASE:  # a Lease has no status subresource
                routes.append((re.compile(rf"^{one}/(?P<sub>status)$"), kind, True))
        else:
            routes.append((re.compile(rf"^{base}/{plural}/(?P<name>[^/]+)$"), kind, True))
        routes.append((re.compile(rf"^{base}/{plural}$"), kind, False))
    return routes


_ROUTES = _routes()


def _label_matches(labels: Mapping[str, str], selector: str) -> bool:
    for term in filter(None, (t.strip() for t in selector.split(","))):
        parts = [p.strip() for p in re.split("!=|==?", term, maxsplit=1)]
        if len(parts) == 1:  # `key` or `!key`
            if (parts[0].lstrip("!") in labels) == parts[0].startswith("!"):
                return False
        elif (labels.get(parts[0]) == parts[1]) == ("!=" in term):
            return False
    return True


def _field_terms(kind: ResourceKind, selector: str) -> list[tuple[str, str, bool]]:
    """(field, value, negated) per term; unknown fields are a 400 like the real API."""
    known = {"metadata.name", "metadata.namespace"} | ({"type"} if kind.kind == "Secret" else set())
    terms = []
    for term in filter(None, (t.strip() for t in selector.split(","))):
        parts = re.split("!=|==?", term, maxsplit=1)
        if len(parts) != 2:
            raise _Reply(400, f"invalid field selector: {term!r}")
        if parts[0].strip() not in known:
            raise _Reply(
                400, f'"{parts[0].strip()}" is not a known field selector: only "metadata.name", "metadata.namespace"'
            )
        terms.append((parts[0].strip(), parts[1].strip(), "!=" in term))
    return terms


def _field_matches(obj: Obj, terms: list[tuple[str, str, bool]]) -> bool:
    meta = obj.get("metadata", {})
    values = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "type": obj.get("type", ""),
    }
    return all((str(values[name]) == value) != negated for name, value, negated in terms)


class FakeKubeAPI:
    """Start with `with FakeKubeAPI() as api:` or start()/stop(); `api.url` is the server to point a client at."""

    def __init__(
        self,
        *,
        tls: bool = False,
        tokens: Iterable[str] | None = ("test-token",),
        cert_names: Iterable[str] = ("127.0.0.1", "localhost"),
        require_client_cert: bool = False,
        continue_ttl: float = 300.0,
        gzip_threshold: int = 128 * 1024,
        user: str = "system:serviceaccount:ingress-syncer:syncer",
    ) -> None:
        self.tokens: set[str] | None = set(tokens) if tokens is not None else None
        self.continue_ttl = continue_ttl
        self.gzip_threshold = gzip_threshold
        self.user = user
        self.warnings: list[str] = []  # sent as `Warning: 299 - "..."` headers on every response
        self.on_request: Callable[[RecordedRequest], None] | None = None  # runs before a request is served
        self.requests: list[RecordedRequest] = []
        self.revision = 1
        self._lock = threading.RLock()
        self._store: dict[str, dict[str, Obj]] = {k.plural: {} for k in _KINDS}
        self._snapshots: dict[tuple[int, str], _Snapshot] = {}
        self._faults: list[_Fault] = []
        self._forbidden: set[tuple[str, str]] = set()
        self._malformed: dict[str, list[Obj]] = {k.plural: [] for k in _KINDS}
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._port = 0
        self._tmp = tempfile.TemporaryDirectory(prefix="fakeapi-")
        self._tls: ssl.SSLContext | None = None
        self.ca: trustme.CA | None = None
        if tls:
            self.ca = trustme.CA()
            self._tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self.ca.issue_cert(*cert_names).configure_cert(self._tls)
            if require_client_cert:
                self._tls.verify_mode = ssl.CERT_REQUIRED
                self.ca.configure_trust(self._tls)

    # --- lifecycle -----------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"{'https' if self._tls else 'http'}://127.0.0.1:{self._port}"

    @property
    def ca_pem(self) -> bytes:
        assert self.ca is not None, "FakeKubeAPI(tls=True) has a CA"
        return self.ca.cert_pem.bytes()

    @property
    def ca_path(self) -> str:
        path = Path(self._tmp.name) / "ca.crt"
        path.write_bytes(self.ca_pem)
        return str(path)

    def issue_client_cert(self, common_name: str = "syncer") -> tuple[bytes, bytes]:
        """(cert PEM, key PEM) signed by this server's CA."""
        assert self.ca is not None, "client certificates need FakeKubeAPI(tls=True)"
        leaf = self.ca.issue_cert(f"{common_name}@example.invalid", common_name=common_name)
        return leaf.cert_chain_pems[0].bytes(), leaf.private_key_pem.bytes()

    def start(self) -> FakeKubeAPI:
        self._stopping.clear()
        server = _Server(("127.0.0.1", self._port), _make_handler(self), self._tls)
        self._port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.01}, name=f"fakeapi-{self._port}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Closes the listener and every open connection, so a later request gets connection refused."""
        self._stopping.set()
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        for sock in list(server.open_sockets):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)

    down = stop

    def up(self) -> None:
        """Listen again on the same port after down()."""
        self.start()

    def close(self) -> None:
        self.stop()
        self._tmp.cleanup()

    def __enter__(self) -> FakeKubeAPI:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- store ---------------------------------------------------------------------------------
    def _stamp(self, kind: ResourceKind, obj: Obj, old: Obj | None) -> tuple[str, Obj]:
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        if kind.namespaced:
            meta.setdefault("namespace", "default")
        else:
            meta.pop("namespace", None)
        old_meta = (old or {}).get("metadata", {})
        meta["uid"] = meta.get("uid") or old_meta.get("uid") or str(uuid.uuid4())
        meta["creationTimestamp"] = (
            meta.get("creationTimestamp")
            or old_meta.get("creationTimestamp")
            or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        )
        meta["resourceVersion"] = str(self.revision)
        return f"{meta.get('namespace', '')}/{meta['name']}", obj

    def set_objects(self, kind: str | ResourceKind, items: Iterable[Obj]) -> int:
        """Replaces every object of `kind` in one write; returns the new revision."""
        return self.replace_all({kind: list(items)}, keep_others=True)

    def replace_all(self, objects: Mapping[str | ResourceKind, list[Obj]], *, keep_others: bool = False) -> int:
        with self._lock:
            self.revision += 1
            kinds = {_resolve(k).plural: _resolve(k) for k in objects}
            for plural in self._store:
                if plural in kinds or not keep_others:
                    self._store[plural] = {}
            for key, items in objects.items():
                kind = _resolve(key)
                for item in items:
                    k, obj = self._stamp(kind, item, None)
                    self._store[kind.plural][k] = obj
            return self.revision

    def add(self, kind: str | ResourceKind, obj: Obj) -> Obj:
        """Creates or updates one object (keeping its uid and creationTimestamp); returns the stored copy."""
        rk = _resolve(kind)
        with self._lock:
            self.revision += 1
            name = obj["metadata"]["name"]
            ns = obj["metadata"].get("namespace", "default") if rk.namespaced else ""
            k, stored = self._stamp(rk, obj, self._store[rk.plural].get(f"{ns}/{name}"))
            self._store[rk.plural][k] = stored
            return copy.deepcopy(stored)

    def add_malformed(self, kind: str | ResourceKind, obj: Obj) -> None:
        """Serves `obj` exactly as given, after the stored items, in every cluster-wide list of `kind`: what a
        broken aggregated API, proxy or admission chain could hand the client. No selector applies to it."""
        with self._lock:
            self.revision += 1
            self._malformed[_resolve(kind).plural].append(copy.deepcopy(obj))

    def delete(self, kind: str | ResourceKind, namespace: str | None, name: str) -> None:
        with self._lock:
            self.revision += 1
            self._store[_resolve(kind).plural].pop(f"{namespace or ''}/{name}", None)

    def touch(self) -> int:
        """A write elsewhere in the cluster (a Lease renewal): only the revision moves."""
        with self._lock:
            self.revision += 1
            return self.revision

    def objects(self, kind: str | ResourceKind) -> list[Obj]:
        with self._lock:
            store = self._store[_resolve(kind).plural]
            return [copy.deepcopy(store[k]) for k in sorted(store)]

    # --- test hooks ------------------------------------------------------------------------------
    def forbid(self, kind: str | ResourceKind, verb: str = "list") -> None:
        """RBAC denies `verb` on `kind`; a subresource is named like RBAC does: forbid("ingresses/status", "patch")."""
        sub = ""
        if isinstance(kind, str) and "/" in kind:
            kind, sub = kind.split("/", 1)
        plural = _resolve(kind).plural
        with self._lock:
            self._forbidden.add((f"{plural}/{sub}" if sub else plural, verb))

    def expire_continue_tokens(self) -> None:
        """Every outstanding continue token now answers 410 Expired (like an etcd compaction)."""
        with self._lock:
            self._snapshots.clear()

    def inject(
        self,
        fault: int | str,
        *,
        times: int = 1,
        path_contains: str | None = None,
        match: Callable[[RecordedRequest], bool] | None = None,
        delay: float = 1.0,
        retry_after: int = 1,
    ) -> None:
        """Queue a fault for the next `times` matching requests.

        `fault` is an HTTP status (answered with a Status body; 429 answers like APF: plain text and
        Retry-After) or one of "too_large_rv", "delay" (then serve normally), "reset" (RST, no response),
        "truncate" (Content-Length larger than the body sent), "not_json", "wrong_shape".
        """
        if isinstance(fault, int):
            kind = "429" if fault == 429 else "status"
        elif fault in FAULTS:
            kind = fault
        else:
            raise ValueError(f"unknown fault {fault!r}; known: an HTTP status code or one of {FAULTS}")
        with self._lock:
            self._faults.append(
                _Fault(kind, fault if isinstance(fault, int) else 0, times, path_contains, match, delay, retry_after)
            )

    def _take_fault(self, req: RecordedRequest) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if (fault.path_contains is None or fault.path_contains in req.path) and (
                    fault.match is None or fault.match(req)
                ):
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def _record(self, req: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(req)

    def pause(self, seconds: float) -> None:
        """Sleeps unless the server is stopping (delays must not hold up stop())."""
        self._stopping.wait(seconds)

    # --- serving -------------------------------------------------------------------------------
    def serve(self, req: RecordedRequest) -> tuple[int, Obj]:
        found = next(((m, k, one) for p, k, one in _ROUTES if (m := p.match(req.path))), None)
        if found is None:
            raise _Reply(404, "the server could not find the requested resource")
        m, kind, single = found
        if req.method == "PATCH":
            return self._patch(req, m, kind)
        if req.method in ("POST", "PUT"):
            return self._write(req, m, kind, single)
        if req.method != "GET":
            raise _Reply(405, f"the server does not allow this method on the requested resource ({req.method})")
        ns = m.groupdict().get("ns")
        verb = "get" if single else "list"
        with self._lock:
            if (kind.plural, verb) in self._forbidden:
                scope = f'in the namespace "{ns}"' if ns else "at the cluster scope"
                raise _Reply(
                    403,
                    f'{kind.rbac_resource} is forbidden: User "{self.user}" cannot {verb} resource '
                    f'"{kind.plural}" in API group "{kind.group}" {scope}',
                    details={"kind": kind.plural, "group": kind.group},
                )
            if single:
                obj = self._store[kind.plural].get(f"{ns or ''}/{m['name']}")
                if obj is None:
                    raise _Reply(
                        404,
                        f'{kind.rbac_resource} "{m["name"]}" not found',
                        details={"name": m["name"], "kind": kind.plural, "group": kind.group},
                    )
                return 200, {"kind": kind.kind, "apiVersion": kind.api_version, **copy.deepcopy(obj)}
            return 200, self._list(kind, ns, req.query)

    def _write(self, req: RecordedRequest, m: re.Match[str], kind: ResourceKind, single: bool) -> tuple[int, Obj]:
        """POST to a collection creates, PUT to an object replaces it (only Leases: nothing else writes objects).

        Like the real registry for Leases: a POST of an existing name is 409 AlreadyExists; a PUT needs the
        metadata.resourceVersion it read (none: 422, AllowUnconditionalUpdate is false for Leases; another:
        409 Conflict) and moves the revision only when the object changed. Simplification: a PUT of a missing
        Lease is 404 (the real one may create it).
        """
        ns, name = m.groupdict().get("ns") or "", m.groupdict().get("name")
        if kind is not LEASE or (req.method == "POST") == single:
            raise _Reply(405, f"the server does not allow this method on the requested resource ({req.method})")
        verb = "create" if req.method == "POST" else "update"
        try:
            obj = json.loads(req.body)
        except ValueError as exc:
            raise _Reply(400, f"error decoding body: {exc}") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("metadata", {}), dict):
            raise _Reply(400, "the body of the request must be a JSON object with metadata")
        meta = obj.setdefault("metadata", {})
        if name is None:
            name = str(meta.get("name") or "")
        with self._lock:
            if (kind.plural, verb) in self._forbidden:
                target = f'{kind.rbac_resource} "{name}"' if single else kind.rbac_resource
                raise _Reply(
                    403,
                    f'{target} is forbidden: User "{self.user}" cannot {verb} resource "{kind.plural}" in API '
                    f'group "{kind.group}" in the namespace "{ns}"',
                    details={"name": name, "kind": kind.plural, "group": kind.group},
                )
            if obj.get("kind", kind.kind) != kind.kind or obj.get("apiVersion", kind.api_version) != kind.api_version:
                raise _Reply(400, f"the body is a {obj.get('apiVersion')}/{obj.get('kind')}, not a {kind.kind}")
            if meta.get("namespace", ns) != ns:
                raise _Reply(
                    400, "the namespace of the provided object does not match the namespace sent on the request"
                )
            if not name:
                raise _Reply(
                    422,
                    f'{kind.kind}.{kind.group} "" is invalid: metadata.name: Required value: name or generateName '
                    "is required",
                )
            if meta.get("name", name) != name:
                raise _Reply(
                    400, f"the name of the object ({meta.get('name')}) does not match the name on the URL ({name})"
                )
            _validate_lease(name, obj.get("spec"))
            key = f"{ns}/{name}"
            stored = self._store[kind.plural].get(key)
            details = {"name": name, "kind": kind.plural, "group": kind.group}
            if req.method == "POST":
                if stored is not None:
                    raise _Reply(409, f'{kind.rbac_resource} "{name}" already exists', "AlreadyExists", details)
                self.revision += 1
                _, created = self._stamp(kind, {**obj, "metadata": {**meta, "name": name, "namespace": ns}}, None)
                self._store[kind.plural][key] = created
                return 201, {"kind": kind.kind, "apiVersion": kind.api_version, **copy.deepcopy(created)}
            if stored is None:
                raise _Reply(404, f'{kind.rbac_resource} "{name}" not found', details=details)
            wanted_rv = meta.get("resourceVersion")
            if not wanted_rv:
                raise _Reply(
                    422,
                    f'{kind.rbac_resource} "{name}" is invalid: metadata.resourceVersion: Invalid value: 0x0: '
                    "must be specified for an update",
                )
            if str(wanted_rv) != stored["metadata"]["resourceVersion"]:
                raise _Reply(
                    409,
                    f'Operation cannot be fulfilled on {kind.rbac_resource} "{name}": the object has been '
                    "modified; please apply your changes to the latest version and try again",
                    details=details,
                )
            updated = copy.deepcopy(stored)
            updated["spec"] = copy.deepcopy(obj.get("spec") or {})
            for field_name in ("labels", "annotations"):
                if field_name in meta:
                    updated["metadata"][field_name] = copy.deepcopy(meta[field_name])
                else:
                    updated["metadata"].pop(field_name, None)
            if updated != stored:  # an unchanged object writes nothing, like the real registry
                self.revision += 1
                updated["metadata"]["resourceVersion"] = str(self.revision)
                self._store[kind.plural][key] = updated
            return 200, {"kind": kind.kind, "apiVersion": kind.api_version, **copy.deepcopy(updated)}

    def _patch(self, req: RecordedRequest, m: re.Match[str], kind: ResourceKind) -> tuple[int, Obj]:
        """A JSON merge patch (RFC 7386) of one object's `status`, as the `/status` subresource applies it."""
        groups = m.groupdict()
        ns, name, sub = groups.get("ns") or "", groups.get("name"), groups.get("sub")
        if name is None or sub != "status":
            raise _Reply(405, "the fake API serves PATCH only on the status subresource of one object")
        with self._lock:
            if (f"{kind.plural}/status", "patch") in self._forbidden:
                scope = f'in the namespace "{ns}"' if ns else "at the cluster scope"
                raise _Reply(
                    403,
                    f'{kind.rbac_resource} "{name}" is forbidden: User "{self.user}" cannot patch resource '
                    f'"{kind.plural}/status" in API group "{kind.group}" {scope}',
                    details={"name": name, "kind": kind.plural, "group": kind.group},
                )
            ctype = req.headers.get("Content-Type", "").split(";")[0].strip()
            if ctype not in _PATCH_TYPES:
                raise _Reply(
                    415,
                    "the body of the request was in an unknown format - accepted media types include: "
                    + ", ".join(_PATCH_TYPES),
                )
            if ctype != MERGE_PATCH:
                raise _Reply(415, f"the fake API only applies {MERGE_PATCH} patches, not {ctype}")
            key = f"{ns}/{name}"
            stored = self._store[kind.plural].get(key)
            if stored is None:
                raise _Reply(
                    404,
                    f'{kind.rbac_resource} "{name}" not found',
                    details={"name": name, "kind": kind.plural, "group": kind.group},
                )
            try:
                patch = json.loads(req.body)
            except ValueError as exc:
                raise _Reply(400, f"error decoding patch: {exc}") from None
            if not isinstance(patch, dict):
                raise _Reply(400, "error decoding patch: a merge patch of an object must be a JSON object")
            wanted_rv = (patch.get("metadata") or {}).get("resourceVersion")
            if wanted_rv is not None and str(wanted_rv) != stored["metadata"]["resourceVersion"]:
                raise _Reply(
                    409,
                    f'Operation cannot be fulfilled on {kind.rbac_resource} "{name}": the object has been '
                    "modified; please apply your changes to the latest version and try again",
                    details={"name": name, "kind": kind.plural, "group": kind.group},
                )
            # Only `status` changes through the subresource: spec and metadata in the patch are ignored.
            status = merge_patch(stored.get("status") or {}, patch.get("status", {}))
            _validate_load_balancer(kind, name, status)
            if status != (stored.get("status") or {}):  # a no-op patch writes nothing, like etcd behind the apiserver
                self.revision += 1
                stored["status"] = status
                stored["metadata"]["resourceVersion"] = str(self.revision)
            return 200, {"kind": kind.kind, "apiVersion": kind.api_version, **copy.deepcopy(stored)}

    def _list(self, kind: ResourceKind, ns: str | None, q: dict[str, str]) -> Obj:
        rv, match, token = q.get("resourceVersion", ""), q.get("resourceVersionMatch", ""), q.get("continue", "")
        if match:
            if not rv:
                raise _Reply(
                    422,
                    'ListOptions.meta.k8s.io "" is invalid: resourceVersionMatch: Forbidden: '
                    "resourceVersionMatch is forbidden unless resourceVersion is provided",
                )
            if token:
                raise _Reply(
                    422,
                    'ListOptions.meta.k8s.io "" is invalid: resourceVersionMatch: Forbidden: '
                    "resourceVersionMatch is forbidden when continue is provided",
                )
            if match not in ("NotOlderThan", "Exact"):
                raise _Reply(
                    422, f'ListOptions.meta.k8s.io "" is invalid: resourceVersionMatch: Unsupported value: "{match}"'
                )
        if token and rv not in ("", "0"):
            raise _Reply(400, "specifying resource version is not allowed when using continue")
        if rv and not rv.isdigit():
            raise _Reply(400, f"Invalid value: {rv!r}: resourceVersion must be an integer")
        try:
            limit = int(q.get("limit", "0") or 0)
        except ValueError:
            raise _Reply(400, "limit must be an integer") from None
        if rv and int(rv) > self.revision and rv != "0":
            raise _too_large(int(rv), self.revision)
        if rv and rv != "0" and (match == "Exact" or (not match and limit)) and int(rv) != self.revision:
            raise _Reply(410, f"too old resource version: {rv} ({self.revision})", "Expired")
        label_sel, field_sel = q.get("labelSelector", ""), q.get("fieldSelector", "")
        terms = _field_terms(kind, field_sel)
        query_key = f"{kind.plural}|{ns}|{label_sel}|{field_sel}"
        if token:
            try:
                state = json.loads(base64.urlsafe_b64decode(token.encode()))
                revision, start, qk = int(state["rv"]), str(state["start"]), str(state["q"])
            except (ValueError, KeyError, TypeError):
                raise _Reply(400, "continue key is not valid: bad token") from None
            if qk != query_key:
                raise _Reply(400, "continue key is not valid: the query changed between pages")
            snap = self._snapshots.get((revision, kind.plural))
            if snap is None or time.monotonic() - snap.created > self.continue_ttl:
                raise _Reply(
                    410,
                    "The provided continue parameter is too old to display a consistent list "
                    "result. You can start a new list without the continue parameter.",
                    "Expired",
                )
        else:
            revision, start = self.revision, ""
            snap = _Snapshot(sorted(self._store[kind.plural].items()))
        if rv == "0":
            limit = 0  # like the watch cache: RV=0 ignores limit
        scoped = [(k, o) for k, o in snap.items if (ns is None or k.startswith(f"{ns}/")) and k >= start]
        page = scoped[:limit] if limit else scoped
        items = [
            copy.deepcopy(o)
            for _, o in page
            if _label_matches(o["metadata"].get("labels") or {}, label_sel) and _field_matches(o, terms)
        ]
        if ns is None and not token:
            items.extend(copy.deepcopy(self._malformed[kind.plural]))
        meta: Obj = {"resourceVersion": str(revision)}
        if limit and len(scoped) > limit:
            now = time.monotonic()
            self._snapshots = {k: s for k, s in self._snapshots.items() if now - s.created <= self.continue_ttl}
            self._snapshots.setdefault((revision, kind.plural), snap)
            state = {"v": "meta.k8s.io/v1", "rv": revision, "start": page[-1][0] + "\x00", "q": query_key}
            meta["continue"] = base64.urlsafe_b64encode(json.dumps(state).encode()).decode()
            if not label_sel and not field_sel:
                meta["remainingItemCount"] = len(scoped) - limit
        return {"kind": f"{kind.kind}List", "apiVersion": kind.api_version, "metadata": meta, "items": items}


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge key by key, null deletes a key, anything else (lists included) replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _validate_load_balancer(kind: ResourceKind, name: str, status: Obj) -> None:
    """What the apiserver's validation says about `status.loadBalancer.ingress` (422 Invalid)."""
    entries = (status.get("loadBalancer") or {}).get("ingress") or []
    problems = []
    for i, entry in enumerate(entries if isinstance(entries, list) else [entries]):
        field = f"status.loadBalancer.ingress[{i}]"
        if not isinstance(entry, dict):
            problems.append(f"{field}: Invalid value: must be an object")
            continue
        if "ip" in entry:
            try:
                ipaddress.ip_address(str(entry["ip"]))
            except ValueError:
                problems.append(f'{field}.ip: Invalid value: "{entry["ip"]}": must be a valid IP address')
        if "hostname" in entry:
            hostname = str(entry["hostname"])
            try:
                ipaddress.ip_address(hostname)
                problems.append(f'{field}.hostname: Invalid value: "{hostname}": must be a DNS name, not an IP address')
            except ValueError:
                if len(hostname) > 253 or not _DNS1123_SUBDOMAIN.match(hostname):
                    problems.append(
                        f'{field}.hostname: Invalid value: "{hostname}": a lowercase RFC 1123 subdomain must '
                        "consist of lower case alphanumeric characters, '-' or '.'"
                    )
    if problems:
        raise _Reply(422, f'{kind.kind}.{kind.group} "{name}" is invalid: ' + ", ".join(problems))


def _validate_lease(name: str, spec: Any) -> None:
    """What decoding and validation of a coordination.k8s.io/v1 LeaseSpec refuse (400 / 422)."""
    if spec is None:
        return
    if not isinstance(spec, dict):
        raise _Reply(400, 'Lease in version "v1" cannot be handled as a Lease: spec must be an object')
    for field_name in ("acquireTime", "renewTime"):
        value = spec.get(field_name)
        if value is not None and not (isinstance(value, str) and _MICRO_TIME.match(value)):
            raise _Reply(
                400,
                f'Lease in version "v1" cannot be handled as a Lease: parsing time "{value}" as '
                '"2006-01-02T15:04:05.000000Z07:00": cannot parse',
            )
    problems = []
    holder = spec.get("holderIdentity")
    if holder is not None and not isinstance(holder, str):
        raise _Reply(400, 'Lease in version "v1" cannot be handled as a Lease: holderIdentity must be a string')
    for field_name, minimum in (("leaseDurationSeconds", 1), ("leaseTransitions", 0)):
        value = spec.get(field_name)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool):
            raise _Reply(400, f'Lease in version "v1" cannot be handled as a Lease: {field_name} must be an integer')
        if value < minimum:
            bound = "greater than 0" if minimum else "greater than or equal to 0"
            problems.append(f"spec.{field_name}: Invalid value: {value}: must be {bound}")
    if problems:
        raise _Reply(422, f'Lease.coordination.k8s.io "{name}" is invalid: ' + ", ".join(problems))


def _too_large(wanted: int, current: int) -> _Reply:
    return _Reply(
        504,
        f"Timeout: Too large resource version: {wanted}, current: {current}",
        "Timeout",
        {
            "causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
            "retryAfterSeconds": 1,
        },
    )


def _make_handler(api: FakeKubeAPI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, like the real server

        def setup(self) -> None:
            super().setup()
            # Headers and body go out in two writes: without NODELAY, Nagle + delayed ACK cost 40 ms a response.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def finish(self) -> None:
            try:
                super().finish()
            except OSError:
                pass

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_CONNECT(self) -> None:
            """Act as an HTTPS proxy: tunnel to the same port on loopback (never anywhere else)."""
            api._record(RecordedRequest("CONNECT", self.path, {}, {}, None, target=self.path))
            port = int(self.path.rsplit(":", 1)[1])
            with socket.create_connection(("127.0.0.1", port), timeout=5) as upstream:
                self.send_response(200, "Connection established")
                self.end_headers()
                self.close_connection = True
                peers = {self.connection: upstream, upstream: self.connection}
                while not api._stopping.is_set():
                    ready, _, _ = select.select(list(peers), [], [], 0.05)
                    chunks = [(sock, sock.recv(65536)) for sock in ready]
                    if any(not data for _, data in chunks):
                        return
                    for sock, data in chunks:
                        peers[sock].sendall(data)

        def do_GET(self) -> None:
            self._handle("GET")

        def do_PATCH(self) -> None:
            self._handle("PATCH")

        def do_POST(self) -> None:
            self._handle("POST")

        def do_PUT(self) -> None:
            self._handle("PUT")

        def _handle(self, method: str) -> None:
            target = urlsplit(self.path)
            auth = self.headers.get("Authorization", "")
            length = int(self.headers.get("Content-Length") or 0)
            req = RecordedRequest(
                method=method,
                path=target.path,
                query=dict(parse_qsl(target.query, keep_blank_values=True)),
                headers={h: v for h in _RECORDED_HEADERS if (v := self.headers.get(h)) is not None},
                token=auth[7:] if auth.startswith("Bearer ") else None,
                client_cn=self._client_cn(),
                target=self.path,
                body=self.rfile.read(length) if length > 0 else b"",
            )
            api._record(req)
            if api.on_request is not None:
                api.on_request(req)
            fault = api._take_fault(req)
            try:
                if fault is not None and self._apply(fault, req):
                    return
                if api.tokens is not None and req.client_cn is None and req.token not in api.tokens:
                    raise _Reply(401, "Unauthorized")
                code, body = api.serve(req)
                self._send(req, code, json.dumps(body).encode(), "application/json")
            except _Reply as r:
                self._send(
                    req,
                    r.code,
                    json.dumps(status_body(r.code, r.message, r.reason, r.details)).encode(),
                    "application/json",
                )

        def _client_cn(self) -> str | None:
            cert = self.connection.getpeercert() if isinstance(self.connection, ssl.SSLSocket) else None
            names = [attr for rdn in (cert or {}).get("subject", ()) for attr in rdn]
            return next((str(attr[1]) for attr in names if attr[0] == "commonName"), None)

        def _apply(self, fault: _Fault, req: RecordedRequest) -> bool:
            """Acts out a fault; True when the response has been dealt with."""
            if fault.kind == "status":
                raise _Reply(fault.status, f"injected fault {fault.status}")
            if fault.kind == "too_large_rv":
                raise _too_large(api.revision + 10, api.revision)
            if fault.kind == "429":
                self._send(
                    req,
                    429,
                    b"Too many requests, please try again later.\n",
                    "text/plain; charset=utf-8",
                    {"Retry-After": str(fault.retry_after)},
                )
            elif fault.kind == "delay":
                api.pause(fault.delay)
                return False
            elif fault.kind == "reset":
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
                self.close_connection = True
            elif fault.kind == "truncate":
                body = json.dumps(api.serve(req)[1]).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body) + 4096))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2])
                self.close_connection = True
            elif fault.kind == "not_json":
                self._send(req, 200, b"<html><body>502 Bad Gateway (proxy)</body></html>", "text/html")
            elif fault.kind == "wrong_shape":
                self._send(
                    req, 200, b'{"kind": "IngressList", "metadata": {}, "items": {"oops": 1}}', "application/json"
                )
            return True

        def _send(
            self, req: RecordedRequest, code: int, body: bytes, ctype: str, headers: Mapping[str, str] | None = None
        ) -> None:
            req.status = code
            if "gzip" in self.headers.get("Accept-Encoding", "") and len(body) > api.gzip_threshold:
                body, req.gzipped = gzip.compress(body, compresslevel=1), True
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            if req.gzipped:
                self.send_header("Content-Encoding", "gzip")
            for text in api.warnings:
                self.send_header("Warning", f'299 - "{text}"')
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

    return Handler


class _Server(ThreadingHTTPServer):
    """Threaded server whose TLS handshake runs in the connection's thread, not in the accept loop."""

    daemon_threads = True
    block_on_close = False  # a delayed handler must not hold stop() up

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], tls: ssl.SSLContext | None
    ) -> None:
        self.tls = tls
        self.open_sockets: set[socket.socket] = set()
        super().__init__(address, handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.tls is not None:
            request.settimeout(5)
            try:
                request = self.tls.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError):
                request.close()  # a client that refused our certificate, or sent no client certificate
                return
            request.settimeout(None)
        self.open_sockets.add(request)
        try:
            super().finish_request(request, client_address)
        finally:
            self.open_sockets.discard(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients hanging up mid-response is what the fault tests do
