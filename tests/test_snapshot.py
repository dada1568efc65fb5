"""Snapshots keyed by (kind, namespace, name) and their diff by essence."""

from __future__ import annotations

import copy
from typing import Any

from syncer.snapshot import ObjectKey, Snapshot, diff, essence


def ingress(name: str, namespace: str = "default", **extra: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}", "resourceVersion": "1"},
        "spec": {"rules": [{"host": f"{name}.example.com"}]},
    }
    obj.update(extra)
    return obj


def test_keys_and_lookup() -> None:
    snap = Snapshot.build(
        {"Ingress": [ingress("a"), ingress("b", "other")], "IngressClass": [{"metadata": {"name": "c"}}]}
    )
    assert list(snap.objects) == sorted(snap.objects)
    assert ObjectKey("Ingress", "other", "b") in snap.objects
    assert snap.get("IngressClass", "", "c") is not None
    assert [o["metadata"]["name"] for o in snap.of_kind("Ingress")] == ["a", "b"]


def test_first_diff_is_all_added_and_summary_names_every_kind() -> None:
    snap = Snapshot.build({"Ingress": [ingress("a")]})
    changes = diff(None, snap)
    assert changes.by_kind["Ingress"].added == (ObjectKey("Ingress", "default", "a"),)
    assert changes.summary() == (
        "ingressclasses +0 ~0 -0, ingresses +1 ~0 -0, services +0 ~0 -0, endpointslices +0 ~0 -0, secrets +0 ~0 -0"
    )


def test_metadata_churn_and_status_are_not_changes() -> None:
    before = ingress("a")
    after = copy.deepcopy(before)
    after["metadata"]["resourceVersion"] = "99"
    after["metadata"]["managedFields"] = [{"manager": "kubectl"}]
    after["metadata"]["generation"] = 7
    after["metadata"]["annotations"] = {"kubectl.kubernetes.io/last-applied-configuration": "{...}"}
    after["status"] = {"loadBalancer": {"ingress": [{"ip": "10.0.0.1"}]}}
    before["metadata"]["annotations"] = {}
    changes = diff(Snapshot.build({"Ingress": [before]}), Snapshot.build({"Ingress": [after]}))
    assert changes.is_empty


def test_spec_labels_annotations_and_data_are_changes() -> None:
    base = ingress("a")
    variants = []
    for mutate in (
        lambda o: o["spec"]["rules"].append({"host": "x.example.com"}),
        lambda o: o["metadata"].setdefault("labels", {}).update(app="x"),
        lambda o: o["metadata"].setdefault("annotations", {}).update(note="x"),
        lambda o: o.update(data={"tls.crt": "Zm9v"}),
        lambda o: o["metadata"].update(uid="recreated"),
    ):
        changed = copy.deepcopy(base)
        mutate(changed)
        variants.append(changed)
    old = Snapshot.build({"Ingress": [base]})
    for changed in variants:
        result = diff(old, Snapshot.build({"Ingress": [changed]}))
        assert result.by_kind["Ingress"].changed == (ObjectKey("Ingress", "default", "a"),), changed


def test_removed_and_added() -> None:
    old = Snapshot.build({"Ingress": [ingress("a"), ingress("b")]})
    new = Snapshot.build({"Ingress": [ingress("b"), ingress("c")]})
    changes = diff(old, new).by_kind["Ingress"]
    assert [k.name for k in changes.added] == ["c"]
    assert [k.name for k in changes.removed] == ["a"]
    assert changes.changed == ()
    assert "ingresses +1 ~0 -1" in diff(old, new).summary()


def test_order_of_objects_does_not_matter() -> None:
    a, b = ingress("a"), ingress("b")
    one = Snapshot.build({"Ingress": [a, b]})
    two = Snapshot.build({"Ingress": [b, a]})
    assert one.content_hash() == two.content_hash()
    assert diff(one, two).is_empty


def test_secret_bytes_never_appear_in_keys_or_summary() -> None:
    secret = {"metadata": {"name": "s", "namespace": "d"}, "type": "kubernetes.io/tls", "data": {"tls.key": "U0VDUkVU"}}
    snap = Snapshot.build({"Secret": [secret]})
    assert "U0VDUkVU" not in repr(snap) and "U0VDUkVU" not in diff(None, snap).summary()
    assert essence(secret)["data"] == {"tls.key": "U0VDUkVU"}  # the essence keeps data, so key rotation is a change
