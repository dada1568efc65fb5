"""KubeClient against the fake API server over real loopback HTTP(S): paging, list semantics, retries, auth, TLS."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import nullcontext
from typing import Any

import pytest
import trustme

from syncer.errors import (
    KubeBadResponse,
    KubeConflict,
    KubeError,
    KubeExpired,
    KubeForbidden,
    KubeNotFound,
    KubeRequestError,
    KubeUnauthorized,
    KubeUnavailable,
)
from syncer.kube.client import KubeClient
from syncer.kube.kubeconfig import ClusterConfig, Credential
from syncer.kube.resources import INGRESS, TLS_SECRET
from tests.fakeapi import TEST_TOKEN, FakeKubeAPI, RecordedRequest

PROXY_VARS = (
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
)
INGRESSES = "/apis/networking.k8s.io/v1/ingresses"


@pytest.fixture(autouse=True)
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A proxy set on the machine must not send loopback test traffic elsewhere."""
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)


class Creds:
    """A CredentialSource double: `invalidate()` moves on to the next token, as a re-read token file would."""

    def __init__(self, *tokens: str | None, cert: tuple[bytes, bytes] | None = None) -> None:
        self.tokens = list(tokens) or [None]
        self.cert = cert
        self.invalidations = 0

    def current(self) -> Credential:
        cert, key = self.cert or (None, None)
        return Credential(
            token=self.tokens[min(self.invalidations, len(self.tokens) - 1)], client_cert_pem=cert, client_key_pem=key
        )

    def invalidate(self) -> None:
        self.invalidations += 1


