"""kubeconfig or in-cluster service account -> ClusterConfig and credential sources. Reads files, runs exec plugins."""

from __future__ import annotations

import base64
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

from syncer.errors import ConfigError
from syncer.kube.exec_credential import (
    EXEC_TIMEOUT,
    ExecConfig,
    parse_exec_config,
    run_exec_plugin,
)
from syncer.kube.kubeconfig_file import (
    Entry,
    MergedKubeconfig,
    as_list,
    data_or_file,
    load_files,
    opt_bool,
    opt_str,
    resolve_path,
    split_paths,
)

log = logging.getLogger(__name__)

IN_CLUSTER_ROOT = "/var/run/secrets/kubernetes.io/serviceaccount"
TOKEN_FILE_PERIOD = 60.0  # client-go re-reads token files every minute; kubelet rotates them well before expiry
EXEC_EXPIRY_LEEWAY = 10.0  # refresh before expiry so a request does not leave with a token that dies in flight

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class Credential:
    """What authenticates one request: a bearer token and/or a client certificate (PEM bytes)."""

    token: str | None = field(default=None, repr=False)
    client_cert_pem: bytes | None = field(default=None, repr=False)
    client_key_pem: bytes | None = field(default=None, repr=False)


class CredentialSource(Protocol):
    """Gives the current credential; after a 401 the client calls `invalidate()` and asks again once."""

    def current(self) -> Credential: ...

    def invalidate(self) -> None: ...


@dataclass(frozen=True)
class ClusterConfig:
    """Everything needed to talk to one API server. `describe` is safe to log (no secrets)."""

    server: str  # https://host:port, no trailing slash; IPv6 hosts bracketed
    credentials: CredentialSource
    ca_pem: bytes | None = field(default=None, repr=False)  # None: the system trust store
    insecure_skip_tls_verify: bool = False
    tls_server_name: str | None = None
    proxy_url: str | None = None
    disable_compression: bool = False
    namespace: str | None = None  # the context's (or pod's) namespace
    describe: str = ""  # e.g. "kubeconfig /root/.kube/config, context kind-dev" or "in-cluster"


class StaticCredentialSource:
    """A credential written into the kubeconfig itself: nothing to refresh."""

    def __init__(self, credential: Credential, *, label: str) -> None:
        self._credential = credential
        self._label = label

    def current(self) -> Credential:
        return self._credential

    def invalidate(self) -> None:
        """Nothing to do: re-reading the kubeconfig would give the same refused credential."""

    def __repr__(self) -> str:
        return f"StaticCredentialSource({self._label})"


class TokenFileSource:
    """A bearer token re-read from a file every `period` seconds and after invalidate(): bound tokens rotate."""

    def __init__(
        self,
        path: Path,
        *,
        label: str,
        client_cert_pem: bytes | None = None,
        client_key_pem: bytes | None = None,
        clock: Clock = time.monotonic,
        period: float = TOKEN_FILE_PERIOD,
    ) -> None:
        self._path, self._label, self._clock, self._period = path, label, clock, period
        self._cert, self._key = client_cert_pem, client_key_pem
        self._lock = threading.Lock()
        self._credential: Credential | None = None
        self._read_at = 0.0
        self._stale = True

    def current(self) -> Credential:
        with self._lock:
            now = self._clock()
            # A clock that went backwards also forces a read.
            if self._credential is not None and not self._stale and 0 <= now - self._read_at < self._period:
                return self._credential
            try:
                token: str | None = read_token_file(self._path, self._label)
            except ConfigError as exc:
                if self._credential is None:
                    raise
                # As client-go does: the file may be mid-rotation, and the previous token is likely still valid.
                log.warning("%s; keeping the previous token", exc)
                token = self._credential.token
            self._credential = Credential(token, self._cert, self._key)
            self._read_at, self._stale = now, False
            return self._credential

    def invalidate(self) -> None:
        with self._lock:
            self._stale = True

    def __repr__(self) -> str:
        return f"TokenFileSource({str(self._path)!r}, {self._label})"


