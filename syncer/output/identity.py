"""What the written files depend on besides the snapshot: this code and its settings. Reads source files.

A fresh process (`syncer once` from cron, a restarted sidecar) has no previous snapshot in memory. The
writer keeps, with the files, a key made of the snapshot's content hash and this identity; when a new run
computes the same key and the files are still as written, translating and rendering again would only
reproduce the bytes on disk. The identity covers the settings (renderer, its options, translation options)
and the code itself (a digest of every loaded module's source, plugins included), so an upgrade or an
edited checkout is never mistaken for "nothing changed".
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from syncer import __version__, jsoncodec
from syncer.snapshot import Snapshot


def code_digest(packages: Iterable[str]) -> str:
    """A digest of the source of every loaded module of `packages` (top-level names)."""
    wanted = set(packages)
    digest = hashlib.sha256()
    for name in sorted(sys.modules):
        if name.partition(".")[0] not in wanted:
            continue
        path = getattr(sys.modules[name], "__file__", None)
        if not path:
            continue
        try:
            with open(path, "rb") as source:
                digest.update(f"{name}\0".encode() + hashlib.sha256(source.read()).digest())
        except OSError:
            digest.update(f"{name}\0unreadable {path}".encode())
    return digest.hexdigest()


def run_identity(settings: Mapping[str, Any], renderer: object) -> str:
    """`settings`: everything the files depend on (renderer name and options, output folder, translation)."""
    packages = {"syncer", "renderers", type(renderer).__module__.partition(".")[0]}
    body = {"version": __version__, "settings": dict(settings), "code": code_digest(packages)}
    return hashlib.sha256(jsoncodec.dumps_compact(body)).hexdigest()


def input_key(identity: str, snapshot: Snapshot) -> str:
    return hashlib.sha256(f"{identity}\n{snapshot.content_hash()}".encode()).hexdigest()
