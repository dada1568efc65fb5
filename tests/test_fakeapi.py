"""The fake API server itself, checked with the standard library's HTTP client so syncer.kube cannot hide its bugs."""

from __future__ import annotations

import gzip
import json
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.fakeapi import TEST_TOKEN, FakeKubeAPI

INGRESSES = "/apis/networking.k8s.io/v1/ingresses"


def get(
    api: FakeKubeAPI, path: str, token: str | None = TEST_TOKEN, headers: dict[str, str] | None = None, **query: str
) -> tuple[int, Any, dict[str, str]]:
    url = f"{api.url}{path}" + (f"?{urlencode(query)}" if query else "")
    request = urllib.request.Request(
        url, headers={**({"Authorization": f"Bearer {token}"} if token else {}), **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            body, status, got = response.read(), response.status, dict(response.headers)
    except urllib.error.HTTPError as error:
        body, status, got = error.read(), error.code, dict(error.headers)
    if got.get("Content-Encoding") == "gzip":
        body = gzip.decompress(body)
    return status, (json.loads(body) if got.get("Content-Type") == "application/json" else body.decode()), got


def ingress(name: str, namespace: str = "default", **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace, "labels": labels}}


def item_names(body: dict[str, Any]) -> list[str]:
    return [i["metadata"]["name"] for i in body["items"]]


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("app=web", ["a", "b"]),
        ("app==web", ["a", "b"]),
        ("app!=web", ["c", "d"]),
        ("tier", ["b", "c"]),
        ("!tier", ["a", "d"]),
        ("app=web,tier=x", ["b"]),
        ("", ["a", "b", "c", "d"]),
    ],
)
def test_label_selectors(fake_api: FakeKubeAPI, selector: str, expected: list[str]) -> None:
    fake_api.set_objects(
        "ingresses",
        [ingress("a", app="web"), ingress("b", app="web", tier="x"), ingress("c", app="db", tier="y"), ingress("d")],
    )
    status, body, _ = get(fake_api, INGRESSES, labelSelector=selector)
    assert status == 200 and item_names(body) == expected
    assert body["kind"] == "IngressList" and "kind" not in body["items"][0]


def test_field_selectors_and_unknown_fields(fake_api: FakeKubeAPI) -> None:
    fake_api.set_objects(
        "secrets",
        [
            {"metadata": {"name": "t", "namespace": "a"}, "type": "kubernetes.io/tls"},
            {"metadata": {"name": "o", "namespace": "a"}, "type": "Opaque"},
        ],
    )
    assert item_names(get(fake_api, "/api/v1/secrets", fieldSelector="type=kubernetes.io/tls")[1]) == ["t"]
    assert item_names(get(fake_api, "/api/v1/secrets", fieldSelector="metadata.name!=t")[1]) == ["o"]
    status, body, _ = get(fake_api, INGRESSES, fieldSelector="type=x")  # `type` is a Secret-only field
    assert status == 400 and body["reason"] == "BadRequest" and "not a known field selector" in body["message"]


def test_paths_namespaces_and_single_objects(fake_api: FakeKubeAPI) -> None:
    fake_api.add("ingresses", ingress("a", "ns1"))
    fake_api.add("IngressClass", {"metadata": {"name": "traefik"}})
    assert item_names(get(fake_api, "/apis/networking.k8s.io/v1/namespaces/ns1/ingresses")[1]) == ["a"]
    assert get(fake_api, "/apis/networking.k8s.io/v1/namespaces/nope/ingresses")[1]["items"] == []
    status, body, _ = get(fake_api, "/apis/networking.k8s.io/v1/namespaces/ns1/ingresses/a")
    assert status == 200 and body["kind"] == "Ingress" and body["metadata"]["uid"]
    assert get(fake_api, "/apis/networking.k8s.io/v1/ingressclasses/traefik")[0] == 200
    assert get(fake_api, "/apis/networking.k8s.io/v1/namespaces/ns1/ingresses/zz")[0] == 404
    status, body, _ = get(fake_api, "/apis/networking.k8s.io/v1beta1/ingresses")
    assert status == 404 and body["kind"] == "Status"


