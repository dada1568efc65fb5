"""A synthetic cluster for the benchmark: N Ingresses, Services, EndpointSlices, N/10 TLS Secrets. No I/O.

Each Ingress has one host and two Prefix paths (`/` and `/api`) to its own Service; every tenth also has a
`tls` entry naming its own Secret, which holds a self-signed EC certificate for that host (the translator
parses the PEM and matches key to certificate, so each Secret gets a real pair: about 0.1 ms apiece).
Each Service has one EndpointSlice with five ready endpoints. Objects carry the metadata a real API
server returns (labels, owner references, one managedFields entry), so list pages have realistic sizes.

Every endpoint address is a made-up one in 127.16.0.0/12: loopback, so even a proxy that does route to
one (the propagation benchmark runs real proxies) never sends a packet off this machine.
"""

from __future__ import annotations

import base64
import copy
import datetime
import hashlib
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

Obj = dict[str, Any]

INGRESS_CLASS = "syncer"
CONTROLLER = "ingress-syncer.dev/controller"
PER_NAMESPACE = 100
ENDPOINTS_PER_SLICE = 5
TLS_EVERY = 10
SERVICE_PORT = 80
TARGET_PORT = 8080
CHANGED_PATH_INDEX = 1  # the second path (`/api`) is the one a change moves
_EPOCH = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)


@dataclass(frozen=True)
class Cluster:
    """The objects of each kind, in index order (Ingress i, Service i and EndpointSlice i belong together)."""

    ingress_classes: list[Obj]
    ingresses: list[Obj]
    services: list[Obj]
    endpoint_slices: list[Obj]
    secrets: list[Obj]

    def by_kind(self) -> dict[str, list[Obj]]:
        return {
            "IngressClass": self.ingress_classes,
            "Ingress": self.ingresses,
            "Service": self.services,
            "EndpointSlice": self.endpoint_slices,
            "Secret": self.secrets,
        }


def namespace_of(index: int) -> str:
    return f"team-{index // PER_NAMESPACE:03d}"


def name_of(index: int) -> str:
    return f"app-{index:05d}"


def host_of(index: int) -> str:
    return f"{name_of(index)}.{namespace_of(index)}.example.com"


def has_tls(index: int) -> bool:
    return index % TLS_EVERY == 0


def endpoint_address(index: int, endpoint: int) -> str:
    """A distinct loopback address for each endpoint (127.16.0.1 upwards; never .0 or .255)."""
    serial = index * ENDPOINTS_PER_SLICE + endpoint
    block, host = divmod(serial, 254)
    return f"127.{16 + block // 256}.{block % 256}.{host + 1}"


def _uid(kind: str, index: int) -> str:
    digest = hashlib.sha256(f"{kind}/{index}".encode()).hexdigest()
    return f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"


def _timestamp(index: int) -> str:
    return (_EPOCH + datetime.timedelta(seconds=index)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _managed(manager: str, operation: str, index: int, fields: Obj) -> list[Obj]:
    return [
        {
            "manager": manager,
            "operation": operation,
            "apiVersion": "v1",
            "time": _timestamp(index),
            "fieldsType": "FieldsV1",
            "fieldsV1": fields,
        }
    ]


def _labels(index: int) -> dict[str, str]:
    return {"app.kubernetes.io/name": name_of(index), "app.kubernetes.io/part-of": "benchmark"}


def make_ingress(index: int) -> Obj:
    name, host = name_of(index), host_of(index)
    backend = {"service": {"name": name, "port": {"name": "http"}}}
    spec: Obj = {
        "ingressClassName": INGRESS_CLASS,
        "rules": [
            {
                "host": host,
                "http": {
                    "paths": [
                        {"path": "/", "pathType": "Prefix", "backend": copy.deepcopy(backend)},
                        {"path": "/api", "pathType": "Prefix", "backend": copy.deepcopy(backend)},
                    ]
                },
            }
        ],
    }
    if has_tls(index):
        spec["tls"] = [{"hosts": [host], "secretName": f"{name}-tls"}]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {
            "name": name,
            "namespace": namespace_of(index),
            "uid": _uid("Ingress", index),
            "creationTimestamp": _timestamp(index),
            "generation": 1,
            "labels": _labels(index),
            "annotations": {"benchmark.ingress-syncer.dev/owner": f"team {index // PER_NAMESPACE}"},
            "managedFields": _managed(
                "kubectl-client-side-apply", "Update", index, {"f:spec": {"f:ingressClassName": {}, "f:rules": {}}}
            ),
        },
        "spec": spec,
        "status": {"loadBalancer": {}},
    }


