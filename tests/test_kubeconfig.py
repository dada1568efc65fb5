"""kubeconfig loading, in-cluster config and credential sources (token files, exec plugins), on tmp_path files."""

from __future__ import annotations

import base64
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # no stubs installed; only safe_dump is used

from syncer.errors import ConfigError
from syncer.kube.exec_credential import ExecConfig, parse_rfc3339, run_exec_plugin
from syncer.kube.kubeconfig import (
    ClusterConfig,
    Credential,
    ExecCredentialSource,
    StaticCredentialSource,
    TokenFileSource,
    join_host_port,
    load_cluster_config,
)

PLUGIN = Path(__file__).with_name("exec_plugin.py")
CA = b"-----BEGIN CERTIFICATE-----\nca\n-----END CERTIFICATE-----\n"
CERT = b"-----BEGIN CERTIFICATE-----\nclient\n-----END CERTIFICATE-----\n"
KEY = b"-----BEGIN PRIVATE KEY-----\nclient-key\n-----END PRIVATE KEY-----\n"
SECRET = "s3cr3t-token-value"
V1 = "client.authentication.k8s.io/v1"
V1BETA1 = "client.authentication.k8s.io/v1beta1"
T0 = 1_900_000_000.0  # 2030-03-17, a wall-clock instant for expiry tests


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def rfc3339(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def write_kubeconfig(
    path: Path,
    *,
    clusters: Mapping[str, Mapping[str, Any]] | None = None,
    users: Mapping[str, Mapping[str, Any]] | None = None,
    contexts: Mapping[str, Mapping[str, Any]] | None = None,
    current: str | None = None,
) -> Path:
    doc: dict[str, Any] = {"apiVersion": "v1", "kind": "Config"}
    if current is not None:
        doc["current-context"] = current
    for section, inner, entries in (
        ("clusters", "cluster", clusters),
        ("users", "user", users),
        ("contexts", "context", contexts),
    ):
        if entries is not None:
            doc[section] = [{"name": name, inner: dict(body)} for name, body in entries.items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc))
    return path


def single(
    path: Path,
    *,
    cluster: Mapping[str, Any] | None = None,
    user: Mapping[str, Any] | None = None,
    namespace: str | None = None,
) -> Path:
    """A kubeconfig with one context `ctx` -> cluster `c`, user `u`."""
    ctx: dict[str, Any] = {"cluster": "c", "user": "u"}
    if namespace:
        ctx["namespace"] = namespace
    return write_kubeconfig(
        path,
        clusters={"c": {"server": "https://api.example:6443", **(cluster or {})}},
        users={"u": dict(user or {})},
        contexts={"ctx": ctx},
        current="ctx",
    )


def load(
    tmp_path: Path,
    kubeconfig: str | Path | None = None,
    context: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    clock: FakeClock | None = None,
) -> ClusterConfig:
    """load_cluster_config isolated from this machine: no real env, home or service account."""
    return load_cluster_config(
        str(kubeconfig) if kubeconfig is not None else None,
        context,
        environ=environ if environ is not None else {},
        in_cluster_root=str(tmp_path / "no-service-account"),
        home=str(tmp_path / "no-home"),
        clock=clock,
    )


# --- file selection and merging ---------------------------------------------------------------


