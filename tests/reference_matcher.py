"""Reference oracles for Kubernetes Ingress routing: over a RoutingModel and over raw Ingress manifests. No I/O.

Both are brute force and independent of the translator's ordering: they scan every route or rule for every
request, so a precedence mistake in the translator cannot hide behind the same mistake here. The semantics
are the Kubernetes Ingress specification's, with the choices the specification leaves open made as
README/syncer/translate/ document them:
- Host: a `:port` suffix is dropped and the name lower-cased. An exact host beats a single-label wildcard
  (`*.example.com` matches `a.example.com`, not `b.a.example.com` nor `example.com`), which beats the
  host-less rules. Once a request's host matched a host, host-less rules are not consulted.
- Path (query string excluded): Exact compares the whole path, case-sensitively; Prefix compares `/`
  elements, ignoring a trailing slash on either side, `/` matching everything. The longest path wins;
  at equal length Exact beats Prefix. `ImplementationSpecific` is Prefix (an empty path is `/`).
- No path matches: the default backend of the host (the oldest Ingress with a `defaultBackend` and a rule
  for that host, host-less rules counting for requests that matched no host), else the cluster-wide
  default (the oldest Ingress's `defaultBackend`), else 404 (None).
- Conflicts (same host, same path and type after normalisation) are won by the oldest Ingress
  (`creationTimestamp`, then namespace/name); within one Ingress by the first rule.
"""

from __future__ import annotations

import random
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from syncer.model import PathMatch, Route, RoutingModel, VirtualHost

ANY_HOST = "*"

# --- request normalisation and single-rule matching, shared by both oracles -------------------------------


def normalise_host(host: str) -> str:
    """`Shop.Example.COM:8080` -> `shop.example.com`; a bracketed IPv6 literal keeps its colons."""
    host = host.strip()
    if host.startswith("["):
        end = host.find("]")
        return (host[: end + 1] if end >= 0 else host).lower()
    return host.partition(":")[0].lower()


def request_path(path: str) -> str:
    """The path a rule is matched against: no query string, no fragment, normalised as both proxies do
    before routing (our product choice, README "Ingress semantics"): `//` merged, `.` and `..` resolved."""
    raw = path.split("?", 1)[0].split("#", 1)[0] or "/"
    segments: list[str] = []
    for segment in raw.split("/")[1:]:
        if segment == "..":
            if segments:
                segments.pop()
        elif segment not in (".", ""):
            segments.append(segment)
    trailing = "/" if raw.endswith(("/", "/.", "/..")) and segments else ""
    return "/" + "/".join(segments) + trailing


def host_matches(rule_host: str, host: str) -> bool:
    """Exact or single-label wildcard match of a normalised request host (`*` is handled by the caller)."""
    if rule_host.startswith("*."):
        label, dot, rest = host.partition(".")
        return bool(label) and bool(dot) and rest == rule_host[2:]
    return rule_host == host


def _elements(path: str) -> list[str]:
    return path.rstrip("/").split("/")


def path_matches(match: PathMatch, rule_path: str, path: str) -> bool:
    if match is PathMatch.EXACT:
        return rule_path == path
    if rule_path.rstrip("/") == "":
        return True
    rule, request = _elements(rule_path), _elements(path)
    return request[: len(rule)] == rule


def _path_length(match: PathMatch, rule_path: str) -> int:
    # A Prefix rule's trailing slash means nothing, so `/foo/` is exactly as specific as `/foo`.
    return len(rule_path) if match is PathMatch.EXACT else len(rule_path.rstrip("/")) or 1


# --- oracle 1: the RoutingModel ------------------------------------------------------------------------------


def _vhost_for(model: RoutingModel, host: str) -> VirtualHost | None:
    tiers: list[list[VirtualHost]] = [[], [], []]
    for vhost in model.virtual_hosts:
        if vhost.hostname == ANY_HOST:
            tiers[2].append(vhost)
        elif host_matches(vhost.hostname, host):
            tiers[1 if vhost.hostname.startswith("*.") else 0].append(vhost)
    for tier in tiers:
        if tier:
            assert len(tier) == 1, f"several virtual hosts match {host!r}: {[v.hostname for v in tier]}"
            return tier[0]
    return None


