"""Sources of snapshots: the Kubernetes API (network I/O) or a folder of manifests (file I/O)."""

from __future__ import annotations

import base64
import datetime
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import yaml

from syncer.deadline import Deadline
from syncer.errors import KubeError, SourceError
from syncer.kube.resources import KINDS_BY_NAME, TLS_SECRET, WATCHED_KINDS, ResourceKind
from syncer.snapshot import KubeObject, Snapshot

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
MAX_EXPANDED_NODES = 5_000_000  # far above any real manifest folder, far below an alias bomb


class Source(Protocol):
    def fetch(self, deadline: Deadline | None = None) -> Snapshot:
        """A complete snapshot, or SourceError: never a partial one. No wait for it outlasts `deadline`."""
        ...

    def describe(self) -> str: ...


class ObjectLister(Protocol):
    """What ApiSource needs of a client: `syncer.kube.KubeClient` provides it."""

    def list(
        self, kind: str | ResourceKind, namespace: str | None = None, *, deadline: Deadline | None = None
    ) -> Any: ...


class ApiSource:
    """Lists every watched kind from the API, cluster-wide or in the given namespaces."""

    def __init__(self, client: ObjectLister, namespaces: Sequence[str] = (), server: str = "") -> None:
        self._client = client
        self._namespaces = tuple(sorted(set(namespaces)))
        self._server = server

    def describe(self) -> str:
        scope = ", ".join(self._namespaces) if self._namespaces else "all namespaces"
        return f"Kubernetes API {self._server} ({scope})".replace("  ", " ")

    def fetch(self, deadline: Deadline | None = None) -> Snapshot:
        objects: dict[str, list[KubeObject]] = {}
        # Where each list starts in objects[kind], to name an object whose name cannot be read by its list index.
        lists: dict[str, list[tuple[int, str]]] = {}
        for resource in WATCHED_KINDS:
            scopes: Sequence[str | None] = self._namespaces if (resource.namespaced and self._namespaces) else (None,)
            items: list[KubeObject] = []
            for namespace in scopes:
                where = f" in namespace {namespace}" if namespace else ""
                try:
                    result = self._client.list(resource, namespace=namespace, deadline=deadline)
                except KubeError as exc:
                    raise SourceError(f"cannot list {resource.plural}{where}: {exc}") from exc
                lists.setdefault(resource.kind, []).append((len(items), f"the {resource.plural} list{where}"))
                items.extend(result.items)
            objects[resource.kind] = items

        def origin(kind: str, position: int) -> str:
            start, name = next((s, n) for s, n in reversed(lists[kind]) if s <= position)
            return f"items[{position - start}] of {name}"

        return Snapshot.build(objects, origin)


class DirectorySource:
    """Reads the watched kinds from `*.yaml`, `*.yml` and `*.json` files below a folder (multi-document, `kind: List`).

    Objects without a namespace land in `default`, as `kubectl apply` would put them. A file that cannot be
    read or parsed fails the whole snapshot (like a failed list); a document that is not a watched kind is
    ignored, and one whose top-level fields have the wrong type (no name, `metadata: "x"`) is left out of the
    snapshot and reported by file and document number.
    """

    def __init__(self, root: str | Path, namespaces: Sequence[str] = ()) -> None:
        self._root = Path(root)
        self._namespaces = frozenset(namespaces)

    def describe(self) -> str:
        return f"manifests in {self._root}"

    def fetch(self, deadline: Deadline | None = None) -> Snapshot:
        """Reading local files does not wait on anything: `deadline` is not needed."""
        if not self._root.is_dir():
            raise SourceError(f"manifest folder {self._root} does not exist or is not a folder")
        return self.read_files(sorted(self._manifest_files()))

    def read_files(self, paths: Iterable[Path]) -> Snapshot:
        objects: dict[str, list[KubeObject]] = {r.kind: [] for r in WATCHED_KINDS}
        origins: dict[str, list[str]] = {r.kind: [] for r in WATCHED_KINDS}
        for path in paths:
            for number, document in _read_documents(path):
                for item, obj in _expand_lists(document):
                    accepted = self._accept(obj)
                    if accepted is not None:
                        objects[accepted[0]].append(accepted[1])
                        where = f"{path}, document {number}"
                        origins[accepted[0]].append(where if item is None else f"{where}, items[{item}]")
        return Snapshot.build(objects, lambda kind, position: origins[kind][position])

    def _manifest_files(self) -> Iterator[Path]:
        for path in self._root.rglob("*"):
            if path.suffix in MANIFEST_SUFFIXES and path.is_file() and not path.name.startswith("."):
                yield path

    def _accept(self, obj: Any) -> tuple[str, KubeObject] | None:
        """The watched kind and the object as the API would serve it; a field of the wrong type is left as it is,
        for Snapshot.build to reject and report."""
        if not isinstance(obj, Mapping):
            return None
        resource = KINDS_BY_NAME.get(str(obj.get("kind")))
        if resource is None:
            return None
        if resource is TLS_SECRET and obj.get("type") != "kubernetes.io/tls":
            return None  # only TLS Secrets count: the API source selects them server-side
        metadata = obj.get("metadata")
        if not isinstance(metadata, Mapping):
            return resource.kind, obj
        meta = dict(metadata)
        if resource.namespaced:
            namespace = meta.get("namespace")
            if namespace is None or namespace == "":
                meta["namespace"] = namespace = "default"
            if self._namespaces and isinstance(namespace, str) and namespace not in self._namespaces:
                return None
        else:
            meta.pop("namespace", None)
        created = meta.get("creationTimestamp")
        if isinstance(created, datetime.datetime):
            # YAML reads an unquoted timestamp as a datetime; the API always sends RFC 3339 text.
            aware = created if created.tzinfo else created.replace(tzinfo=datetime.timezone.utc)
            meta["creationTimestamp"] = aware.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        normalised: dict[str, Any] = {**obj, "metadata": meta}
        if resource is TLS_SECRET:
            _fold_string_data(normalised)
        return resource.kind, normalised