def test_kubeconfig_env_merges_files_first_wins(tmp_path: Path) -> None:
    first = write_kubeconfig(
        tmp_path / "a" / "config",
        clusters={"shared": {"server": "https://first:6443"}},
        users={"alice": {"token": "token-from-first"}},
        contexts={"dev": {"cluster": "shared", "user": "alice", "namespace": "dev-ns"}},
        current="dev",
    )
    second = write_kubeconfig(
        tmp_path / "b" / "config",
        # The same names again: they must not override, nor be mixed field by field into, the first file's entries.
        clusters={
            "shared": {"server": "https://second:6443", "certificate-authority-data": b64(CA)},
            "prod-cluster": {"server": "https://prod:6443"},
        },
        users={
            "alice": {"token": "token-from-second", "client-certificate-data": b64(CERT), "client-key-data": b64(KEY)},
            "bob": {"token": "bob-token"},
        },
        contexts={
            "dev": {"cluster": "prod-cluster", "user": "bob"},
            "prod": {"cluster": "prod-cluster", "user": "bob"},
        },
        current="prod",
    )
    env = {"KUBECONFIG": os.pathsep.join(["", str(tmp_path / "missing"), str(first), "", str(second)])}

    config = load(tmp_path, environ=env)
    assert config.server == "https://first:6443"
    assert config.ca_pem is None
    assert config.namespace == "dev-ns"
    assert config.credentials.current() == Credential(token="token-from-first")
    assert config.describe == (f"kubeconfig {first}{os.pathsep}{second}, context dev (cluster shared, user alice)")

    prod = load(tmp_path, context="prod", environ=env)
    assert prod.server == "https://prod:6443"
    assert prod.credentials.current().token == "bob-token"
    assert prod.namespace is None


def test_current_context_comes_from_the_first_file_that_sets_one(tmp_path: Path) -> None:
    first = write_kubeconfig(tmp_path / "first", clusters={"c1": {"server": "https://one"}})
    second = write_kubeconfig(
        tmp_path / "second",
        contexts={"x": {"cluster": "c1"}, "y": {"cluster": "c2"}},
        clusters={"c2": {"server": "https://two"}},
        current="x",
    )
    third = write_kubeconfig(tmp_path / "third", current="y")
    env = {"KUBECONFIG": os.pathsep.join(map(str, [first, second, third]))}
    config = load(tmp_path, environ=env)
    assert config.server == "https://one"  # context x from the second file, its cluster from the first
    assert config.describe.endswith("context x (cluster c1, no user)")
    assert config.credentials.current() == Credential()


def test_kubeconfig_argument_is_used_alone(tmp_path: Path) -> None:
    chosen = single(tmp_path / "chosen", user={"token": "chosen"})
    other = write_kubeconfig(
        tmp_path / "other",
        clusters={"c": {"server": "https://other"}},
        current="ctx",
        contexts={"ctx": {"cluster": "c"}},
    )
    config = load(tmp_path, chosen, environ={"KUBECONFIG": str(other)})
    assert config.server == "https://api.example:6443"
    assert config.credentials.current().token == "chosen"
    assert config.describe == f"kubeconfig {chosen}, context ctx (cluster c, user u)"


def test_kubeconfig_argument_may_be_a_path_list(tmp_path: Path) -> None:
    first = write_kubeconfig(tmp_path / "first", current="ctx")
    second = single(tmp_path / "second")
    config = load(tmp_path, os.pathsep.join([str(tmp_path / "missing"), str(first), str(second)]))
    assert config.server == "https://api.example:6443"


def test_kubeconfig_argument_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"kubeconfig file .*nope does not exist; fix the --kubeconfig path"):
        load(tmp_path, tmp_path / "nope")


def test_kubeconfig_env_with_only_missing_files(tmp_path: Path) -> None:
    single(tmp_path / "no-home" / ".kube" / "config")  # must not be used: KUBECONFIG replaces the default
    with pytest.raises(ConfigError, match=r"KUBECONFIG names .*gone, but none of these files exist"):
        load(tmp_path, environ={"KUBECONFIG": str(tmp_path / "gone")})


def test_home_kube_config_is_the_last_resort(tmp_path: Path) -> None:
    single(tmp_path / "no-home" / ".kube" / "config", user={"token": "home"})
    config = load(tmp_path)
    assert config.credentials.current().token == "home"
    assert config.describe.startswith(f"kubeconfig {tmp_path / 'no-home' / '.kube' / 'config'}, context ctx")


