"""ApiSource and the whole command against the fake Kubernetes API: the foundation's end-to-end promises."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from syncer.errors import SourceError
from syncer.kube.client import KubeClient
from syncer.kube.kubeconfig import ClusterConfig, Credential
from syncer.snapshot import ObjectKey
from syncer.source import ApiSource, DirectorySource
from tests.fakeapi import TEST_TOKEN, FakeKubeAPI

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "fixtures" / "demo"


class StaticToken:
    def __init__(self, token: str) -> None:
        self.token = token

    def current(self) -> Credential:
        return Credential(token=self.token)

    def invalidate(self) -> None:
        pass


def demo_objects() -> dict[str, list[dict[str, Any]]]:
    snapshot = DirectorySource(DEMO).fetch()
    objects: dict[str, list[dict[str, Any]]] = {}
    for key, obj in snapshot.objects.items():
        objects.setdefault(key.kind, []).append(dict(obj))
    return objects


def load_demo(api: FakeKubeAPI) -> None:
    for kind, items in demo_objects().items():
        api.set_objects(kind, items)
    # A Secret of another type must never be listed: the source asks for TLS Secrets only.
    api.add("Secret", {"metadata": {"name": "db-password", "namespace": "shop"}, "type": "Opaque", "data": {}})


def client_for(api: FakeKubeAPI, **kwargs: Any) -> KubeClient:
    cluster = ClusterConfig(server=api.url, credentials=StaticToken(TEST_TOKEN), ca_pem=api.ca_pem if api.ca else None)
    return KubeClient(cluster, backoff_base=0.01, max_backoff=0.05, **kwargs)


def test_api_source_lists_every_kind_across_pages(fake_api: FakeKubeAPI) -> None:
    load_demo(fake_api)
    for i in range(30):
        fake_api.add("Service", {"metadata": {"name": f"extra-{i}", "namespace": f"ns-{i % 3}"}, "spec": {}})
    with client_for(fake_api, page_size=7) as client:
        snapshot = ApiSource(client).fetch()
    kinds = {key.kind for key in snapshot.objects}
    assert kinds == {"IngressClass", "Ingress", "Service", "EndpointSlice", "Secret"}
    assert ObjectKey("Secret", "shop", "shop-tls") in snapshot.objects
    assert ObjectKey("Secret", "shop", "db-password") not in snapshot.objects
    assert len(snapshot.of_kind("Service")) == 32
    assert snapshot.content_hash() == ApiSource(client_for(fake_api, page_size=500)).fetch().content_hash()
    secret_lists = [r for r in fake_api.requests if r.path.endswith("/secrets")]
    assert secret_lists and all(r.query.get("fieldSelector") == "type=kubernetes.io/tls" for r in secret_lists)


def test_namespaces_are_listed_one_by_one(fake_api: FakeKubeAPI) -> None:
    load_demo(fake_api)
    fake_api.add("Service", {"metadata": {"name": "elsewhere", "namespace": "other"}, "spec": {}})
    with client_for(fake_api) as client:
        snapshot = ApiSource(client, namespaces=["shop", "empty"]).fetch()
    assert ObjectKey("Service", "other", "elsewhere") not in snapshot.objects
    assert ObjectKey("Service", "shop", "web") in snapshot.objects
    assert ObjectKey("IngressClass", "", "syncer") in snapshot.objects  # cluster-scoped, always listed
    paths = {r.path for r in fake_api.requests}
    assert "/api/v1/namespaces/empty/services" in paths
    assert "/apis/networking.k8s.io/v1/ingressclasses" in paths


def test_one_failed_list_fails_the_snapshot(fake_api: FakeKubeAPI) -> None:
    load_demo(fake_api)
    fake_api.forbid("secrets")
    with client_for(fake_api) as client, pytest.raises(SourceError) as failure:
        ApiSource(client).fetch()
    message = str(failure.value)
    assert "cannot list secrets" in message and '"list"' in message
    assert TEST_TOKEN not in message


# --- the command line against the fake API ------------------------------------------------------


def write_kubeconfig(path: Path, api: FakeKubeAPI) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "fake",
                "cluster": {"server": api.url, "certificate-authority-data": base64.b64encode(api.ca_pem).decode()},
            }
        ],
        "users": [{"name": "syncer", "user": {"token": TEST_TOKEN}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "syncer"}}],
        "current-context": "fake",
    }
    path.write_text(yaml.safe_dump(config))
    return path


def syncer(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNCER_", "KUBECONFIG", "KUBERNETES_"))}
    return subprocess.run(
        [sys.executable, "-m", "syncer", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


def files_of(path: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(path)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(path.rglob("*")) if p.is_file()
    }


@pytest.fixture
def api_and_config(tmp_path: Path) -> Iterator[tuple[FakeKubeAPI, Path]]:
    with FakeKubeAPI(tls=True, tokens=[TEST_TOKEN]) as api:
        load_demo(api)
        yield api, write_kubeconfig(tmp_path / "kubeconfig", api)


@pytest.mark.parametrize("renderer", ["traefik", "envoy"])
def test_once_against_the_api_then_nothing_then_api_down(
    api_and_config: tuple[FakeKubeAPI, Path], tmp_path: Path, renderer: str
) -> None:
    api, kubeconfig = api_and_config
    out = tmp_path / "out"
    out.mkdir()
    args = ("once", "--kubeconfig", str(kubeconfig), "--renderer", renderer, "--output-dir", str(out))
    first = syncer(*args)
    assert first.returncode == 0, first.stderr
    written = files_of(out)
    assert len(written) >= 2
    assert "ingresses +5 ~0 -0" in first.stderr

    second = syncer(*args)
    assert second.returncode == 0, second.stderr
    assert "nothing to write" in second.stderr  # same input as the files on disk: not even rendered
    assert files_of(out) == written

    api.stop()  # connection refused from now on
    down = syncer(*args)
    assert down.returncode == 1, down.stderr
    assert "cannot list" in down.stderr and "files untouched" in down.stderr
    assert files_of(out) == written
    assert TEST_TOKEN not in first.stderr + second.stderr + down.stderr


def test_in_cluster_token_rotation_recovers_on_the_401(fake_api_tls: FakeKubeAPI, tmp_path: Path) -> None:
    """Bound service-account tokens rotate: a 401 makes the client re-read the token file and succeed."""
    from syncer.kube.kubeconfig import load_cluster_config

    load_demo(fake_api_tls)
    root = tmp_path / "serviceaccount"
    root.mkdir()
    (root / "token").write_text(TEST_TOKEN)
    (root / "ca.crt").write_bytes(fake_api_tls.ca_pem)
    port = fake_api_tls.url.rsplit(":", 1)[1]
    environ = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": port}
    cluster = load_cluster_config(environ=environ, in_cluster_root=str(root))
    with KubeClient(cluster, backoff_base=0.01, max_backoff=0.05) as client:
        source = ApiSource(client)
        before = source.fetch()
        fake_api_tls.tokens = {"rotated-token"}  # the old token is no longer accepted...
        (root / "token").write_text("rotated-token")  # ...and the kubelet has written the new one
        after = source.fetch()
    assert after.content_hash() == before.content_hash()
    assert [r.status for r in fake_api_tls.requests].count(401) == 1
    assert fake_api_tls.requests[-1].token == "rotated-token"


def test_run_stops_at_once_even_while_retrying(api_and_config: tuple[FakeKubeAPI, Path], tmp_path: Path) -> None:
    import signal
    import threading
    import time

    api, kubeconfig = api_and_config
    api.stop()
    out = tmp_path / "out"
    out.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNCER_", "KUBECONFIG", "KUBERNETES_"))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "syncer", "run", "--kubeconfig", str(kubeconfig), "--output-dir", str(out)],
        cwd=REPO,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr or ()), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 20
        while not any("connection refused; retry" in line for line in lines) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert any("retry" in line for line in lines), "".join(lines)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0  # a guard against a hang only: the log below tells how it stopped
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
    reader.join(timeout=5)
    stopping = [i for i, line in enumerate(lines) if "received SIGTERM" in line]
    # The retries were abandoned, not finished (that would log the remaining ones and take seconds).
    assert stopping and not any("retry" in line for line in lines[stopping[0] :]), "".join(lines)
    assert list(out.iterdir()) == []


def test_once_publishes_status_of_served_ingresses_only(
    api_and_config: tuple[FakeKubeAPI, Path], tmp_path: Path
) -> None:
    api, kubeconfig = api_and_config
    out = tmp_path / "out"
    out.mkdir()
    args = ("once", "--kubeconfig", str(kubeconfig), "--output-dir", str(out))
    publish = ("--publish-address", "203.0.113.10", "--publish-address", "lb.example.com")
    first = syncer(*args, *publish)
    assert first.returncode == 0, first.stderr
    status = {
        obj["metadata"]["name"]: obj.get("status", {}).get("loadBalancer", {}).get("ingress")
        for obj in api.objects("Ingress")
    }
    expected = [{"ip": "203.0.113.10"}, {"hostname": "lb.example.com"}]
    assert status == {"storefront": expected, "catalog": expected, "fallback": expected, "mistakes": expected,
                      "not-ours": None}  # fmt: skip
    patches = [r for r in api.requests if r.method == "PATCH"]
    assert len(patches) == 4 and not any("not-ours" in r.path for r in patches)
    second = syncer(*args, *publish)
    assert second.returncode == 0, second.stderr
    assert len([r for r in api.requests if r.method == "PATCH"]) == 4  # compared first: nothing to write


def test_publish_with_source_is_a_usage_error(tmp_path: Path) -> None:
    result = syncer("once", "--source", str(DEMO), "--output-dir", str(tmp_path), "--publish-address", "10.0.0.1")
    assert result.returncode == 2 and "not with --source" in result.stderr


def test_api_requests_are_counted_by_resource_and_code(fake_api: FakeKubeAPI) -> None:
    from syncer.run.metrics import Metrics

    load_demo(fake_api)
    metrics = Metrics()
    fake_api.inject(503, times=1, path_contains="/services")
    with client_for(fake_api, on_response=metrics.count_api_request) as client:
        ApiSource(client).fetch()
    text = metrics.exposition().decode()
    assert 'syncer_api_requests_total{code="200",resource="ingresses.networking.k8s.io"} 1.0' in text
    assert 'syncer_api_requests_total{code="503",resource="services"} 1.0' in text
    assert 'syncer_api_requests_total{code="200",resource="services"} 1.0' in text