def _best_route(routes: Iterable[Route], path: str) -> Route | None:
    candidates = [r for r in routes if path_matches(r.match, r.path, path)]
    if not candidates:
        return None

    def strength(route: Route) -> tuple[int, int]:
        return (_path_length(route.match, route.path), 1 if route.match is PathMatch.EXACT else 0)

    best = max(strength(r) for r in candidates)
    winners = [r for r in candidates if strength(r) == best]
    assert len(winners) == 1, f"ambiguous routes for {path!r}: {[r.name for r in winners]}"
    return winners[0]


def answer(model: RoutingModel, host: str, path: str) -> str | None:
    """The backend name that should answer `host` + `path` according to the Ingress specification, None for 404."""
    vhost = _vhost_for(model, normalise_host(host))
    if vhost is None:
        return model.default_backend
    route = _best_route(vhost.routes, request_path(path))
    return route.backend if route is not None else model.default_backend


# --- oracle 2: raw Ingress manifests -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Rule:
    host: str  # lower-cased, `*` for host-less
    path: str | None  # None: a rule without `http` (its host is declared, it has no paths)
    match: PathMatch
    backend: str
    order: int  # oldest Ingress first, then rule and path index


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


_NEVER = datetime.max.replace(tzinfo=timezone.utc)


def _age(ingress: Mapping[str, Any]) -> tuple[datetime, str, str]:
    meta = _mapping(ingress.get("metadata"))
    raw = meta.get("creationTimestamp")
    # Parsed, not compared as text: the oracle must not share the translator's shortcut.
    created = datetime.fromisoformat(raw.replace("Z", "+00:00")) if isinstance(raw, str) else _NEVER
    return (created, str(meta.get("namespace") or ""), str(meta.get("name") or ""))


