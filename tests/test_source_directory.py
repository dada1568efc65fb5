"""DirectorySource: manifests from a folder (multi-document YAML, JSON, kind: List)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from syncer.errors import SourceError
from syncer.snapshot import ObjectKey, Rejected
from syncer.source import DirectorySource

REPO = Path(__file__).resolve().parent.parent


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_reads_multi_document_yaml_json_and_lists(tmp_path: Path) -> None:
    write(
        tmp_path / "a.yaml",
        """
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: one}
spec: {}
---
# an empty document and an unrelated kind are ignored
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: ignored}
""",
    )
    write(
        tmp_path / "nested/b.json",
        '{"kind": "List", "items": [{"kind": "Service", "metadata": {"name": "s", "namespace": "n"}}]}',
    )
    write(
        tmp_path / "c.yml", "kind: IngressClass\nmetadata: {name: syncer, namespace: ignored}\nspec: {controller: x}\n"
    )
    write(tmp_path / "notes.txt", "kind: Service\nmetadata: {name: not-read}\n")
    snap = DirectorySource(tmp_path).fetch()
    assert set(snap.objects) == {
        ObjectKey("Ingress", "default", "one"),  # no namespace -> default, like kubectl apply
        ObjectKey("Service", "n", "s"),
        ObjectKey("IngressClass", "", "syncer"),  # cluster-scoped: a namespace is dropped
    }


def test_only_tls_secrets_and_string_data_is_folded(tmp_path: Path) -> None:
    write(
        tmp_path / "s.yaml",
        """
kind: Secret
metadata: {name: tls, namespace: n}
type: kubernetes.io/tls
stringData: {tls.crt: CERT, tls.key: KEY}
---
kind: Secret
metadata: {name: opaque, namespace: n}
type: Opaque
data: {password: cGFzcw==}
""",
    )
    snap = DirectorySource(tmp_path).fetch()
    secret = snap.get("Secret", "n", "tls")
    assert secret is not None and snap.get("Secret", "n", "opaque") is None
    assert base64.b64decode(secret["data"]["tls.crt"]) == b"CERT"
    assert "stringData" not in secret


def test_namespace_filter(tmp_path: Path) -> None:
    write(
        tmp_path / "a.yaml",
        "kind: Service\nmetadata: {name: a, namespace: x}\n---\nkind: Service\nmetadata: {name: b, namespace: y}\n",
    )
    snap = DirectorySource(tmp_path, namespaces=["y"]).fetch()
    assert list(snap.objects) == [ObjectKey("Service", "y", "b")]


def test_unparseable_file_fails_the_whole_snapshot_naming_the_file(tmp_path: Path) -> None:
    write(tmp_path / "good.yaml", "kind: Service\nmetadata: {name: a}\n")
    write(tmp_path / "bad.yaml", "kind: Service\nmetadata: {name: [unclosed\n")
    with pytest.raises(SourceError, match=r"bad\.yaml"):
        DirectorySource(tmp_path).fetch()


def test_object_without_name_is_rejected_naming_its_file_and_document(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", "kind: Service\nmetadata: {namespace: x}\n---\nkind: Service\nmetadata: {name: ok}\n")
    snap = DirectorySource(tmp_path).fetch()
    assert list(snap.objects) == [ObjectKey("Service", "default", "ok")]
    assert snap.rejected == (
        Rejected("Service", "x", "", f"{tmp_path / 'a.yaml'}, document 1", "metadata.name", "is missing"),
    )


@pytest.mark.parametrize(
    ("document", "field", "reason"),
    [
        ("kind: Ingress\nmetadata: x\n", "metadata", "is a string, not an object"),
        ("kind: Service\nmetadata: {name: s, namespace: [a]}\n", "metadata.namespace", "is a list, not a string"),
        ("kind: Service\nmetadata: {name: s, labels: a=b}\n", "metadata.labels", "is a string, not an object"),
        ("kind: EndpointSlice\nmetadata: {name: e}\nendpoints: {}\n", "endpoints", "is an object, not a list"),
        ("kind: Secret\ntype: kubernetes.io/tls\nmetadata: {name: s}\ndata: [a]\n", "data", "is a list, not an object"),
        ("kind: Secret\ntype: kubernetes.io/tls\nmetadata: {name: s}\nstringData: x\n", "stringData", "is a string"),
        ("kind: Service\nmetadata: {name: s, namespace: x}\nspec: 2026-01-01\n", "spec", "is a date, not an object"),
    ],
    ids=["metadata", "namespace", "labels", "endpoints", "secret-data", "secret-string-data", "yaml-date"],
)
def test_wrong_top_level_type_is_rejected_and_the_rest_kept(
    tmp_path: Path, document: str, field: str, reason: str
) -> None:
    write(tmp_path / "a.yaml", f"kind: Service\nmetadata: {{name: ok}}\n---\n{document}")
    snap = DirectorySource(tmp_path).fetch()
    assert list(snap.objects) == [ObjectKey("Service", "default", "ok")]
    [rejected] = snap.rejected
    assert (rejected.field, rejected.reason[: len(reason)]) == (field, reason)


def test_items_of_a_list_are_located_by_index(tmp_path: Path) -> None:
    write(
        tmp_path / "l.yaml",
        "kind: List\nitems:\n- {kind: Service, metadata: {name: ok}}\n- {kind: Service, metadata: 5}\n",
    )
    [rejected] = DirectorySource(tmp_path).fetch().rejected
    assert rejected.origin == f"{tmp_path / 'l.yaml'}, document 1, items[1]"


def test_missing_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="nope"):
        DirectorySource(tmp_path / "nope").fetch()


def test_demo_fixture_has_every_kind() -> None:
    snap = DirectorySource(REPO / "fixtures/demo").fetch()
    kinds = {key.kind for key in snap.objects}
    assert kinds == {"IngressClass", "Ingress", "Service", "EndpointSlice", "Secret"}