class Sleeps(list[float]):
    """Records the waits tenacity asks for instead of sleeping: tests stay fast, waits stay assertable."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def client_for(
    api: FakeKubeAPI,
    creds: Any = None,
    *,
    sleeps: Sleeps | None = None,
    cluster: dict[str, Any] | None = None,
    **options: Any,
) -> KubeClient:
    fields: dict[str, Any] = {"ca_pem": api.ca_pem if api.ca is not None else None, **(cluster or {})}
    config = ClusterConfig(server=api.url, credentials=creds or Creds(TEST_TOKEN), **fields)
    settings: dict[str, Any] = {
        "page_size": 100,
        "connect_timeout": 2.0,
        "read_timeout": 5.0,
        "max_attempts": 4,
        "backoff_base": 0.01,
        "sleep": sleeps if sleeps is not None else Sleeps(),
    }
    return KubeClient(config, **{**settings, **options})


def ingress(i: int, namespace: str = "default", **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": f"ing-{i:05d}", "namespace": namespace, "labels": labels}, "spec": {}}


def names(items: Any) -> list[str]:
    return sorted(f"{o['metadata'].get('namespace', '')}/{o['metadata']['name']}" for o in items)


def lists(api: FakeKubeAPI) -> list[RecordedRequest]:
    return [r for r in api.requests if r.path.endswith("/ingresses")]


# --- pagination ------------------------------------------------------------------------------------


def test_many_pages_return_every_item_exactly_once(fake_api: FakeKubeAPI) -> None:
    revision = fake_api.set_objects("ingresses", [ingress(i, f"ns-{i % 7}") for i in range(1234)])
    with client_for(fake_api) as client:
        result = client.list("Ingress")
    assert len(result.items) == 1234
    assert names(result.items) == names(fake_api.objects("ingresses"))
    assert result.resource_version == str(revision)
    assert result.kind is INGRESS
    assert len(fake_api.requests) == 13
    assert {r.query["limit"] for r in fake_api.requests} == {"100"}
    assert "continue" not in fake_api.requests[0].query
    assert all("continue" in r.query for r in fake_api.requests[1:])


def test_empty_pages_mid_list_with_a_selector_still_complete(fake_api: FakeKubeAPI) -> None:
    items = [ingress(i, **({"app": "web"} if i < 10 or i >= 290 else {"app": "other"})) for i in range(300)]
    fake_api.set_objects("ingresses", items)
    with client_for(fake_api) as client:
        result = client.list("ingresses", label_selector="app=web")
    assert names(result.items) == names(items[:10] + items[290:])
    assert len(fake_api.requests) == 3  # the middle page held nothing, and the client kept going
    assert {r.query["labelSelector"] for r in fake_api.requests} == {"app=web"}


def test_unknown_namespace_is_an_empty_list(fake_api: FakeKubeAPI) -> None:
    fake_api.set_objects("ingresses", [ingress(1, "a"), ingress(2, "b")])
    with client_for(fake_api) as client:
        assert names(client.list("Ingress", namespace="a").items) == ["a/ing-00001"]
        assert client.list("Ingress", namespace="nope").items == ()
    assert fake_api.requests[0].path == "/apis/networking.k8s.io/v1/namespaces/a/ingresses"


def test_tls_secret_field_selector_is_always_combined(fake_api: FakeKubeAPI) -> None:
    secret = {"metadata": {"name": "s", "namespace": "a"}, "type": "kubernetes.io/tls"}
    fake_api.set_objects(
        "secrets",
        [
            secret,
            {**secret, "type": "Opaque", "metadata": {"name": "o", "namespace": "a"}},
            {**secret, "metadata": {"name": "s", "namespace": "b"}},
        ],
    )
    with client_for(fake_api) as client:
        result = client.list(TLS_SECRET, field_selector="metadata.namespace=a")
    assert names(result.items) == ["a/s"]
    assert fake_api.requests[0].query["fieldSelector"] == "type=kubernetes.io/tls,metadata.namespace=a"


def test_pages_are_one_snapshot_even_if_the_store_changes_between_pages(fake_api: FakeKubeAPI) -> None:
    fake_api.set_objects("ingresses", [ingress(i) for i in range(250)])
    before = names(fake_api.objects("ingresses"))

    def change_store(req: RecordedRequest) -> None:
        if "continue" in req.query and fake_api.on_request is not None:
            fake_api.on_request = None
            fake_api.delete("ingresses", "default", "ing-00249")
            fake_api.add("ingresses", ingress(9999))

    fake_api.on_request = change_store
    with client_for(fake_api) as client:
        result = client.list("ingresses")
    assert names(result.items) == before


def test_expired_continue_restarts_the_whole_list_and_never_splices(
    fake_api: FakeKubeAPI, caplog: pytest.LogCaptureFixture
) -> None:
    fake_api.set_objects("ingresses", [ingress(i) for i in range(250)])

    def change_and_compact(req: RecordedRequest) -> None:
        if "continue" in req.query and fake_api.on_request is not None:
            fake_api.on_request = None
            fake_api.delete("ingresses", "default", "ing-00000")  # on page 1, already read
            fake_api.add("ingresses", ingress(9999))  # on page 3, not read yet
            fake_api.expire_continue_tokens()

    fake_api.on_request = change_and_compact
    with client_for(fake_api) as client:
        result = client.list("ingresses")
    assert names(result.items) == names(fake_api.objects("ingresses"))  # the new revision, whole
    assert result.resource_version == str(fake_api.revision)
    statuses = [r.status for r in fake_api.requests]
    assert statuses == [200, 410, 200, 200, 200]
    assert "continue" not in fake_api.requests[2].query
    assert "restarting the list" in caplog.text


def test_continue_expiring_every_time_gives_up_with_kube_expired(fake_api: FakeKubeAPI) -> None:
    fake_api.set_objects("ingresses", [ingress(i) for i in range(150)])
    fake_api.inject(410, times=100, match=lambda r: "continue" in r.query)
    with client_for(fake_api, max_restarts=2) as client, pytest.raises(KubeExpired, match="ingresses"):
        client.list("ingresses")
    assert len(fake_api.requests) == 6  # 3 tries x (first page + expired continuation)


def test_continue_token_ttl(fake_api: FakeKubeAPI) -> None:
    fake_api.continue_ttl = 0.0
    fake_api.set_objects("ingresses", [ingress(i) for i in range(150)])
    with client_for(fake_api, max_restarts=1) as client, pytest.raises(KubeExpired):
        client.list("ingresses")


# --- resourceVersion semantics --------------------------------------------------------------------


def test_second_list_asks_for_not_older_than_the_last_revision(fake_api: FakeKubeAPI) -> None:
    fake_api.set_objects("ingresses", [ingress(i) for i in range(150)])
    with client_for(fake_api) as client:
        first = client.list("ingresses")
        fake_api.touch()  # a write elsewhere in the cluster
        second = client.list("ingresses")
        other = client.list("ingresses", label_selector="app=x")  # another key starts fresh
    assert first.resource_version != second.resource_version == str(fake_api.revision)
    assert names(first.items) == names(second.items)
    assert "resourceVersion" not in fake_api.requests[0].query
    page1, page2 = fake_api.requests[2:4]
    assert page1.query["resourceVersionMatch"] == "NotOlderThan"
    assert page1.query["resourceVersion"] == first.resource_version
    # continuation pages drop resourceVersion(Match): the API refuses them alongside continue
    assert "resourceVersion" not in page2.query and "resourceVersionMatch" not in page2.query
    assert page1.query["limit"] == page2.query["limit"]
    assert other.items == () and "resourceVersion" not in fake_api.requests[-1].query


def test_410_on_a_not_older_than_list_falls_back_to_rv_unset(fake_api: FakeKubeAPI) -> None:
    fake_api.set_objects("ingresses", [ingress(1)])
    with client_for(fake_api) as client:
        client.list("ingresses")
        fake_api.inject(410)
        result = client.list("ingresses")
    assert len(result.items) == 1
    assert fake_api.requests[1].query.get("resourceVersionMatch") == "NotOlderThan"
    assert fake_api.requests[1].status == 410
    assert "resourceVersion" not in fake_api.requests[2].query


def test_too_large_resource_version_is_retried(fake_api: FakeKubeAPI) -> None:
    fake_api.set_objects("ingresses", [ingress(1)])
    sleeps = Sleeps()
    with client_for(fake_api, sleeps=sleeps) as client:
        client.list("ingresses")
        fake_api.inject("too_large_rv")
        result = client.list("ingresses")
    assert len(result.items) == 1
    assert [r.status for r in fake_api.requests] == [200, 504, 200]
    assert fake_api.requests[2].query["resourceVersionMatch"] == "NotOlderThan"
    assert len(sleeps) == 1 and 1.0 <= sleeps[0] <= 1.02  # the Status's retryAfterSeconds


def test_too_large_resource_version_for_good_falls_back_to_rv_unset(fake_api: FakeKubeAPI) -> None:
    fake_api.set_objects("ingresses", [ingress(1)])
    with client_for(fake_api, max_attempts=2) as client:
        first = client.list("ingresses")
        fake_api.inject("too_large_rv", times=2)
        assert client.list("ingresses").resource_version == first.resource_version
    assert [r.status for r in fake_api.requests] == [200, 504, 504, 200]
    assert "resourceVersion" not in fake_api.requests[-1].query


def test_the_fake_refuses_what_the_real_api_refuses(fake_api: FakeKubeAPI) -> None:
    """The client's queries pass a server as strict as the apiserver's ListOptions validation."""
    fake_api.set_objects("ingresses", [ingress(i) for i in range(3)])
    cases = [
        ({"resourceVersionMatch": "NotOlderThan"}, 422),
        ({"continue": "x", "resourceVersion": "5"}, 400),
        ({"resourceVersionMatch": "NotOlderThan", "resourceVersion": "999"}, 504),
        ({"fieldSelector": "spec.rules=1"}, 400),
        ({"resourceVersion": "0", "limit": "1"}, 200),
    ]
    with client_for(fake_api, max_attempts=1) as client:
        for params, status in cases:
            with pytest.raises(KubeError) if status != 200 else nullcontext():
                client._lists.get_page(INGRESSES, params, INGRESS, None)
            assert fake_api.requests[-1].status == status, params


# --- retries -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "options"),
    [
        (500, {}),
        (503, {}),
        (504, {}),
        (429, {}),
        ("reset", {}),
        ("truncate", {}),
        ("not_json", {}),
        ("wrong_shape", {}),
        ("delay", {"read_timeout": 0.3}),
    ],
)
def test_transient_faults_are_retried(fake_api: FakeKubeAPI, fault: int | str, options: dict[str, Any]) -> None:
    fake_api.set_objects("ingresses", [ingress(i) for i in range(150)])
    fake_api.inject(fault, times=2, match=lambda r: "continue" in r.query)  # hit the second page, twice
    with client_for(fake_api, **options) as client:
        result = client.list("ingresses")
    assert names(result.items) == names(fake_api.objects("ingresses"))
    assert len(fake_api.requests) == 4


def test_429_honours_retry_after_with_a_plain_text_body(fake_api: FakeKubeAPI) -> None:
    sleeps = Sleeps()
    fake_api.inject(429, retry_after=7)
    fake_api.inject(429, retry_after=600)
    with client_for(fake_api, sleeps=sleeps, retry_after_cap=32.0) as client:
        client.list("ingresses")
    assert 7.0 <= sleeps[0] <= 7.01
    assert 32.0 <= sleeps[1] <= 32.01  # capped like APF's own maximum
    assert [r.status for r in fake_api.requests] == [429, 429, 200]


def test_backoff_grows_and_is_bounded(fake_api: FakeKubeAPI) -> None:
    sleeps = Sleeps()
    fake_api.inject(503, times=5)
    with client_for(fake_api, sleeps=sleeps, max_attempts=6, backoff_base=1.0, max_backoff=4.0) as client:
        client.list("ingresses")
    assert len(sleeps) == 5
    assert 0.5 <= sleeps[0] <= 1.0 and 1.0 <= sleeps[1] <= 2.0 and all(2.0 <= s <= 4.0 for s in sleeps[2:])


def test_total_retry_time_is_bounded(fake_api: FakeKubeAPI) -> None:
    """The retries stop before a wait would cross `max_elapsed`, long before `max_attempts` (100, about 3.8 s of
    waits here). The waits are real (the budget is measured by the clock) and recorded: however slow the machine,
    they add up to less than the budget, and a slow machine only makes fewer of them."""
    fake_api.inject(503, times=100)
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        time.sleep(seconds)

    with (
        client_for(
            fake_api, sleep=sleep, max_attempts=100, backoff_base=0.05, max_backoff=0.05, max_elapsed=0.3
        ) as client,
        pytest.raises(KubeUnavailable),
    ):
        client.list("ingresses")
    assert sum(waits) < 0.3
    assert len(fake_api.requests) == len(waits) + 1 < 20


def test_retries_exhausted_raise_kube_unavailable(fake_api: FakeKubeAPI, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "syncer.kube.client")
    fake_api.inject(503, times=100)
    with client_for(fake_api, max_attempts=3) as client, pytest.raises(KubeUnavailable) as info:
        client.list("ingresses")
    message = str(info.value)
    assert "ingresses.networking.k8s.io" in message and INGRESSES in message
    assert "3 attempt(s)" in message and "503" in message and "injected fault 503" in message
    assert info.value.resource == "ingresses.networking.k8s.io" and info.value.status == 503
    assert len(fake_api.requests) == 3
    retry_lines = [r for r in caplog.records if "retry" in r.getMessage()]
    assert len(retry_lines) == 2 and all("ingresses.networking.k8s.io" in r.getMessage() for r in retry_lines)


def test_bad_bodies_after_retries_raise_kube_bad_response(fake_api: FakeKubeAPI) -> None:
    fake_api.inject("not_json", times=100)
    with client_for(fake_api, max_attempts=2) as client, pytest.raises(KubeBadResponse, match="not JSON"):
        client.list("ingresses")


def test_connection_refused_raises_kube_unavailable() -> None:
    api = FakeKubeAPI()
    api.start()
    api.close()
    sleeps = Sleeps()
    with (
        client_for(api, sleeps=sleeps, max_attempts=3) as client,
        pytest.raises(KubeUnavailable, match="connection refused"),
    ):
        client.list("ingresses")
    assert len(sleeps) == 2


def test_down_then_up_recovers(fake_api: FakeKubeAPI) -> None:
    with client_for(fake_api) as client:
        client.list("ingresses")
        fake_api.down()
        with pytest.raises(KubeUnavailable):
            client.list("ingresses")
        fake_api.up()
        assert client.list("ingresses").items == ()


# --- auth and refusals -----------------------------------------------------------------------------


def test_401_refreshes_the_credential_once_and_uses_the_new_token(fake_api: FakeKubeAPI) -> None:
    fake_api.tokens = {"new-token"}
    creds = Creds("old-token", "new-token")
    with client_for(fake_api, creds) as client:
        client.list("ingresses")
        client.list("ingresses")
    assert creds.invalidations == 1
    assert [r.token for r in fake_api.requests] == ["old-token", "new-token", "new-token"]


def test_401_twice_raises_kube_unauthorized(fake_api: FakeKubeAPI) -> None:
    creds = Creds("old-token", "still-wrong")
    with client_for(fake_api, creds) as client, pytest.raises(KubeUnauthorized, match="even after refreshing"):
        client.list("ingresses")
    assert creds.invalidations == 1 and len(fake_api.requests) == 2


def test_403_names_the_verb_and_resource_to_grant(fake_api: FakeKubeAPI) -> None:
    fake_api.forbid("ingresses")
    with client_for(fake_api) as client, pytest.raises(KubeForbidden) as info:
        client.list("ingresses")
    message = str(info.value)
    assert message.startswith(
        'forbidden: cannot list ingresses.networking.k8s.io (cluster-wide): grant verb "list" '
        'on resource "ingresses" in API group "networking.k8s.io"'
    )
    assert 'User "system:serviceaccount:ingress-syncer:syncer" cannot list' in message
    assert info.value.verb == "list" and info.value.resource == "ingresses.networking.k8s.io"
    assert len(fake_api.requests) == 1  # not retried


def test_403_in_a_namespace_on_the_core_group(fake_api: FakeKubeAPI) -> None:
    fake_api.forbid("services")
    with client_for(fake_api) as client, pytest.raises(KubeForbidden, match=r'services \(namespace "web"\).*core'):
        client.list("services", namespace="web")


def test_404_names_the_resource(fake_api: FakeKubeAPI) -> None:
    fake_api.inject(404)
    with (
        client_for(fake_api) as client,
        pytest.raises(
            KubeNotFound,
            match=r"endpointslices\.discovery\.k8s\.io .*"
            r"discovery\.k8s\.io/v1",
        ),
    ):
        client.list("EndpointSlice")
    assert len(fake_api.requests) == 1


def test_other_4xx_are_not_retried(fake_api: FakeKubeAPI) -> None:
    fake_api.inject(400)
    with client_for(fake_api) as client, pytest.raises(KubeRequestError, match="injected fault 400"):
        client.list("ingresses")
    assert len(fake_api.requests) == 1


def test_headers_sent(fake_api: FakeKubeAPI) -> None:
    with client_for(fake_api, user_agent="ingress-syncer/test") as client:
        client.list("ingresses")
    headers = fake_api.requests[0].headers
    assert headers["User-Agent"] == "ingress-syncer/test" and headers["Accept"] == "application/json"
    assert fake_api.requests[0].token == TEST_TOKEN


def test_api_warnings_are_logged_once_per_text(fake_api: FakeKubeAPI, caplog: pytest.LogCaptureFixture) -> None:
    fake_api.warnings = ["networking.k8s.io/v1 Ingress is fine, but this is a test"]
    with client_for(fake_api) as client:
        client.list("ingresses")
        client.list("ingresses")
    warned = [r for r in caplog.records if "this is a test" in r.getMessage()]
    assert len(warned) == 1


# --- compression -----------------------------------------------------------------------------------


def test_gzip_bodies_are_decoded(fake_api: FakeKubeAPI) -> None:
    fake_api.gzip_threshold = 1024
    fake_api.set_objects("ingresses", [ingress(i) for i in range(50)])
    with client_for(fake_api) as client:
        assert len(client.list("ingresses").items) == 50
    assert fake_api.requests[0].gzipped and fake_api.requests[0].headers["Accept-Encoding"] == "gzip"


def test_disable_compression_asks_for_identity(fake_api: FakeKubeAPI) -> None:
    fake_api.gzip_threshold = 1024
    fake_api.set_objects("ingresses", [ingress(i) for i in range(50)])
    with client_for(fake_api, cluster={"disable_compression": True}) as client:
        assert len(client.list("ingresses").items) == 50
    assert not fake_api.requests[0].gzipped and fake_api.requests[0].headers["Accept-Encoding"] == "identity"


# --- proxies -----------------------------------------------------------------------------------------


def test_proxy_url_is_used_and_beats_the_environment(fake_api: FakeKubeAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # discard port: would fail if used
    config = ClusterConfig(server="http://kube.invalid:6443", credentials=Creds(TEST_TOKEN), proxy_url=fake_api.url)
    with KubeClient(config, max_attempts=1) as client:
        client.list("ingresses")
    assert fake_api.requests[0].target.startswith("http://kube.invalid:6443/apis/")


def test_https_through_a_connect_proxy_keeps_our_tls_settings(fake_api: FakeKubeAPI, fake_api_tls: FakeKubeAPI) -> None:
    with client_for(fake_api_tls, cluster={"proxy_url": fake_api.url, "tls_server_name": "localhost"}) as client:
        assert client.list("ingresses").items == ()
    assert [r.method for r in fake_api.requests] == ["CONNECT"]
    assert fake_api.requests[0].target == fake_api_tls.url.removeprefix("https://")
    assert [r.status for r in fake_api_tls.requests] == [200]


def test_environment_proxy_is_used_without_proxy_url(fake_api: FakeKubeAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", fake_api.url)
    config = ClusterConfig(server="http://kube.invalid:6443", credentials=Creds(TEST_TOKEN))
    with KubeClient(config, max_attempts=1) as client:
        client.list("ingresses")
    assert fake_api.requests[0].target.startswith("http://kube.invalid:6443/apis/")


# --- TLS -------------------------------------------------------------------------------------------


def test_tls_trusts_ca_pem_even_when_requests_ca_bundle_points_elsewhere(
    fake_api_tls: FakeKubeAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = "/etc/ssl/certs/ca-certificates.crt"
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", bundle)
    monkeypatch.setenv("CURL_CA_BUNDLE", bundle)
    fake_api_tls.set_objects("ingresses", [ingress(i) for i in range(150)])
    with client_for(fake_api_tls) as client:
        assert len(client.list("ingresses").items) == 150


def test_tls_wrong_ca_fails_fast_and_clearly(fake_api_tls: FakeKubeAPI) -> None:
    sleeps = Sleeps()
    other_ca = trustme.CA().cert_pem.bytes()
    with (
        client_for(fake_api_tls, sleeps=sleeps, cluster={"ca_pem": other_ca}) as client,
        pytest.raises(KubeUnavailable, match=r"TLS verification .* failed.*certificate") as info,
    ):
        client.list("ingresses")
    assert sleeps == [] and "certificate-authority" in str(info.value)


def test_ca_bundle_environment_variables_cannot_add_trust(
    fake_api_tls: FakeKubeAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """requests would load REQUESTS_CA_BUNDLE into the connection's context next to ours: it must not."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", fake_api_tls.ca_path)
    monkeypatch.setenv("CURL_CA_BUNDLE", fake_api_tls.ca_path)
    with (
        client_for(fake_api_tls, cluster={"ca_pem": trustme.CA().cert_pem.bytes()}) as client,
        pytest.raises(KubeUnavailable, match="TLS verification"),
    ):
        client.list("ingresses")


