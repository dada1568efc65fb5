"""The Kubernetes resource kinds syncer reads and writes, and how their URLs are built. No I/O."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote


@dataclass(frozen=True, slots=True)
class ResourceKind:
    kind: str
    group: str  # "" for the core group
    version: str
    plural: str
    namespaced: bool
    field_selector: str | None = None  # a server-side filter this tool always applies

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def rbac_resource(self) -> str:
        """How RBAC rules spell this resource: `ingresses.networking.k8s.io`, `services`."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def list_path(self, namespace: str | None = None) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if namespace is not None and self.namespaced:
            return f"{base}/namespaces/{quote(namespace, safe='')}/{self.plural}"
        return f"{base}/{self.plural}"

    def object_path(self, namespace: str | None, name: str, subresource: str = "") -> str:
        """`.../namespaces/NS/PLURAL/NAME[/SUBRESOURCE]`: one object, or its `status` subresource."""
        path = f"{self.list_path(namespace if self.namespaced else None)}/{quote(name, safe='')}"
        return f"{path}/{subresource}" if subresource else path


INGRESS_CLASS = ResourceKind("IngressClass", "networking.k8s.io", "v1", "ingressclasses", namespaced=False)
INGRESS = ResourceKind("Ingress", "networking.k8s.io", "v1", "ingresses", namespaced=True)
SERVICE = ResourceKind("Service", "", "v1", "services", namespaced=True)
ENDPOINT_SLICE = ResourceKind("EndpointSlice", "discovery.k8s.io", "v1", "endpointslices", namespaced=True)
# Only TLS Secrets are listed: the field selector keeps every other Secret (Helm releases, tokens) off the wire.
TLS_SECRET = ResourceKind("Secret", "", "v1", "secrets", namespaced=True, field_selector="type=kubernetes.io/tls")

# Written, never listed: the leader-election lock (syncer.run.leader).
LEASE = ResourceKind("Lease", "coordination.k8s.io", "v1", "leases", namespaced=True)

WATCHED_KINDS: tuple[ResourceKind, ...] = (INGRESS_CLASS, INGRESS, SERVICE, ENDPOINT_SLICE, TLS_SECRET)
KINDS_BY_NAME: dict[str, ResourceKind] = {k.kind: k for k in WATCHED_KINDS}


def resolve_kind(kind: str | ResourceKind) -> ResourceKind:
    """Accepts a ResourceKind, a kind name (`Ingress`) or a plural (`ingresses`)."""
    if isinstance(kind, ResourceKind):
        return kind
    for candidate in WATCHED_KINDS:
        if kind in (candidate.kind, candidate.plural):
            return candidate
    raise ValueError(f"unknown resource kind {kind!r}; known: {', '.join(sorted(KINDS_BY_NAME))}")
