"""Propagation: from an API change to a real proxy serving it, with `syncer run`. Process, loopback and disk I/O.

One Ingress of the synthetic cluster gets its own loopback echo backends: its `/` goes to echo "alpha", its
second path to echo "beta". Each change moves that second path between `/blue` and `/green` (one API write);
the clock runs from the write until the proxy answers the new path from "beta" (before the change, the new
path fell under `/` and was answered by "alpha"). A random pause of up to one interval before each change
spreads the changes evenly over the syncer's cycle. Everything listens on 127.0.0.1; every wait has a deadline.
"""

from __future__ import annotations

import functools
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import requests

from benchmarks.apiserver import ApiServer
from benchmarks.cluster import host_of, name_of
from tests.envoy_proxy import EnvoyProcess
from tests.proxies import LOOPBACK, EchoServer, ProxyProcess, TraefikProcess, free_port

REPO = Path(__file__).resolve().parent.parent
TARGET = 1  # an Ingress without TLS
OTHER = 2  # its second path is sent to this Ingress's Service, whose endpoints are echo "beta"
PATHS = ("/blue", "/green")
TRAEFIK_THROTTLE = "200ms"
CHANGE_TIMEOUT = 30.0  # a change not served by then counts as lost (reported, never waited on further)
POLL = 0.02
INOTIFY_LIMIT = Path("/proc/sys/fs/inotify/max_user_instances")


@dataclass(frozen=True)
class Propagation:
    renderer: str
    seconds: tuple[float, ...]  # API write -> proxy serves, one per change that was served
    to_file: tuple[float, ...]  # API write -> the routes file written by syncer, for the same changes
    lost: int  # changes not served within CHANGE_TIMEOUT
    throttle: float  # the proxy's own delay before applying a file change, in seconds (0 for Envoy)
    skipped: str = ""  # why the proxy could not be measured, if it could not