def age_order(ingresses: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Oldest first; an Ingress without a creationTimestamp counts as the youngest."""
    return sorted(ingresses, key=_age)


def backend_name(namespace: str, reference: Any, services: Mapping[tuple[str, str], Mapping[str, Any]]) -> str:
    """`namespace/service/<Service port number>`; a port that does not resolve keeps the Ingress's reference."""
    service_ref = _mapping(_mapping(reference).get("service"))
    name = str(service_ref.get("name"))
    port_ref = _mapping(service_ref.get("port"))
    wanted = port_ref["number"] if port_ref.get("number") is not None else port_ref.get("name")
    key = "port" if port_ref.get("number") is not None else "name"
    service = services.get((namespace, name))
    for port in _list(_mapping(_mapping(service).get("spec")).get("ports")):
        if _mapping(port).get(key) == wanted:
            return f"{namespace}/{name}/{port['port']}"
    return f"{namespace}/{name}/{wanted}"


@dataclass(frozen=True)
class IngressRules:
    """Served Ingresses flattened into rules, plus their default backends, oldest first."""

    rules: tuple[_Rule, ...]
    host_defaults: tuple[tuple[str, str], ...]  # (host, backend) per Ingress with a defaultBackend, oldest first
    cluster_default: str | None


def compile_ingresses(ingresses: Iterable[Mapping[str, Any]], services: Iterable[Mapping[str, Any]]) -> IngressRules:
    """`ingresses`: only those the controller serves (the class selection is not re-implemented here)."""
    by_key = {
        (
            str(_mapping(s.get("metadata")).get("namespace") or "default"),
            str(_mapping(s.get("metadata")).get("name")),
        ): s
        for s in services
    }
    rules: list[_Rule] = []
    host_defaults: list[tuple[str, str]] = []
    cluster_default: str | None = None
    for ingress in age_order(ingresses):
        namespace = str(_mapping(ingress.get("metadata")).get("namespace") or "default")
        spec = _mapping(ingress.get("spec"))
        hosts: list[str] = []
        for rule in _list(spec.get("rules")):
            host = str(_mapping(rule).get("host") or ANY_HOST).lower()
            hosts.append(host)
            http = _mapping(rule).get("http")
            if http is None:
                rules.append(_Rule(host, None, PathMatch.PREFIX, "", len(rules)))
            for path_rule in _list(_mapping(http).get("paths")):
                path_type, path = path_rule.get("pathType"), path_rule.get("path")
                if path_type == "ImplementationSpecific":
                    path_type, path = "Prefix", path or "/"
                backend = backend_name(namespace, path_rule.get("backend"), by_key)
                rules.append(_Rule(host, str(path), PathMatch(path_type), backend, len(rules)))
        if "defaultBackend" in spec:
            backend = backend_name(namespace, spec["defaultBackend"], by_key)
            cluster_default = cluster_default or backend
            host_defaults.extend((host, backend) for host in hosts)
    return IngressRules(tuple(rules), tuple(host_defaults), cluster_default)


def spec_answer(compiled: IngressRules, host: str, path: str) -> str | None:
    """What the specification says answers `host` + `path`, straight from the Ingress rules."""
    host, path = normalise_host(host), request_path(path)
    exact = [r for r in compiled.rules if r.host == host]
    wildcard = [r for r in compiled.rules if r.host.startswith("*.") and host_matches(r.host, host)]
    any_host = [r for r in compiled.rules if r.host == ANY_HOST]
    chosen = exact or wildcard or any_host
    chosen_host = chosen[0].host if chosen else ANY_HOST
    matching = [r for r in chosen if r.path is not None and path_matches(r.match, r.path, path)]
    if matching:
        longest = max(_path_length(r.match, r.path or "") for r in matching)
        longest_rules = [r for r in matching if _path_length(r.match, r.path or "") == longest]
        winners = [r for r in longest_rules if r.match is PathMatch.EXACT] or longest_rules
        # The winners are one rule (same path, same type) written by several Ingresses: the oldest keeps it.
        return min(winners, key=lambda r: r.order).backend
    for default_host, backend in compiled.host_defaults:
        if default_host == chosen_host:
            return backend
    return compiled.cluster_default


# --- request generation --------------------------------------------------------------------------------------

_LABELS = ("x", "www", "b", "api")
_UNKNOWN_HOSTS = ("unknown.test", "localhost", "example.org", "10.0.0.1", "[fd00::1]:443")


def _instances(hostname: str, rng: random.Random) -> list[str]:
    if hostname == ANY_HOST:
        return []
    if hostname.startswith("*."):
        domain = hostname[2:]
        return [f"{rng.choice(_LABELS)}.{domain}", f"{rng.choice(_LABELS)}.{rng.choice(_LABELS)}.{domain}", domain]
    parent = hostname.partition(".")[2]
    return [hostname, f"{rng.choice(_LABELS)}.{hostname}", *([parent] if parent else [])]


def _host_variants(host: str) -> list[str]:
    return [host, host.upper(), f"{host}:8080", f"{host.title()}:443"]


def _junk_path(rng: random.Random) -> str:
    segments = [
        "".join(rng.choice(string.ascii_letters + string.digits + "-._~") for _ in range(rng.randint(1, 6)))
        for _ in range(rng.randint(0, 3))
    ]
    return "/" + "/".join(segments) + rng.choice(("", "/", "?q=1", "?a=/b"))


def _path_variants(path: str) -> list[str]:
    trimmed = path.rstrip("/") or "/"
    parent = trimmed.rsplit("/", 1)[0] or "/"
    return [
        path,
        trimmed,
        trimmed + "/",
        trimmed.rstrip("/") + "/extra",
        trimmed + "x",
        parent,
        path.upper(),
        path + "?x=1",
        trimmed + "/?x=1",
    ]


def generate_requests(
    model: RoutingModel,
    rng: random.Random,
    count: int,
    extra_hosts: Sequence[str] = (),
    extra_paths: Sequence[str] = (),
) -> list[tuple[str, str]]:
    """`count` (host, path) pairs around the model's hostnames and paths, near misses included. Seeded by `rng`."""
    hosts: list[str] = list(_UNKNOWN_HOSTS)
    paths: list[str] = ["/", ""]
    per_vhost: list[tuple[list[str], list[str]]] = []
    for vhost in model.virtual_hosts:
        own_hosts = [v for h in _instances(vhost.hostname, rng) for v in _host_variants(h)]
        own_paths = [v for r in vhost.routes for v in _path_variants(r.path)]
        hosts += own_hosts
        paths += own_paths
        per_vhost.append((own_hosts or list(_UNKNOWN_HOSTS), own_paths))
    for extra in extra_hosts:
        hosts += [v for h in _instances(extra.lower(), rng) for v in _host_variants(h)]
    for extra in extra_paths:
        paths += _path_variants(extra)
    paths += [_junk_path(rng) for _ in range(20)]
    # Half targeted (a vhost's own hosts with its own paths), half anything with anything.
    requests: list[tuple[str, str]] = []
    while len(requests) < count // 2 and any(p for _, p in per_vhost):
        own_hosts, own_paths = rng.choice(per_vhost)
        if own_paths:
            requests.append((rng.choice(own_hosts), rng.choice(own_paths)))
    while len(requests) < count:
        requests.append((rng.choice(hosts), rng.choice(paths)))
    return requests