def test_no_configuration_at_all(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load(tmp_path)
    message = str(err.value)
    for hint in ("--kubeconfig", "KUBECONFIG", "service account", "--source DIR", str(tmp_path / "no-home")):
        assert hint in message


# --- contexts ----------------------------------------------------------------------------------


def two_contexts(path: Path, current: str | None = "one") -> Path:
    return write_kubeconfig(
        path,
        clusters={"c1": {"server": "https://one"}, "c2": {"server": "https://two"}},
        contexts={"one": {"cluster": "c1"}, "two": {"cluster": "c2", "namespace": "team"}},
        current=current,
    )


def test_context_current_and_explicit(tmp_path: Path) -> None:
    path = two_contexts(tmp_path / "config")
    assert load(tmp_path, path).server == "https://one"
    explicit = load(tmp_path, path, "two")
    assert (explicit.server, explicit.namespace) == ("https://two", "team")


def test_unknown_context_lists_the_available_ones(tmp_path: Path) -> None:
    path = two_contexts(tmp_path / "config")
    with pytest.raises(
        ConfigError, match=r"context 'three' is not defined in kubeconfig .*available contexts: one, two"
    ):
        load(tmp_path, path, "three")


def test_missing_current_context_lists_the_available_ones(tmp_path: Path) -> None:
    path = two_contexts(tmp_path / "config", current=None)
    with pytest.raises(ConfigError, match=r"sets no current-context; pass --context NAME \(available: one, two\)"):
        load(tmp_path, path)


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ({"cluster": "nowhere", "user": "u"}, "names cluster 'nowhere', which .* does not define"),
        ({"cluster": "c", "user": "nobody"}, "names user 'nobody', which .* does not define"),
        ({"user": "u"}, "names no cluster"),
    ],
)
def test_context_references_must_exist(tmp_path: Path, context: dict[str, str], message: str) -> None:
    path = write_kubeconfig(
        tmp_path / "config",
        clusters={"c": {"server": "https://x"}},
        users={"u": {}},
        contexts={"ctx": context},
        current="ctx",
    )
    with pytest.raises(ConfigError, match=message):
        load(tmp_path, path)


# --- cluster fields ----------------------------------------------------------------------------


def test_cluster_fields_pass_through(tmp_path: Path) -> None:
    path = single(
        tmp_path / "config",
        cluster={
            "server": "https://api.example:6443/",
            "tls-server-name": "kubernetes.default",
            "proxy-url": "socks5://proxy:1080",
            "disable-compression": True,
        },
    )
    config = load(tmp_path, path)
    assert config.server == "https://api.example:6443"
    assert config.tls_server_name == "kubernetes.default"
    assert config.proxy_url == "socks5://proxy:1080"
    assert config.disable_compression is True
    assert config.insecure_skip_tls_verify is False
    assert config.ca_pem is None


def test_bare_server_gets_https(tmp_path: Path) -> None:
    assert (
        load(tmp_path, single(tmp_path / "config", cluster={"server": "10.0.0.1:6443"})).server
        == "https://10.0.0.1:6443"
    )


def test_insecure_skip_tls_verify(tmp_path: Path) -> None:
    config = load(tmp_path, single(tmp_path / "config", cluster={"insecure-skip-tls-verify": True}))
    assert config.insecure_skip_tls_verify is True


def test_insecure_with_a_ca_is_refused(tmp_path: Path) -> None:
    path = single(
        tmp_path / "config", cluster={"insecure-skip-tls-verify": True, "certificate-authority-data": b64(CA)}
    )
    with pytest.raises(ConfigError, match=r"cluster 'c' in .* sets both insecure-skip-tls-verify and a certificate"):
        load(tmp_path, path)


def test_ca_file_relative_to_the_kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "kube" / "pki").mkdir(parents=True)
    (tmp_path / "kube" / "pki" / "ca.crt").write_bytes(CA)
    path = single(tmp_path / "kube" / "config", cluster={"certificate-authority": "pki/ca.crt"})
    monkeypatch.chdir(tmp_path)  # a path relative to the working directory would be wrong
    assert load(tmp_path, "kube/config").ca_pem == CA
    assert load(tmp_path, path).ca_pem == CA


