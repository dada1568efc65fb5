"""The exec credential plugin protocol (client.authentication.k8s.io v1/v1beta1): runs the plugin, parses its answer."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from syncer.errors import ConfigError
from syncer.kube.kubeconfig_file import (
    Entry,
    as_list,
    as_mapping,
    as_str_list,
    opt_bool,
    opt_str,
    resolve_path,
)

log = logging.getLogger(__name__)

SUPPORTED_API_VERSIONS = ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1")
EXEC_TIMEOUT = 30.0  # a plugin that waits for a browser login would otherwise hang the sync loop forever
_STDERR_TAIL = 2000

_RFC3339 = re.compile(r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?(?:([Zz])|([+-])(\d{2}):(\d{2}))")


@dataclass(frozen=True)
class ExecConfig:
    """A kubeconfig `user.exec` entry, already checked. `where` names the user entry for error messages."""

    command: str
    api_version: str
    where: str
    # args and env often carry account names or even secrets: keep them out of reprs.
    args: tuple[str, ...] = field(default=(), repr=False)
    env: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    install_hint: str | None = None
    provide_cluster_info: bool = False


@dataclass(frozen=True)
class ExecResult:
    """What a plugin printed: a token and/or a client certificate, and when they expire (epoch seconds)."""

    token: str | None = field(default=None, repr=False)
    client_cert_pem: bytes | None = field(default=None, repr=False)
    client_key_pem: bytes | None = field(default=None, repr=False)
    expires_at: float | None = None


def parse_exec_config(user: Entry) -> ExecConfig:
    """The `exec` section of a kubeconfig user entry, checked; ConfigError names the user entry."""
    where = f"exec section of user {user.where}"
    body = as_mapping(user.body.get("exec"), where)
    api_version = opt_str(body, "apiVersion", where)
    if api_version not in SUPPORTED_API_VERSIONS:
        raise ConfigError(f"{where}: apiVersion must be one of {', '.join(SUPPORTED_API_VERSIONS)}")
    mode = opt_str(body, "interactiveMode", where)
    if mode == "Always":
        raise ConfigError(
            f"{where}: interactiveMode Always needs a terminal, which this agent never has; "
            "set Never or IfAvailable and make the plugin work without prompting"
        )
    # Lenient where client-go is strict (v1 requires the field): Never and IfAvailable mean the same to us.
    if mode not in (None, "Never", "IfAvailable"):
        raise ConfigError(f"{where}: interactiveMode must be Never, IfAvailable or Always")
    command = opt_str(body, "command", where)
    if command is None:
        raise ConfigError(f"{where} has no command")
    if os.sep in command:
        command = str(resolve_path(user.origin, command))  # as client-go; a bare name is looked up on PATH
    env: list[tuple[str, str]] = []
    for item in as_list(body.get("env"), f"{where}: env"):
        name, value = opt_str(item, "name", f"{where}: env"), item.get("value", "")
        if name is None or not isinstance(value, str):
            raise ConfigError(f"{where}: every env entry needs a name and a string value")
        env.append((name, value))
    return ExecConfig(
        command=command,
        api_version=api_version,
        where=f"user {user.where}",
        args=tuple(as_str_list(body.get("args"), f"{where}: args")),
        env=tuple(env),
        install_hint=opt_str(body, "installHint", where),
        provide_cluster_info=opt_bool(body, "provideClusterInfo", where),
    )


def run_exec_plugin(
    config: ExecConfig,
    *,
    environ: Mapping[str, str],
    cluster: Mapping[str, object] | None = None,
    timeout: float = EXEC_TIMEOUT,
) -> ExecResult:
    """Run the plugin once, non-interactively, and return the credential it printed; ConfigError on any failure."""
    spec: dict[str, object] = {"interactive": False}
    if cluster is not None:
        spec["cluster"] = dict(cluster)
    exec_info = {"apiVersion": config.api_version, "kind": "ExecCredential", "spec": spec}
    env = dict(environ)
    env.update(config.env)
    env["KUBERNETES_EXEC_INFO"] = json.dumps(exec_info, sort_keys=True)
    where = f"exec plugin {config.command!r} of {config.where}"
    try:
        # No stdin: we never run interactively, and a plugin must not wait for a prompt nobody answers.
        proc = subprocess.run(
            [config.command, *config.args],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError:
        hint = config.install_hint or "install it, or fix `command` in the user's exec section"
        raise ConfigError(f"{where}: executable not found. {hint}") from None
    except subprocess.TimeoutExpired:
        raise ConfigError(
            f"{where}: no answer within {timeout:g} s (it was stopped); plugins must not wait for interactive login, "
            "so log in beforehand or use a non-interactive credential"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{where}: cannot start it: {exc.strerror}") from None
    tail = proc.stderr.decode("utf-8", "replace").strip()[-_STDERR_TAIL:]
    if proc.returncode != 0:
        # stdout may hold a partial credential, so only stderr is quoted.
        status = f"exit status {proc.returncode}" if proc.returncode > 0 else f"signal {-proc.returncode}"
        said = f"; its stderr ends with:\n{tail}" if tail else " and wrote nothing to stderr"
        raise ConfigError(f"{where} failed with {status}{said}")
    if tail:
        log.debug("%s wrote to stderr: %s", where, tail)  # kubectl shows it; here it would flood the log each refresh
    return parse_exec_output(proc.stdout, config.api_version, where)


def parse_exec_output(stdout: bytes, api_version: str, where: str) -> ExecResult:
    """Check an ExecCredential the way client-go does; error messages never quote the credential."""
    try:
        doc: object = json.loads(stdout)
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: printed something that is not UTF-8 text instead of an ExecCredential") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{where}: did not print an ExecCredential as JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
        ) from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{where}: printed JSON that is not an ExecCredential object")
    got_version = doc.get("apiVersion")
    if got_version != api_version:
        shown = repr(got_version[:80]) if isinstance(got_version, str) else "none"
        raise ConfigError(f"{where}: is configured for apiVersion {api_version} but printed apiVersion {shown}")
    if doc.get("kind") != "ExecCredential":
        raise ConfigError(f"{where}: printed an object whose kind is not ExecCredential")
    status = doc.get("status")
    if not isinstance(status, dict):
        raise ConfigError(f"{where}: printed an ExecCredential without a status")
    token, cert, key = (_status_str(status, k, where) for k in ("token", "clientCertificateData", "clientKeyData"))
    if token is None and cert is None and key is None:
        raise ConfigError(f"{where}: printed neither a token nor a client certificate and key")
    if (cert is None) != (key is None):
        raise ConfigError(f"{where}: printed only one of clientCertificateData and clientKeyData; both are needed")
    expiry = status.get("expirationTimestamp")
    expires_at = None
    if expiry is not None:
        if not isinstance(expiry, str):
            raise ConfigError(f"{where}: expirationTimestamp is not an RFC 3339 string")
        expires_at = parse_rfc3339(expiry, where)
    return ExecResult(
        token=token,
        client_cert_pem=cert.encode() if cert is not None else None,
        client_key_pem=key.encode() if key is not None else None,
        expires_at=expires_at,
    )


def _status_str(status: Mapping[str, object], key: str, where: str) -> str | None:
    value = status.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{where}: status.{key} is not a string")
    return value


def parse_rfc3339(text: str, where: str) -> float:
    """RFC 3339 -> epoch seconds. By hand because datetime.fromisoformat rejects `Z` before Python 3.11."""
    m = _RFC3339.fullmatch(text.strip())
    if m is None:
        raise ConfigError(f"{where}: expirationTimestamp {text[:40]!r} is not an RFC 3339 time")
    year, month, day, hour, minute, second = (int(g) for g in m.group(1, 2, 3, 4, 5, 6))
    offset = timedelta(0)
    if m.group(9):
        offset = timedelta(hours=int(m.group(10)), minutes=int(m.group(11)))
        if m.group(9) == "-":
            offset = -offset
    try:
        # A leap second (:60) is legal RFC 3339 but not a valid datetime; one second early is harmless here.
        moment = datetime(year, month, day, hour, minute, min(second, 59), tzinfo=timezone(offset))
    except ValueError:
        raise ConfigError(f"{where}: expirationTimestamp {text[:40]!r} is not a valid date") from None
    fraction = float(m.group(7)) if m.group(7) else 0.0
    return moment.timestamp() + fraction