def make_service(index: int) -> Obj:
    name = name_of(index)
    cluster_ip = f"10.96.{index // 256 % 256}.{index % 256}"
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": namespace_of(index),
            "uid": _uid("Service", index),
            "creationTimestamp": _timestamp(index),
            "labels": _labels(index),
            "managedFields": _managed(
                "kubectl-client-side-apply", "Update", index, {"f:spec": {"f:ports": {}, "f:selector": {}}}
            ),
        },
        "spec": {
            "type": "ClusterIP",
            "clusterIP": cluster_ip,
            "clusterIPs": [cluster_ip],
            "ipFamilies": ["IPv4"],
            "ipFamilyPolicy": "SingleStack",
            "internalTrafficPolicy": "Cluster",
            "sessionAffinity": "None",
            "selector": {"app.kubernetes.io/name": name},
            "ports": [{"name": "http", "port": SERVICE_PORT, "protocol": "TCP", "targetPort": TARGET_PORT}],
        },
        "status": {"loadBalancer": {}},
    }


def make_endpoint_slice(index: int) -> Obj:
    name, namespace = name_of(index), namespace_of(index)
    suffix = hashlib.sha256(f"slice/{index}".encode()).hexdigest()[:5]
    endpoints = []
    for e in range(ENDPOINTS_PER_SLICE):
        pod = f"{name}-{suffix}-{e}"
        endpoints.append(
            {
                "addresses": [endpoint_address(index, e)],
                "conditions": {"ready": True, "serving": True, "terminating": False},
                "nodeName": f"node-{(index + e) % 50:02d}",
                "zone": f"zone-{e % 3}",
                "targetRef": {"kind": "Pod", "name": pod, "namespace": namespace, "uid": _uid("Pod", index * 10 + e)},
            }
        )
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{name}-{suffix}",
            "namespace": namespace,
            "uid": _uid("EndpointSlice", index),
            "creationTimestamp": _timestamp(index),
            "generateName": f"{name}-",
            "labels": {
                "kubernetes.io/service-name": name,
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
                **_labels(index),
            },
            "ownerReferences": [
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "name": name,
                    "uid": _uid("Service", index),
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
            "managedFields": _managed("endpointslice-controller", "Update", index, {"f:endpoints": {}, "f:ports": {}}),
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "http", "port": TARGET_PORT, "protocol": "TCP"}],
    }


def make_tls_secret(index: int) -> Obj:
    """A `kubernetes.io/tls` Secret holding a fresh self-signed P-256 certificate for the Ingress's host."""
    host = host_of(index)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(index + 1)
        .not_valid_before(_EPOCH)
        .not_valid_after(_EPOCH + datetime.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_pem = certificate.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {
            "name": f"{name_of(index)}-tls",
            "namespace": namespace_of(index),
            "uid": _uid("Secret", index),
            "creationTimestamp": _timestamp(index),
            "labels": _labels(index),
        },
        "data": {"tls.crt": base64.b64encode(cert_pem).decode(), "tls.key": base64.b64encode(key_pem).decode()},
    }


def make_ingress_class() -> Obj:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IngressClass",
        "metadata": {"name": INGRESS_CLASS, "uid": _uid("IngressClass", 0), "creationTimestamp": _timestamp(0)},
        "spec": {"controller": CONTROLLER},
    }


def generate(count: int) -> Cluster:
    """The synthetic cluster of `count` Ingresses (and as many Services and EndpointSlices)."""
    indexes = range(count)
    return Cluster(
        ingress_classes=[make_ingress_class()],
        ingresses=[make_ingress(i) for i in indexes],
        services=[make_service(i) for i in indexes],
        endpoint_slices=[make_endpoint_slice(i) for i in indexes],
        secrets=[make_tls_secret(i) for i in indexes if has_tls(i)],
    )


def with_path(ingress: Obj, path: str, service: str | None = None) -> Obj:
    """A copy of the Ingress whose second path is `path` (routed to `service`, default its own Service)."""
    changed = copy.deepcopy(ingress)
    entry = changed["spec"]["rules"][0]["http"]["paths"][CHANGED_PATH_INDEX]
    entry["path"] = path
    if service is not None:
        entry["backend"]["service"]["name"] = service
    changed["metadata"]["generation"] = int(changed["metadata"].get("generation", 1)) + 1
    return changed


def with_endpoints(endpoint_slice: Obj, addresses: list[str], port: int | None = None) -> Obj:
    """A copy of the EndpointSlice with one ready endpoint per address (and every slice port `port`, if given)."""
    changed = copy.deepcopy(endpoint_slice)
    template = changed["endpoints"]
    endpoints = []
    for i, address in enumerate(addresses):
        endpoint = copy.deepcopy(template[i % len(template)])
        endpoint["addresses"] = [address]
        endpoints.append(endpoint)
    changed["endpoints"] = endpoints
    if port is not None:
        for slice_port in changed["ports"]:
            slice_port["port"] = port
    return changed