def test_writes_bump_one_revision_and_keep_uid(fake_api: FakeKubeAPI) -> None:
    first = fake_api.add("ingresses", ingress("a"))
    again = fake_api.add("ingresses", {**ingress("a"), "spec": {"x": 1}})
    assert again["metadata"]["uid"] == first["metadata"]["uid"]
    assert int(again["metadata"]["resourceVersion"]) == int(first["metadata"]["resourceVersion"]) + 1
    assert get(fake_api, INGRESSES)[1]["metadata"]["resourceVersion"] == str(fake_api.revision)


def test_resource_version_rules(fake_api: FakeKubeAPI) -> None:
    fake_api.set_objects("ingresses", [ingress(f"i{n}") for n in range(5)])
    status, body, _ = get(fake_api, INGRESSES, resourceVersion="0", limit="2")
    assert status == 200 and len(body["items"]) == 5 and "continue" not in body["metadata"]  # RV=0 ignores limit
    status, body, _ = get(fake_api, INGRESSES, resourceVersionMatch="NotOlderThan", resourceVersion="99")
    assert status == 504 and body["reason"] == "Timeout" and body["details"]["retryAfterSeconds"] == 1
    assert "Too large resource version" in body["message"]
    assert get(fake_api, INGRESSES, resourceVersionMatch="NotOlderThan")[0] == 422
    status, body, _ = get(fake_api, INGRESSES, limit="2")
    token = body["metadata"]["continue"]
    assert body["metadata"]["remainingItemCount"] == 3
    assert get(fake_api, INGRESSES, limit="2", resourceVersion="1", **{"continue": token})[0] == 400
    assert (
        get(
            fake_api,
            INGRESSES,
            limit="2",
            resourceVersionMatch="NotOlderThan",
            resourceVersion="1",
            **{"continue": token},
        )[0]
        == 422
    )
    assert get(fake_api, INGRESSES, limit="2", labelSelector="a=b", **{"continue": token})[0] == 400
    fake_api.expire_continue_tokens()
    status, body, _ = get(fake_api, INGRESSES, limit="2", **{"continue": token})
    assert status == 410 and body["reason"] == "Expired"


def test_auth_forbid_and_records(fake_api: FakeKubeAPI) -> None:
    assert get(fake_api, INGRESSES, token=None)[0] == 401
    assert get(fake_api, INGRESSES, token="wrong")[0] == 401
    fake_api.forbid("Ingress")
    status, body, _ = get(fake_api, "/apis/networking.k8s.io/v1/namespaces/x/ingresses")
    assert status == 403 and body["message"].endswith('in API group "networking.k8s.io" in the namespace "x"')
    assert [r.token for r in fake_api.requests] == [None, "wrong", TEST_TOKEN]
    assert all("Authorization" not in r.headers for r in fake_api.requests)


def test_429_is_plain_text_with_retry_after_and_gzip_above_threshold(fake_api: FakeKubeAPI) -> None:
    fake_api.inject(429, retry_after=3)
    status, body, headers = get(fake_api, INGRESSES)
    assert status == 429 and headers["Retry-After"] == "3" and body.startswith("Too many requests")
    fake_api.gzip_threshold = 100
    fake_api.set_objects("ingresses", [ingress(f"i{n}") for n in range(20)])
    status, body, headers = get(fake_api, INGRESSES, headers={"Accept-Encoding": "gzip"})
    assert headers.get("Content-Encoding") == "gzip" and len(body["items"]) == 20 and fake_api.requests[-1].gzipped


def test_faults_are_consumed_in_order_and_by_path(fake_api: FakeKubeAPI) -> None:
    fake_api.inject(500, path_contains="/services")
    fake_api.inject(503, times=2)
    assert [get(fake_api, INGRESSES)[0] for _ in range(3)] == [503, 503, 200]
    assert get(fake_api, "/api/v1/services")[0] == 500
    with pytest.raises(ValueError, match="unknown fault"):
        fake_api.inject("explode")


def patch(
    api: FakeKubeAPI, path: str, body: Any, content_type: str = "application/merge-patch+json"
) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"{api.url}{path}",
        data=json.dumps(body).encode(),
        method="PATCH",
        headers={"Authorization": f"Bearer {TEST_TOKEN}", "Content-Type": content_type},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