def test_tls_system_store_does_not_trust_a_private_ca(fake_api_tls: FakeKubeAPI) -> None:
    config = ClusterConfig(server=fake_api_tls.url, credentials=Creds(TEST_TOKEN))
    with KubeClient(config, sleep=Sleeps()) as client, pytest.raises(KubeUnavailable, match="TLS verification"):
        client.list("ingresses")


def test_insecure_skip_tls_verify(fake_api_tls: FakeKubeAPI) -> None:
    config = ClusterConfig(server=fake_api_tls.url, credentials=Creds(TEST_TOKEN), insecure_skip_tls_verify=True)
    with KubeClient(config) as client:
        assert client.list("ingresses").items == ()


@pytest.fixture
def named_api() -> Iterator[FakeKubeAPI]:
    with FakeKubeAPI(tls=True, tokens=[TEST_TOKEN], cert_names=["kube-apiserver.internal"]) as api:
        yield api


def test_tls_server_name_is_used_for_sni_and_verification(named_api: FakeKubeAPI) -> None:
    with client_for(named_api, cluster={"tls_server_name": "kube-apiserver.internal"}) as client:
        assert client.list("ingresses").items == ()


def test_without_tls_server_name_the_ip_does_not_match(named_api: FakeKubeAPI) -> None:
    with (
        client_for(named_api) as client,
        pytest.raises(KubeUnavailable, match=r"mismatch, certificate is not valid for .127\.0\.0\.1"),
    ):
        client.list("ingresses")


