"""Translator, backend part: an Ingress backend reference -> a Backend with its endpoints. Pure, no I/O.

Endpoints come from the EndpointSlices labelled `kubernetes.io/service-name`: an endpoint serves when its
`ready` condition is true or unset. Terminating endpoints (`ready: false`, even when still `serving`) get
no traffic: an edge proxy that only polls would keep sending new connections to a pod that is going
away for a whole interval, and the pod's own preStop/grace period is what drains its open connections.
A named `targetPort` can resolve to different numbers on different pods, so the port is taken per slice
from the slice port that has the Service port's name. `address:port` pairs are deduplicated across
slices (a pod can sit in two slices while they are rebalanced); FQDN slices are skipped.

With `upstream="service"` the backend is the Service's ClusterIP and port instead, for proxies that can
reach ClusterIPs but not pod IPs (kube-proxy then balances per connection). ExternalName Services can
point anywhere, including at internal names, so they are served only with `allow_external_name`; their
backend is the DNS name and the Service port, resolved by the proxy.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from syncer.model import Backend, Endpoint, SourceRef
from syncer.snapshot import KubeObject, Snapshot
from syncer.translate.objects import as_list, as_mapping, is_dns_subdomain, shown

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
UPSTREAM_MODES = ("endpoints", "service")
# An IANA service name, as the API server requires of port names: at most 15 characters, lower-case letters,
# digits and inner single hyphens, at least one letter (so a name never looks like a port number).
_PORT_NAME_RE = re.compile(r"(?=.*[a-z])[a-z0-9]+(-[a-z0-9]+)*")  # fullmatch: `$` allows a trailing newline

ProblemSink = Callable[[SourceRef, str, str], None]


def _valid_port(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 65535


@dataclass
class BackendResolver:
    snapshot: Snapshot
    problem: ProblemSink
    upstream: str = "endpoints"
    allow_external_name: bool = False
    backends: dict[str, Backend] = field(default_factory=dict)
    _slices: dict[tuple[str, str], list[KubeObject]] = field(default_factory=dict)
    _endpoints: dict[tuple[str, str, int], tuple[Endpoint, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # One pass over the slices instead of one per backend: nothing quadratic at 10k Services.
        for endpoint_slice in self.snapshot.of_kind("EndpointSlice"):
            meta = as_mapping(endpoint_slice.get("metadata"))
            service = as_mapping(meta.get("labels")).get(SERVICE_NAME_LABEL)
            if isinstance(service, str):
                self._slices.setdefault((str(meta.get("namespace") or ""), service), []).append(endpoint_slice)

    def resolve(self, source: SourceRef, field_path: str, raw: Any) -> str | None:
        """The name of the Backend for an Ingress backend reference, or None when the reference is unusable.

        A reference that is well formed but points at nothing (missing Service or port, no endpoints) still
        gets a Backend without endpoints: its route stays and answers 503 instead of falling through.
        """
        reference = as_mapping(raw)
        if not isinstance(raw, Mapping):
            self.problem(source, field_path, "missing or not an object; path skipped")
            return None
        if "resource" in reference:
            self.problem(source, f"{field_path}.resource", "resource backends are not supported; path skipped")
            return None
        service_ref = as_mapping(reference.get("service"))
        service_name = service_ref.get("name")
        port_ref = as_mapping(service_ref.get("port"))
        number, port_name = port_ref.get("number"), port_ref.get("name")
        if not is_dns_subdomain(service_name):
            self.problem(
                source, f"{field_path}.service.name", f"{shown(service_name)} is not a Service name; path skipped"
            )
            return None
        if (number is None) == (port_name is None):
            self.problem(source, f"{field_path}.service.port", "needs exactly one of number or name; path skipped")
            return None
        if number is not None and not _valid_port(number):
            self.problem(
                source,
                f"{field_path}.service.port.number",
                f"{shown(number)} is not a port from 1 to 65535; path skipped",
            )
            return None
        if port_name is not None and not (
            isinstance(port_name, str) and len(port_name) <= 15 and _PORT_NAME_RE.fullmatch(port_name)
        ):
            self.problem(
                source, f"{field_path}.service.port.name", f"{shown(port_name)} is not a port name; path skipped"
            )
            return None
        assert isinstance(service_name, str)
        namespace = source.namespace
        wanted: int | str = number if number is not None else port_name  # type: ignore[assignment]
        backend = self._backend(source, field_path, namespace, service_name, wanted)
        self.backends.setdefault(backend.name, backend)
        return backend.name

    def _backend(
        self, source: SourceRef, field_path: str, namespace: str, service_name: str, wanted: int | str
    ) -> Backend:
        def unresolved(field_suffix: str, message: str) -> Backend:
            self.problem(source, f"{field_path}.service{field_suffix}", f"{message}; answering 503")
            return Backend(f"{namespace}/{service_name}/{wanted}", namespace, service_name, str(wanted))

        service = self.snapshot.get("Service", namespace, service_name)
        if service is None:
            if self.snapshot.is_rejected("Service", namespace, service_name):
                return unresolved(".name", f"Service {namespace}/{service_name} is malformed (see its own problem)")
            return unresolved(".name", f"Service {namespace}/{service_name} not found")
        spec = as_mapping(service.get("spec"))
        ports = [p for p in as_list(spec.get("ports")) if isinstance(p, Mapping)]
        service_port = next(
            (p for p in ports if (p.get("port") if isinstance(wanted, int) else p.get("name")) == wanted), None
        )
        if spec.get("type") == "ExternalName":
            return self._external_name(source, field_path, namespace, service_name, wanted, spec, service_port, ports)
        if service_port is None or not _valid_port(service_port.get("port")):
            return unresolved(".port", f"Service {namespace}/{service_name} has no port {wanted}")
        port = int(service_port["port"])
        name = f"{namespace}/{service_name}/{port}"
        if self.upstream == "service":
            cluster_ip = spec.get("clusterIP")
            if not isinstance(cluster_ip, str) or cluster_ip in ("", "None"):
                self.problem(
                    source,
                    f"{field_path}.service.name",
                    f"Service {namespace}/{service_name} has no ClusterIP (headless?) for --upstream service; "
                    "answering 503",
                )
                return Backend(name, namespace, service_name, str(port))
            return Backend(name, namespace, service_name, str(port), (Endpoint(cluster_ip, port),))
        endpoints = self._ready_endpoints(namespace, service_name, port, str(service_port.get("name") or ""))
        if not endpoints:
            self.problem(
                source,
                f"{field_path}.service.name",
                f"Service {namespace}/{service_name} has no ready endpoints for port {port}; answering 503",
            )
        return Backend(name, namespace, service_name, str(port), endpoints)

    def _external_name(
        self,
        source: SourceRef,
        field_path: str,
        namespace: str,
        service_name: str,
        wanted: int | str,
        spec: Mapping[str, Any],
        service_port: Mapping[str, Any] | None,
        ports: list[Mapping[str, Any]],
    ) -> Backend:
        label = f"Service {namespace}/{service_name}"
        unusable = Backend(f"{namespace}/{service_name}/{wanted}", namespace, service_name, str(wanted))
        if not self.allow_external_name:
            self.problem(
                source,
                f"{field_path}.service.name",
                f"{label} is of type ExternalName, which is served only with --allow-external-name; answering 503",
            )
            return unusable
        external = spec.get("externalName")
        external = external.lower().rstrip(".") if isinstance(external, str) and external.isascii() else external
        if not is_dns_subdomain(external):
            self.problem(
                source,
                f"{field_path}.service.name",
                f"{label}: spec.externalName {shown(external)} is not a DNS name; answering 503",
            )
            return unusable
        # The Service port is what clients of the external name connect to; an ExternalName Service may list
        # no ports at all, and then the Ingress's port number is taken as is.
        if service_port is not None and _valid_port(service_port.get("port")):
            port = int(service_port["port"])
        elif not ports and isinstance(wanted, int):
            port = wanted
        else:
            self.problem(source, f"{field_path}.service.port", f"{label} has no port {wanted}; answering 503")
            return unusable
        return Backend(
            f"{namespace}/{service_name}/{port}",
            namespace,
            service_name,
            str(port),
            (Endpoint(str(external), port),),
            external_name=str(external),
        )

    def _ready_endpoints(self, namespace: str, service_name: str, port: int, port_name: str) -> tuple[Endpoint, ...]:
        key = (namespace, service_name, port)
        if key not in self._endpoints:
            self._endpoints[key] = ready_endpoints(self._slices.get((namespace, service_name), ()), port_name)
        return self._endpoints[key]


def ready_endpoints(slices: Iterable[KubeObject], port_name: str) -> tuple[Endpoint, ...]:
    # The innermost loop of a translation (50,000 endpoints at 10,000 Services): plain dict checks first.
    found: dict[tuple[str, int], None] = {}
    for endpoint_slice in slices:
        if endpoint_slice.get("addressType") not in ("IPv4", "IPv6"):
            continue  # FQDN slices have no defined semantics
        port = next(
            (
                p.get("port")
                for p in as_list(endpoint_slice.get("ports"))
                if isinstance(p, Mapping) and str(p.get("name") or "") == port_name
            ),
            None,
        )
        if not _valid_port(port):
            continue
        for endpoint in as_list(endpoint_slice.get("endpoints")):
            if type(endpoint) is not dict:
                endpoint = as_mapping(endpoint)
            conditions = endpoint.get("conditions")
            if conditions and as_mapping(conditions).get("ready", True) is False:  # unset means ready
                continue
            addresses = endpoint.get("addresses")
            # Controller-made slices carry exactly one address per endpoint; consumers use the first.
            if type(addresses) is list and addresses:
                address = _canonical_ip(addresses[0])
                if address is not None:
                    found[(address, port)] = None
    return tuple(Endpoint(address, port) for address, port in sorted(found))


def _canonical_ip(value: Any) -> str | None:
    """One spelling per address (`FD00:0::1` and `fd00::1` are one endpoint); None for anything not an IP.

    A zone (`fe80::1%eth0`) names an interface of the pod's node, meaningless to a proxy elsewhere, and
    neither proxy accepts one."""
    if not isinstance(value, str) or "%" in value:
        return None
    if ":" not in value:
        # The C parser's round trip: a dotted quad it prints back unchanged is valid and already canonical
        # (50,000 endpoints at 10,000 Services; `ipaddress` costs ten times more). Anything else is decided below.
        try:
            if socket.inet_ntop(socket.AF_INET, socket.inet_pton(socket.AF_INET, value)) == value:
                return value
        except (OSError, ValueError):
            pass
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None
