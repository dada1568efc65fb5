"""Kubernetes objects and probes shared by the live proxy tests (Traefik and Envoy): no I/O of their own."""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import Any

import trustme
from cryptography import x509

from tests.proxies import Reply

NS = "live"
CLASS = "syncer"
CONTROLLER = "ingress-syncer.dev/controller"

Obj = dict[str, Any]


def ingress_class() -> Obj:
    return {"metadata": {"name": CLASS}, "spec": {"controller": CONTROLLER}}


def service(name: str) -> Obj:
    return {"metadata": {"name": name, "namespace": NS}, "spec": {"ports": [{"name": "http", "port": 80}]}}


def backend_ref(service_name: str) -> Obj:
    return {"service": {"name": service_name, "port": {"number": 80}}}


def default_backend_ingress(name: str, service_name: str) -> Obj:
    return {
        "metadata": {"name": name, "namespace": NS},
        "spec": {"ingressClassName": CLASS, "defaultBackend": backend_ref(service_name)},
    }


def endpoint_slice(
    addresses: Mapping[str, str],
    port: int,
    service_name: str,
    ready: Sequence[str],
    not_ready: Sequence[str] = (),
    terminating: Sequence[str] = (),
) -> Obj:
    """The Service's one EndpointSlice: each named echo backend (by its entry in `addresses`) in the given state."""
    endpoints = [{"addresses": [addresses[n]], "conditions": {"ready": True}} for n in ready]
    endpoints += [{"addresses": [addresses[n]], "conditions": {"ready": False}} for n in not_ready]
    endpoints += [
        {"addresses": [addresses[n]], "conditions": {"ready": False, "serving": True, "terminating": True}}
        for n in terminating
    ]
    return {
        "metadata": {
            "name": f"{service_name}-slice",
            "namespace": NS,
            "labels": {"kubernetes.io/service-name": service_name},
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        "endpoints": endpoints,
    }


def tls_secret(name: str, leaf: trustme.LeafCert) -> Obj:
    chain = b"".join(blob.bytes() for blob in leaf.cert_chain_pems)
    return {
        "metadata": {"name": name, "namespace": NS},
        "type": "kubernetes.io/tls",
        "data": {
            "tls.crt": base64.b64encode(chain).decode(),
            "tls.key": base64.b64encode(leaf.private_key_pem.bytes()).decode(),
        },
    }


def serial_of(leaf: trustme.LeafCert) -> int:
    return x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes()).serial_number


def backend_of(reply: Reply) -> str | None:
    """The echo backend that answered, or None for anything but a 200 from an echo server."""
    if reply.status != 200 or not isinstance(reply.body, dict) or "backend" not in reply.body:
        return None
    return str(reply.body["backend"])
