"""Ingress status write-back: addresses to publish, PATCHed where they differ. Network I/O only via its client.

The client is `KubeClient.patch_ingress_status`; what is there now comes from the cycle's snapshot, so an
Ingress whose status already matches costs no request.
"""

from __future__ import annotations

import enum
import ipaddress
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from syncer.deadline import Deadline
from syncer.errors import ConfigError, KubeDeadlineExceeded, KubeError, KubeNotFound, KubeUnavailable
from syncer.model import SourceRef
from syncer.snapshot import Snapshot

log = logging.getLogger("syncer.run.status")

LoadBalancerIngress = dict[str, str]  # {"ip": ...} and/or {"hostname": ...}
_Key = tuple[str, str]  # (namespace, name) of an Ingress
_Essence = tuple[tuple[str, str], ...]  # sorted, distinct (ip, hostname) pairs: what a status comparison looks at

# Kubernetes' IsDNS1123Subdomain: what the API server accepts in status.loadBalancer.ingress[].hostname.
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


class StatusWriter(Protocol):
    """What the publisher needs of a client: `syncer.kube.KubeClient` provides it."""

    def patch_ingress_status(
        self,
        namespace: str,
        name: str,
        load_balancer_ingress: list[dict[str, str]] | None,
        *,
        deadline: Deadline | None = None,
    ) -> None: ...


def desired_load_balancer(addresses: Sequence[str]) -> list[LoadBalancerIngress]:
    """`--publish-address` values as status entries: an IP goes to `ip`, a DNS name to `hostname`.

    IPs are written in canonical form (IPv6 compressed); duplicates are dropped, order is kept. Anything
    else is a ConfigError, raised at start-up rather than as a 422 from the API server on every cycle.
    """
    entries: list[LoadBalancerIngress] = []
    for raw in addresses:
        address = raw.strip()
        entry = _address_entry(address, raw)
        if entry not in entries:
            entries.append(entry)
    return entries


def _address_entry(address: str, raw: str) -> LoadBalancerIngress:
    if not address:
        raise ConfigError("--publish-address must not be empty")
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        pass
    else:
        if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
            raise ConfigError(f"--publish-address {raw!r}: an IPv6 zone (%{ip.scope_id}) cannot be published")
        return {"ip": str(ip)}
    if len(address) > 253 or not _DNS1123_SUBDOMAIN.fullmatch(address):
        hint = " (use lowercase)" if _DNS1123_SUBDOMAIN.fullmatch(address.lower()) else ""
        raise ConfigError(
            f"--publish-address {raw!r} is neither an IP address nor a DNS name{hint}: a hostname must be a "
            "DNS-1123 subdomain (lowercase letters, digits, '-' and '.', at most 253 characters, no trailing dot)"
        )
    return {"hostname": address}


@dataclass(frozen=True)
class PublishTarget:
    """Where the published addresses come from: fixed `--publish-address`es, or a Service's load balancer.

    Build with `from_options`, `from_addresses` or `from_service`.
    """

    addresses: tuple[LoadBalancerIngress, ...] = ()
    service: tuple[str, str] | None = None  # (namespace, name) whose status.loadBalancer.ingress is copied

    @classmethod
    def from_addresses(cls, addresses: Sequence[str]) -> PublishTarget:
        entries = desired_load_balancer(addresses)
        if not entries:
            raise ConfigError("--publish-address needs at least one address")
        return cls(addresses=tuple(entries))

    @classmethod
    def from_service(cls, reference: str) -> PublishTarget:
        namespace, _, name = reference.strip().partition("/")
        if not all(_DNS1123_LABEL.fullmatch(part) and len(part) <= 63 for part in (namespace, name)):
            raise ConfigError(
                f"--publish-service {reference!r} must be NAMESPACE/NAME of a Service "
                "(lowercase letters, digits and '-'), e.g. ingress-syncer/proxy"
            )
        return cls(service=(namespace, name))

    @classmethod
    def from_options(cls, addresses: Sequence[str], service: str | None) -> PublishTarget | None:
        """The target the two CLI options ask for; None when neither is given (no status write-back)."""
        if addresses and service:
            raise ConfigError("--publish-address and --publish-service exclude each other: give one of them")
        if service:
            return cls.from_service(service)
        if addresses:
            return cls.from_addresses(addresses)
        return None

    def check_namespaces(self, namespaces: Sequence[str]) -> None:
        """A --publish-service outside the watched namespaces is never in a snapshot: say so at start-up."""
        if self.service is not None and namespaces and self.service[0] not in namespaces:
            raise ConfigError(
                f"--publish-service {self.describe()}: namespace {self.service[0]!r} is not among the "
                f"--namespace values ({', '.join(sorted(namespaces))}), so the Service is never read; "
                f"add --namespace {self.service[0]}"
            )

    def describe(self) -> str:
        if self.service is not None:
            return f"{self.service[0]}/{self.service[1]}"
        return _describe(list(self.addresses))

    def resolve(self, snapshot: Snapshot) -> list[LoadBalancerIngress] | None:
        """The entries to publish now; None when the Service is missing from the snapshot."""
        if self.service is None:
            return [dict(entry) for entry in self.addresses]
        service = snapshot.get("Service", *self.service)
        if service is None:
            return None
        return _entries_of(service)