def test_ca_data_wins_over_ca_file(tmp_path: Path) -> None:
    path = single(
        tmp_path / "config",
        cluster={"certificate-authority": "does-not-exist.crt", "certificate-authority-data": b64(CA)},
    )
    assert load(tmp_path, path).ca_pem == CA


def test_missing_ca_file(tmp_path: Path) -> None:
    path = single(tmp_path / "config", cluster={"certificate-authority": "missing.crt"})
    with pytest.raises(ConfigError, match=r"cluster 'c' in .*config: cannot read certificate-authority .*missing\.crt"):
        load(tmp_path, path)


def test_bad_base64(tmp_path: Path) -> None:
    path = single(tmp_path / "config", cluster={"certificate-authority-data": "not base64!"})
    with pytest.raises(ConfigError, match="certificate-authority-data is not valid base64"):
        load(tmp_path, path)


# --- user credentials --------------------------------------------------------------------------


def test_static_token(tmp_path: Path) -> None:
    config = load(tmp_path, single(tmp_path / "config", user={"token": SECRET}))
    assert config.credentials.current() == Credential(token=SECRET)
    config.credentials.invalidate()
    assert config.credentials.current() == Credential(token=SECRET)


def test_client_cert_from_relative_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "kube").mkdir()
    (tmp_path / "kube" / "client.crt").write_bytes(CERT)
    (tmp_path / "kube" / "client.key").write_bytes(KEY)
    path = single(tmp_path / "kube" / "config", user={"client-certificate": "client.crt", "client-key": "client.key"})
    monkeypatch.chdir(tmp_path)
    assert load(tmp_path, path).credentials.current() == Credential(client_cert_pem=CERT, client_key_pem=KEY)


def test_client_cert_data_wins_over_files(tmp_path: Path) -> None:
    path = single(
        tmp_path / "config",
        user={
            "client-certificate": "missing.crt",
            "client-certificate-data": b64(CERT),
            "client-key": "missing.key",
            "client-key-data": b64(KEY),
        },
    )
    assert load(tmp_path, path).credentials.current() == Credential(client_cert_pem=CERT, client_key_pem=KEY)


def test_client_cert_and_token_together(tmp_path: Path) -> None:
    path = single(
        tmp_path / "config", user={"token": SECRET, "client-certificate-data": b64(CERT), "client-key-data": b64(KEY)}
    )
    assert load(tmp_path, path).credentials.current() == Credential(SECRET, CERT, KEY)


def test_client_cert_without_key(tmp_path: Path) -> None:
    path = single(tmp_path / "config", user={"client-certificate-data": b64(CERT)})
    with pytest.raises(ConfigError, match=r"user 'u' in .* has a client certificate or a client key but not both"):
        load(tmp_path, path)


def test_token_file_wins_over_token_and_is_reread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "kube").mkdir()
    token_file = tmp_path / "kube" / "token"
    token_file.write_text("first\n")
    path = single(
        tmp_path / "kube" / "config",
        user={
            "tokenFile": "token",
            "token": "static-loses",
            "client-certificate-data": b64(CERT),
            "client-key-data": b64(KEY),
        },
    )
    monkeypatch.chdir(tmp_path)
    clock = FakeClock(100.0)
    source = load(tmp_path, path, clock=clock).credentials
    assert source.current() == Credential("first", CERT, KEY)

    token_file.write_text("second")
    clock.now += 59.9
    assert source.current().token == "first"  # cached within the minute
    clock.now += 0.1
    assert source.current() == Credential("second", CERT, KEY)

    token_file.write_text("third")
    clock.now += 1
    assert source.current().token == "second"
    source.invalidate()  # after a 401 the file is read again at once
    assert source.current().token == "third"


