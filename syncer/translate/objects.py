"""Defensive access to raw Kubernetes objects (decoded JSON of unknown shape). Pure, no I/O."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from syncer.model import Problem, SourceRef
from syncer.snapshot import KubeObject, Rejected

DNS_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
# Always used with fullmatch: `$` would also match before a trailing newline ("a.com\n").
DNS_SUBDOMAIN_RE = re.compile(rf"{DNS_LABEL}(\.{DNS_LABEL})*")
MAX_DNS_NAME = 253


def as_mapping(value: Any) -> Mapping[str, Any]:
    # Decoded JSON is always a plain dict: test that first, the abstract-class check costs ten times more.
    return value if type(value) is dict or isinstance(value, Mapping) else {}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def source_ref(kind: str, obj: KubeObject) -> SourceRef:
    meta = as_mapping(obj.get("metadata"))
    return SourceRef(kind, str(meta.get("namespace") or ""), str(meta.get("name") or ""))


def rejected_problem(rejected: Rejected) -> Problem:
    """The one problem of an object the snapshot left out: named by namespace/name, or by where it was found
    when those cannot be read."""
    namespace, name = cut(rejected.namespace), cut(rejected.name)
    if rejected.origin:  # `Service web at a.yaml, document 3`, `Ingress at items[7] of the ingresses list`
        namespace, name = "", f"{name} at {rejected.origin}" if name else f"at {rejected.origin}"
    return Problem(
        SourceRef(rejected.kind, namespace, name), rejected.field, f"{rejected.reason}; {rejected.kind} skipped"
    )


def cut(text: str, limit: int = 80) -> str:
    """A name as written, cut short: a problem names the object the user wrote, without flooding the log."""
    return text if len(text) <= limit else text[:limit] + "..."


def is_dns_subdomain(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= MAX_DNS_NAME and bool(DNS_SUBDOMAIN_RE.fullmatch(value))


def is_dns_label(value: Any) -> bool:
    return isinstance(value, str) and bool(re.fullmatch(DNS_LABEL, value))


def shown(value: Any, limit: int = 80) -> str:
    """A user-supplied value quoted for a problem message, cut short so a huge string cannot flood the log."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