@pytest.fixture
def mtls_api() -> Iterator[FakeKubeAPI]:
    with FakeKubeAPI(tls=True, tokens=["unused"], require_client_cert=True) as api:
        yield api


def test_client_certificate_auth_and_rotation(mtls_api: FakeKubeAPI) -> None:
    creds = Creds(None, cert=mtls_api.issue_client_cert("syncer-a"))
    with client_for(mtls_api, creds) as client:
        client.list("ingresses")
        creds.cert = mtls_api.issue_client_cert("syncer-b")  # an exec plugin handed out a new certificate
        client.list("ingresses")
    assert [r.client_cn for r in mtls_api.requests] == ["syncer-a", "syncer-b"]
    assert [r.token for r in mtls_api.requests] == [None, None]


def test_missing_client_certificate_is_a_kube_error(mtls_api: FakeKubeAPI) -> None:
    with client_for(mtls_api, Creds("unused"), max_attempts=2) as client, pytest.raises(KubeUnavailable):
        client.list("ingresses")


def test_bad_client_key_is_a_kube_error(mtls_api: FakeKubeAPI) -> None:
    cert, _ = mtls_api.issue_client_cert()
    with (
        client_for(mtls_api, Creds(None, cert=(cert, b"not a key"))) as client,
        pytest.raises(KubeRequestError, match="client certificate/key"),
    ):
        client.list("ingresses")


