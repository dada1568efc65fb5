"""Snapshots keyed by (kind, namespace, name) and their diff by essence."""

from __future__ import annotations

import copy
import datetime
from typing import Any

from syncer.snapshot import ObjectKey, Rejected, Snapshot, diff, essence, fingerprint


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


def test_objects_with_wrongly_typed_top_level_fields_are_rejected_not_kept() -> None:
    good = ingress("a")
    snap = Snapshot.build(
        {
            "Ingress": [good, {"metadata": "x"}, ingress("b", spec=["x"])],
            "Service": [{"metadata": {"name": "s"}}, {"metadata": {"name": "t", "namespace": "d"}, "status": "up"}],
            "EndpointSlice": [{"metadata": {"name": "e", "namespace": "d"}, "ports": {"http": 80}}],
            "IngressClass": [{"metadata": {"name": "c", "namespace": ["ignored"]}, "spec": None}],
        }
    )
    assert list(snap.objects) == [ObjectKey("Ingress", "default", "a"), ObjectKey("IngressClass", "", "c")]
    assert snap.rejected == (
        Rejected("EndpointSlice", "d", "e", "", "ports", "is an object, not a list"),
        Rejected("Ingress", "", "", "item 1 of the Ingress objects given", "metadata", "is a string, not an object"),
        Rejected("Ingress", "default", "b", "", "spec", "is a list, not an object"),
        Rejected("Service", "", "s", "item 0 of the Service objects given", "metadata.namespace", "is missing"),
        Rejected("Service", "d", "t", "", "status", "is a string, not an object"),
    )
    assert "malformed" not in diff(None, Snapshot.build({"Ingress": [good]})).summary()
    assert diff(None, snap).summary().endswith(", 5 malformed skipped")


def test_a_malformed_object_coming_or_going_is_a_change() -> None:
    """Otherwise its problem would never be reported as resolved (no other object changed)."""
    clean = Snapshot.build({"Ingress": [ingress("a")]})
    broken = Snapshot.build({"Ingress": [ingress("a"), ingress("b", spec="x")]})
    assert clean.objects == broken.objects
    assert clean.content_hash() != broken.content_hash()
    assert not diff(clean, broken).is_empty and not diff(broken, clean).is_empty
    assert diff(broken, Snapshot.build({"Ingress": [ingress("a"), ingress("b", spec="x")]})).is_empty


def test_keys_that_are_not_strings_still_have_a_fingerprint() -> None:
    """YAML allows `1:` or a date as a key; sorting them beside string keys must not raise."""
    odd = ingress("a", spec={1: "x", "rules": [], datetime.date(2026, 1, 1): {None: True, "k": 1.5}})
    snap = Snapshot.build({"Ingress": [odd]})
    assert snap.fingerprints[ObjectKey("Ingress", "default", "a")] == fingerprint(copy.deepcopy(odd))