def test_token_file_unreadable_later_keeps_the_last_token(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(SECRET)
    clock = FakeClock()
    source = TokenFileSource(token_file, label="user 'u'", clock=clock)
    assert source.current().token == SECRET
    token_file.unlink()
    source.invalidate()
    with caplog.at_level(logging.WARNING):
        assert source.current().token == SECRET
    assert "keeping the previous token" in caplog.text
    assert SECRET not in caplog.text


@pytest.mark.parametrize(("content", "message"), [(None, "cannot read token file"), ("  \n", "is empty")])
def test_token_file_must_be_readable_at_load(tmp_path: Path, content: str | None, message: str) -> None:
    if content is not None:
        (tmp_path / "token").write_text(content)
    path = single(tmp_path / "config", user={"tokenFile": "token"})
    with pytest.raises(ConfigError, match=f"{message}.*user 'u'|user 'u'.*{message}"):
        load(tmp_path, path)


@pytest.mark.parametrize(
    ("user", "message"),
    [
        ({"username": "admin", "password": SECRET}, "basic auth"),
        ({"auth-provider": {"name": "gcp", "config": {"access-token": SECRET}}}, "auth-provider is not supported"),
        ({"token": SECRET, "as": "system:admin"}, "impersonation"),
    ],
)
def test_unsupported_user_forms(tmp_path: Path, user: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=f"user 'u' in .*{message}") as err:
        load(tmp_path, single(tmp_path / "config", user=user))
    assert SECRET not in str(err.value)


def test_wrongly_typed_field_is_named_not_quoted(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"user 'u' in .*: token must be a string") as err:
        load(tmp_path, single(tmp_path / "config", user={"token": 123456789}))
    assert "123456789" not in str(err.value)


def test_invalid_yaml_error_does_not_quote_the_line(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text(f"users:\n- name: u\n  user:\n    token: {SECRET}: oops\n")
    with pytest.raises(ConfigError, match=r"is not valid YAML at line 4, column \d+") as err:
        load(tmp_path, path)
    assert SECRET not in str(err.value)
    assert err.value.__cause__ is None and err.value.__suppress_context__


def test_duplicate_name_in_one_file(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text("clusters:\n- name: c\n  cluster: {server: https://a}\n- name: c\n  cluster: {server: https://b}\n")
    with pytest.raises(ConfigError, match="defines 'c' twice"):
        load(tmp_path, path)


# --- in-cluster --------------------------------------------------------------------------------


def service_account(root: Path, token: str = "sa-token-1", namespace: str | None = "syncer") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "token").write_text(token)
    (root / "ca.crt").write_bytes(CA)
    if namespace is not None:
        (root / "namespace").write_text(namespace + "\n")
    return root


def in_cluster(
    root: Path,
    host: str,
    *,
    context: str | None = None,
    clock: FakeClock | None = None,
    home: Path | None = None,
    kubeconfig_env: str | None = None,
) -> ClusterConfig:
    env = {"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": "443"}
    if kubeconfig_env:
        env["KUBECONFIG"] = kubeconfig_env
    return load_cluster_config(
        None, context, environ=env, in_cluster_root=str(root), home=str(home or root / "no-home"), clock=clock
    )


@pytest.mark.parametrize(
    ("host", "server"),
    [
        ("10.96.0.1", "https://10.96.0.1:443"),
        ("fd00:10:96::1", "https://[fd00:10:96::1]:443"),
        ("kubernetes.default.svc", "https://kubernetes.default.svc:443"),
    ],
)
def test_in_cluster(tmp_path: Path, host: str, server: str) -> None:
    config = in_cluster(service_account(tmp_path / "sa"), host)
    assert config.server == server
    assert config.ca_pem == CA
    assert config.namespace == "syncer"
    assert config.describe == "in-cluster service account"
    assert config.credentials.current() == Credential(token="sa-token-1")


def test_in_cluster_token_rotation(tmp_path: Path) -> None:
    root = service_account(tmp_path / "sa", namespace=None)
    clock = FakeClock(0.0)
    config = in_cluster(root, "10.96.0.1", clock=clock)
    assert config.namespace is None
    (root / "token").write_text("sa-token-2")
    clock.now = 30.0
    assert config.credentials.current().token == "sa-token-1"
    clock.now = 60.0
    assert config.credentials.current().token == "sa-token-2"
    (root / "token").write_text("sa-token-3")
    config.credentials.invalidate()
    assert config.credentials.current().token == "sa-token-3"


def test_kubeconfig_env_beats_in_cluster_and_in_cluster_beats_home(tmp_path: Path) -> None:
    root = service_account(tmp_path / "sa")
    home = tmp_path / "home"
    single(home / ".kube" / "config", user={"token": "home"})
    assert in_cluster(root, "10.0.0.1", home=home).describe == "in-cluster service account"
    env_file = single(tmp_path / "env-config", user={"token": "env"})
    assert in_cluster(root, "10.0.0.1", home=home, kubeconfig_env=str(env_file)).credentials.current().token == "env"


def test_context_flag_skips_in_cluster(tmp_path: Path) -> None:
    root = service_account(tmp_path / "sa")
    home = tmp_path / "home"
    single(home / ".kube" / "config", user={"token": "home"})
    assert in_cluster(root, "10.0.0.1", home=home, context="ctx").credentials.current().token == "home"


def test_in_cluster_env_without_token_explains(tmp_path: Path) -> None:
    root = tmp_path / "sa"
    root.mkdir()
    with pytest.raises(ConfigError, match=r"KUBERNETES_SERVICE_HOST is set but .*token is missing"):
        in_cluster(root, "10.0.0.1")


@pytest.mark.parametrize(
    ("host", "port", "joined"),
    [("1.2.3.4", "443", "1.2.3.4:443"), ("::1", "6443", "[::1]:6443"), ("example.com", "80", "example.com:80")],
)
def test_join_host_port(host: str, port: str, joined: str) -> None:
    assert join_host_port(host, port) == joined


# --- exec plugins ------------------------------------------------------------------------------


def exec_user(
    state: Path, api_version: str = V1, *, mode: str = "token", expiry: str | None = None, **extra: Any
) -> dict[str, Any]:
    state.mkdir(exist_ok=True)
    env = [{"name": "PLUGIN_STATE", "value": str(state)}, {"name": "PLUGIN_MODE", "value": mode}]
    if expiry:
        env.append({"name": "PLUGIN_EXPIRY", "value": expiry})
    return {
        "exec": {
            "apiVersion": api_version,
            "command": sys.executable,
            "args": [str(PLUGIN), "--flag"],
            "env": env,
            "interactiveMode": "Never",
            **extra,
        }
    }


def runs(state: Path) -> int:
    return int((state / "runs").read_text()) if (state / "runs").exists() else 0


def seen(state: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((state / "seen.json").read_text())
    return result


@pytest.mark.parametrize("api_version", [V1, V1BETA1])
def test_exec_token_is_cached_until_invalidated(tmp_path: Path, api_version: str) -> None:
    state = tmp_path / "state"
    path = single(tmp_path / "config", user=exec_user(state, api_version))
    config = load(tmp_path, path, environ={"HOST_VAR": "from-host"}, clock=FakeClock())
    assert runs(state) == 0  # plugins run on first use, as in client-go
    assert config.credentials.current() == Credential(token="exec-secret-1")
    assert config.credentials.current().token == "exec-secret-1"
    assert runs(state) == 1

    given = seen(state)
    assert given["argv"] == ["--flag"]
    assert given["exec_info"] == {"apiVersion": api_version, "kind": "ExecCredential", "spec": {"interactive": False}}
    assert given["env"] == {"HOST_VAR": "from-host", "PLUGIN_STATE": str(state), "PLUGIN_MODE": "token"}
    assert given["stdin"] == ""

    config.credentials.invalidate()
    assert config.credentials.current().token == "exec-secret-2"
    assert runs(state) == 2


@pytest.mark.parametrize("api_version", [V1, V1BETA1])
def test_exec_token_is_refreshed_shortly_before_expiry(tmp_path: Path, api_version: str) -> None:
    state = tmp_path / "state"
    clock = FakeClock()
    path = single(tmp_path / "config", user=exec_user(state, api_version, expiry=rfc3339(T0 + 300)))
    source = load(tmp_path, path, clock=clock).credentials
    assert source.current().token == "exec-secret-1"
    clock.now = T0 + 289
    assert source.current().token == "exec-secret-1"
    clock.now = T0 + 290  # 10 s early
    assert source.current().token == "exec-secret-2"
    assert runs(state) == 2


def test_exec_cert_output(tmp_path: Path) -> None:
    state = tmp_path / "state"
    source = load(tmp_path, single(tmp_path / "config", user=exec_user(state, mode="cert"))).credentials
    credential = source.current()
    assert credential.token is None
    assert credential.client_cert_pem is not None and b"exec-cert" in credential.client_cert_pem
    assert credential.client_key_pem is not None and b"exec-key" in credential.client_key_pem


def test_exec_provide_cluster_info(tmp_path: Path) -> None:
    state = tmp_path / "state"
    path = write_kubeconfig(
        tmp_path / "config",
        clusters={
            "c": {
                "server": "https://api:6443",
                "certificate-authority-data": b64(CA),
                "tls-server-name": "api",
                "extensions": [{"name": "client.authentication.k8s.io/exec", "extension": {"audience": "k8s"}}],
            }
        },
        users={"u": exec_user(state, provideClusterInfo=True)},
        contexts={"ctx": {"cluster": "c", "user": "u"}},
        current="ctx",
    )
    load(tmp_path, path).credentials.current()
    assert seen(state)["exec_info"]["spec"] == {
        "interactive": False,
        "cluster": {
            "server": "https://api:6443",
            "certificate-authority-data": b64(CA),
            "tls-server-name": "api",
            "config": {"audience": "k8s"},
        },
    }


def test_exec_runs_once_for_concurrent_callers(tmp_path: Path) -> None:
    state = tmp_path / "state"
    source = load(tmp_path, single(tmp_path / "config", user=exec_user(state))).credentials
    tokens: list[str | None] = []
    threads = [threading.Thread(target=lambda: tokens.append(source.current().token)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert tokens == ["exec-secret-1"] * 8
    assert runs(state) == 1


def test_exec_relative_command_resolves_against_the_kubeconfig(tmp_path: Path) -> None:
    state = tmp_path / "state"
    script = tmp_path / "kube" / "bin" / "plugin"
    script.parent.mkdir(parents=True)
    script.write_text(f"#!{sys.executable}\n" + PLUGIN.read_text())
    script.chmod(0o755)
    user = exec_user(state)
    user["exec"].update(command="bin/plugin", args=[])
    source = load(tmp_path, single(tmp_path / "kube" / "config", user=user)).credentials
    assert source.current().token == "exec-secret-1"


def test_exec_ignored_when_a_token_is_set(tmp_path: Path) -> None:
    state = tmp_path / "state"
    user = {**exec_user(state), "token": "static"}
    assert load(tmp_path, single(tmp_path / "config", user=user)).credentials.current().token == "static"
    assert runs(state) == 0


@pytest.mark.parametrize(
    ("mode", "api_version_override", "message"),
    [
        ("fail", None, r"failed with exit status 3; its stderr ends with:\nerror: you must be logged in"),
        ("bad-json", None, r"did not print an ExecCredential as JSON \(Expecting value at line 1, column 1\)"),
        ("token", V1BETA1, f"is configured for apiVersion {V1} but printed apiVersion '{V1BETA1}'"),
        ("cert-only", None, "printed only one of clientCertificateData and clientKeyData"),
        ("empty", None, "printed neither a token nor a client certificate and key"),
    ],
)
def test_exec_failures(tmp_path: Path, mode: str, api_version_override: str | None, message: str) -> None:
    state = tmp_path / "state"
    user = exec_user(state, mode=mode)
    if api_version_override:
        user["exec"]["env"].append({"name": "PLUGIN_API_VERSION", "value": api_version_override})
    source = load(tmp_path, single(tmp_path / "config", user=user)).credentials
    with pytest.raises(ConfigError, match=message) as err:
        source.current()
    assert "user 'u' in " in str(err.value)
    assert "exec-secret" not in str(err.value)


def test_exec_command_not_found_shows_install_hint(tmp_path: Path) -> None:
    user = exec_user(
        tmp_path / "state", command="kubectl-no-such-plugin", installHint="Install it with: brew install no-such-plugin"
    )
    source = load(tmp_path, single(tmp_path / "config", user=user), environ={"PATH": str(tmp_path)}).credentials
    with pytest.raises(
        ConfigError,
        match=r"exec plugin 'kubectl-no-such-plugin' of user 'u' in .*executable not found\. "
        r"Install it with: brew install no-such-plugin",
    ):
        source.current()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"interactiveMode": "Always"}, "interactiveMode Always needs a terminal"),
        ({"interactiveMode": "Sometimes"}, "interactiveMode must be Never, IfAvailable or Always"),
        ({"apiVersion": "client.authentication.k8s.io/v1alpha1"}, "apiVersion must be one of"),
        ({"command": None}, "has no command"),
    ],
)
def test_exec_section_is_checked_at_load(tmp_path: Path, override: dict[str, Any], message: str) -> None:
    user = exec_user(tmp_path / "state")
    user["exec"].update(override)
    with pytest.raises(ConfigError, match=f"exec section of user 'u' in .*{message}"):
        load(tmp_path, single(tmp_path / "config", user=user))


def test_exec_timeout(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    config = ExecConfig(
        command=sys.executable,
        api_version=V1,
        where="user 'u'",
        args=(str(PLUGIN),),
        env=(("PLUGIN_STATE", str(state)), ("PLUGIN_MODE", "hang")),
    )
    with pytest.raises(ConfigError, match=r"no answer within 0.5 s"):
        run_exec_plugin(config, environ={}, timeout=0.5)


@pytest.mark.parametrize(
    ("text", "epoch"),
    [
        ("2030-03-17T17:46:40Z", T0),
        ("2030-03-17T18:46:40+01:00", T0),
        ("2030-03-17T17:46:40.25Z", T0 + 0.25),
        ("2030-03-17t17:46:40z", T0),
    ],
)
def test_parse_rfc3339(text: str, epoch: float) -> None:
    assert parse_rfc3339(text, "plugin") == pytest.approx(epoch)


def test_parse_rfc3339_rejects_other_formats() -> None:
    with pytest.raises(ConfigError, match="is not an RFC 3339 time"):
        parse_rfc3339("17 March 2030", "plugin")


# --- secrets stay out of reprs -----------------------------------------------------------------


def test_no_secret_in_reprs(tmp_path: Path) -> None:
    (tmp_path / "token").write_text(SECRET + "-file")
    static = load(
        tmp_path,
        single(
            tmp_path / "a",
            user={"token": SECRET, "client-certificate-data": b64(CERT), "client-key-data": b64(KEY)},
            cluster={"certificate-authority-data": b64(CA)},
        ),
    )
    from_file = load(tmp_path, single(tmp_path / "b", user={"tokenFile": str(tmp_path / "token")}))
    user = exec_user(tmp_path / "state")
    user["exec"]["env"].append({"name": "PLUGIN_PASSWORD", "value": SECRET + "-env"})
    user["exec"]["args"].append("--password=" + SECRET + "-arg")
    executed = load(tmp_path, single(tmp_path / "c", user=user))
    executed.credentials.current()
    for config in (static, from_file, executed):
        text = repr(config) + repr(config.credentials) + repr(config.credentials.current())
        for secret in (SECRET, "exec-secret", "BEGIN"):
            assert secret not in text
    assert isinstance(static.credentials, StaticCredentialSource)
    assert isinstance(from_file.credentials, TokenFileSource)
    assert isinstance(executed.credentials, ExecCredentialSource)