class ExecCredentialSource:
    """Runs an exec plugin and reuses its credential until shortly before it expires, or until invalidate()."""

    def __init__(
        self,
        config: ExecConfig,
        *,
        environ: Mapping[str, str],
        cluster: Mapping[str, object] | None = None,
        clock: Clock = time.time,  # wall time: expirationTimestamp is a wall-clock instant
        timeout: float = EXEC_TIMEOUT,
    ) -> None:
        self._config, self._environ, self._cluster = config, dict(environ), cluster
        self._clock, self._timeout = clock, timeout
        # Held while the plugin runs, so concurrent callers wait for one run instead of starting their own.
        self._lock = threading.Lock()
        self._credential: Credential | None = None
        self._expires_at: float | None = None

    def current(self) -> Credential:
        with self._lock:
            if self._credential is not None and (
                self._expires_at is None or self._clock() < self._expires_at - EXEC_EXPIRY_LEEWAY
            ):
                return self._credential
            result = run_exec_plugin(self._config, environ=self._environ, cluster=self._cluster, timeout=self._timeout)
            self._credential = Credential(result.token, result.client_cert_pem, result.client_key_pem)
            self._expires_at = result.expires_at
            return self._credential

    def invalidate(self) -> None:
        with self._lock:
            self._credential = None

    def __repr__(self) -> str:
        return f"ExecCredentialSource({self._config.command!r}, {self._config.where})"


_ANONYMOUS = StaticCredentialSource(Credential(), label="no user")


def read_token_file(path: Path, label: str) -> str:
    """The token in `path`, stripped; ConfigError naming the file (never its content) if unreadable or empty."""
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"cannot read token file {path} of {label}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"token file {path} of {label} is not UTF-8 text") from None
    if not token:
        raise ConfigError(f"token file {path} of {label} is empty")
    return token


def join_host_port(host: str, port: str) -> str:
    """Go's net.JoinHostPort: any colon in the host means IPv6 and gets brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def in_cluster_namespace(root: str = IN_CLUSTER_ROOT) -> str | None:
    """The pod's namespace from the service-account mount; None outside a pod or when it is unreadable."""
    try:
        return (Path(root) / "namespace").read_text(encoding="utf-8").strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def load_cluster_config(
    kubeconfig: str | None = None,
    context: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    in_cluster_root: str = IN_CLUSTER_ROOT,
    home: str | None = None,
    clock: Clock | None = None,
) -> ClusterConfig:
    """--kubeconfig, else $KUBECONFIG, else in-cluster, else ~/.kube/config; ConfigError says how to fix each miss.

    `clock` replaces both the monotonic clock of token files and the wall clock of exec plugin expiry (tests).
    """
    env = os.environ if environ is None else environ
    if kubeconfig:
        paths = split_paths(kubeconfig)
        if len(paths) == 1 and not paths[0].is_file():
            raise ConfigError(f"kubeconfig file {paths[0]} does not exist; fix the --kubeconfig path")
        merged = load_files(paths)
        if not merged.files:
            raise ConfigError(f"none of the kubeconfig files {kubeconfig} exist; fix the --kubeconfig paths")
        return _from_kubeconfig(merged, context, env, clock)
    listed = split_paths(env.get("KUBECONFIG", ""))
    if listed:
        merged = load_files(listed)
        if merged.files:
            return _from_kubeconfig(merged, context, env, clock)
    root = Path(in_cluster_root)
    # A --context only exists in a kubeconfig, so asking for one rules the service account out.
    in_cluster = bool(env.get("KUBERNETES_SERVICE_HOST") and env.get("KUBERNETES_SERVICE_PORT"))
    if context is None and in_cluster and (root / "token").is_file():
        return _in_cluster(root, env, clock)
    default = Path(home if home is not None else os.path.expanduser("~")) / ".kube" / "config"
    if not listed and default.is_file():
        return _from_kubeconfig(load_files([default]), context, env, clock)
    raise ConfigError(_no_config_message(listed, default, root, env))


