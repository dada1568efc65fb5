"""TLS towards the API server: one SSLContext per cluster (its CA only, its client certificate), pinned to every
connection. Writes a client key to a private temporary file for the moment ssl needs to read it."""

from __future__ import annotations

import os
import shutil
import ssl
import tempfile
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from syncer.errors import ConfigError, KubeRequestError
from syncer.kube.kubeconfig import ClusterConfig


class ClusterAdapter(HTTPAdapter):
    """Pins TLS to one SSLContext: trust, client certificate and verify name come from the kubeconfig only.

    requests lets REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE replace a Session's `verify`, and a CA path that reaches
    urllib3 is *added* to the context (load_verify_locations). Both paths are cut here: the pool key always
    carries our context and the per-connection CA/cert attributes are cleared.
    """

    def __init__(self, context: ssl.SSLContext, server_hostname: str | None) -> None:
        self._context = context
        self._tls_kwargs: dict[str, Any] = {"ssl_context": context}
        if server_hostname:
            self._tls_kwargs["server_hostname"] = server_hostname  # SNI and the name the certificate must carry
        super().__init__(max_retries=0)  # tenacity retries; urllib3 must not retry behind its back

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any) -> None:
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs, **self._tls_kwargs)

    def build_connection_pool_key_attributes(
        self, request: requests.PreparedRequest, verify: object, cert: object = None
    ) -> tuple[Any, Any]:
        # Any: the pool kwargs carry server_hostname, which the requests stubs' TypedDict does not list.
        host_params, _ = super().build_connection_pool_key_attributes(request, True, None)
        return host_params, {**self._tls_kwargs, "cert_reqs": self._cert_reqs()}

    def cert_verify(self, conn: Any, url: str, verify: object, cert: object) -> None:
        conn.cert_reqs = self._cert_reqs()
        conn.ca_certs = conn.ca_cert_dir = None
        conn.cert_file = conn.key_file = None

    def _cert_reqs(self) -> str:
        return "CERT_NONE" if self._context.verify_mode == ssl.CERT_NONE else "CERT_REQUIRED"


def load_cert_chain(context: ssl.SSLContext, cert_pem: bytes, key_pem: bytes) -> None:
    """ssl only loads client certificates from files: a private 0700 dir, 0600 files, deleted right after."""
    folder = tempfile.mkdtemp(prefix="syncer-tls-")  # mkdtemp creates it 0700
    try:
        paths = []
        for name, data in (("client.crt", cert_pem), ("client.key", key_pem)):
            path = os.path.join(folder, name)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            paths.append(path)
        context.load_cert_chain(paths[0], paths[1])
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def build_ssl_context(cluster: ClusterConfig, client_cert: tuple[bytes, bytes] | None) -> ssl.SSLContext:
    """Trust only the cluster's CA (or nothing, when the kubeconfig says insecure), plus the client certificate."""
    try:
        if cluster.insecure_skip_tls_verify:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        elif cluster.ca_pem:
            # Only the cluster CA, like client-go: the system store does not vouch for an API server.
            context = ssl.create_default_context(cadata=cluster.ca_pem.decode("ascii", "replace"))
        else:
            context = ssl.create_default_context()
    except (ssl.SSLError, ValueError) as exc:
        raise ConfigError(
            f"the certificate authority of {cluster.describe or cluster.server} is not valid PEM: {exc}"
        ) from None
    if client_cert is not None:
        try:
            load_cert_chain(context, *client_cert)
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise KubeRequestError(
                f"the client certificate/key of {cluster.describe or cluster.server} could "
                f"not be loaded ({type(exc).__name__}: {getattr(exc, 'reason', '') or 'bad PEM'}"
                f"); check client-certificate-data/client-key-data"
            ) from None
    return context