# --- nothing from requests, no secrets ---------------------------------------------------------------

FAULT_MATRIX: list[tuple[int | str, type[KubeError]]] = [
    (500, KubeUnavailable),
    (503, KubeUnavailable),
    (504, KubeUnavailable),
    (429, KubeUnavailable),
    ("too_large_rv", KubeUnavailable),
    ("reset", KubeUnavailable),
    ("truncate", KubeBadResponse),
    ("not_json", KubeBadResponse),
    ("wrong_shape", KubeBadResponse),
    ("delay", KubeUnavailable),
    (400, KubeRequestError),
    (401, KubeUnauthorized),
    (403, KubeForbidden),
    (404, KubeNotFound),
    (410, KubeExpired),
]


@pytest.mark.parametrize(("fault", "error"), FAULT_MATRIX, ids=[str(f) for f, _ in FAULT_MATRIX])
def test_every_fault_is_a_kube_error_and_never_shows_the_token(
    fake_api: FakeKubeAPI, caplog: pytest.LogCaptureFixture, fault: int | str, error: type[KubeError]
) -> None:
    caplog.set_level(logging.DEBUG)  # urllib3's and requests' own loggers included
    fake_api.inject(fault, times=1000, delay=1.0)
    with (
        client_for(fake_api, max_attempts=2, max_restarts=1, read_timeout=0.2) as client,
        pytest.raises(KubeError) as info,
    ):
        client.list("ingresses")
    assert isinstance(info.value, error) and type(info.value).__module__ == "syncer.errors"
    texts = [str(info.value), repr(info.value), *(r.getMessage() for r in caplog.records)]
    assert not [t for t in texts if TEST_TOKEN in t]
    assert info.value.__cause__ is None  # no requests/urllib3 exception attached as the cause