def subprocess_env() -> dict[str, str]:
    """This environment minus anything that would configure `syncer` behind the benchmark's back."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("SYNCER_", "KUBECONFIG", "KUBERNETES_"))}


def answers(session: requests.Session, url: str, host: str, path: str, backend: str) -> bool:
    """Whether the proxy answers `path` on `host` from `backend` (a new connection each time)."""
    try:
        response = session.get(
            url + path, headers={"Host": host, "Connection": "close"}, timeout=2, allow_redirects=False
        )
        return response.status_code == 200 and response.json().get("backend") == backend
    except (requests.RequestException, ValueError):
        return False


def envoy_inotify_shortfall(count: int) -> str:
    """Why Envoy cannot load the files for `count` Ingresses here, or "" when it can.

    Envoy opens one inotify instance per file-based xDS subscription (each `eds/`, `sds/` and `rds/` file,
    `lds.json`, `cds.json`); past `fs.inotify.max_user_instances` (128 on most distributions, per user) it
    aborts on an assertion. The benchmark never changes that limit: it reports the shortfall instead.
    """
    needed = count + count // 10 + 4
    try:
        limit = int(INOTIFY_LIMIT.read_text())
    except (OSError, ValueError):
        return ""
    if limit >= needed + 16:
        return ""
    return (
        f"Envoy needs one inotify instance per xDS file, {needed} here, and fs.inotify.max_user_instances is "
        f"{limit}: it would abort on start (to measure, raise it: "
        f"`sysctl fs.inotify.max_user_instances={2 * needed}`)"
    )


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:g}s")
        time.sleep(POLL)


def _syncer_args(renderer: str, kubeconfig: Path, output: Path, renderer_opts: Sequence[str]) -> list[str]:
    args = ["--kubeconfig", str(kubeconfig), "--output-dir", str(output), "--renderer", renderer]
    for opt in renderer_opts:
        args += ["--renderer-opt", opt]
    return args


def measure_propagation(
    renderer: str,
    api: ApiServer,
    kubeconfig: Path,
    work: Path,
    *,
    changes: int = 50,
    interval: float = 1.0,
    progress: Callable[[str], None] = lambda _: None,
) -> Propagation:
    if renderer == "envoy":
        shortfall = envoy_inotify_shortfall(api.count)
        if shortfall:
            return Propagation(renderer, (), (), 0, 0.0, skipped=shortfall)
    work.mkdir(parents=True, exist_ok=True)
    output = work / "out"
    output.mkdir()
    host = host_of(TARGET)
    alpha = EchoServer(LOOPBACK, 0, "alpha").start()
    beta = EchoServer(LOOPBACK, 0, "beta").start()
    proxy: ProxyProcess | None = None
    run: subprocess.Popen[bytes] | None = None
    log = open(work / "syncer-run.log", "wb")
    session = requests.Session()
    session.trust_env = False  # the proxy is on loopback: never through an HTTP(S)_PROXY
    try:
        api.call("set_endpoints", index=TARGET, addresses=[LOOPBACK], port=alpha.port)
        api.call("set_endpoints", index=OTHER, addresses=[LOOPBACK], port=beta.port)
        api.call("set_path", index=TARGET, path=PATHS[0], service=name_of(OTHER))
        http_port = free_port()
        if renderer == "envoy":
            opts = [f"envoy.address={LOOPBACK}", f"envoy.http-port={http_port}", f"envoy.https-port={free_port()}"]
        else:
            opts = []
        args = _syncer_args(renderer, kubeconfig, output, opts)
        first = subprocess.run(
            [sys.executable, "-m", "syncer", "once", *args],
            cwd=REPO,
            env=subprocess_env(),
            capture_output=True,
            timeout=300,
        )
        if first.returncode != 0:
            raise RuntimeError(f"syncer once exited {first.returncode}: {first.stderr.decode()[-2000:]}")
        if renderer == "envoy":
            envoy = EnvoyProcess(work / "envoy" / "bootstrap.json", work / "envoy", xds_dir=output, bootstrap_cli=True)
            proxy = envoy.start()
            url = f"http://{LOOPBACK}:{http_port}"
            throttle = 0.0
            routes_file = output / "rds" / "http.json"
        else:
            traefik = TraefikProcess(output, work / "traefik", throttle=TRAEFIK_THROTTLE, bootstrap_cli=True)
            proxy = traefik.start()
            url = traefik.http_url
            throttle = float(TRAEFIK_THROTTLE.removesuffix("ms")) / 1000
            routes_file = output / "ingress-syncer.yaml"
        wait_for(lambda: answers(session, url, host, PATHS[0], "beta"), 60, f"{renderer} serving {PATHS[0]} from beta")
        run = subprocess.Popen(
            [sys.executable, "-m", "syncer", "run", "--interval", str(interval), *args],
            cwd=REPO,
            env=subprocess_env(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        # The first cycle of a new process reads everything: wait until it is over before the clock matters.
        wait_for(
            lambda: any(done in (work / "syncer-run.log").read_bytes() for done in (b" wrote ", b"nothing to write")),
            120,
            "the first cycle of syncer run",
        )
        seconds: list[float] = []
        to_file: list[float] = []
        lost = 0
        rng = random.Random(20260101)
        for i in range(changes):
            new = PATHS[(i + 1) % 2]
            time.sleep(rng.uniform(0, interval))
            started, started_wall = time.perf_counter(), time.time()
            api.call("set_path", index=TARGET, path=new, service=name_of(OTHER))
            try:
                wait_for(functools.partial(answers, session, url, host, new, "beta"), CHANGE_TIMEOUT, f"change {i + 1}")
                seconds.append(time.perf_counter() - started)
                to_file.append(routes_file.stat().st_mtime_ns / 1e9 - started_wall)
                progress(f"{renderer} change {i + 1}/{changes}: {seconds[-1]:.3f}s (file after {to_file[-1]:.3f}s)")
            except TimeoutError:
                lost += 1  # the next change starts from the path the API holds now, served or not
                progress(f"{renderer} change {i + 1}/{changes}: not served within {CHANGE_TIMEOUT:g}s")
            if run.poll() is not None:
                raise RuntimeError(f"syncer run exited {run.returncode} during the benchmark; log in {work}")
        return Propagation(renderer, tuple(seconds), tuple(to_file), lost, throttle)
    finally:
        if run is not None and run.poll() is None:
            run.send_signal(signal.SIGTERM)
            try:
                run.wait(timeout=10)
            except subprocess.TimeoutExpired:
                run.kill()
                run.wait(timeout=10)
        log.close()
        session.close()
        if proxy is not None:
            proxy.stop()
        alpha.stop()
        beta.stop()
