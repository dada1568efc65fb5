"""The dry-run preview: a unified diff of what a write would change, private keys redacted. Reads files."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

_PEM_KEY_BLOCK = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.S)


def preview_diff(output_dir: Path, files: Mapping[str, bytes], owned: Iterable[str]) -> str:
    """The diff from the files in `output_dir` to `files`, and the removal of `owned` files no longer produced."""
    chunks: list[str] = []
    for name, content in files.items():
        old = read_or_none(output_dir / name)
        if old == content:
            continue
        chunks.extend(
            difflib.unified_diff(
                _lines(old),
                _lines(content),
                fromfile=f"a/{name}" if old is not None else "/dev/null",
                tofile=f"b/{name}",
            )
        )
    for name in owned:
        if name not in files:
            old = read_or_none(output_dir / name)
            chunks.extend(difflib.unified_diff(_lines(old), [], fromfile=f"a/{name}", tofile="/dev/null"))
    return redact("".join(chunks))


def redact(text: str) -> str:
    return _PEM_KEY_BLOCK.sub("<private key redacted>", text)


def _lines(content: bytes | None) -> list[str]:
    return content.decode("utf-8", "replace").splitlines(keepends=True) if content is not None else []


def read_or_none(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
