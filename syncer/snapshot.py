"""Immutable snapshots of the watched objects, keyed by (kind, namespace, name), and their diff by essence. No I/O."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from syncer import jsoncodec
from syncer.kube.resources import WATCHED_KINDS

KubeObject = Mapping[str, Any]

# Metadata that changes without the object's meaning changing: a resync, a status write or kubectl's
# bookkeeping must not count as a change (and must not trigger a render).
_ESSENTIAL_METADATA = ("name", "namespace", "uid", "creationTimestamp", "labels", "annotations")
_NOISY_ANNOTATIONS = ("kubectl.kubernetes.io/last-applied-configuration",)


@dataclass(frozen=True, slots=True, order=True)
class ObjectKey:
    kind: str
    namespace: str  # "" for cluster-scoped kinds
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}" if self.namespace else f"{self.kind} {self.name}"


def essence(obj: KubeObject) -> dict[str, Any]:
    """What an object means to us: everything but `status` and metadata churn (resourceVersion, managedFields...)."""
    metadata = obj.get("metadata") or {}
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
    metadata = obj.get("metadata") or {}
    return ObjectKey(kind, str(metadata.get("namespace") or ""), str(metadata.get("name") or ""))


@dataclass(frozen=True)
class Snapshot:
    """All watched objects of one successful fetch. Build with `Snapshot.build`."""

    objects: Mapping[ObjectKey, KubeObject] = field(repr=False)  # Secrets inside: never in a repr
    fingerprints: Mapping[ObjectKey, str] = field(repr=False)

    @classmethod
    def build(cls, objects_by_kind: Mapping[str, Iterable[KubeObject]]) -> Snapshot:
        objects: dict[ObjectKey, KubeObject] = {}
        for kind in sorted(objects_by_kind):
            for obj in objects_by_kind[kind]:
                objects[object_key(kind, obj)] = obj
        ordered = dict(sorted(objects.items()))
        return cls(objects=ordered, fingerprints={k: fingerprint(v) for k, v in ordered.items()})

    def of_kind(self, kind: str) -> list[KubeObject]:
        return [obj for key, obj in self.objects.items() if key.kind == kind]

    def get(self, kind: str, namespace: str, name: str) -> KubeObject | None:
        return self.objects.get(ObjectKey(kind, namespace, name))

    def content_hash(self) -> str:
        """One digest for the whole snapshot: equal hashes mean nothing we read has changed."""
        digest = hashlib.sha256()
        for key, value in self.fingerprints.items():
            digest.update(f"{key.kind}\0{key.namespace}\0{key.name}\0{value}\n".encode())
        return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class KindDiff:
    added: tuple[ObjectKey, ...] = ()
    changed: tuple[ObjectKey, ...] = ()
    removed: tuple[ObjectKey, ...] = ()


@dataclass(frozen=True)
class SnapshotDiff:
    by_kind: Mapping[str, KindDiff]

    @property
    def is_empty(self) -> bool:
        return not any(d.added or d.changed or d.removed for d in self.by_kind.values())

    def summary(self) -> str:
        """One log line: `ingresses +1 ~2 -0, services +0 ~0 -0, ...` (every watched kind, fixed order)."""
        parts = []
        for resource in WATCHED_KINDS:
            d = self.by_kind.get(resource.kind, KindDiff())
            parts.append(f"{resource.plural} +{len(d.added)} ~{len(d.changed)} -{len(d.removed)}")
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
        }
    )
