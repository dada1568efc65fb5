"""The Kubernetes API client the rest of syncer uses: retried LISTs, Ingress status PATCHes, Lease reads and
writes. Network I/O; `requests` stays inside syncer/kube (transport, tls), and its exceptions never leave it.

The parts: `transport` (session, TLS, credentials, one request, retries, error mapping), `lists` (paginated,
revision-consistent LISTs), `writes` (status PATCH, Leases).
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable

from syncer import __version__
from syncer.deadline import Deadline
from syncer.kube.kubeconfig import ClusterConfig
from syncer.kube.lists import Lister, ListResult
from syncer.kube.replies import Obj
from syncer.kube.resources import ResourceKind
from syncer.kube.transport import Transport
from syncer.kube.writes import ObjectWriter

__all__ = ["KubeClient", "ListResult", "Obj"]


class KubeClient:
    """LISTs watched resources from one API server, PATCHes Ingress status, reads and writes Leases.

    Not thread-safe: one per thread (the leader elector's thread gets its own, see `cluster`).
    """

    def __init__(
        self,
        cluster: ClusterConfig,
        *,
        page_size: int = 500,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        max_attempts: int = 5,
        patch_attempts: int = 2,  # for every single-object call: status PATCH, Lease get/create/update
        max_backoff: float = 30.0,
        backoff_base: float = 0.5,
        retry_after_cap: float = 32.0,
        max_elapsed: float = 120.0,
        max_restarts: int = 3,
        max_pages: int = 10_000,
        on_response: Callable[[str, str], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        user_agent: str = f"ingress-syncer/{__version__}",
    ) -> None:
        self._transport = Transport(
            cluster,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_backoff=max_backoff,
            backoff_base=backoff_base,
            retry_after_cap=retry_after_cap,
            max_elapsed=max_elapsed,
            on_response=on_response,
            sleep=sleep,
            user_agent=user_agent,
        )
        self._lists = Lister(
            self._transport,
            page_size=page_size,
            max_attempts=max_attempts,
            max_restarts=max_restarts,
            max_pages=max_pages,
        )
        self._writes = ObjectWriter(self._transport, attempts=patch_attempts)

    def list(
        self,
        kind: str | ResourceKind,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        *,
        deadline: Deadline | None = None,
    ) -> ListResult:
        """All items of `kind` (cluster-wide, or in `namespace`) matching the selectors, from one revision.
        With a `deadline`, no request, retry or pause of the list outlasts it (KubeDeadlineExceeded)."""
        return self._lists.list(kind, namespace, label_selector, field_selector, deadline)

    def patch_ingress_status(
        self,
        namespace: str,
        name: str,
        load_balancer_ingress: builtins.list[dict[str, str]] | None,
        *,
        deadline: Deadline | None = None,
    ) -> None:
        """Sets (or, with None, clears) `status.loadBalancer.ingress` of one Ingress, by `deadline` if one is given."""
        self._writes.patch_ingress_status(namespace, name, load_balancer_ingress, deadline)

    def get_lease(self, namespace: str, name: str) -> Obj | None:
        return self._writes.get_lease(namespace, name)

    def create_lease(self, namespace: str, body: Obj) -> Obj:
        return self._writes.create_lease(namespace, body)

    def update_lease(self, namespace: str, name: str, body: Obj) -> Obj:
        return self._writes.update_lease(namespace, name, body)

    @property
    def cluster(self) -> ClusterConfig:
        """The cluster this client talks to: a second KubeClient for another thread is built from it."""
        return self._transport.cluster

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> KubeClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