def _entries_of(obj: Mapping[str, Any]) -> list[LoadBalancerIngress]:
    """`status.loadBalancer.ingress` of an Ingress or Service, only `ip` and `hostname` kept (no ports, ipMode)."""
    status = obj.get("status")
    load_balancer = status.get("loadBalancer") if isinstance(status, Mapping) else None
    items = load_balancer.get("ingress") if isinstance(load_balancer, Mapping) else None
    entries: list[LoadBalancerIngress] = []
    for item in items if isinstance(items, list) else ():
        if not isinstance(item, Mapping):
            continue
        entry = {k: item[k] for k in ("ip", "hostname") if isinstance(item.get(k), str) and item[k]}
        if entry and entry not in entries:
            entries.append(entry)
    return entries


def _essence(entries: Sequence[Mapping[str, str]]) -> _Essence:
    """Order-insensitive like Traefik's isLoadBalancerIngressEquals: only the (ip, hostname) pairs count."""
    return tuple(sorted({(e.get("ip", ""), e.get("hostname", "")) for e in entries}))


def _describe(entries: Sequence[Mapping[str, str]]) -> str:
    parts = []
    for entry in entries:
        ip, hostname = entry.get("ip"), entry.get("hostname")
        parts.append(f"{ip} ({hostname})" if ip and hostname else ip or hostname or "?")
    return ", ".join(parts) if parts else "(none)"


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


class _Outcome(enum.Enum):
    DONE = "done"
    GONE = "gone"  # 404: the Ingress was deleted after the snapshot was taken
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class PublishResult:
    """What one publish did. `failed` includes writes postponed because the API server was unreachable."""

    written: int = 0
    unchanged: int = 0
    cleared: int = 0
    failed: int = 0


@dataclass
class _Tally:
    written: int = 0
    unchanged: int = 0
    cleared: int = 0
    failed: int = 0
    unreachable: KubeError | None = None  # set once a write got no HTTP answer at all, or the deadline passed
    postponed: list[str] = field(default_factory=list)
    deadline: Deadline | None = None

    def result(self) -> PublishResult:
        return PublishResult(self.written, self.unchanged, self.cleared, self.failed)


