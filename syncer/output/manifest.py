"""The manifest an output folder keeps in `.ingress-syncer/manifest.json`: the files this tool wrote (and only
those may it remove), files kept past their use and since when, each file's stat and content digest as written,
and the caller's meta (input key, removal guard memory). Reads the manifest file; writing it is the writer's."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from syncer import jsoncodec
from syncer.errors import WriteError

MANIFEST_NAME = ".ingress-syncer/manifest.json"


def read_manifest(output_dir: Path) -> dict[str, Any]:
    """The manifest's content, {} when there is none; WriteError when it cannot be read or parsed."""
    try:
        data = jsoncodec.loads((output_dir / MANIFEST_NAME).read_bytes())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise WriteError(f"manifest {output_dir / MANIFEST_NAME} is unreadable: {exc}") from exc
    return data if isinstance(data, dict) else {}


def manifest_body(
    names: list[str], stale: Mapping[str, float], meta: Mapping[str, Any], records: Mapping[str, list[Any]]
) -> dict[str, Any]:
    return {
        "files": names,
        "stale": dict(sorted(stale.items())),
        "meta": dict(meta),
        "stat": {name: records[name] for name in names if name in records},
        "writer": "ingress-syncer",
    }


def recorded_stats(data: Mapping[str, Any]) -> dict[str, list[Any]]:
    """name -> [size, mode, inode, mtime_ns, content digest] of each file as the last write left it."""
    stat = data.get("stat")
    if not isinstance(stat, dict):
        return {}
    return {name: record for name, record in stat.items() if isinstance(record, list) and len(record) == 5}


def live_and_pending(data: Mapping[str, Any]) -> tuple[list[str], dict[str, float]]:
    """(files in use, files no longer produced -> since when), as the last write left them."""
    files = data.get("files")
    stale = data.get("stale")
    live = [f for f in files if isinstance(f, str)] if isinstance(files, list) else []
    pending = (
        {k: float(v) for k, v in stale.items() if isinstance(v, (int, float)) and k not in live}
        if isinstance(stale, dict)
        else {}
    )
    return live, pending


def stat_key(current: os.stat_result) -> list[Any]:
    return [current.st_size, current.st_mode & 0o777, current.st_ino, current.st_mtime_ns]


def content_digest(content: bytes) -> str:
    return hashlib.blake2b(content, digest_size=16).hexdigest()
