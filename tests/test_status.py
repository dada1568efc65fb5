"""Ingress status write-back against the fake API over real loopback HTTP: what is written, when, and failures."""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from syncer.deadline import Deadline
from syncer.errors import ConfigError
from syncer.kube.client import KubeClient
from syncer.kube.kubeconfig import ClusterConfig, Credential
from syncer.model import SourceRef
from syncer.run.status import PublishResult, PublishTarget, StatusPublisher, desired_load_balancer
from syncer.snapshot import Snapshot
from syncer.source import ApiSource
from tests.fakeapi import TEST_TOKEN, FakeKubeAPI, RecordedRequest

ADDRESSES = ["203.0.113.10", "lb.example.com"]
PUBLISHED = [{"ip": "203.0.113.10"}, {"hostname": "lb.example.com"}]
SERVED = [
    SourceRef("Ingress", "default", "web"),
    SourceRef("Ingress", "default", "api"),
    SourceRef("Ingress", "shop", "cart"),
]
FOREIGN_STATUS = {"loadBalancer": {"ingress": [{"ip": "198.51.100.7"}]}}
CLEAR = {"status": {"loadBalancer": {"ingress": None}}}


class StaticToken:
    def current(self) -> Credential:
        return Credential(token=TEST_TOKEN)

    def invalidate(self) -> None:
        pass


