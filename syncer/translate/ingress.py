"""Kubernetes Ingress semantics -> RoutingModel: the only module that reads `spec.rules`. Pure, no I/O.

Choices the Ingress specification leaves open, made here once for every renderer:
- Which Ingresses are ours: `spec.ingressClassName`, else the legacy `kubernetes.io/ingress.class`
  annotation, must name our class; an Ingress naming neither is ours when our IngressClass is the default
  class, or with `watch_ingress_without_class`. An IngressClass of our name owned by another controller
  makes nothing ours.
- `ImplementationSpecific` paths are served as `Prefix` (an empty path as `/`).
- Conflicts are won by the oldest Ingress (`creationTimestamp`, then namespace/name, as ingress-nginx
  does): the same host + path + type, certificates for one host, defaults for one host. The loser gets a
  problem. Nothing depends on the order the API listed objects in.
- `spec.defaultBackend` answers the paths no rule matches on its own Ingress's hosts; the oldest
  Ingress's default also answers everything that matches no host (the model's `default_backend`).
- A `tls` entry without `hosts` covers the hosts of its Ingress's rules.
- A broken rule, path or TLS entry is skipped with a problem naming the object and the field; a backend
  that resolves to nothing keeps its route (answering 503) so the request does not fall through.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from syncer.model import PathMatch, Problem, Route, RoutingModel, SourceRef, TLSCert, VirtualHost, sort_virtual_hosts
from syncer.snapshot import KubeObject, Snapshot
from syncer.translate.backends import UPSTREAM_MODES, BackendResolver
from syncer.translate.classes import age_key, ingresses_of_our_class
from syncer.translate.objects import (
    as_list,
    as_mapping,
    cut,
    is_dns_label,
    is_dns_subdomain,
    rejected_problem,
    shown,
    source_ref,
)
from syncer.translate.paths import ANY_HOST, valid_host, valid_path
from syncer.translate.tls import CertificateProblem, load_tls_secret


@dataclass(frozen=True, slots=True)
class TranslateOptions:
    ingress_class: str = "syncer"
    controller_name: str = "ingress-syncer.dev/controller"
    watch_ingress_without_class: bool = False
    upstream: str = "endpoints"  # or "service": ClusterIP:port instead of pod endpoints
    allow_external_name: bool = False

    def __post_init__(self) -> None:
        if self.upstream not in UPSTREAM_MODES:
            raise ValueError(f"upstream must be one of {', '.join(UPSTREAM_MODES)}")


@dataclass(frozen=True, slots=True)
class Translation:
    model: RoutingModel
    problems: tuple[Problem, ...] = ()
    ingresses: tuple[SourceRef, ...] = ()  # the Ingresses this controller serves, oldest first


@dataclass
class _DefaultClaim:
    source: SourceRef
    field: str
    backend: str
    hosts: tuple[str, ...]


@dataclass
class _Builder:
    snapshot: Snapshot
    options: TranslateOptions
    now: str | None = None
    problems: list[Problem] = field(default_factory=list)
    routes: dict[str, dict[tuple[str, PathMatch], Route]] = field(default_factory=dict)
    certs: dict[str, TLSCert] = field(default_factory=dict)
    host_certs: dict[str, tuple[str, SourceRef]] = field(default_factory=dict)
    defaults: list[_DefaultClaim] = field(default_factory=list)
    resolver: BackendResolver = field(init=False)

    def __post_init__(self) -> None:
        problems = self.problems

        def problem(source: SourceRef, field_path: str, message: str) -> None:
            problems.append(Problem(source, field_path, message))

        # Not the bound `self.problem`: builder -> resolver -> builder would be a reference cycle, and with the
        # collector paused during a cycle (syncer.run.heap) every translation, snapshot included, would wait for it.
        self.resolver = BackendResolver(self.snapshot, problem, self.options.upstream, self.options.allow_external_name)

    def problem(self, source: SourceRef, field_path: str, message: str) -> None:
        self.problems.append(Problem(source, field_path, message))


def translate(snapshot: Snapshot, options: TranslateOptions | None = None, now: str | None = None) -> Translation:
    """`now` (RFC 3339 UTC) turns on the expiry check of certificates; without it the result depends on the
    snapshot alone (golden files)."""
    options = options or TranslateOptions()
    builder = _Builder(snapshot, options, now)
    builder.problems.extend(rejected_problem(rejected) for rejected in snapshot.rejected)
    # Oldest first, so that every conflict is won by the oldest Ingress, whatever order the API returned.
    candidates = ingresses_of_our_class(
        snapshot, options.ingress_class, options.controller_name, options.watch_ingress_without_class, builder.problem
    )
    ours = sorted((i for i in candidates if _valid_identity(builder, i)), key=age_key)
    sources = [source_ref("Ingress", ingress) for ingress in ours]
    for ingress, source in zip(ours, sources, strict=True):
        _add_ingress(builder, ingress, source)
    default_backend = _apply_defaults(builder)
    vhosts = [
        VirtualHost(
            host,
            tuple(sorted(routes.values(), key=Route.precedence_key)),
            builder.host_certs[host][0] if host in builder.host_certs else None,
        )
        for host, routes in builder.routes.items()
    ]
    # Only what a route uses goes to a proxy: a certificate whose hosts have no routes, or the backend of a
    # default that lost to an older one, would be dead configuration.
    used_backends = {r.backend for v in vhosts for r in v.routes} | ({default_backend} if default_backend else set())
    used_certs = {v.tls_cert for v in vhosts if v.tls_cert}
    model = RoutingModel(
        virtual_hosts=sort_virtual_hosts(vhosts),
        backends=tuple(b for name, b in sorted(builder.resolver.backends.items()) if name in used_backends),
        certificates=tuple(c for name, c in sorted(builder.certs.items()) if name in used_certs),
        default_backend=default_backend,
    )
    model.validate()
    return Translation(model, tuple(builder.problems), tuple(sources))


def _valid_identity(builder: _Builder, ingress: KubeObject) -> bool:
    """The API server guarantees these; manifests do not, and every name we derive is built from them."""
    meta = as_mapping(ingress.get("metadata"))
    namespace, name = meta.get("namespace"), meta.get("name")
    if is_dns_label(namespace) and is_dns_subdomain(name):
        return True
    # As written (cut short): a problem names the object the user wrote; log lines escape what it holds.
    source = SourceRef("Ingress", _as_written(namespace), _as_written(name))
    builder.problem(source, "metadata", "namespace or name is not a valid Kubernetes name; Ingress skipped")
    return False


def _as_written(value: Any) -> str:
    return cut(value if isinstance(value, str) else repr(value))


def _add_ingress(builder: _Builder, ingress: KubeObject, source: SourceRef) -> None:
    spec = ingress.get("spec")
    if not isinstance(spec, Mapping):
        builder.problem(source, "spec", "missing or not an object; Ingress skipped")
        return
    if not spec.get("rules") and spec.get("defaultBackend") is None:
        builder.problem(source, "spec", "has neither rules nor a defaultBackend; nothing to serve")
    rule_hosts: list[str] = []
    rules = spec.get("rules")
    if rules is not None and not isinstance(rules, list):
        builder.problem(source, "spec.rules", "is not a list; rules skipped")
    for rule_index, rule in enumerate(as_list(rules)):
        rule_field = f"spec.rules[{rule_index}]"
        if not isinstance(rule, Mapping):
            builder.problem(source, rule_field, "is not an object; rule skipped")
            continue
        host = valid_host(builder.problem, source, f"{rule_field}.host", rule.get("host"))
        if host is None:
            continue
        if host not in rule_hosts:
            rule_hosts.append(host)
        # A valid host claims its requests even with no (valid) paths: they get a default backend or 404,
        # never the host-less rules, just as for a host whose paths do not match.
        builder.routes.setdefault(host, {})
        http = rule.get("http")
        if http is None:
            continue  # a host-only rule: its requests get the default backend
        paths = as_mapping(http).get("paths")
        if not isinstance(paths, list):
            builder.problem(source, f"{rule_field}.http.paths", "is not a list; rule skipped")
            continue
        for path_index, path_rule in enumerate(paths):
            _add_path(
                builder, source, host, f"{rule_field}.http.paths[{path_index}]", path_rule, f"{rule_index}-{path_index}"
            )
    _add_tls(builder, source, spec, [h for h in rule_hosts if h != ANY_HOST])
    if "defaultBackend" in spec:
        backend = builder.resolver.resolve(source, "spec.defaultBackend", spec.get("defaultBackend"))
        if backend is not None:
            builder.defaults.append(_DefaultClaim(source, "spec.defaultBackend", backend, tuple(rule_hosts)))


def _add_path(builder: _Builder, source: SourceRef, host: str, field_path: str, path_rule: Any, index: str) -> None:
    if not isinstance(path_rule, Mapping):
        builder.problem(source, field_path, "is not an object; path skipped")
        return
    valid = valid_path(builder.problem, source, field_path, path_rule)
    if valid is None:
        return
    path, match = valid
    routes = builder.routes.setdefault(host, {})
    existing = routes.get((path, match))
    if existing is not None:
        builder.problem(
            source,
            field_path,
            f"{host} {match.value} {path} is already served by the older {existing.source}; path skipped",
        )
        return
    backend = builder.resolver.resolve(source, f"{field_path}.backend", path_rule.get("backend"))
    if backend is not None:
        routes[(path, match)] = Route(f"{source.namespace}/{source.name}/{index}", path, match, backend, source)


def _apply_defaults(builder: _Builder) -> str | None:
    """Defaults go in after every explicit path, so an explicit `/` rule of any age is never displaced."""
    claimed: dict[str, SourceRef] = {}
    for claim in builder.defaults:  # already oldest first
        for host_index, host in enumerate(claim.hosts):
            routes = builder.routes.setdefault(host, {})
            key = ("/", PathMatch.PREFIX)
            if host in claimed:
                builder.problem(
                    claim.source,
                    claim.field,
                    f"{host} already has the default backend of the older {claimed[host]}; not used for {host}",
                )
            elif key not in routes:
                claimed[host] = claim.source
                routes[key] = Route(
                    f"{claim.source.namespace}/{claim.source.name}/default-{host_index}",
                    "/",
                    PathMatch.PREFIX,
                    claim.backend,
                    claim.source,
                )
    if not builder.defaults:
        return None
    oldest = builder.defaults[0]
    for later in builder.defaults[1:]:
        if not later.hosts:
            builder.problem(
                later.source, later.field, f"the cluster-wide default backend is the older {oldest.source}'s; not used"
            )
    return oldest.backend


def _add_tls(builder: _Builder, source: SourceRef, spec: Mapping[str, Any], rule_hosts: list[str]) -> None:
    tls_entries = spec.get("tls")
    if tls_entries is not None and not isinstance(tls_entries, list):
        builder.problem(source, "spec.tls", "is not a list; TLS skipped")
        return
    for tls_index, entry in enumerate(as_list(tls_entries)):
        tls_field = f"spec.tls[{tls_index}]"
        if not isinstance(entry, Mapping):
            builder.problem(source, tls_field, "is not an object; TLS entry skipped")
            continue
        secret_name = entry.get("secretName")
        if secret_name is None:
            continue  # SNI-only entry: nothing to serve
        cert = _certificate(builder, source, f"{tls_field}.secretName", secret_name)
        if cert is None:
            continue
        hosts_field = entry.get("hosts")
        if hosts_field is None or hosts_field == []:
            hosts = [(f"{tls_field}.hosts", h) for h in rule_hosts]
        elif not isinstance(hosts_field, list):
            builder.problem(source, f"{tls_field}.hosts", "is not a list of host names; TLS entry skipped")
            continue
        else:
            hosts = [(f"{tls_field}.hosts[{i}]", h) for i, h in enumerate(hosts_field)]
        for host_field, raw_host in hosts:
            if raw_host is None or raw_host == "":
                # In a rule an empty host means "any host"; TLS never applies to that.
                builder.problem(source, host_field, "is empty; TLS needs a host name")
                continue
            host = valid_host(builder.problem, source, host_field, raw_host)
            if host is None or host == ANY_HOST:
                continue
            owner = builder.host_certs.get(host)
            if owner is None:
                builder.host_certs[host] = (cert, source)
            elif owner[0] != cert:
                builder.problem(
                    source, host_field, f"{host} already uses certificate {owner[0]} of the older {owner[1]}"
                )


def _certificate(builder: _Builder, source: SourceRef, field_path: str, secret_name: Any) -> str | None:
    if not is_dns_subdomain(secret_name):
        builder.problem(source, field_path, f"{shown(secret_name)} is not a Secret name; hosts served without TLS")
        return None
    name = f"{source.namespace}/{secret_name}"
    if name in builder.certs:
        return name
    secret = builder.snapshot.get("Secret", source.namespace, secret_name)
    if secret is None:
        malformed = builder.snapshot.is_rejected("Secret", source.namespace, secret_name)
        why = "is malformed (see its own problem)" if malformed else "not found (or not of type kubernetes.io/tls)"
        builder.problem(source, field_path, f"Secret {name} {why}; hosts served without TLS")
        return None
    try:
        cert = load_tls_secret(name, secret, SourceRef("Secret", source.namespace, secret_name))
    except CertificateProblem as problem:
        builder.problem(source, field_path, f"Secret {name}: {problem}; hosts served without TLS")
        return None
    if builder.now is not None and cert.not_after < builder.now:
        # Still served: an expired certificate is better than none for the clients that accept it, and
        # dropping it would silently downgrade the host to plain HTTP.
        builder.problem(
            source, field_path, f"Secret {name}: the certificate expired at {cert.not_after}; served anyway"
        )
    builder.certs[name] = cert
    return name