WEB_STATUS = "/apis/networking.k8s.io/v1/namespaces/default/ingresses/web/status"
LB = {"loadBalancer": {"ingress": [{"ip": "203.0.113.10"}]}}


def test_patch_status_applies_a_merge_patch_to_status_only(fake_api: FakeKubeAPI) -> None:
    fake_api.add("Ingress", {**ingress("web"), "spec": {"rules": []}, "status": {"loadBalancer": {}, "other": 1}})
    revision = fake_api.revision
    status, body = patch(
        fake_api, WEB_STATUS, {"status": LB, "spec": {"rules": None}, "metadata": {"labels": {"a": "b"}}}
    )
    assert status == 200 and body["kind"] == "Ingress" and body["status"] == {**LB, "other": 1}
    stored = fake_api.objects("Ingress")[0]
    assert stored["spec"] == {"rules": []} and stored["metadata"]["labels"] == {}  # only status changes
    assert fake_api.revision == revision + 1 and stored["metadata"]["resourceVersion"] == str(revision + 1)
    assert fake_api.requests[-1].method == "PATCH" and fake_api.requests[-1].json()["status"] == LB

    assert patch(fake_api, WEB_STATUS, {"status": LB})[0] == 200
    assert fake_api.revision == revision + 1  # a no-op patch writes nothing
    status, body = patch(fake_api, WEB_STATUS, {"status": {"loadBalancer": {"ingress": None}}})
    assert status == 200 and body["status"] == {"loadBalancer": {}, "other": 1}
    assert fake_api.revision == revision + 2


def test_patch_status_refusals(fake_api: FakeKubeAPI) -> None:
    fake_api.add("Ingress", ingress("web"))
    status, body = patch(fake_api, WEB_STATUS, {"status": LB}, content_type="application/json")
    assert status == 415 and body["reason"] == "UnsupportedMediaType"
    assert "application/merge-patch+json" in body["message"]
    status, body = patch(fake_api, WEB_STATUS.replace("/web/", "/gone/"), {"status": LB})
    assert status == 404 and body["message"] == 'ingresses.networking.k8s.io "gone" not found'
    status, body = patch(fake_api, WEB_STATUS, {"metadata": {"resourceVersion": "1"}, "status": LB})
    assert status == 409 and body["reason"] == "Conflict"
    status, body = patch(fake_api, WEB_STATUS, {"status": {"loadBalancer": {"ingress": [{"hostname": "10.0.0.1"}]}}})
    assert status == 422 and "must be a DNS name, not an IP address" in body["message"]
    assert patch(fake_api, WEB_STATUS.removesuffix("/status"), {"status": LB})[0] == 405
    fake_api.forbid("ingresses/status", verb="patch")
    status, body = patch(fake_api, WEB_STATUS, {"status": LB})
    assert status == 403 and body["message"] == (
        'ingresses.networking.k8s.io "web" is forbidden: User "system:serviceaccount:ingress-syncer:syncer" '
        'cannot patch resource "ingresses/status" in API group "networking.k8s.io" in the namespace "default"'
    )
    assert get(fake_api, "/apis/networking.k8s.io/v1/namespaces/default/ingresses/web")[0] == 200  # get still allowed
    fake_api.inject(503, path_contains="/status")
    fake_api.inject(503, path_contains="/status")
    assert [patch(fake_api, WEB_STATUS, {"status": LB})[0] for _ in range(2)] == [503, 503]
    assert "status" not in fake_api.objects("Ingress")[0]


# --- Leases ------------------------------------------------------------------------------------------

LEASES = "/apis/coordination.k8s.io/v1/namespaces/syncer/leases"


def send(api: FakeKubeAPI, method: str, path: str, body: Any) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"{api.url}{path}",
        data=json.dumps(body).encode(),
        method=method,
        headers={"Authorization": f"Bearer {TEST_TOKEN}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def lease(holder: str, rv: str | None = None, **spec: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "lock", "namespace": "syncer"}
    if rv is not None:
        meta["resourceVersion"] = rv
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": meta,
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, **spec},
    }