def test_connection_failures_never_show_the_token(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    api = FakeKubeAPI()
    api.start()
    api.close()
    with client_for(api, max_attempts=2) as client, pytest.raises(KubeUnavailable) as info:
        client.list("ingresses")
    assert TEST_TOKEN not in str(info.value) and all(TEST_TOKEN not in r.getMessage() for r in caplog.records)


def test_a_token_with_a_newline_is_refused_without_quoting_it(fake_api: FakeKubeAPI) -> None:
    token = "abc-secret\nX-Injected: 1"
    with client_for(fake_api, Creds(token)) as client, pytest.raises(KubeRequestError) as info:
        client.list("ingresses")
    assert "abc-secret" not in str(info.value) and fake_api.requests == []


# --- PATCH of Ingress status -------------------------------------------------------------------------

WEB_STATUS = "/apis/networking.k8s.io/v1/namespaces/default/ingresses/web/status"


def web(status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": "web", "namespace": "default"}, "spec": {"rules": []}, "status": status or {}}


def test_patch_status_sends_a_merge_patch_and_clears_with_null(fake_api: FakeKubeAPI) -> None:
    fake_api.add("Ingress", web())
    with client_for(fake_api) as client:
        client.patch_ingress_status("default", "web", [{"ip": "203.0.113.10"}, {"hostname": "lb.example.com"}])
        stored = fake_api.objects("Ingress")[0]
        client.patch_ingress_status("default", "web", None)
    assert stored["status"] == {"loadBalancer": {"ingress": [{"ip": "203.0.113.10"}, {"hostname": "lb.example.com"}]}}
    assert fake_api.objects("Ingress")[0]["status"] == {"loadBalancer": {}}
    first, second = fake_api.requests
    assert (first.method, first.path, first.status) == ("PATCH", WEB_STATUS, 200)
    assert first.headers["Content-Type"] == "application/merge-patch+json"
    assert first.headers["Accept"] == "application/json" and first.token == TEST_TOKEN
    assert second.json() == {"status": {"loadBalancer": {"ingress": None}}}


def test_patch_status_refreshes_credentials_once_on_401(fake_api: FakeKubeAPI) -> None:
    fake_api.add("Ingress", web())
    creds = Creds("expired-token", TEST_TOKEN)
    with client_for(fake_api, creds) as client:
        client.patch_ingress_status("default", "web", [{"ip": "203.0.113.10"}])
    assert creds.invalidations == 1 and [r.status for r in fake_api.requests] == [401, 200]
    with client_for(fake_api, Creds("wrong", "still-wrong")) as client, pytest.raises(KubeUnauthorized):
        client.patch_ingress_status("default", "web", None)


def test_patch_status_403_names_verb_and_subresource(fake_api: FakeKubeAPI) -> None:
    fake_api.add("Ingress", web())
    fake_api.forbid("ingresses/status", verb="patch")
    with client_for(fake_api) as client, pytest.raises(KubeForbidden) as info:
        client.patch_ingress_status("default", "web", None)
    assert str(info.value).startswith(
        'forbidden: cannot patch the status of Ingress default/web: grant verb "patch" on resource '
        '"ingresses/status" in API group "networking.k8s.io" (namespace "default" or cluster-wide)'
    )
    assert info.value.verb == "patch" and info.value.resource == "ingresses/status"
    assert len(fake_api.requests) == 1


def test_patch_status_404_422_409_are_not_retried(fake_api: FakeKubeAPI) -> None:
    fake_api.add("Ingress", web())
    with client_for(fake_api) as client:
        with pytest.raises(KubeNotFound, match=r"Ingress default/gone \(deleted since it was listed\?\)"):
            client.patch_ingress_status("default", "gone", None)
        with pytest.raises(KubeRequestError, match=r"HTTP 422 Invalid.*must be a DNS name, not an IP address"):
            client.patch_ingress_status("default", "web", [{"hostname": "203.0.113.10"}])
        fake_api.inject(409)
        with pytest.raises(KubeRequestError, match=r"HTTP 409 Conflict.*injected fault 409"):
            client.patch_ingress_status("default", "web", None)
    assert [r.status for r in fake_api.requests] == [404, 422, 409]


def test_patch_status_retries_briefly(fake_api: FakeKubeAPI) -> None:
    fake_api.add("Ingress", web())
    sleeps = Sleeps()
    fake_api.inject(429, retry_after=30)
    with client_for(fake_api, sleeps=sleeps, max_attempts=5) as client:
        client.patch_ingress_status("default", "web", [{"ip": "203.0.113.10"}])
        fake_api.inject(503, times=5)
        with pytest.raises(KubeUnavailable, match="failed after 2 attempt"):
            client.patch_ingress_status("default", "web", None)
    assert [r.status for r in fake_api.requests] == [429, 200, 503, 503]
    assert len(sleeps) == 2 and all(s <= 1.01 for s in sleeps)  # Retry-After 30 is capped for a status write


# --- Leases ------------------------------------------------------------------------------------------

LOCK = "/apis/coordination.k8s.io/v1/namespaces/syncer/leases/lock"


def new_lease(holder: str = "a") -> dict[str, Any]:
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "lock", "namespace": "syncer"},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "leaseTransitions": 0},
    }