class StatusPublisher:
    """Keeps `status.loadBalancer.ingress` of the served Ingresses equal to the target, writing only differences.

    Call `publish` after every successful cycle with that cycle's snapshot and served Ingresses, also when
    the routing input did not change: the snapshot's status is what tells a failed write from a done one,
    and a Service's load-balancer status is not part of the snapshot diff. In memory it keeps the Ingresses
    served last time (to clear those no longer served) and clears still pending. Only addresses this
    process published are ever cleared: an Ingress that moved to another class keeps its new controller's
    status. Not thread-safe.
    """

    def __init__(self, client: StatusWriter, target: PublishTarget) -> None:
        self._client = client
        self._target = target
        self._served: set[_Key] = set()
        self._to_clear: set[_Key] = set()
        self._published: set[_Essence] = set()  # every value this process asked to publish: ours to clear
        self._service_missing = False
        self._failures: dict[_Key, str] = {}  # last failure per Ingress: the same one again is logged at debug

    @property
    def target(self) -> PublishTarget:
        return self._target

    def publish(
        self, snapshot: Snapshot, served: Sequence[SourceRef], deadline: Deadline | None = None
    ) -> PublishResult:
        """PATCHes the served Ingresses whose status differs and clears the ones no longer served.

        Never raises a KubeError: a failed write is logged, counted and tried again at the next publish. Once
        `deadline` has passed, the writes still due are postponed to the next publish, unsent.
        """
        now = {(ref.namespace, ref.name) for ref in served if ref.kind == "Ingress"}
        desired = self._resolve(snapshot)
        tally = _Tally(deadline=deadline)
        if desired is not None:
            self._published.add(_essence(desired))
            for key in sorted(now):
                self._set(snapshot, key, desired, tally)
        self._to_clear = (self._to_clear | (self._served - now)) - now
        for key in sorted(self._to_clear):
            self._clear(snapshot, key, tally)
        self._served = now
        self._failures = {k: v for k, v in self._failures.items() if k in now or k in self._to_clear}
        if tally.postponed:
            log.warning(
                "API server unreachable or out of time (%s); %d more Ingress status write(s) postponed to the next "
                "cycle: %s",
                _one_line(tally.unreachable) if tally.unreachable else "?",
                len(tally.postponed),
                ", ".join(tally.postponed[:5]) + (", ..." if len(tally.postponed) > 5 else ""),
            )
        return tally.result()

    def _resolve(self, snapshot: Snapshot) -> list[LoadBalancerIngress] | None:
        desired = self._target.resolve(snapshot)
        if desired is None:
            if not self._service_missing:
                log.warning(
                    "--publish-service %s: no such Service; Ingress status is not published until it exists",
                    self._target.describe(),
                )
            self._service_missing = True
        elif self._service_missing:
            log.info("--publish-service %s: Service found, publishing its addresses", self._target.describe())
            self._service_missing = False
        return desired

    def _set(self, snapshot: Snapshot, key: _Key, desired: list[LoadBalancerIngress], tally: _Tally) -> None:
        ingress = snapshot.get("Ingress", *key)
        if ingress is None:  # served means translated from this very snapshot; nothing to compare with otherwise
            return
        if _essence(_entries_of(ingress)) == _essence(desired):
            tally.unchanged += 1
            return
        action = f"set to {_describe(desired)}" if desired else "cleared (the load balancer has no address)"
        if self._write(key, desired or None, action, tally) is _Outcome.DONE:
            tally.written += 1

    def _clear(self, snapshot: Snapshot, key: _Key, tally: _Tally) -> None:
        ingress = snapshot.get("Ingress", *key)
        if ingress is None:  # deleted: nothing left to clear
            self._to_clear.discard(key)
            return
        current = _essence(_entries_of(ingress))
        if not current:
            self._to_clear.discard(key)
            return
        if current not in self._published:
            # Another controller has published its own addresses since: its status, not ours to clear.
            log.info("status of Ingress %s/%s left as is: no longer served, and it holds no address of ours", *key)
            self._to_clear.discard(key)
            return
        outcome = self._write(key, None, "cleared (no longer served)", tally)
        if outcome is not _Outcome.FAILED:
            self._to_clear.discard(key)
        if outcome is _Outcome.DONE:
            tally.cleared += 1

    def _write(self, key: _Key, entries: list[LoadBalancerIngress] | None, action: str, tally: _Tally) -> _Outcome:
        """One PATCH. A failure is logged and counted here; the caller counts what got done."""
        namespace, name = key
        if tally.unreachable is not None:
            tally.failed += 1
            tally.postponed.append(f"{namespace}/{name}")
            return _Outcome.FAILED
        try:
            self._client.patch_ingress_status(namespace, name, entries, deadline=tally.deadline)
        except KubeNotFound as exc:
            log.info("status of Ingress %s/%s not written, the Ingress is gone: %s", namespace, name, _one_line(exc))
            self._failures.pop(key, None)
            return _Outcome.GONE
        except KubeError as exc:
            tally.failed += 1
            if isinstance(exc, KubeDeadlineExceeded) or (isinstance(exc, KubeUnavailable) and exc.status is None):
                # No HTTP answer at all (refused, timed out), or no time left: the next write would fare the same.
                tally.unreachable = exc
            reason = _one_line(exc)
            repeated = self._failures.get(key) == reason
            self._failures[key] = reason
            log.log(
                logging.DEBUG if repeated else logging.WARNING,
                "status of Ingress %s/%s not written, retrying next cycle: %s",
                namespace,
                name,
                reason,
            )
            return _Outcome.FAILED
        self._failures.pop(key, None)
        log.info("status of Ingress %s/%s %s", namespace, name, action)
        return _Outcome.DONE
