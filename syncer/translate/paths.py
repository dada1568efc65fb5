"""Ingress hosts and paths: which are valid, and how each is normalised. Kubernetes semantics; pure, no I/O."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any

from syncer.model import PathMatch, SourceRef
from syncer.translate.classes import Report
from syncer.translate.objects import MAX_DNS_NAME, is_dns_subdomain, shown

ANY_HOST = "*"

# Characters valid in a URL path (RFC 3986 pchar and `/`), minus the single quote and `%`. Spaces,
# quotes, backticks, backslashes, braces, `#`, `?` and control characters never reach a renderer; nor do
# percent-encodings: both proxies decode a request path before matching, so a rule holding one would
# either never match or match differently in each proxy.
_PATH_RE = re.compile(r"/[A-Za-z0-9\-._~!$&()*+,;=:@/]*")  # fullmatch: `$` allows a trailing newline
# What the API server itself rejects for Exact and Prefix paths, plus NUL.
_BAD_PATH_SEQUENCES = ("//", "/./", "/../", "%2f", "%2F", "%00")
_BAD_PATH_SUFFIXES = ("/..", "/.")
_MAX_PATH = 1024


def valid_host(report: Report, source: SourceRef, field_path: str, raw: Any) -> str | None:
    if raw is None or raw == "":
        return ANY_HOST
    # ASCII first: str.lower() maps some non-ASCII letters (the Kelvin sign) onto ASCII ones.
    host = raw.lower() if isinstance(raw, str) and raw.isascii() else None
    wildcard = host is not None and host.startswith("*.")
    name = host[2:] if host is not None and wildcard else host
    if host is None or len(host) > MAX_DNS_NAME or not is_dns_subdomain(name) or is_ip(host):
        report(
            source,
            field_path,
            f"{shown(raw)} is not a DNS name or a single-label wildcard (*.example.com); rule skipped",
        )
        return None
    return host


def is_ip(host: str) -> bool:
    if ":" not in host and not host[-1:].isdigit():
        return False  # an IPv4 address ends in a digit, an IPv6 one has colons: most host names stop here
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def valid_path(
    report: Report, source: SourceRef, field_path: str, path_rule: Mapping[str, Any]
) -> tuple[str, PathMatch] | None:
    path_type = path_rule.get("pathType")
    raw = path_rule.get("path")
    if path_type == "ImplementationSpecific":
        path_type = "Prefix"
        raw = raw if raw not in (None, "") else "/"
    if path_type not in ("Exact", "Prefix"):
        report(
            source,
            f"{field_path}.pathType",
            f"{shown(path_type)} is not Exact, Prefix or ImplementationSpecific; path skipped",
        )
        return None
    if (
        not isinstance(raw, str)
        or len(raw) > _MAX_PATH
        or not _PATH_RE.fullmatch(raw)
        or any(sequence in raw for sequence in _BAD_PATH_SEQUENCES)
        or raw.endswith(_BAD_PATH_SUFFIXES)
    ):
        report(source, f"{field_path}.path", f"{shown(raw)} is not a valid absolute URL path; path skipped")
        return None
    match = PathMatch(path_type)
    if match is PathMatch.PREFIX and raw != "/":
        raw = raw.rstrip("/")  # Prefix ignores a trailing slash: /foo/ and /foo match the same requests
    return raw, match