class Sleeps(list[float]):
    """Records the waits between attempts instead of sleeping."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def ingress(namespace: str, name: str, ingress_class: str = "syncer", status: Any = None) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "ingressClassName": ingress_class,
            "defaultBackend": {"service": {"name": "web", "port": {"number": 80}}},
        },
    }
    if status is not None:
        obj["status"] = copy.deepcopy(status)
    return obj


def proxy_service(*entries: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {"name": "proxy", "namespace": "ingress-syncer"},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]},
        "status": {"loadBalancer": {"ingress": list(entries)}},
    }


@pytest.fixture(autouse=True)
def syncer_logs_reach_caplog(monkeypatch: pytest.MonkeyPatch) -> None:
    # configure_logging (CLI tests in this process) turns propagation off; caplog listens on the root logger.
    monkeypatch.setattr(logging.getLogger("syncer"), "propagate", True)


@pytest.fixture
def api(fake_api: FakeKubeAPI) -> FakeKubeAPI:
    fake_api.set_objects(
        "Ingress",
        [
            ingress("default", "web"),
            ingress("default", "api"),
            ingress("shop", "cart"),
            ingress("default", "foreign", ingress_class="other", status=FOREIGN_STATUS),
        ],
    )
    return fake_api


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def client(api: FakeKubeAPI, sleeps: Sleeps) -> Iterator[KubeClient]:
    cluster = ClusterConfig(server=api.url, credentials=StaticToken())
    with KubeClient(cluster, connect_timeout=1.0, read_timeout=2.0, backoff_base=0.01, sleep=sleeps) as kube:
        yield kube


def fetch(client: KubeClient) -> Snapshot:
    return ApiSource(client).fetch()


def patches(api: FakeKubeAPI) -> list[RecordedRequest]:
    return [r for r in api.requests if r.method == "PATCH"]


def patched(api: FakeKubeAPI) -> list[str]:
    return [r.path.split("/namespaces/")[1].replace("/ingresses/", "/").removesuffix("/status") for r in patches(api)]


def status_of(api: FakeKubeAPI, namespace: str, name: str) -> Any:
    obj = next(
        o for o in api.objects("Ingress") if o["metadata"]["namespace"] == namespace and o["metadata"]["name"] == name
    )
    return obj.get("status", {}).get("loadBalancer", {}).get("ingress")


# --- addresses -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("addresses", "expected"),
    [
        (["203.0.113.10"], [{"ip": "203.0.113.10"}]),
        (["2001:DB8:0::1"], [{"ip": "2001:db8::1"}]),
        (["lb.example.com"], [{"hostname": "lb.example.com"}]),
        ([" lb-1.example.com "], [{"hostname": "lb-1.example.com"}]),
        (["localhost"], [{"hostname": "localhost"}]),
        (["203.0.113.10", "lb.example.com", "203.0.113.10"], PUBLISHED),
        ([], []),
    ],
)
def test_addresses_map_to_ip_or_hostname(addresses: list[str], expected: list[dict[str, str]]) -> None:
    assert desired_load_balancer(addresses) == expected


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("", "must not be empty"),
        ("LB.example.com", "use lowercase"),
        ("lb.example.com.", "DNS-1123 subdomain"),
        ("*.example.com", "neither an IP address nor a DNS name"),
        ("lb_1.example.com", "neither an IP address nor a DNS name"),
        ("http://lb.example.com", "neither an IP address nor a DNS name"),
        ("-lb.example.com", "neither an IP address nor a DNS name"),
        ("a" * 254, "at most 253 characters"),
        ("fe80::1%eth0", "IPv6 zone"),
    ],
)
def test_invalid_addresses_are_config_errors(address: str, message: str) -> None:
    with pytest.raises(ConfigError, match="--publish-address") as info:
        desired_load_balancer(["203.0.113.10", address])
    assert message in str(info.value)


def test_publish_target_from_options() -> None:
    assert PublishTarget.from_options((), None) is None
    assert PublishTarget.from_options(ADDRESSES, None) == PublishTarget(addresses=tuple(PUBLISHED))
    assert PublishTarget.from_options((), "ingress-syncer/proxy") == PublishTarget(service=("ingress-syncer", "proxy"))
    with pytest.raises(ConfigError, match="exclude each other"):
        PublishTarget.from_options(ADDRESSES, "ingress-syncer/proxy")
    for bad in ("proxy", "ingress-syncer/", "/proxy", "a/b/c", "Ingress-Syncer/proxy"):
        with pytest.raises(ConfigError, match="NAMESPACE/NAME"):
            PublishTarget.from_service(bad)
    target = PublishTarget.from_service("ingress-syncer/proxy")
    target.check_namespaces(())
    target.check_namespaces(("shop", "ingress-syncer"))
    with pytest.raises(ConfigError, match="add --namespace ingress-syncer"):
        target.check_namespaces(("shop",))


# --- writing only differences --------------------------------------------------------------------


def test_first_publish_writes_every_served_ingress_then_nothing(api: FakeKubeAPI, client: KubeClient) -> None:
    publisher = StatusPublisher(client, PublishTarget.from_addresses(ADDRESSES))
    result = publisher.publish(fetch(client), SERVED)
    assert result == PublishResult(written=3)
    assert sorted(patched(api)) == ["default/api", "default/web", "shop/cart"]
    for request in patches(api):
        assert request.headers["Content-Type"] == "application/merge-patch+json"
        assert request.json() == {"status": {"loadBalancer": {"ingress": PUBLISHED}}}
        assert request.token == TEST_TOKEN and request.status == 200
    assert status_of(api, "shop", "cart") == PUBLISHED
    assert status_of(api, "default", "foreign") == FOREIGN_STATUS["loadBalancer"]["ingress"]

    before = len(api.requests)
    assert publisher.publish(fetch(client), SERVED) == PublishResult(unchanged=3)
    assert patches(api)[3:] == [] and all(r.method == "GET" for r in api.requests[before:])


def test_comparison_ignores_order_ports_and_duplicates(api: FakeKubeAPI, client: KubeClient) -> None:
    existing = {
        "loadBalancer": {
            "ingress": [
                {"hostname": "lb.example.com", "ports": [{"port": 443, "protocol": "TCP"}]},
                {"ip": "203.0.113.10"},
                {"ip": "203.0.113.10"},
            ]
        }
    }
    api.add("Ingress", ingress("default", "web", status=existing))
    publisher = StatusPublisher(client, PublishTarget.from_addresses(ADDRESSES))
    assert publisher.publish(fetch(client), SERVED[:1]) == PublishResult(unchanged=1)
    assert patches(api) == []


def test_a_changed_address_is_written_again(api: FakeKubeAPI, client: KubeClient) -> None:
    StatusPublisher(client, PublishTarget.from_addresses(ADDRESSES)).publish(fetch(client), SERVED)
    moved = StatusPublisher(client, PublishTarget.from_addresses(["203.0.113.20"]))  # a restart with a new flag
    assert moved.publish(fetch(client), SERVED) == PublishResult(written=3)
    assert status_of(api, "default", "web") == [{"ip": "203.0.113.20"}]
    assert moved.publish(fetch(client), SERVED) == PublishResult(unchanged=3)


def test_writes_are_logged_one_line_each(
    api: FakeKubeAPI, client: KubeClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="syncer")
    StatusPublisher(client, PublishTarget.from_addresses(ADDRESSES)).publish(fetch(client), SERVED[:1])
    lines = [r.getMessage() for r in caplog.records if r.name == "syncer.run.status"]
    assert lines == ["status of Ingress default/web set to 203.0.113.10, lb.example.com"]


# --- clearing --------------------------------------------------------------------------------------


def test_an_ingress_no_longer_served_is_cleared_and_other_classes_never_touched(
    api: FakeKubeAPI, client: KubeClient
) -> None:
    publisher = StatusPublisher(client, PublishTarget.from_addresses(ADDRESSES))
    publisher.publish(fetch(client), SERVED)
    assert publisher.publish(fetch(client), SERVED[:2]) == PublishResult(unchanged=2, cleared=1)
    clear = patches(api)[3:]
    assert [r.path for r in clear] == ["/apis/networking.k8s.io/v1/namespaces/shop/ingresses/cart/status"]
    assert clear[0].json() == CLEAR
    assert status_of(api, "shop", "cart") is None
    assert publisher.publish(fetch(client), SERVED[:2]) == PublishResult(unchanged=2)
    assert len(patches(api)) == 4
    assert not any("/foreign/" in r.path for r in patches(api))
    assert status_of(api, "default", "foreign") == FOREIGN_STATUS["loadBalancer"]["ingress"]


def test_a_failed_clear_stays_pending_until_it_succeeds(api: FakeKubeAPI, client: KubeClient, sleeps: Sleeps) -> None:
    publisher = StatusPublisher(client, PublishTarget.from_addresses(ADDRESSES))
    publisher.publish(fetch(client), SERVED)
    api.inject(503, times=2, path_contains="/ingresses/cart/status")
    assert publisher.publish(fetch(client), SERVED[:2]) == PublishResult(unchanged=2, failed=1)
    assert status_of(api, "shop", "cart") == PUBLISHED
    assert publisher.publish(fetch(client), SERVED[:2]) == PublishResult(unchanged=2, cleared=1)
    assert status_of(api, "shop", "cart") is None
    assert len(sleeps) == 1 and sleeps[0] <= 1.0


def test_a_pending_clear_is_dropped_when_the_ingress_is_gone_or_served_again(
    api: FakeKubeAPI, client: KubeClient
) -> None:
    publisher = StatusPublisher(client, PublishTarget.from_addresses(ADDRESSES))
    publisher.publish(fetch(client), SERVED)
    api.inject(503, times=4, path_contains="/status")
    assert publisher.publish(fetch(client), SERVED[:1]).failed == 2  # api and cart stay pending
    api.delete("Ingress", "shop", "cart")
    assert publisher.publish(fetch(client), SERVED[:2]) == PublishResult(unchanged=2)  # api served again
    assert patched(api)[3:] == ["default/api", "default/api", "shop/cart", "shop/cart"]  # two attempts each
    assert status_of(api, "default", "api") == PUBLISHED


def test_an_ingress_taken_over_by_another_controller_keeps_its_status(
    api: FakeKubeAPI, client: KubeClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="syncer")
    publisher = StatusPublisher(client, PublishTarget.from_addresses(ADDRESSES))
    publisher.publish(fetch(client), SERVED)
    api.add("Ingress", ingress("shop", "cart", ingress_class="other", status=FOREIGN_STATUS))
    assert publisher.publish(fetch(client), SERVED[:2]) == PublishResult(unchanged=2)
    assert len(patches(api)) == 3
    assert status_of(api, "shop", "cart") == FOREIGN_STATUS["loadBalancer"]["ingress"]
    assert "shop/cart left as is" in caplog.text


def test_a_deleted_ingress_is_not_cleared(api: FakeKubeAPI, client: KubeClient) -> None:
    publisher = StatusPublisher(client, PublishTarget.from_addresses(ADDRESSES))
    publisher.publish(fetch(client), SERVED)
    api.delete("Ingress", "shop", "cart")
    assert publisher.publish(fetch(client), SERVED[:2]) == PublishResult(unchanged=2)
    assert len(patches(api)) == 3


# --- --publish-service -------------------------------------------------------------------------------


def test_publish_service_copies_the_service_status_and_follows_changes(api: FakeKubeAPI, client: KubeClient) -> None:
    api.add(
        "Service",
        proxy_service(
            {"ip": "203.0.113.50", "ipMode": "VIP", "ports": [{"port": 80, "protocol": "TCP"}]},
            {"hostname": "lb-1.elb.example.com"},
        ),
    )
    publisher = StatusPublisher(client, PublishTarget.from_service("ingress-syncer/proxy"))
    assert publisher.publish(fetch(client), SERVED) == PublishResult(written=3)
    assert status_of(api, "default", "web") == [{"ip": "203.0.113.50"}, {"hostname": "lb-1.elb.example.com"}]
    assert publisher.publish(fetch(client), SERVED) == PublishResult(unchanged=3)

    api.add("Service", proxy_service({"ip": "203.0.113.51", "hostname": "lb-2.elb.example.com"}))
    assert publisher.publish(fetch(client), SERVED) == PublishResult(written=3)
    assert status_of(api, "shop", "cart") == [{"hostname": "lb-2.elb.example.com", "ip": "203.0.113.51"}]
    assert len(patches(api)) == 6


def test_a_missing_service_publishes_nothing_and_warns_once(
    api: FakeKubeAPI, client: KubeClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="syncer")
    publisher = StatusPublisher(client, PublishTarget.from_service("ingress-syncer/proxy"))
    assert publisher.publish(fetch(client), SERVED) == PublishResult()
    assert publisher.publish(fetch(client), SERVED) == PublishResult()
    assert patches(api) == []
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "no such Service" in r.getMessage()]
    assert len(warnings) == 1 and "ingress-syncer/proxy" in warnings[0].getMessage()

    api.add("Service", proxy_service({"ip": "203.0.113.50"}))
    assert publisher.publish(fetch(client), SERVED) == PublishResult(written=3)
    assert "Service found" in caplog.text


# --- failures ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [409, 422, 500, 503])
def test_a_failing_write_is_logged_counted_and_retried_next_cycle(
    api: FakeKubeAPI, client: KubeClient, caplog: pytest.LogCaptureFixture, code: int
) -> None:
    publisher = StatusPublisher(client, PublishTarget.from_addresses(ADDRESSES))
    # 5xx is retried once within the publish (so it must fail twice); 409/422 are not retried at all.
    api.inject(code, times=2 if code >= 500 else 1, path_contains="/ingresses/web/status")
    assert publisher.publish(fetch(client), SERVED) == PublishResult(written=2, failed=1)
    failures = [
        r.getMessage() for r in caplog.records if r.name == "syncer.run.status" and r.levelno == logging.WARNING
    ]
    assert len(failures) == 1 and failures[0].startswith("status of Ingress default/web not written")
    assert f"HTTP {code}" in failures[0] and "\n" not in failures[0]
    assert status_of(api, "default", "web") is None

    assert publisher.publish(fetch(client), SERVED) == PublishResult(written=1, unchanged=2)
    assert status_of(api, "default", "web") == PUBLISHED


def test_one_transient_error_is_retried_within_the_publish(
    api: FakeKubeAPI, client: KubeClient, sleeps: Sleeps
) -> None:
    api.inject(503, path_contains="/status")
    publisher = StatusPublisher(client, PublishTarget.from_addresses(ADDRESSES))
    assert publisher.publish(fetch(client), SERVED) == PublishResult(written=3)
    assert len(patches(api)) == 4 and len(sleeps) == 1


def test_forbidden_names_the_verb_and_subresource_to_grant(
    api: FakeKubeAPI, client: KubeClient, caplog: pytest.LogCaptureFixture
) -> None:
    api.forbid("ingresses/status", verb="patch")
    publisher = StatusPublisher(client, PublishTarget.from_addresses(ADDRESSES))
    assert publisher.publish(fetch(client), SERVED) == PublishResult(failed=3)
    assert len(patches(api)) == 3  # a 403 is not retried
    warnings = [
        r.getMessage() for r in caplog.records if r.name == "syncer.run.status" and r.levelno == logging.WARNING
    ]
    assert len(warnings) == 3
    assert 'grant verb "patch" on resource "ingresses/status" in API group "networking.k8s.io"' in warnings[0]
    assert 'cannot patch resource "ingresses/status"' in warnings[0]  # the server's own words

    caplog.clear()
    assert publisher.publish(fetch(client), SERVED) == PublishResult(failed=3)
    assert not [r for r in caplog.records if r.name == "syncer.run.status" and r.levelno >= logging.WARNING]


def test_an_ingress_deleted_before_its_patch_is_logged_not_raised(
    api: FakeKubeAPI, client: KubeClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="syncer")
    snapshot = fetch(client)
    api.delete("Ingress", "default", "web")
    publisher = StatusPublisher(client, PublishTarget.from_addresses(ADDRESSES))
    assert publisher.publish(snapshot, SERVED) == PublishResult(written=2)
    assert "default/web not written, the Ingress is gone" in caplog.text
    assert [(r.path.split("/")[-2], r.status) for r in patches(api)] == [("api", 200), ("web", 404), ("cart", 200)]


def test_an_unreachable_api_costs_one_write_per_publish(
    api: FakeKubeAPI, client: KubeClient, sleeps: Sleeps, caplog: pytest.LogCaptureFixture
) -> None:
    publisher = StatusPublisher(client, PublishTarget.from_addresses(ADDRESSES))
    snapshot = fetch(client)
    api.down()
    sleeps.clear()
    assert publisher.publish(snapshot, SERVED) == PublishResult(failed=3)
    assert len(sleeps) == 1  # the first write's one retry (2 attempts): the other two were never tried
    assert "2 more Ingress status write(s) postponed to the next cycle" in caplog.text
    api.up()
    assert publisher.publish(fetch(client), SERVED) == PublishResult(written=3)


def test_status_writes_stop_at_the_cycle_deadline(
    api: FakeKubeAPI, client: KubeClient, caplog: pytest.LogCaptureFixture
) -> None:
    publisher = StatusPublisher(client, PublishTarget.from_addresses(ADDRESSES))
    snapshot = fetch(client)
    api.inject("delay", path_contains="/status", delay=40.0)  # the first PATCH stalls
    outcome = publisher.publish(snapshot, SERVED, Deadline.after(1.0, "the test's deadline"))
    assert outcome == PublishResult(failed=3)
    # The stalled PATCH is cut at the deadline and not retried; the other two are not even sent.
    assert patched(api) == ["default/api"]
    assert "the test's deadline passed while patching the status of Ingress default/api" in caplog.text
    assert "2 more Ingress status write(s) postponed to the next cycle" in caplog.text
    assert publisher.publish(fetch(client), SERVED, Deadline.after(30.0)) == PublishResult(written=3)


def test_the_token_never_reaches_the_log(
    api: FakeKubeAPI, client: KubeClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    api.warnings = [f"a warning quoting {TEST_TOKEN}"]
    publisher = StatusPublisher(client, PublishTarget.from_addresses(ADDRESSES))
    api.inject(503, times=2, path_contains="/ingresses/web/")
    api.inject(422, path_contains="/ingresses/api/")
    publisher.publish(fetch(client), SERVED)
    api.forbid("ingresses/status", verb="patch")
    api.add("Ingress", ingress("default", "web", status={"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}))
    publisher.publish(fetch(client), SERVED[:1])
    api.down()
    publisher.publish(fetch_offline(api), SERVED)
    assert caplog.records and TEST_TOKEN not in caplog.text
    assert "<redacted>" in caplog.text


def fetch_offline(api: FakeKubeAPI) -> Snapshot:
    """The objects as the API last had them, without a request (the server is down)."""
    return Snapshot.build({"Ingress": api.objects("Ingress")})