def _no_config_message(listed: Sequence[Path], default: Path, root: Path, env: Mapping[str, str]) -> str:
    looked = (
        f"KUBECONFIG names {os.pathsep.join(map(str, listed))}, but none of these files exist"
        if listed
        else f"{default} does not exist and KUBECONFIG is not set"
    )
    if env.get("KUBERNETES_SERVICE_HOST") and not (root / "token").is_file():
        looked += (
            f"; KUBERNETES_SERVICE_HOST is set but {root / 'token'} is missing (automountServiceAccountToken off?)"
        )
    return (
        f"no Kubernetes API access is configured ({looked}). Pass --kubeconfig FILE, set KUBECONFIG, "
        "run in a pod with a service account token mounted, or read manifests from disk with --source DIR"
    )


def _in_cluster(root: Path, env: Mapping[str, str], clock: Clock | None) -> ClusterConfig:
    label = "in-cluster service account"
    try:
        ca_pem: bytes | None = (root / "ca.crt").read_bytes()
    except FileNotFoundError:
        # client-go carries on with the system trust store too; the first request will say if that fails.
        log.warning("%s: %s is missing; trusting the system CA store instead", label, root / "ca.crt")
        ca_pem = None
    except OSError as exc:
        raise ConfigError(f"{label}: cannot read {root / 'ca.crt'}: {exc.strerror}") from None
    try:
        namespace: str | None = (root / "namespace").read_text(encoding="utf-8").strip() or None
    except OSError:
        namespace = None  # only a default for namespaced calls; absent in some hand-mounted setups
    tokens = TokenFileSource(root / "token", label=label, clock=clock or time.monotonic)
    tokens.current()  # fail here, with a clear message, rather than on the first request
    host_port = join_host_port(env["KUBERNETES_SERVICE_HOST"], env["KUBERNETES_SERVICE_PORT"])
    return ClusterConfig(
        server=f"https://{host_port}", credentials=tokens, ca_pem=ca_pem, namespace=namespace, describe=label
    )


def _from_kubeconfig(
    merged: MergedKubeconfig, context: str | None, env: Mapping[str, str], clock: Clock | None
) -> ClusterConfig:
    files = os.pathsep.join(map(str, merged.files))
    available = ", ".join(sorted(merged.contexts)) or "none"
    name = context or merged.current_context
    if not name:
        raise ConfigError(f"kubeconfig {files} sets no current-context; pass --context NAME (available: {available})")
    ctx = merged.contexts.get(name)
    if ctx is None:
        raise ConfigError(f"context {name!r} is not defined in kubeconfig {files}; available contexts: {available}")
    cluster_name = opt_str(ctx.body, "cluster", f"context {ctx.where}")
    if cluster_name is None:
        raise ConfigError(f"context {ctx.where} names no cluster; set its cluster")
    cluster = merged.clusters.get(cluster_name)
    if cluster is None:
        raise ConfigError(f"context {ctx.where} names cluster {cluster_name!r}, which {files} does not define")
    user_name = opt_str(ctx.body, "user", f"context {ctx.where}")
    user = merged.users.get(user_name) if user_name else None
    if user_name and user is None:
        raise ConfigError(f"context {ctx.where} names user {user_name!r}, which {files} does not define")
    base = _cluster_config(cluster)
    credentials = _credentials(user, _exec_cluster_info(cluster, base), env, clock)
    user_text = f"user {user_name}" if user_name else "no user"
    return replace(
        base,
        credentials=credentials,
        namespace=opt_str(ctx.body, "namespace", f"context {ctx.where}"),
        describe=f"kubeconfig {files}, context {name} (cluster {cluster_name}, {user_text})",
    )


