"""Kubernetes Ingress semantics -> RoutingModel: the only module that reads `spec.rules`. Pure, no I/O."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from syncer.model import (
    Backend,
    Endpoint,
    PathMatch,
    Problem,
    Route,
    RoutingModel,
    SourceRef,
    TLSCert,
    VirtualHost,
    sort_virtual_hosts,
)
from syncer.snapshot import KubeObject, Snapshot

CLASS_ANNOTATION = "kubernetes.io/ingress.class"
DEFAULT_CLASS_ANNOTATION = "ingressclass.kubernetes.io/is-default-class"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"

_DNS_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
_HOST_RE = re.compile(rf"^(\*\.)?{_DNS_LABEL}(\.{_DNS_LABEL})*$")
_IPV4_RE = re.compile(r"^[0-9.]+$")
# RFC 3986 path characters. Anything else (spaces, quotes, braces, backslashes, controls) never reaches a renderer.
_PATH_RE = re.compile(r"^/[A-Za-z0-9\-._~!$&'()*+,;=:@%/]*$")
_BAD_PATH_SEQUENCES = ("//", "/./", "/../", "%2f", "%2F", "%00")
_BAD_PATH_SUFFIXES = ("/..", "/.")
_MAX_HOST = 253
_MAX_PATH = 1024


@dataclass(frozen=True, slots=True)
class TranslateOptions:
    ingress_class: str = "syncer"
    controller_name: str = "ingress-syncer.dev/controller"
    watch_ingress_without_class: bool = False


@dataclass(frozen=True, slots=True)
class Translation:
    model: RoutingModel
    problems: tuple[Problem, ...] = ()
    ingresses: tuple[SourceRef, ...] = ()  # the Ingresses this controller serves


@dataclass
class _Builder:
    snapshot: Snapshot
    problems: list[Problem] = field(default_factory=list)
    backends: dict[str, Backend] = field(default_factory=dict)
    certs: dict[str, TLSCert] = field(default_factory=dict)
    routes_by_host: dict[str, dict[tuple[str, PathMatch], Route]] = field(default_factory=dict)
    host_certs: dict[str, str] = field(default_factory=dict)
    default_backend: str | None = None
    slices_by_service: dict[tuple[str, str], list[KubeObject]] = field(default_factory=dict)
    endpoint_cache: dict[tuple[str, str, int], tuple[Endpoint, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # One pass over the slices instead of one per backend: nothing quadratic at 10k Services.
        for endpoint_slice in self.snapshot.of_kind("EndpointSlice"):
            meta = _mapping(endpoint_slice.get("metadata"))
            service = _mapping(meta.get("labels")).get(SERVICE_NAME_LABEL)
            if isinstance(service, str):
                key = (str(meta.get("namespace") or ""), service)
                self.slices_by_service.setdefault(key, []).append(endpoint_slice)

    def problem(self, source: SourceRef, field_path: str, message: str) -> None:
        self.problems.append(Problem(source, field_path, message))


def translate(snapshot: Snapshot, options: TranslateOptions = TranslateOptions()) -> Translation:
    builder = _Builder(snapshot)
    ours = [ing for ing in snapshot.of_kind("Ingress") if _is_ours(ing, snapshot, options, builder)]
    # Oldest first, so that every conflict is won by the oldest Ingress, whatever order the API returned.
    ours.sort(key=_age_key)
    sources = []
    for ingress in ours:
        source = _ref("Ingress", ingress)
        sources.append(source)
        _add_ingress(builder, ingress, source)
    vhosts = [
        VirtualHost(host, tuple(sorted(routes.values(), key=Route.precedence_key)), builder.host_certs.get(host))
        for host, routes in builder.routes_by_host.items()
        if routes
    ]
    model = RoutingModel(
        virtual_hosts=sort_virtual_hosts(vhosts),
        backends=tuple(b for _, b in sorted(builder.backends.items())),
        certificates=tuple(c for _, c in sorted(builder.certs.items())),
        default_backend=builder.default_backend,
    )
    model.validate()
    return Translation(model, tuple(builder.problems), tuple(sources))


def _ref(kind: str, obj: KubeObject) -> SourceRef:
    meta = obj.get("metadata") or {}
    return SourceRef(kind, str(meta.get("namespace") or ""), str(meta.get("name") or ""))


def _age_key(obj: KubeObject) -> tuple[str, str, str]:
    meta = obj.get("metadata") or {}
    # RFC 3339 timestamps in UTC ("Z") sort correctly as strings; a missing one sorts last.
    return (str(meta.get("creationTimestamp") or "~"), str(meta.get("namespace") or ""), str(meta.get("name") or ""))


def _is_ours(ingress: KubeObject, snapshot: Snapshot, options: TranslateOptions, builder: _Builder) -> bool:
    spec = _mapping(ingress.get("spec"))
    annotations = _mapping(_mapping(ingress.get("metadata")).get("annotations"))
    class_name = spec.get("ingressClassName")
    if class_name is None:
        class_name = annotations.get(CLASS_ANNOTATION)
    ingress_class = snapshot.get("IngressClass", "", options.ingress_class)
    controller = _mapping(_mapping(ingress_class).get("spec")).get("controller") if ingress_class else None
    if ingress_class is not None and controller != options.controller_name:
        # Another controller owns a class of our name: serving it would fight that controller.
        if class_name == options.ingress_class:
            builder.problem(
                _ref("Ingress", ingress),
                "spec.ingressClassName",
                f"IngressClass {options.ingress_class} belongs to controller {controller!r}, "
                f"not {options.controller_name!r}; not served",
            )
        return False
    if class_name is not None:
        return bool(class_name == options.ingress_class)
    if ingress_class is not None:
        is_default = _mapping(_mapping(ingress_class.get("metadata")).get("annotations")).get(DEFAULT_CLASS_ANNOTATION)
        if is_default == "true":
            return True
    return options.watch_ingress_without_class


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _add_ingress(builder: _Builder, ingress: KubeObject, source: SourceRef) -> None:
    spec = _mapping(ingress.get("spec"))
    if not isinstance(ingress.get("spec"), Mapping):
        builder.problem(source, "spec", "missing or not an object; Ingress skipped")
        return
    namespace = source.namespace
    own_hosts: list[str] = []
    for rule_index, rule in enumerate(_list(spec.get("rules"))):
        rule_field = f"spec.rules[{rule_index}]"
        if not isinstance(rule, Mapping):
            builder.problem(source, rule_field, "not an object; rule skipped")
            continue
        host = _valid_host(builder, source, f"{rule_field}.host", rule.get("host"))
        if host is None:
            continue
        own_hosts.append(host)
        for path_index, path_rule in enumerate(_list(_mapping(rule.get("http")).get("paths"))):
            path_field = f"{rule_field}.http.paths[{path_index}]"
            _add_path(builder, source, namespace, host, path_field, path_rule, f"{rule_index}-{path_index}")
    _add_tls(builder, source, spec)
    default = spec.get("defaultBackend")
    if default is not None:
        backend = _resolve_backend(builder, source, namespace, "spec.defaultBackend", default)
        if backend is not None:
            _add_default(builder, source, own_hosts, backend)


def _valid_host(builder: _Builder, source: SourceRef, field_path: str, raw: Any) -> str | None:
    if raw is None or raw == "":
        return "*"
    if not isinstance(raw, str):
        builder.problem(source, field_path, "must be a string; rule skipped")
        return None
    host = raw.lower()
    if len(host) > _MAX_HOST or not _HOST_RE.match(host) or _IPV4_RE.match(host):
        shown = raw if len(raw) <= 80 else raw[:80] + "..."
        builder.problem(
            source, field_path, f"{shown!r} is not a DNS name or a single-label wildcard (*.example.com); rule skipped"
        )
        return None
    return host


def _valid_path(
    builder: _Builder, source: SourceRef, field_path: str, path_rule: Mapping[str, Any]
) -> tuple[str, PathMatch] | None:
    path_type = path_rule.get("pathType")
    raw = path_rule.get("path")
    if path_type == "ImplementationSpecific":
        # Documented choice: ImplementationSpecific is served as Prefix; an empty path means "/".
        path_type = "Prefix"
        raw = raw or "/"
    if path_type not in ("Exact", "Prefix"):
        builder.problem(
            source,
            f"{field_path}.pathType",
            f"{path_type!r} is not Exact, Prefix or ImplementationSpecific; path skipped",
        )
        return None
    if not isinstance(raw, str) or not raw:
        builder.problem(source, f"{field_path}.path", "must be a non-empty string; path skipped")
        return None
    shown = raw if len(raw) <= 80 else raw[:80] + "..."
    if (
        len(raw) > _MAX_PATH
        or not _PATH_RE.match(raw)
        or any(seq in raw for seq in _BAD_PATH_SEQUENCES)
        or raw.endswith(_BAD_PATH_SUFFIXES)
    ):
        builder.problem(source, f"{field_path}.path", f"{shown!r} is not a valid absolute URL path; path skipped")
        return None
    match = PathMatch(path_type)
    if match is PathMatch.PREFIX and raw != "/":
        raw = raw.rstrip("/")  # Prefix ignores a trailing slash: /foo/ and /foo match the same requests
    return raw, match


def _add_path(
    builder: _Builder, source: SourceRef, namespace: str, host: str, field_path: str, path_rule: Any, index: str
) -> None:
    if not isinstance(path_rule, Mapping):
        builder.problem(source, field_path, "not an object; path skipped")
        return
    valid = _valid_path(builder, source, field_path, path_rule)
    if valid is None:
        return
    path, match = valid
    routes = builder.routes_by_host.setdefault(host, {})
    existing = routes.get((path, match))
    if existing is not None:
        builder.problem(
            source,
            field_path,
            f"{host} {match.value} {path} is already served by {existing.source}, the older Ingress; path skipped",
        )
        return
    backend = _resolve_backend(builder, source, namespace, f"{field_path}.backend", path_rule.get("backend"))
    if backend is None:
        return
    name = f"{source.namespace}/{source.name}/{index}"
    routes[(path, match)] = Route(name, path, match, backend, source)


def _add_default(builder: _Builder, source: SourceRef, own_hosts: list[str], backend: str) -> None:
    """The Ingress's default answers its own hosts' unmatched paths; the oldest one is also the cluster-wide default."""
    for host in own_hosts:
        routes = builder.routes_by_host.setdefault(host, {})
        if ("/", PathMatch.PREFIX) not in routes:
            routes[("/", PathMatch.PREFIX)] = Route(
                f"{source.namespace}/{source.name}/default", "/", PathMatch.PREFIX, backend, source
            )
    if builder.default_backend is None:
        builder.default_backend = backend


def _resolve_backend(builder: _Builder, source: SourceRef, namespace: str, field_path: str, raw: Any) -> str | None:
    """Service + port -> a Backend with its ready endpoints; its name, or None when the reference is unusable."""
    backend = _mapping(raw)
    if "resource" in backend:
        builder.problem(source, f"{field_path}.resource", "resource backends are not supported; path skipped")
        return None
    service_ref = _mapping(backend.get("service"))
    service_name = service_ref.get("name")
    port_ref = _mapping(service_ref.get("port"))
    number, port_name = port_ref.get("number"), port_ref.get("name")
    if not isinstance(service_name, str) or not _HOST_RE.match(service_name) or "*" in service_name:
        builder.problem(source, f"{field_path}.service.name", "missing or not a valid Service name; path skipped")
        return None
    if isinstance(number, bool) or (number is None) == (port_name is None):
        builder.problem(source, f"{field_path}.service.port", "needs exactly one of number or name; path skipped")
        return None
    if number is not None and not (isinstance(number, int) and 1 <= number <= 65535):
        builder.problem(
            source, f"{field_path}.service.port.number", f"{number!r} is not a port from 1 to 65535; path skipped"
        )
        return None
    if port_name is not None and not (
        isinstance(port_name, str) and re.match(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", port_name)
    ):
        builder.problem(source, f"{field_path}.service.port.name", "is not a valid port name; path skipped")
        return None
    port_label = str(number) if number is not None else str(port_name)
    service_port, endpoints = _service_endpoints(
        builder, source, field_path, namespace, service_name, number, port_name
    )
    if service_port is not None:
        # Named by the Service port it resolves to, so `port: {name: http}` and `port: {number: 80}` share one backend.
        port_label = str(service_port)
    name = f"{namespace}/{service_name}/{port_label}"
    if name not in builder.backends:
        builder.backends[name] = Backend(name, namespace, service_name, port_label, endpoints)
    return name


def _service_endpoints(
    builder: _Builder,
    source: SourceRef,
    field_path: str,
    namespace: str,
    service_name: str,
    number: int | None,
    port_name: str | None,
) -> tuple[int | None, tuple[Endpoint, ...]]:
    """The Service port number the reference resolves to (None when it does not) and its ready endpoints."""
    service = builder.snapshot.get("Service", namespace, service_name)
    if service is None:
        builder.problem(
            source, f"{field_path}.service.name", f"Service {namespace}/{service_name} not found; answering 503"
        )
        return None, ()
    spec = _mapping(service.get("spec"))
    if spec.get("type") == "ExternalName":
        builder.problem(
            source,
            f"{field_path}.service.name",
            f"Service {namespace}/{service_name} is ExternalName, which is not supported; answering 503",
        )
        return None, ()
    service_port = next(
        (
            p
            for p in _list(spec.get("ports"))
            if isinstance(p, Mapping)
            and (
                (number is not None and p.get("port") == number)
                or (port_name is not None and p.get("name") == port_name)
            )
        ),
        None,
    )
    resolved = service_port.get("port") if service_port is not None else None
    if service_port is None or not isinstance(resolved, int) or isinstance(resolved, bool):
        wanted = number if number is not None else port_name
        builder.problem(
            source,
            f"{field_path}.service.port",
            f"Service {namespace}/{service_name} has no port {wanted}; answering 503",
        )
        return None, ()
    if builder.endpoint_cache.get((namespace, service_name, resolved)) is None:
        slice_port_name = str(service_port.get("name") or "")
        builder.endpoint_cache[(namespace, service_name, resolved)] = _ready_endpoints(
            builder.slices_by_service.get((namespace, service_name), ()), slice_port_name
        )
    return resolved, builder.endpoint_cache[(namespace, service_name, resolved)]


def _ready_endpoints(slices: Iterable[KubeObject], slice_port_name: str) -> tuple[Endpoint, ...]:
    found: set[Endpoint] = set()
    for endpoint_slice in slices:
        if endpoint_slice.get("addressType") not in ("IPv4", "IPv6"):
            continue  # FQDN slices have no defined semantics
        # A named targetPort can resolve to different numbers per slice: take the slice's own port of that name.
        slice_port = next(
            (
                p
                for p in _list(endpoint_slice.get("ports"))
                if isinstance(p, Mapping) and str(p.get("name") or "") == slice_port_name
            ),
            None,
        )
        port = slice_port.get("port") if slice_port else None
        if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
            continue
        for endpoint in _list(endpoint_slice.get("endpoints")):
            conditions = _mapping(_mapping(endpoint).get("conditions"))
            # `ready` unset means ready; a terminating endpoint is never ready unless publishNotReadyAddresses.
            if conditions.get("ready", True) is False:
                continue
            addresses = _list(_mapping(endpoint).get("addresses"))
            if addresses and isinstance(addresses[0], str):
                found.add(Endpoint(addresses[0], port))
    return tuple(sorted(found))


def _add_tls(builder: _Builder, source: SourceRef, spec: Mapping[str, Any]) -> None:
    for tls_index, tls in enumerate(_list(spec.get("tls"))):
        tls_field = f"spec.tls[{tls_index}]"
        entry = _mapping(tls)
        secret_name = entry.get("secretName")
        if secret_name is None:
            continue
        cert = _load_cert(builder, source, f"{tls_field}.secretName", secret_name)
        if cert is None:
            continue
        for host_index, raw_host in enumerate(_list(entry.get("hosts"))):
            host = _valid_host(builder, source, f"{tls_field}.hosts[{host_index}]", raw_host)
            if host is None or host == "*":
                continue
            owner = builder.host_certs.get(host)
            if owner is None:
                builder.host_certs[host] = cert
            elif owner != cert:
                builder.problem(
                    source,
                    f"{tls_field}.hosts[{host_index}]",
                    f"{host} already uses certificate {owner} of an older Ingress",
                )


def _load_cert(builder: _Builder, source: SourceRef, field_path: str, secret_name: Any) -> str | None:
    if not isinstance(secret_name, str) or not _HOST_RE.match(secret_name) or "*" in secret_name:
        builder.problem(source, field_path, "is not a valid Secret name; TLS skipped")
        return None
    name = f"{source.namespace}/{secret_name}"
    if name in builder.certs:
        return name
    secret = builder.snapshot.get("Secret", source.namespace, secret_name)
    if secret is None:
        builder.problem(source, field_path, f"TLS Secret {name} not found; hosts served without TLS")
        return None
    data = _mapping(secret.get("data"))
    try:
        cert_pem = base64.b64decode(str(data.get("tls.crt") or ""), validate=True)
        key_pem = base64.b64decode(str(data.get("tls.key") or ""), validate=True)
    except (binascii.Error, ValueError):
        builder.problem(source, field_path, f"Secret {name}: tls.crt or tls.key is not valid base64; TLS skipped")
        return None
    if b"-----BEGIN CERTIFICATE-----" not in cert_pem or b"PRIVATE KEY-----" not in key_pem:
        builder.problem(source, field_path, f"Secret {name}: tls.crt or tls.key is not PEM; TLS skipped")
        return None
    builder.certs[name] = TLSCert(name, cert_pem, key_pem, SourceRef("Secret", source.namespace, secret_name))
    return name