def test_lease_get_create_update(fake_api: FakeKubeAPI) -> None:
    with client_for(fake_api) as client:
        assert client.get_lease("syncer", "lock") is None
        created = client.create_lease("syncer", new_lease())
        assert created["spec"]["holderIdentity"] == "a" and created["metadata"]["resourceVersion"]
        assert client.get_lease("syncer", "lock") == created
        changed = {**created, "spec": {**created["spec"], "holderIdentity": "b", "leaseTransitions": 1}}
        updated = client.update_lease("syncer", "lock", changed)
        assert updated["spec"]["holderIdentity"] == "b"
        assert updated["metadata"]["resourceVersion"] != created["metadata"]["resourceVersion"]
    methods = [(r.method, r.path, r.status) for r in fake_api.requests]
    assert methods == [
        ("GET", LOCK, 404),
        ("POST", LOCK.removesuffix("/lock"), 201),
        ("GET", LOCK, 200),
        ("PUT", LOCK, 200),
    ]
    assert fake_api.requests[1].headers["Content-Type"] == "application/json"
    assert fake_api.requests[3].json()["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]
    assert all(r.token == TEST_TOKEN for r in fake_api.requests)


def test_lease_409s_are_kube_conflicts_and_not_retried(fake_api: FakeKubeAPI) -> None:
    with client_for(fake_api) as client:
        created = client.create_lease("syncer", new_lease())
        with pytest.raises(KubeConflict) as exists:
            client.create_lease("syncer", new_lease("b"))
        client.update_lease("syncer", "lock", {**created, "spec": {**created["spec"], "holderIdentity": "b"}})
        with pytest.raises(KubeConflict) as stale:  # the resourceVersion b's write replaced
            client.update_lease("syncer", "lock", {**created, "spec": {**created["spec"], "holderIdentity": "c"}})
    assert exists.value.reason == "AlreadyExists" and stale.value.reason == "Conflict"
    assert isinstance(stale.value, KubeRequestError) and stale.value.status == 409
    assert str(exists.value).startswith("conflict: cannot create Lease syncer/lock: HTTP 409 AlreadyExists")
    assert "the object has been modified" in str(stale.value)
    assert [r.status for r in fake_api.requests] == [201, 409, 200, 409]


@pytest.mark.parametrize(
    ("verb", "call"),
    [
        ("get", lambda c: c.get_lease("syncer", "lock")),
        ("create", lambda c: c.create_lease("syncer", new_lease())),
        ("update", lambda c: c.update_lease("syncer", "lock", new_lease())),
    ],
)
def test_lease_403_names_the_verb_to_grant(fake_api: FakeKubeAPI, verb: str, call: Any) -> None:
    fake_api.forbid("leases", verb)
    with client_for(fake_api) as client, pytest.raises(KubeForbidden) as info:
        call(client)
    assert str(info.value).startswith(
        f'forbidden: cannot {verb} Lease syncer/lock: grant verb "{verb}" on resource "leases" in API group '
        '"coordination.k8s.io" (namespace "syncer"); server said: '
    )
    assert info.value.verb == verb and info.value.resource == "leases.coordination.k8s.io"
    assert len(fake_api.requests) == 1


def test_lease_calls_retry_briefly_and_refresh_credentials(fake_api: FakeKubeAPI) -> None:
    sleeps = Sleeps()
    fake_api.inject(429, retry_after=30)
    with client_for(fake_api, sleeps=sleeps, max_attempts=5) as client:
        client.create_lease("syncer", new_lease())
        fake_api.inject(503, times=2)
        with pytest.raises(KubeUnavailable, match=r"get Lease syncer/lock at .* failed after 2 attempt"):
            client.get_lease("syncer", "lock")
    assert [r.status for r in fake_api.requests] == [429, 201, 503, 503]
    assert len(sleeps) == 2 and all(s <= 1.01 for s in sleeps)
    creds = Creds("expired-token", TEST_TOKEN)
    with client_for(fake_api, creds) as client:
        assert client.get_lease("syncer", "lock") is not None
    assert creds.invalidations == 1


def test_lease_other_refusals_and_bad_bodies(fake_api: FakeKubeAPI) -> None:
    with client_for(fake_api) as client:
        with pytest.raises(KubeNotFound, match="not found: cannot update Lease syncer/lock"):
            client.update_lease("syncer", "lock", {**new_lease(), "metadata": {"name": "lock", "resourceVersion": "1"}})
        with pytest.raises(KubeRequestError, match=r"create Lease syncer/lock refused: HTTP 422 Invalid"):
            client.create_lease("syncer", {**new_lease(), "spec": {"leaseDurationSeconds": 0}})
        fake_api.inject("not_json", times=2)
        with pytest.raises(KubeBadResponse, match="not JSON"):
            client.get_lease("syncer", "lock")
