"""Single-object writes: the Ingress status PATCH and the Lease get/create/update of leader election. Network I/O
through the Transport; retried briefly, since neither may hold a cycle or a renew deadline up."""

from __future__ import annotations

import functools
import json

from syncer.deadline import Deadline
from syncer.errors import KubeConflict, KubeForbidden, KubeNotFound
from syncer.kube.replies import Call, Obj, Reply, Transient, decode_json
from syncer.kube.resources import INGRESS, LEASE, ResourceKind
from syncer.kube.transport import Transport

MERGE_PATCH = "application/merge-patch+json"  # the API server answers 415 to a plain application/json PATCH
INGRESS_STATUS_RESOURCE = "ingresses/status"  # how an RBAC rule names the subresource (group networking.k8s.io)
JSON = "application/json"


class ObjectWriter:
    """PATCHes Ingress status and reads and writes Leases through one Transport, `attempts` tries per call."""

    def __init__(self, transport: Transport, *, attempts: int) -> None:
        self._transport = transport
        self._attempts = max(1, attempts)

    def patch_ingress_status(
        self,
        namespace: str,
        name: str,
        load_balancer_ingress: list[dict[str, str]] | None,
        deadline: Deadline | None = None,
    ) -> None:
        """Sets `status.loadBalancer.ingress` of one Ingress (None clears it) through its status subresource.

        A JSON merge patch replaces the list wholesale and touches nothing else; on `/status` the API server
        ignores any spec in it. Needs verb "patch" on "ingresses/status". The same patch twice is harmless, so
        a 429/5xx or a dropped connection is retried, but only `patch_attempts` times with short waits: a
        status write must never hold a sync cycle up for long. Raises KubeForbidden (RBAC), KubeNotFound (the
        Ingress is gone), KubeRequestError (409/415/422, with the server's message), KubeUnavailable, and
        KubeDeadlineExceeded when `deadline` passes first (then no request is sent, or it is cut short).
        """
        path = INGRESS.object_path(namespace, name, "status")
        call = Call("patch", INGRESS_STATUS_RESOURCE, f"the status of Ingress {namespace}/{name}")
        patch = {"status": {"loadBalancer": {"ingress": load_balancer_ingress}}}
        body = json.dumps(patch, sort_keys=True, separators=(",", ":")).encode()
        refreshed = [False]
        once = functools.partial(self._patch_once, call, path, namespace, name, body, refreshed, deadline)
        self._transport.retried(call, path, once, attempts=self._attempts, short=True, deadline=deadline)

    def _patch_once(
        self,
        call: Call,
        path: str,
        namespace: str,
        name: str,
        body: bytes,
        refreshed: list[bool],
        deadline: Deadline | None,
    ) -> None:
        reply = self._transport.send_authorized(
            call, "PATCH", path, refreshed, body=body, content_type=MERGE_PATCH, deadline=deadline
        )
        if 200 <= reply.status < 300:
            return
        failure = self._transport.failure(call, reply)
        server_said, status = failure.server_said, reply.status
        if status == 403:
            raise KubeForbidden(
                f'forbidden: cannot {call.action}: grant verb "patch" on resource "{INGRESS_STATUS_RESOURCE}" '
                f'in API group "{INGRESS.group}" (namespace "{namespace}" or cluster-wide){server_said}',
                resource=call.resource,
                verb="patch",
                status=status,
            )
        if status == 404:
            raise KubeNotFound(
                f"not found: Ingress {namespace}/{name} (deleted since it was listed?){server_said}",
                resource=call.resource,
                status=status,
            )
        self._transport.refused(call, reply, failure, call.action)

    # --- Leases (leader election) ----------------------------------------------------------------
    def get_lease(self, namespace: str, name: str) -> Obj | None:
        """The Lease `namespace/name`, or None when there is none (404). Needs verb "get" on leases.

        Like every Lease call: retried briefly (`patch_attempts`, waits capped at 1 s), since an elector
        that waits long misses its renew deadline anyway. Raises KubeForbidden, KubeUnavailable, ...
        """
        call = Call("get", LEASE.rbac_resource, f"Lease {namespace}/{name}")
        return self._lease_call(call, "GET", LEASE.object_path(namespace, name), namespace, None)

    def create_lease(self, namespace: str, body: Obj) -> Obj:
        """POSTs a new Lease (`body` names it) and returns it as stored, with its resourceVersion.

        Needs verb "create" on leases. A Lease of that name already there is a KubeConflict (reason
        AlreadyExists): another candidate created it first.
        """
        name = str((body.get("metadata") or {}).get("name", ""))
        call = Call("create", LEASE.rbac_resource, f"Lease {namespace}/{name}")
        lease = self._lease_call(call, "POST", LEASE.list_path(namespace), namespace, body)
        assert lease is not None  # only a GET answers None
        return lease

    def update_lease(self, namespace: str, name: str, body: Obj) -> Obj:
        """PUTs the whole Lease; `body` must carry the metadata.resourceVersion it was read at.

        Needs verb "update" on leases. A Lease written since that version is a KubeConflict (reason
        Conflict): someone else wrote it first, read it again. Returns the Lease as stored.
        """
        call = Call("update", LEASE.rbac_resource, f"Lease {namespace}/{name}")
        lease = self._lease_call(call, "PUT", LEASE.object_path(namespace, name), namespace, body)
        assert lease is not None  # only a GET answers None
        return lease

    def _lease_call(self, call: Call, method: str, path: str, namespace: str, body: Obj | None) -> Obj | None:
        data = None if body is None else json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        refreshed = [False]
        once = functools.partial(self._object_once, call, LEASE, method, path, namespace, data, refreshed)
        return self._transport.retried(call, path, once, attempts=self._attempts, short=True)

    def _object_once(
        self,
        call: Call,
        kind: ResourceKind,
        method: str,
        path: str,
        namespace: str,
        body: bytes | None,
        refreshed: list[bool],
    ) -> Obj | None:
        """One GET/POST/PUT of a single object: the object answered, or None for a GET's 404."""
        content_type = JSON if body is not None else None
        reply = self._transport.send_authorized(call, method, path, refreshed, body=body, content_type=content_type)
        if 200 <= reply.status < 300:
            return self._parse_object(reply, kind)
        failure = self._transport.failure(call, reply)
        server_said, reason, status = failure.server_said, failure.reason, reply.status
        if status == 403:
            group = f'API group "{kind.group}"' if kind.group else 'the core API group ("")'
            raise KubeForbidden(
                f'forbidden: cannot {call.action}: grant verb "{call.verb}" on resource "{kind.plural}" in '
                f'{group} (namespace "{namespace}"){server_said}',
                resource=call.resource,
                verb=call.verb,
                status=status,
            )
        if status == 404:
            if method == "GET":
                return None
            raise KubeNotFound(f"not found: cannot {call.action}{server_said}", resource=call.resource, status=status)
        if status == 409:
            raise KubeConflict(
                f"conflict: cannot {call.action}: HTTP 409 {reason}".rstrip() + server_said,
                resource=call.resource,
                reason=reason,
                status=status,
            )
        self._transport.refused(call, reply, failure, call.action)

    def _parse_object(self, reply: Reply, kind: ResourceKind) -> Obj:
        body = decode_json(reply)
        meta = body.get("metadata") if isinstance(body, dict) else None
        if not isinstance(meta, dict) or not isinstance(meta.get("resourceVersion", ""), str):
            raise Transient(f"response is JSON but not a {kind.kind} (no metadata)", bad_body=True)
        return dict(body)
