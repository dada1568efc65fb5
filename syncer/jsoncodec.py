"""JSON in and out, through orjson where it can (5-10x the standard library), else the standard library. No I/O.

orjson refuses a few things the standard library accepts: lone surrogates in strings (`"\\ud800"`), integers
beyond 64 bits on output, non-string keys in objects read from YAML. Those rare inputs take the slow path
and come out as the standard library would have made them, so no object is lost to the faster codec.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

_SORTED = orjson.OPT_SORT_KEYS
_PRETTY = orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE


def loads(data: bytes | str) -> Any:
    """ValueError (as `json.loads` raises it) when `data` is not JSON."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


def dumps_compact(value: Any) -> bytes:
    """Sorted keys, no whitespace: the form to hash. Values JSON cannot hold go in as `str(value)`, and so do
    keys (YAML allows `1:` or a date as a key; sorting them beside strings would raise)."""
    try:
        return orjson.dumps(value, default=str, option=_SORTED)
    except TypeError:
        return json.dumps(_string_keys(value), sort_keys=True, separators=(",", ":"), default=str).encode()


def _string_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {key if isinstance(key, str) else _key_text(key): _string_keys(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_string_keys(item) for item in value]
    return value


def _key_text(key: Any) -> str:
    """The key as the standard library spells the keys it accepts (`1`, `1.5`, `true`, `null`), else `str(key)`."""
    if key is None or isinstance(key, (bool, int, float)):
        return json.dumps(key)
    return str(key)


def dumps_lines(value: Any, depth: int) -> bytes:
    """Sorted keys; objects and arrays down to `depth` levels get one member per line (two-space indent), what is
    below sits on one line. For big machine-read files that people still read and diff: one router, cluster
    or virtual host per line is a third of the bytes of full indentation and as easy to follow. Only JSON types.
    """
    return _layered(value, depth, b"\n") + b"\n"


def _layered(value: Any, depth: int, newline: bytes) -> bytes:
    if depth <= 0 or not isinstance(value, (dict, list)) or not value:
        return dumps_compact_strict(value)
    inner = newline + b"  "
    if isinstance(value, dict):
        members = [
            dumps_compact_strict(str(key)) + b": " + _layered(value[key], depth - 1, inner) for key in sorted(value)
        ]
        open_, close = b"{", b"}"
    else:
        members = [_layered(item, depth - 1, inner) for item in value]
        open_, close = b"[", b"]"
    return open_ + inner + (b"," + inner).join(members) + newline + close


def dumps_compact_strict(value: Any) -> bytes:
    """Like `dumps_compact`, but only JSON types (a renderer's output has no other)."""
    try:
        return orjson.dumps(value, option=_SORTED)
    except TypeError:
        return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def dumps_pretty(value: Any) -> bytes:
    """Sorted keys, two-space indent, a final newline: the form people read and diff. Only JSON types."""
    try:
        return orjson.dumps(value, option=_PRETTY)
    except TypeError:
        return json.dumps(value, sort_keys=True, indent=2).encode() + b"\n"
