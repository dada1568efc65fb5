"""DirectorySource: manifests from a folder (multi-document YAML, JSON, kind: List)."""

from __future__ import annotations

import base64
import logging
from pathlib import Path

import pytest

from syncer.errors import SourceError
from syncer.snapshot import ObjectKey
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


def test_object_without_name_is_skipped_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write(tmp_path / "a.yaml", "kind: Service\nmetadata: {namespace: x}\n---\nkind: Service\nmetadata: {name: ok}\n")
    with caplog.at_level(logging.WARNING, logger="syncer.source"):
        snap = DirectorySource(tmp_path).fetch()
    assert list(snap.objects) == [ObjectKey("Service", "default", "ok")]
    assert "without metadata.name" in caplog.text and "a.yaml" in caplog.text


def test_missing_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="nope"):
        DirectorySource(tmp_path / "nope").fetch()


def test_demo_fixture_has_every_kind() -> None:
    snap = DirectorySource(REPO / "fixtures/demo").fetch()
    kinds = {key.kind for key in snap.objects}
    assert kinds == {"IngressClass", "Ingress", "Service", "EndpointSlice", "Secret"}