def _cluster_config(entry: Entry) -> ClusterConfig:
    """The cluster half of a ClusterConfig, anonymous until the caller adds the user's credentials."""
    where = f"cluster {entry.where}"
    server = opt_str(entry.body, "server", where)
    if server is None:
        raise ConfigError(f"{where} has no server; set it to the API server URL, e.g. https://host:6443")
    if "://" not in server:
        server = f"https://{server}"  # client-go assumes https for a bare host:port
    ca_pem = data_or_file(entry, "certificate-authority-data", "certificate-authority", where)
    insecure = opt_bool(entry.body, "insecure-skip-tls-verify", where)
    if insecure and ca_pem is not None:
        raise ConfigError(f"{where} sets both insecure-skip-tls-verify and a certificate authority; remove one")
    return ClusterConfig(
        server=server.rstrip("/"),
        credentials=_ANONYMOUS,
        ca_pem=ca_pem,
        insecure_skip_tls_verify=insecure,
        tls_server_name=opt_str(entry.body, "tls-server-name", where),
        proxy_url=opt_str(entry.body, "proxy-url", where),
        disable_compression=opt_bool(entry.body, "disable-compression", where),
    )


def _exec_cluster_info(entry: Entry, config: ClusterConfig) -> dict[str, object]:
    """The `spec.cluster` an exec plugin sees when it sets provideClusterInfo (client-go's field names)."""
    info: dict[str, object] = {"server": config.server}
    if config.tls_server_name:
        info["tls-server-name"] = config.tls_server_name
    if config.insecure_skip_tls_verify:
        info["insecure-skip-tls-verify"] = True
    if config.ca_pem is not None:
        info["certificate-authority-data"] = base64.b64encode(config.ca_pem).decode("ascii")
    if config.proxy_url:
        info["proxy-url"] = config.proxy_url
    if config.disable_compression:
        info["disable-compression"] = True
    for ext in as_list(entry.body.get("extensions"), f"extensions of cluster {entry.where}"):
        if ext.get("name") == "client.authentication.k8s.io/exec":
            info["config"] = ext.get("extension")
    return info


_BASIC_AUTH = "basic auth (username/password) is not supported; use a token, a client certificate or an exec plugin"
_IMPERSONATION = (
    "impersonation (as, as-uid, as-groups, as-user-extra) is not supported; use that identity's credentials"
)
_UNSUPPORTED = {
    "username": _BASIC_AUTH,
    "password": _BASIC_AUTH,
    "auth-provider": "auth-provider is not supported (kubectl dropped it too); use the provider's exec plugin, "
    "e.g. gke-gcloud-auth-plugin or kubelogin",
    **dict.fromkeys(("as", "as-uid", "as-groups", "as-user-extra"), _IMPERSONATION),
}


def _credentials(
    entry: Entry | None, cluster_info: Mapping[str, object], env: Mapping[str, str], clock: Clock | None
) -> CredentialSource:
    if entry is None:
        return _ANONYMOUS
    where = f"user {entry.where}"
    for unsupported, why in _UNSUPPORTED.items():
        if entry.body.get(unsupported) not in (None, "", [], {}):
            raise ConfigError(f"{where}: {why}")
    cert = data_or_file(entry, "client-certificate-data", "client-certificate", where)
    key = data_or_file(entry, "client-key-data", "client-key", where)
    if (cert is None) != (key is None):
        raise ConfigError(f"{where} has a client certificate or a client key but not both; set both")
    token_file = opt_str(entry.body, "tokenFile", where)
    token = opt_str(entry.body, "token", where)
    exec_body = entry.body.get("exec")
    if exec_body is not None and (token_file or token or cert):
        # Same precedence as client-go, which silently skips the plugin in this case.
        log.warning("%s: exec plugin ignored because the user also has a token or client certificate", where)
    if token_file:
        path = resolve_path(entry.origin, token_file)
        tokens = TokenFileSource(
            path, label=where, client_cert_pem=cert, client_key_pem=key, clock=clock or time.monotonic
        )
        tokens.current()  # an unreadable file is a configuration error now, not a 401 later
        return tokens
    if token is not None or cert is not None or exec_body is None:
        return StaticCredentialSource(Credential(token, cert, key), label=where)
    config = parse_exec_config(entry)
    return ExecCredentialSource(
        config, environ=env, cluster=cluster_info if config.provide_cluster_info else None, clock=clock or time.time
    )
