"""Immutable snapshots of the watched objects, keyed by (kind, namespace, name), and their diff by essence. No I/O.

A snapshot holds only objects whose top-level fields have the JSON types their kind gives them (the shape
checks below); any other object is kept out as a `Rejected` entry, for translate() to report. Nothing past
this module has to guard against `metadata: "x"`.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from syncer import jsoncodec
from syncer.kube.resources import KINDS_BY_NAME, WATCHED_KINDS

KubeObject = Mapping[str, Any]
# Where to find the object at `position` of the `kind` list given to Snapshot.build, for an operator to fix it
# when its name cannot be read: "manifests/a.yaml, document 2", "items[7] of the ingresses list".
Origin = Callable[[str, int], str]

# Metadata that changes without the object's meaning changing: a resync, a status write or kubectl's
# bookkeeping must not count as a change (and must not trigger a render).
_ESSENTIAL_METADATA = ("name", "namespace", "uid", "creationTimestamp", "labels", "annotations")
_NOISY_ANNOTATIONS = ("kubectl.kubernetes.io/last-applied-configuration",)

# The top-level fields each kind is read by, with their JSON type. Absent or null is fine (the translator says
# what is missing); a value of another type makes the object unusable. Every kind also has `metadata`.
_FIELD_TYPES: dict[str, tuple[tuple[str, type], ...]] = {
    "IngressClass": (("spec", dict), ("status", dict)),
    "Ingress": (("spec", dict), ("status", dict)),
    "Service": (("spec", dict), ("status", dict)),
    "EndpointSlice": (("addressType", str), ("endpoints", list), ("ports", list)),
    "Secret": (("type", str), ("data", dict), ("stringData", dict)),
}
_METADATA_MAPS = ("labels", "annotations")


@dataclass(frozen=True, slots=True, order=True)
class ObjectKey:
    kind: str
    namespace: str  # "" for cluster-scoped kinds
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}" if self.namespace else f"{self.kind} {self.name}"


@dataclass(frozen=True, slots=True, order=True)
class Rejected:
    """An object kept out of a snapshot because a top-level field has the wrong type; translate() reports it."""

    kind: str
    namespace: str  # as far as it can be read ("" otherwise, and for cluster-scoped kinds)
    name: str  # as far as it can be read ("" otherwise)
    origin: str  # where to find it when namespace and name do not say it (else "")
    field: str  # "metadata", "metadata.name", "spec", ...
    reason: str  # "is a string, not an object"


def _rejected_fields(entry: Rejected) -> tuple[str, ...]:
    return (entry.kind, entry.namespace, entry.name, entry.origin, entry.field, entry.reason)


def essence(obj: KubeObject) -> dict[str, Any]:
    """What an object means to us: everything but `status` and metadata churn (resourceVersion, managedFields...)."""
    metadata = obj.get("metadata")
    metadata = metadata if isinstance(metadata, Mapping) else {}
    kept_meta = {k: metadata[k] for k in _ESSENTIAL_METADATA if k in metadata}
    annotations = kept_meta.get("annotations")
    if isinstance(annotations, Mapping) and any(a in annotations for a in _NOISY_ANNOTATIONS):
        kept_meta["annotations"] = {k: v for k, v in annotations.items() if k not in _NOISY_ANNOTATIONS}
    result = {k: v for k, v in obj.items() if k not in ("metadata", "status", "kind", "apiVersion")}
    result["metadata"] = kept_meta
    return result


def fingerprint(obj: KubeObject) -> str:
    """A stable digest of the essence. Secret bytes go in only as a digest, so they never reach a log."""
    return hashlib.sha256(jsoncodec.dumps_compact(essence(obj))).hexdigest()


def object_key(kind: str, obj: KubeObject) -> ObjectKey:
    metadata = obj.get("metadata")
    metadata = metadata if isinstance(metadata, Mapping) else {}
    resource = KINDS_BY_NAME.get(kind)
    namespace = metadata.get("namespace") if resource is None or resource.namespaced else ""
    name = metadata.get("name")
    return ObjectKey(kind, namespace if isinstance(namespace, str) else "", name if isinstance(name, str) else "")


def check_shape(kind: str, obj: Any) -> tuple[str, str] | None:
    """(field, reason) for the first top-level field of `obj` whose JSON type is wrong for `kind`; None if none is.

    Runs once per object of every fetch (tens of thousands): exact type checks first, as decoded JSON has them.
    """
    if type(obj) is not dict and not isinstance(obj, Mapping):
        return "object", _wrong(obj, dict)
    metadata = obj.get("metadata")
    if type(metadata) is not dict and not isinstance(metadata, Mapping):
        return "metadata", _wrong(metadata, dict)
    name = metadata.get("name")
    if type(name) is not str or not name:
        return "metadata.name", _wrong(name, str)
    resource = KINDS_BY_NAME.get(kind)
    if resource is not None and resource.namespaced:
        namespace = metadata.get("namespace")
        if type(namespace) is not str or not namespace:
            return "metadata.namespace", _wrong(namespace, str)
    for key in _METADATA_MAPS:
        value = metadata.get(key)
        if value is not None and type(value) is not dict and not isinstance(value, Mapping):
            return f"metadata.{key}", _wrong(value, dict)
    for key, wanted in _FIELD_TYPES.get(kind, ()):
        value = obj.get(key)
        if value is not None and type(value) is not wanted and not _is_a(value, wanted):
            return key, _wrong(value, wanted)
    return None


def _is_a(value: Any, wanted: type) -> bool:
    return isinstance(value, Mapping) if wanted is dict else isinstance(value, wanted) and not isinstance(value, bool)


def _wrong(value: Any, wanted: type) -> str:
    if value is None:
        return "is missing"
    if value == "" and wanted is str:
        return "is empty"
    return f"is {_json_type(type(value))}, not {_json_type(wanted)}"


def _json_type(kind: type) -> str:
    if issubclass(kind, Mapping):
        return "an object"
    if issubclass(kind, (list, tuple)):
        return "a list"
    if issubclass(kind, str):
        return "a string"
    if issubclass(kind, bool):
        return "a boolean"
    if issubclass(kind, (int, float)):
        return "a number"
    return f"a {kind.__name__}"  # what YAML makes of an unquoted date, for one


def _rejected(kind: str, obj: Any, fault: tuple[str, str], origin: str) -> Rejected:
    metadata = obj.get("metadata") if isinstance(obj, Mapping) else None
    metadata = metadata if isinstance(metadata, Mapping) else {}
    name, namespace = metadata.get("name"), metadata.get("namespace")
    name = name if isinstance(name, str) else ""
    resource = KINDS_BY_NAME.get(kind)
    namespaced = resource is None or resource.namespaced
    namespace = namespace if namespaced and isinstance(namespace, str) else ""
    identified = bool(name) and (bool(namespace) or not namespaced)
    return Rejected(kind, namespace, name, "" if identified else origin, *fault)


def _position(kind: str, position: int) -> str:
    return f"item {position} of the {kind} objects given"


@dataclass(frozen=True)
class Snapshot:
    """All watched objects of one successful fetch. Build with `Snapshot.build`."""

    objects: Mapping[ObjectKey, KubeObject] = field(repr=False)  # Secrets inside: never in a repr
    fingerprints: Mapping[ObjectKey, str] = field(repr=False)
    rejected: tuple[Rejected, ...] = ()  # sorted; objects left out for the wrong type of a top-level field

    @classmethod
    def build(cls, objects_by_kind: Mapping[str, Iterable[KubeObject]], origin: Origin | None = None) -> Snapshot:
        """Objects that fail `check_shape` are left out as `rejected`; `origin` says where a source found them."""
        objects: dict[ObjectKey, KubeObject] = {}
        rejected: set[Rejected] = set()
        for kind in sorted(objects_by_kind):
            for position, obj in enumerate(objects_by_kind[kind]):
                fault = check_shape(kind, obj)
                if fault is None:
                    objects[object_key(kind, obj)] = obj
                else:
                    rejected.add(_rejected(kind, obj, fault, (origin or _position)(kind, position)))
        ordered = dict(sorted(objects.items()))
        return cls(
            objects=ordered,
            fingerprints={k: fingerprint(v) for k, v in ordered.items()},
            rejected=tuple(sorted(rejected)),
        )

    def of_kind(self, kind: str) -> list[KubeObject]:
        return [obj for key, obj in self.objects.items() if key.kind == kind]

    def get(self, kind: str, namespace: str, name: str) -> KubeObject | None:
        return self.objects.get(ObjectKey(kind, namespace, name))

    def is_rejected(self, kind: str, namespace: str, name: str) -> bool:
        """Whether an object of this name was left out as malformed (so "not found" would mislead)."""
        return ObjectKey(kind, namespace, name) in self._rejected_keys

    @functools.cached_property
    def _rejected_keys(self) -> frozenset[ObjectKey]:
        return frozenset(ObjectKey(r.kind, r.namespace, r.name) for r in self.rejected if r.name)

    def content_hash(self) -> str:
        """One digest for the whole snapshot: equal hashes mean nothing we read has changed."""
        digest = hashlib.sha256()
        for key, value in self.fingerprints.items():
            digest.update(f"{key.kind}\0{key.namespace}\0{key.name}\0{value}\n".encode())
        for entry in self.rejected:  # a malformed object that is fixed or deleted is a change, to report it resolved
            digest.update("\0".join(("rejected", *_rejected_fields(entry))).encode() + b"\n")
        return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class KindDiff:
    added: tuple[ObjectKey, ...] = ()
    changed: tuple[ObjectKey, ...] = ()
    removed: tuple[ObjectKey, ...] = ()


@dataclass(frozen=True)
class SnapshotDiff:
    by_kind: Mapping[str, KindDiff]
    rejected: int = 0  # malformed objects left out of the new snapshot
    rejected_changed: bool = False

    @property
    def is_empty(self) -> bool:
        return not self.rejected_changed and not any(d.added or d.changed or d.removed for d in self.by_kind.values())

    def summary(self) -> str:
        """One log line: `ingresses +1 ~2 -0, services +0 ~0 -0, ...` (every watched kind, fixed order), then how
        many malformed objects were left out, if any."""
        parts = []
        for resource in WATCHED_KINDS:
            d = self.by_kind.get(resource.kind, KindDiff())
            parts.append(f"{resource.plural} +{len(d.added)} ~{len(d.changed)} -{len(d.removed)}")
        if self.rejected:
            parts.append(f"{self.rejected} malformed skipped")
        return ", ".join(parts)


def diff(old: Snapshot | None, new: Snapshot) -> SnapshotDiff:
    old_prints: Mapping[ObjectKey, str] = old.fingerprints if old is not None else {}
    new_prints = new.fingerprints
    added: dict[str, list[ObjectKey]] = {}
    changed: dict[str, list[ObjectKey]] = {}
    removed: dict[str, list[ObjectKey]] = {}
    for key, value in new_prints.items():
        previous = old_prints.get(key)
        if previous is None:
            added.setdefault(key.kind, []).append(key)
        elif previous != value:
            changed.setdefault(key.kind, []).append(key)
    for key in old_prints:
        if key not in new_prints:
            removed.setdefault(key.kind, []).append(key)
    kinds = set(added) | set(changed) | set(removed)
    return SnapshotDiff(
        {
            kind: KindDiff(tuple(added.get(kind, ())), tuple(changed.get(kind, ())), tuple(removed.get(kind, ())))
            for kind in sorted(kinds)
        },
        rejected=len(new.rejected),
        rejected_changed=(old.rejected if old is not None else ()) != new.rejected,
    )