def _read_documents(path: Path) -> list[tuple[int, Any]]:
    """The file's documents with their numbers (from 1, empty ones counted, as an editor would find them)."""
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".json":
            documents = [(1, json.loads(text))]
        else:
            documents = [(n, doc) for n, doc in enumerate(yaml.safe_load_all(text), 1) if doc is not None]
    except (OSError, UnicodeDecodeError, ValueError, RecursionError, yaml.YAMLError) as exc:
        raise SourceError(f"cannot read manifest {path}: {_first_line(exc)}") from exc
    try:
        too_big = _expanded_size([doc for _, doc in documents]) > MAX_EXPANDED_NODES
    except RecursionError:
        raise SourceError(f"cannot read manifest {path}: nested too deeply") from None
    if too_big:
        raise SourceError(
            f"cannot read manifest {path}: its YAML aliases expand to more than {MAX_EXPANDED_NODES} values"
        )
    return documents


def _expanded_size(value: Any) -> int:
    """How many values the documents hold once every alias is expanded (as JSON encoding would), without
    expanding them: a few hundred bytes of nested aliases can stand for billions of values."""
    sizes: dict[int, int] = {}

    def size(node: Any) -> int:
        if not isinstance(node, (dict, list)):
            return 1
        known = sizes.get(id(node))
        if known is not None:
            return known
        sizes[id(node)] = 1  # a cycle (impossible from safe_load, cheap to guard) counts once
        children = node.values() if isinstance(node, dict) else node
        total = 1
        for child in children:
            total += size(child)
            if total > MAX_EXPANDED_NODES:
                break
        sizes[id(node)] = total
        return total

    return size(value)


def _expand_lists(document: Any) -> Iterable[tuple[int | None, Any]]:
    """The objects of a document with their index in its `items` (None for a document that is not a List)."""
    if isinstance(document, Mapping) and str(document.get("kind", "")).endswith("List"):
        items = document.get("items")
        if isinstance(items, list):
            return enumerate(items)
    return ((None, document),)


def _fold_string_data(secret: dict[str, Any]) -> None:
    """`stringData` folds into `data`, as the API server does on a write. When either is not a mapping both are
    left as they are, for Snapshot.build to reject the Secret."""
    string_data, existing = secret.get("stringData"), secret.get("data")
    if string_data is None:
        secret.pop("stringData", None)
    elif isinstance(string_data, Mapping) and (existing is None or isinstance(existing, Mapping)):
        data = dict(existing) if existing is not None else {}
        for key, value in string_data.items():
            data[str(key)] = base64.b64encode(str(value).encode()).decode()
        secret["data"] = data
        del secret["stringData"]


def _first_line(exc: BaseException) -> str:
    """The parser's message on one log line (YAML errors span several lines with the position)."""
    text = " ".join(str(exc).split())
    return text[:300] if text else type(exc).__name__
