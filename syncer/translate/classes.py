"""Which Ingresses are ours (IngressClass, the legacy annotation, the default class) and in which order they win
conflicts (oldest first). Kubernetes semantics; pure, no I/O."""

from __future__ import annotations

from collections.abc import Callable

from syncer.model import SourceRef
from syncer.snapshot import KubeObject, Snapshot
from syncer.translate.objects import as_mapping, shown

CLASS_ANNOTATION = "kubernetes.io/ingress.class"
DEFAULT_CLASS_ANNOTATION = "ingressclass.kubernetes.io/is-default-class"

Report = Callable[[SourceRef, str, str], None]  # (object, field, message): one problem


def ingresses_of_our_class(
    snapshot: Snapshot, class_name: str, controller_name: str, watch_without_class: bool, report: Report
) -> list[KubeObject]:
    """The Ingresses that name our class, or (when our class is the default, or with `watch_without_class`) no
    class at all; none when an IngressClass of our name belongs to another controller."""
    ingress_class = snapshot.get("IngressClass", "", class_name)
    if ingress_class is not None:
        controller = as_mapping(ingress_class.get("spec")).get("controller")
        if controller != controller_name:
            # Serving another controller's class would make two controllers fight over the same Ingresses.
            report(
                SourceRef("IngressClass", "", class_name),
                "spec.controller",
                f"is {shown(controller)}, not {controller_name!r}; no Ingress of this class is served",
            )
            return []
    annotations = as_mapping(as_mapping(ingress_class).get("metadata")).get("annotations") if ingress_class else None
    is_default = as_mapping(annotations).get(DEFAULT_CLASS_ANNOTATION) == "true"
    ours = []
    for ingress in snapshot.of_kind("Ingress"):
        named = as_mapping(ingress.get("spec")).get("ingressClassName")
        if named is None:
            named = as_mapping(as_mapping(ingress.get("metadata")).get("annotations")).get(CLASS_ANNOTATION)
        if named is not None:
            if named == class_name:
                ours.append(ingress)
        elif is_default or watch_without_class:
            ours.append(ingress)
    return ours


def age_key(obj: KubeObject) -> tuple[str, str, str]:
    meta = as_mapping(obj.get("metadata"))
    # RFC 3339 timestamps in UTC ("Z") sort correctly as strings; a missing one sorts last.
    created = meta.get("creationTimestamp")
    return (created if isinstance(created, str) else "~", str(meta.get("namespace") or ""), str(meta.get("name") or ""))
