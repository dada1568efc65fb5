"""The proxy-neutral routing model: frozen, sorted, validated dataclasses. Stdlib only, no I/O."""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field


class PathMatch(enum.Enum):
    EXACT = "Exact"
    # Kubernetes element-wise prefix: `/foo` matches `/foo`, `/foo/`, `/foo/bar`, never `/foobar`;
    # a trailing slash in the rule is ignored; `/` matches everything.
    PREFIX = "Prefix"


@dataclass(frozen=True, slots=True)
class SourceRef:
    """The Kubernetes object a model node came from, for names, problems and comments."""

    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}" if self.namespace else f"{self.kind} {self.name}"


@dataclass(frozen=True, slots=True, order=True)
class Endpoint:
    address: str
    port: int


@dataclass(frozen=True, slots=True)
class Backend:
    """An upstream: one Service port. `endpoints=()` is a real state (the route answers 503).

    With `external_name` set, the endpoints hold a DNS name (resolved by the proxy), not an IP address.
    """

    name: str  # unique, readable: namespace/service/port
    namespace: str
    service: str
    port: str  # the Service port this backend resolved to (or the Ingress's reference when it did not resolve)
    endpoints: tuple[Endpoint, ...] = ()
    external_name: str | None = None


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    path: str
    match: PathMatch
    backend: str  # Backend.name
    source: SourceRef

    def precedence_key(self) -> tuple[int, int, str, str]:
        """Exact before Prefix, longer path first, then a stable name."""
        return (0 if self.match is PathMatch.EXACT else 1, -len(self.path), self.path, self.name)


@dataclass(frozen=True, slots=True)
class TLSCert:
    name: str
    cert_pem: bytes = field(repr=False)
    key_pem: bytes = field(repr=False)
    source: SourceRef
    not_after: str = ""  # the leaf's expiry, RFC 3339 UTC


@dataclass(frozen=True, slots=True)
class VirtualHost:
    """`hostname` is exact (`a.example.com`), a single-label wildcard (`*.example.com`) or `*` (any host)."""

    hostname: str
    routes: tuple[Route, ...]
    tls_cert: str | None = None  # TLSCert.name

    @property
    def is_wildcard(self) -> bool:
        return self.hostname.startswith("*.")

    @property
    def is_any_host(self) -> bool:
        return self.hostname == "*"

    def host_tier(self) -> int:
        """0 exact, 1 wildcard, 2 any host: the order in which a request's Host is matched."""
        return 2 if self.is_any_host else 1 if self.is_wildcard else 0


@dataclass(frozen=True, slots=True)
class Problem:
    """An object-level fault: the object (or one field of it) is skipped, everything else is served."""

    source: SourceRef
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.source}: {self.field}: {self.message}"


@dataclass(frozen=True, slots=True)
class RoutingModel:
    virtual_hosts: tuple[VirtualHost, ...] = ()
    backends: tuple[Backend, ...] = ()
    certificates: tuple[TLSCert, ...] = ()
    default_backend: str | None = None  # Backend.name answering what no rule matches

    def route_count(self) -> int:
        return sum(len(vhost.routes) for vhost in self.virtual_hosts) + (1 if self.default_backend else 0)

    def validate(self) -> None:
        """Raises ValueError when the model breaks its own invariants (a translator bug, never user input)."""
        backend_names = [b.name for b in self.backends]
        if len(set(backend_names)) != len(backend_names):
            raise ValueError("duplicate backend names")
        if backend_names != sorted(backend_names):
            raise ValueError("backends are not sorted by name")
        cert_names = [c.name for c in self.certificates]
        if len(set(cert_names)) != len(cert_names) or cert_names != sorted(cert_names):
            raise ValueError("certificate names are not unique and sorted")
        hostnames = [v.hostname for v in self.virtual_hosts]
        if len(set(hostnames)) != len(hostnames):
            raise ValueError("duplicate virtual hosts")
        if hostnames != [v.hostname for v in sorted(self.virtual_hosts, key=_vhost_order)]:
            raise ValueError("virtual hosts are not in match order")
        known_backends, known_certs = set(backend_names), set(cert_names)
        if self.default_backend is not None and self.default_backend not in known_backends:
            raise ValueError(f"default backend {self.default_backend!r} is not defined")
        route_names: set[str] = set()
        for vhost in self.virtual_hosts:
            if vhost.tls_cert is not None and vhost.tls_cert not in known_certs:
                raise ValueError(f"{vhost.hostname}: certificate {vhost.tls_cert!r} is not defined")
            if list(vhost.routes) != sorted(vhost.routes, key=Route.precedence_key):
                raise ValueError(f"{vhost.hostname}: routes are not in precedence order")
            for route in vhost.routes:
                if route.backend not in known_backends:
                    raise ValueError(f"route {route.name}: backend {route.backend!r} is not defined")
                if route.name in route_names:
                    raise ValueError(f"duplicate route name {route.name!r}")
                route_names.add(route.name)


def _vhost_order(vhost: VirtualHost) -> tuple[int, str]:
    return (vhost.host_tier(), vhost.hostname)


def sort_virtual_hosts(vhosts: list[VirtualHost]) -> tuple[VirtualHost, ...]:
    """Exact hosts, then wildcards, then the any-host entry; alphabetical within a tier."""
    return tuple(sorted(vhosts, key=_vhost_order))


def model_to_plain(model: RoutingModel) -> dict[str, object]:
    """The model as plain data for golden files and debugging; certificates as digests, keys never."""

    def route(r: Route) -> dict[str, object]:
        return {"name": r.name, "path": r.path, "match": r.match.value, "backend": r.backend, "source": str(r.source)}

    def backend(b: Backend) -> dict[str, object]:
        endpoints = [f"[{e.address}]:{e.port}" if ":" in e.address else f"{e.address}:{e.port}" for e in b.endpoints]
        plain: dict[str, object] = {
            "name": b.name,
            "service": f"{b.namespace}/{b.service}",
            "port": b.port,
            "endpoints": endpoints,
        }
        if b.external_name is not None:
            plain["external_name"] = b.external_name
        return plain

    return {
        "virtual_hosts": [
            {"hostname": v.hostname, "tls_cert": v.tls_cert, "routes": [route(r) for r in v.routes]}
            for v in model.virtual_hosts
        ],
        "backends": [backend(b) for b in model.backends],
        "certificates": [
            {
                "name": c.name,
                "source": str(c.source),
                "cert_sha256": hashlib.sha256(c.cert_pem).hexdigest(),
                "not_after": c.not_after,
                "key": "<redacted>",
            }
            for c in model.certificates
        ],
        "default_backend": model.default_backend,
    }