def test_lease_get_create_and_already_exists(fake_api: FakeKubeAPI) -> None:
    status, body, _ = get(fake_api, f"{LEASES}/lock")
    assert status == 404 and body["reason"] == "NotFound"
    assert body["message"] == 'leases.coordination.k8s.io "lock" not found'
    status, created = send(fake_api, "POST", LEASES, lease("a", renewTime="2026-01-01T00:00:00.000000Z"))
    assert status == 201 and created["kind"] == "Lease" and created["spec"]["holderIdentity"] == "a"
    assert created["metadata"]["resourceVersion"] == str(fake_api.revision) and created["metadata"]["uid"]
    status, body = send(fake_api, "POST", LEASES, lease("b"))
    assert status == 409 and body["reason"] == "AlreadyExists"
    assert body["message"] == 'leases.coordination.k8s.io "lock" already exists'
    assert body["details"] == {"name": "lock", "group": "coordination.k8s.io", "kind": "leases"}
    status, got, _ = get(fake_api, f"{LEASES}/lock")
    assert status == 200 and got == created
    assert [(r.method, r.status) for r in fake_api.requests] == [
        ("GET", 404),
        ("POST", 201),
        ("POST", 409),
        ("GET", 200),
    ]
    assert fake_api.objects("Lease")[0]["spec"]["holderIdentity"] == "a"


def test_lease_put_needs_the_current_resource_version(fake_api: FakeKubeAPI) -> None:
    _, created = send(fake_api, "POST", LEASES, lease("a"))
    rv = created["metadata"]["resourceVersion"]
    status, body = send(fake_api, "PUT", f"{LEASES}/lock", lease("b"))
    assert status == 422 and body["reason"] == "Invalid"
    assert body["message"] == (
        'leases.coordination.k8s.io "lock" is invalid: metadata.resourceVersion: Invalid value: 0x0: '
        "must be specified for an update"
    )
    status, updated = send(fake_api, "PUT", f"{LEASES}/lock", lease("b", rv, leaseTransitions=1))
    assert status == 200 and updated["spec"]["holderIdentity"] == "b"
    assert int(updated["metadata"]["resourceVersion"]) > int(rv)
    assert updated["metadata"]["uid"] == created["metadata"]["uid"]
    status, body = send(fake_api, "PUT", f"{LEASES}/lock", lease("c", rv))  # the version b replaced
    assert status == 409 and body["reason"] == "Conflict"
    assert body["message"] == (
        'Operation cannot be fulfilled on leases.coordination.k8s.io "lock": the object has been modified; '
        "please apply your changes to the latest version and try again"
    )
    revision = fake_api.revision
    same = lease("b", updated["metadata"]["resourceVersion"], leaseTransitions=1)
    assert send(fake_api, "PUT", f"{LEASES}/lock", same) == (200, updated)  # unchanged: nothing written
    assert fake_api.revision == revision
    assert send(fake_api, "PUT", f"{LEASES}/gone", {**lease("a", "1"), "metadata": {"name": "gone"}})[0] == 404


def test_lease_refusals_faults_and_rbac(fake_api: FakeKubeAPI) -> None:
    assert send(fake_api, "PUT", f"{LEASES}/other", lease("a", "1"))[0] == 400  # name differs from the URL
    assert send(fake_api, "POST", LEASES, lease("a", leaseDurationSeconds=0))[0] == 422
    assert send(fake_api, "POST", LEASES, lease("a", renewTime="yesterday"))[0] == 400
    assert send(fake_api, "POST", LEASES.replace("/syncer/", "/other/"), lease("a"))[0] == 400  # namespace differs
    assert send(fake_api, "POST", "/apis/networking.k8s.io/v1/namespaces/syncer/ingresses", lease("a"))[0] == 405
    fake_api.inject(503, path_contains="/leases")
    assert send(fake_api, "POST", LEASES, lease("a"))[0] == 503
    fake_api.forbid("leases", "create")
    status, body = send(fake_api, "POST", LEASES, lease("a"))
    assert status == 403 and body["message"] == (
        'leases.coordination.k8s.io is forbidden: User "system:serviceaccount:ingress-syncer:syncer" cannot '
        'create resource "leases" in API group "coordination.k8s.io" in the namespace "syncer"'
    )
    fake_api.forbid("leases", "get")
    assert get(fake_api, f"{LEASES}/lock")[0] == 403
    assert fake_api.objects("Lease") == []
