"""LISTs: every item of a kind from one revision, paginated, restarted on 410, never going back in time.
Network I/O through the Transport."""

from __future__ import annotations

import builtins
import functools
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from syncer.deadline import Deadline
from syncer.errors import KubeBadResponse, KubeError, KubeExpired, KubeForbidden, KubeNotFound, KubeUnavailable
from syncer.kube.replies import Call, Obj, Reply, TooLargeResourceVersion, Transient, decode_json
from syncer.kube.resources import ResourceKind, resolve_kind
from syncer.kube.transport import Transport

log = logging.getLogger("syncer.kube.client")

_ListKey = tuple[str, str, str | None, str, str]  # (group, plural, namespace, labelSelector, fieldSelector)


@dataclass(frozen=True, slots=True)
class ListResult:
    """One consistent LIST: every item was read at `resource_version` (a cluster-wide revision, not a change marker)."""

    kind: ResourceKind
    items: tuple[Obj, ...]
    resource_version: str


class Lister:
    """Lists through one Transport and remembers the revision each list was read at."""

    def __init__(
        self, transport: Transport, *, page_size: int, max_attempts: int, max_restarts: int, max_pages: int
    ) -> None:
        self._transport = transport
        self._page_size = page_size
        self._max_attempts = max(1, max_attempts)
        self._max_restarts = max_restarts
        self._max_pages = max_pages
        self._last_rv: dict[_ListKey, str] = {}

    def list(
        self,
        kind: str | ResourceKind,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        deadline: Deadline | None = None,
    ) -> ListResult:
        """All items of `kind` (cluster-wide, or in `namespace`) matching the selectors, from one revision.

        Which revision: the first list of a (resource, namespace, selectors) key leaves resourceVersion unset,
        the most recent state, served paginated. Later lists of the same key send
        `resourceVersionMatch=NotOlderThan&resourceVersion=<RV of the last list of that key>`: the API server
        answers from its watch cache (cheap, unlike a quorum read of etcd) and never with anything older than
        what we already saw, so a diff against the previous snapshot cannot see phantom deletes. RV=0 would be
        as cheap but may go back in time (another apiserver, a stale cache) and ignores `limit`.
        A 410 (continue token or RV too old) restarts the whole list with RV unset; collected pages are
        dropped, never spliced with pages from another revision.
        With a `deadline`, no request (first page, next page, retry or restart) starts or waits past it: the list
        fails with KubeDeadlineExceeded instead.
        """
        rk = resolve_kind(kind)
        ns = namespace if rk.namespaced else None
        fields = ",".join(s for s in (rk.field_selector, field_selector) if s)
        key: _ListKey = (rk.group, rk.plural, ns, label_selector or "", fields)
        params = {"labelSelector": label_selector or "", "fieldSelector": fields}
        params = {k: v for k, v in params.items() if v}
        if self._page_size > 0:
            params["limit"] = str(self._page_size)
        since = self._last_rv.get(key)
        last: KubeError | None = None
        for restart in range(max(0, self._max_restarts) + 1):
            try:
                result = self._list_pages(rk, ns, params, since, deadline)
            except KubeExpired as exc:
                log.warning(
                    "list %s: %s; restarting the list from scratch (%d/%d)",
                    rk.rbac_resource,
                    exc,
                    restart + 1,
                    self._max_restarts,
                )
                last = exc
            except TooLargeResourceVersion as exc:
                if since is None:  # nothing to fall back from: a plain outage
                    raise KubeUnavailable(str(exc), resource=exc.resource, status=exc.status) from None
                # The cluster's revision went backwards (etcd restored from backup?) or this apiserver's cache
                # is stuck behind: what we saw last is no longer a usable lower bound.
                log.warning("list %s: %s; listing with resourceVersion unset instead", rk.rbac_resource, exc)
                last = exc
            else:
                self._last_rv[key] = result.resource_version
                return result
            since = None
        raise KubeExpired(
            f"list {rk.rbac_resource} could not complete: {self._max_restarts + 1} tries in a row "
            f"expired or were refused (last: {last}); the collection may be too large to page "
            f"through before continue tokens expire, try a bigger page size",
            resource=rk.rbac_resource,
            status=last.status if last else None,
        )

    def _list_pages(
        self,
        kind: ResourceKind,
        namespace: str | None,
        params: Mapping[str, str],
        since: str | None,
        deadline: Deadline | None,
    ) -> ListResult:
        path = kind.list_path(namespace)
        first = dict(params)
        if since:
            first.update(resourceVersionMatch="NotOlderThan", resourceVersion=since)
        items: list[Obj] = []
        list_rv: str | None = None
        page_params = first
        tokens_seen: set[str] = set()
        for _ in range(self._max_pages):
            page = self.get_page(path, page_params, kind, namespace, deadline)
            for item in page["items"]:
                # Server-side apply bookkeeping: often a third of an object, read by no part of the syncer. Dropped
                # as each page arrives (as client-go users do with an informer transform), it never adds up.
                metadata = item.get("metadata")
                if type(metadata) is dict:
                    metadata.pop("managedFields", None)
            items.extend(page["items"])
            meta = page["metadata"]
            if list_rv is None:
                list_rv = str(meta.get("resourceVersion", ""))
            token = meta.get("continue") or ""
            if not token:  # only `continue` says "more": pages may be short or empty with selectors
                return ListResult(kind, tuple(items), list_rv)
            if token in tokens_seen:
                raise KubeBadResponse(
                    f"bad response: list {kind.rbac_resource} at {path} returned the same continue token twice",
                    resource=kind.rbac_resource,
                )
            tokens_seen.add(token)
            # Continuation pages repeat the query except resourceVersion(Match): the token pins the revision,
            # and the API server refuses both together (400/422), as client-go's pager knows.
            page_params = {**params, "continue": token}
        raise KubeBadResponse(
            f"bad response: list {kind.rbac_resource} at {path} did not end after {self._max_pages} pages",
            resource=kind.rbac_resource,
        )

    def get_page(
        self,
        path: str,
        params: Mapping[str, str],
        kind: ResourceKind,
        namespace: str | None,
        deadline: Deadline | None = None,
    ) -> Obj:
        call = Call("list", kind.rbac_resource, kind.rbac_resource)
        refreshed = [False]  # the 401 refresh happens once per request, retries included
        once = functools.partial(self._get_once, path, params, kind, namespace, refreshed, deadline)
        return self._transport.retried(call, path, once, attempts=self._max_attempts, deadline=deadline)

    def _get_once(
        self,
        path: str,
        params: Mapping[str, str],
        kind: ResourceKind,
        namespace: str | None,
        refreshed: builtins.list[bool],
        deadline: Deadline | None,
    ) -> Obj:
        resource = kind.rbac_resource
        call = Call("list", resource, resource)
        reply = self._transport.send_authorized(call, "GET", path, refreshed, params, deadline=deadline)
        if reply.status == 200:
            return self._parse_list(reply)
        failure = self._transport.failure(call, reply)
        server_said, reason, status = failure.server_said, failure.reason, reply.status
        scope = f'namespace "{namespace}"' if namespace and kind.namespaced else "cluster-wide"
        if status == 403:
            group = f'API group "{kind.group}"' if kind.group else 'the core API group ("")'
            raise KubeForbidden(
                f'forbidden: cannot list {resource} ({scope}): grant verb "list" on resource '
                f'"{kind.plural}" in {group}{server_said}',
                resource=resource,
                verb="list",
                status=status,
            )
        if status == 404:
            raise KubeNotFound(
                f"not found: {resource} is not served at {path} (is API version "
                f"{kind.api_version} enabled on this cluster?){server_said}",
                resource=resource,
                status=status,
            )
        if status == 410:
            raise KubeExpired(
                f"expired: list of {resource} ({reason or 'Gone'}){server_said}", resource=resource, status=status
            )
        self._transport.refused(call, reply, failure, f"list {resource}")

    def _parse_list(self, reply: Reply) -> Obj:
        body = decode_json(reply)
        meta = body.get("metadata") if isinstance(body, dict) else None
        items = body.get("items") if isinstance(body, dict) else None
        if items is None and isinstance(body, dict):
            items = []  # Go encodes an empty slice as null
        if (
            not isinstance(meta, dict)
            or not isinstance(items, list)
            or not all(isinstance(i, dict) for i in items)
            or not isinstance(meta.get("resourceVersion", ""), str)
            or not isinstance(meta.get("continue", ""), str)
        ):
            raise Transient("response is JSON but not a list (no metadata/items)", bad_body=True)
        return {"metadata": meta, "items": items}
