"""kubeconfig YAML files: read, type-check and merge them the way kubectl does. Reads files."""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml  # no stubs installed; only safe_load is used, and its result is checked

from syncer.errors import ConfigError

_INNER_KEY = {"clusters": "cluster", "users": "user", "contexts": "context"}


@dataclass(frozen=True)
class Entry:
    """One named cluster, user or context, with the file that defined it (relative paths resolve against it)."""

    name: str
    body: Mapping[str, object] = field(repr=False)
    origin: Path

    @property
    def where(self) -> str:
        return f"{self.name!r} in {self.origin}"


@dataclass
class MergedKubeconfig:
    """The merge of several files: `files` lists those that existed, in the order they were read."""

    files: list[Path] = field(default_factory=list)
    current_context: str | None = None
    sections: dict[str, dict[str, Entry]] = field(default_factory=lambda: {key: {} for key in _INNER_KEY})

    @property
    def clusters(self) -> Mapping[str, Entry]:
        return self.sections["clusters"]

    @property
    def users(self) -> Mapping[str, Entry]:
        return self.sections["users"]

    @property
    def contexts(self) -> Mapping[str, Entry]:
        return self.sections["contexts"]


def split_paths(value: str) -> list[Path]:
    """A KUBECONFIG-style list: os.pathsep-separated, empty entries dropped, duplicates dropped as client-go does."""
    seen: dict[Path, None] = {}
    for part in value.split(os.pathsep):
        if part:
            seen.setdefault(Path(os.path.abspath(part)), None)
    return list(seen)


def load_files(paths: Sequence[Path]) -> MergedKubeconfig:
    """Merge like kubectl: missing files are skipped, and the first file to set a key or a name keeps it whole."""
    merged = MergedKubeconfig()
    for path in paths:
        if not path.exists():
            continue
        doc = read_yaml(path)
        merged.files.append(path)
        if merged.current_context is None:
            merged.current_context = opt_str(doc, "current-context", f"kubeconfig {path}")
        for section, inner in _INNER_KEY.items():
            names: set[str] = set()
            for item in as_list(doc.get(section), f"{section} in {path}"):
                name = opt_str(item, "name", f"an entry of {section} in {path}")
                if name is None:
                    raise ConfigError(f"an entry of {section} in {path} has no name; name it or remove it")
                if name in names:
                    raise ConfigError(f"{section} in {path} defines {name!r} twice; remove one")
                names.add(name)
                body = as_mapping(item.get(inner), f"{inner} {name!r} in {path}")
                merged.sections[section].setdefault(name, Entry(name, body, path))
    return merged


def read_yaml(path: Path) -> Mapping[str, object]:
    """One kubeconfig file as a mapping; an empty file is an empty config, as in client-go."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read kubeconfig {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"kubeconfig {path} is not UTF-8 text") from None
    try:
        doc: object = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        # str(exc) quotes the offending line, which may hold a token: report only the position.
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"kubeconfig {path} is not valid YAML{at}: {problem}") from None
    return as_mapping(doc, f"kubeconfig {path}")


def resolve_path(origin: Path, path: str) -> Path:
    """Relative paths in a kubeconfig are relative to the file that names them, not to the working directory."""
    return Path(path) if os.path.isabs(path) else origin.parent / path


def data_or_file(entry: Entry, data_key: str, path_key: str, where: str) -> bytes | None:
    """The bytes of `*-data` (base64), else of the file at the path form: data wins, as in client-go."""
    data = opt_str(entry.body, data_key, where)
    if data is not None:
        try:
            return base64.b64decode("".join(data.split()), validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError(f"{where}: {data_key} is not valid base64") from None
    path = opt_str(entry.body, path_key, where)
    if path is None:
        return None
    full = resolve_path(entry.origin, path)
    try:
        return full.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read {path_key} {full}: {exc.strerror}") from None


# Type checks on parsed YAML. Messages name the key, never the value: values may be secrets.


def as_mapping(value: object, where: str) -> Mapping[str, object]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a mapping")
    return value


def as_list(value: object, where: str) -> list[Mapping[str, object]]:
    return [as_mapping(item, f"an entry of {where}") for item in _as_seq(value, where)]


def as_str_list(value: object, where: str) -> list[str]:
    items = _as_seq(value, where)
    if not all(isinstance(item, str) for item in items):
        raise ConfigError(f"{where} must be a list of strings")
    return [str(item) for item in items]


def _as_seq(value: object, where: str) -> list[object]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(f"{where} must be a list")
    return value


def opt_str(body: Mapping[str, object], key: str, where: str) -> str | None:
    """body[key] if it is a non-empty string; None if absent or empty (client-go treats "" as unset)."""
    value = body.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{where}: {key} must be a string")
    return value


def opt_bool(body: Mapping[str, object], key: str, where: str) -> bool:
    value = body.get(key, False)
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: {key} must be true or false")
    return value
