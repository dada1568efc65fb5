"""API faults during a cycle: files stay byte for byte, the log names resource and failure, `run` recovers. Network I/O.

Each case acts one fault out against the fake API for one renderer, with three commands on their own output folders:

- `syncer once` under the persistent fault: exit 1, every file (manifest included) keeps its bytes and mtime,
  and one log line names the resource and the failure;
- `syncer once` under a smaller dose of the same fault, on a second cluster, with the outcome chosen per fault:
  0 when the client's retries (or its token re-read, or its list restart) absorb it, and then the files are
  exactly a fresh render of the changed cluster; 1 when the fault is not worth retrying (403);
- `syncer run --interval 0.5` that wrote good files, fails its cycles while the fault lasts (files untouched,
  the same kind of log line) and writes the change on the first good cycle after the fault ends.

Every setup is the same: the demo in the fake API, one good cycle, then a change (the storefront's `/api` becomes
`/v2/api`) that the next cycle WOULD write, then the fault. The cases run in the background, several at once (see
`under_way`): the client waits 4-7 s before it gives up on a retried fault, and that is not settable from the
command line. Connect and read timeouts are tested in-process instead (KubeClient with 0.3 s timeouts, Syncer,
RunLoop): the command's own (5 s connect, 30 s read, 5 attempts each) are too slow for a test.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from syncer.kube.client import KubeClient
from syncer.kube.kubeconfig import load_cluster_config
from syncer.output.writer import FileWriter
from syncer.render.plugins import load_renderer
from syncer.run.cycle import Syncer
from syncer.run.loop import RunLoop
from syncer.source import ApiSource
from tests.cluster import (
    CHANGED_PATH,
    RENDERERS,
    ROTATED_TOKEN,
    Cluster,
    SyncerProcess,
    captured_log,
    folder_bytes,
    folder_state,
    make_dir,
    mentions,
    write_atomically,
)
from tests.fakeapi import TEST_TOKEN, RecordedRequest

INTERVAL = "0.5"
CASES_AT_ONCE = 6  # mostly idle (retry waits), but each starts five processes: a 2-core machine keeps up
FILLER_SERVICES = 600  # more than the command's page size (500): the Service list takes two pages


def _nothing(cluster: Cluster) -> None:
    pass


def _nothing_during(cluster: Cluster, process: SyncerProcess) -> None:
    pass


@dataclass(frozen=True)
class ApiFault:
    name: str
    resource: str  # the failure line says `cannot list <resource>`
    failure: str  # ...and this about the failure
    begin: Callable[[Cluster], None]  # the fault from now on, until `end`
    end: Callable[[Cluster], None]
    dose: Callable[[Cluster], None]  # the smaller dose, set up before `once` starts
    dose_exit: int  # chosen per fault: 0 = absorbed by the client, 1 = not worth retrying
    dose_evidence: tuple[str, ...]  # a log line of the dosed `once` holding all of these
    dose_requests: int  # requests for `dose_resource` the dosed cluster answers (the dose, then the good ones)
    dose_resource: str = ""  # default: `resource`
    during_dose: Callable[[Cluster, SyncerProcess], None] = _nothing_during
    prepare: Callable[[Cluster], None] = _nothing


def injected(fault: int | str, failure: str, *, dose: int, evidence: tuple[str, ...], **kwargs: Any) -> ApiFault:
    """A fault of the fake API's `inject` on the Ingress list; the dose is `dose` of them, then good answers."""
    return ApiFault(
        name=str(fault),
        resource="ingresses",
        failure=failure,
        begin=lambda cluster: cluster.inject_while_faulty(fault, path_contains="/ingresses", **kwargs),
        end=lambda cluster: cluster.faulty.clear(),
        dose=lambda cluster: cluster.api.inject(fault, times=dose, path_contains="/ingresses", **kwargs),
        dose_exit=0,
        dose_evidence=(failure, *evidence),
        dose_requests=dose + 1,
    )


def _refuse_until_the_client_saw_it(cluster: Cluster, process: SyncerProcess) -> None:
    process.wait_for_log("connection refused; retry 2/5")
    cluster.api.up()


def _add_filler_services(cluster: Cluster) -> None:
    fillers = [
        {"metadata": {"name": f"filler-{i:04d}", "namespace": "filler"}, "spec": {"ports": [{"port": 80}]}}
        for i in range(FILLER_SERVICES)
    ]
    cluster.api.set_objects("Service", [*cluster.api.objects("Service"), *fillers])


def _expire_continue_tokens(cluster: Cluster, *, times: int | None) -> None:
    """Every continue token of the Service list expires as it is used (`times` of them, or while faulty)."""
    left = [times]
    lock = threading.Lock()

    def on_request(req: RecordedRequest) -> None:
        if "continue" not in req.query or not req.path.endswith("/services"):
            return
        with lock:
            if left[0] is None and not cluster.faulty.is_set():
                return
            if left[0] is not None:
                if left[0] <= 0:
                    return
                left[0] -= 1
        cluster.api.expire_continue_tokens()  # before the page is served: it answers 410 Expired

    if times is None:
        cluster.faulty.set()
    cluster.api.on_request = on_request


def _rotate_server_token(cluster: Cluster) -> None:
    """The API server accepts only the new token; the token file still holds the old one."""
    cluster.api.tokens = {ROTATED_TOKEN}


def _rewrite_token_file(cluster: Cluster) -> None:
    write_atomically(cluster.token_file, ROTATED_TOKEN + "\n")


def _rotate_during_the_ingress_list(cluster: Cluster) -> None:
    """Server and token file rotate together while a cycle is under way: its next request gets a 401."""
    done = threading.Event()

    def on_request(req: RecordedRequest) -> None:
        if req.path.endswith("/ingresses") and not done.is_set():
            done.set()
            _rotate_server_token(cluster)
            _rewrite_token_file(cluster)

    cluster.api.on_request = on_request


API_FAULTS = [
    injected(500, "HTTP 500", dose=1, evidence=("retry 2/5",)),
    # The most the client absorbs: 4 failures, then the 5th and last attempt succeeds.
    injected(503, "HTTP 503", dose=4, evidence=("retry 5/5",)),
    # Retry-After: 1 is honoured (plain backoff would wait 0.25-0.5 s before the second attempt).
    injected(429, "HTTP 429", dose=1, evidence=("retry 2/5 in 1.",), retry_after=1),
    injected("reset", "connection reset by peer", dose=1, evidence=("retry 2/5",)),
    injected("truncate", "response body broken", dose=1, evidence=("retry 2/5",)),
    injected("not_json", "response is not JSON (Content-Type text/html", dose=1, evidence=("retry 2/5",)),
    ApiFault(
        name="refused",
        resource="ingressclasses",  # the first list of a cycle
        failure="connection refused",
        begin=lambda cluster: cluster.api.down(),
        end=lambda cluster: cluster.api.up(),
        dose=lambda cluster: cluster.api.down(),
        during_dose=_refuse_until_the_client_saw_it,
        dose_exit=0,
        dose_evidence=("connection refused", "retry 2/5"),
        dose_requests=1,
    ),
    ApiFault(
        name="410-mid-pagination",
        resource="services",
        failure="tries in a row expired",
        prepare=_add_filler_services,
        begin=lambda cluster: _expire_continue_tokens(cluster, times=None),
        end=lambda cluster: cluster.faulty.clear(),
        dose=lambda cluster: _expire_continue_tokens(cluster, times=1),
        dose_exit=0,
        dose_evidence=("Expired", "restarting the list from scratch (1/3)"),
        dose_requests=4,  # page 1, page 2 (410), then both pages again
    ),
    ApiFault(
        name="401-token-rotation",
        resource="ingressclasses",
        failure="unauthorized",
        begin=_rotate_server_token,
        end=_rewrite_token_file,
        dose=_rotate_during_the_ingress_list,
        dose_exit=0,
        dose_evidence=("401 Unauthorized", "refreshing credentials"),
        dose_resource="ingresses",  # the rotation happens while the cycle is under way, after the first list
        dose_requests=2,  # the 401, then the same request with the token re-read from the file
    ),
    ApiFault(
        name="403",
        resource="ingresses",
        failure='forbidden: cannot list ingresses.networking.k8s.io (cluster-wide): grant verb "list"',
        begin=lambda cluster: cluster.inject_while_faulty(403, path_contains="/ingresses"),
        end=lambda cluster: cluster.faulty.clear(),
        dose=lambda cluster: cluster.api.forbid("ingresses"),
        dose_exit=1,  # RBAC does not change by itself: one 403 fails the cycle, without a retry
        dose_evidence=('grant verb "list" on resource "ingresses" in API group "networking.k8s.io"',),
        dose_requests=1,
    ),
]


def _failure_line(log: str, prefix: str, fault: ApiFault) -> str | None:
    needles = (prefix, f"cannot list {fault.resource}", fault.failure)
    return next((line for line in log.splitlines() if all(n in line for n in needles)), None)


@pytest.fixture(scope="module")
def under_way(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[tuple[str, str], Future[None]]]:
    """Every selected (fault, renderer) case of `test_api_fault...`, acted out in the background from the start.

    A case spends most of its time waiting for the client to give up (4 retry waits, 4-7 s in all, not settable
    from the command line); run one after the other, the cases would take well over two minutes. Each test
    waits for its own case: its assertions run in the case's thread and come back through `result()`.
    """
    cases: list[tuple[ApiFault, str]] = []
    for item in request.session.items:
        if isinstance(item, pytest.Function) and item.originalname == "test_api_fault_keeps_files_and_run_recovers":
            fault, renderer = item.callspec.params["fault"], item.callspec.params["renderer"]
            assert isinstance(fault, ApiFault) and isinstance(renderer, str)
            cases.append((fault, renderer))
    pool = ThreadPoolExecutor(max_workers=CASES_AT_ONCE, thread_name_prefix="api-fault")
    try:
        yield {
            (fault.name, renderer): pool.submit(
                act_out, fault, renderer, tmp_path_factory.mktemp(f"{fault.name}-{renderer}")
            )
            for fault, renderer in cases
        }
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@pytest.mark.timeout(150)
@pytest.mark.parametrize("renderer", RENDERERS)
@pytest.mark.parametrize("fault", API_FAULTS, ids=lambda fault: fault.name)
def test_api_fault_keeps_files_and_run_recovers(
    fault: ApiFault, renderer: str, under_way: dict[tuple[str, str], Future[None]]
) -> None:
    under_way[(fault.name, renderer)].result(timeout=120)


def act_out(fault: ApiFault, renderer: str, tmp_path: Path) -> None:
    """The case: setup, the fault, and every assertion about `once`, the dose and `run` (see the module docstring)."""
    with Cluster(tmp_path / "cluster", renderer) as cluster, Cluster(tmp_path / "dosed", renderer) as dosed:
        fault.prepare(cluster)
        fault.prepare(dosed)
        once_out, run_out, dose_out = (make_dir(tmp_path / name) for name in ("once", "run", "dose"))
        with cluster.start("run", run_out, "--interval", INTERVAL) as run:
            with cluster.start("once", once_out) as good, dosed.start("once", dose_out) as good_dosed:
                assert (good.wait(), good_dosed.wait()) == (0, 0), good.log + good_dosed.log
            run.wait_for_log("wrote ")
            before = {out: folder_state(out) for out in (once_out, run_out, dose_out)}
            assert all(before.values()) and not any(mentions(out, CHANGED_PATH) for out in before)

            fault.begin(cluster)
            cluster.change_demo()
            dosed.change_demo()
            fault.dose(dosed)
            seen = len(dosed.api.requests)
            with cluster.start("once", once_out) as failing, dosed.start("once", dose_out) as absorbed:
                fault.during_dose(dosed, absorbed)
                failing_exit, dose_exit = failing.wait(), absorbed.wait()
            dose_resource = fault.dose_resource or fault.resource
            dose_asked = [r for r in dosed.api.requests[seen:] if r.path.endswith(f"/{dose_resource}")]

            # `once` under the persistent fault: exit 1, nothing touched, resource and failure named.
            assert failing_exit == 1, failing.log
            assert folder_state(once_out) == before[once_out]
            assert _failure_line(failing.log, "cycle failed, files untouched", fault), failing.log

            # `run` under it: each cycle fails and keeps the files; the first good one after the fault writes.
            run.wait_for_log("cycle failed, last good files kept", f"cannot list {fault.resource}", fault.failure)
            assert folder_state(run_out) == before[run_out]
            assert run.proc.poll() is None
            recovery = len(run.lines)
            fault.end(cluster)
            run.wait_for_log("wrote ", since=recovery)
            first_fetch = next(line for line in run.lines[recovery:] if "syncer.run.cycle: cycle: " in line)
            assert "ingresses +0 ~1 -0" in first_fetch, run.log  # the first good cycle saw the change and wrote it
            assert mentions(run_out, CHANGED_PATH)
            assert run.stop() == 0, run.log
        assert folder_bytes(run_out) == cluster.fresh_render(run_out)

        # The smaller dose, with the outcome chosen per fault.
        assert dose_exit == fault.dose_exit, absorbed.log
        assert any(all(n in line for n in fault.dose_evidence) for line in absorbed.lines), absorbed.log
        assert len(dose_asked) == fault.dose_requests, [(r.path, r.query, r.status) for r in dose_asked]
        if fault.dose_exit == 0:
            assert folder_bytes(dose_out) == dosed.fresh_render(dose_out)
            assert mentions(dose_out, CHANGED_PATH)
        else:
            assert folder_state(dose_out) == before[dose_out]
            assert _failure_line(absorbed.log, "cycle failed, files untouched", fault), absorbed.log
    for log in (good.log, failing.log, run.log, absorbed.log):
        assert TEST_TOKEN not in log and ROTATED_TOKEN not in log


# --- timeouts, in-process: the command's own (5 s connect, 30 s read, 5 attempts each) are too slow for a test ---


@contextmanager
def blackhole(port: int) -> Iterator[None]:
    """Listens on 127.0.0.1:`port` and never accepts, its accept queue full: SYNs are dropped, connects time out."""
    listener = socket.socket()
    fillers: list[socket.socket] = []
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(0)
        while True:  # fill the queue; the first connect that times out shows it is full
            filler = socket.socket()
            filler.settimeout(0.2)
            try:
                filler.connect(("127.0.0.1", port))
            except TimeoutError:
                filler.close()
                break
            fillers.append(filler)
            assert len(fillers) < 16, "the listen backlog does not fill up: connects would not time out"
        yield
    finally:
        for sock in (*fillers, listener):
            sock.close()


class Timeout:
    """A connect or read timeout on demand: `begin()` until `end()`."""

    def __init__(self, kind: str, cluster: Cluster) -> None:
        self.kind = kind
        self.cluster = cluster
        self.failure = f"{kind} timed out after 0.3s"
        # The blackhole takes the API's port: the whole server is unreachable, so the first list is the one named.
        self.resource = "ingressclasses" if kind == "connect" else "ingresses"
        self._hole = ExitStack()
        self._holed = False

    def begin(self) -> None:
        if self.kind == "connect":
            self.cluster.api.down()
            self._hole.enter_context(blackhole(int(self.cluster.api.url.rsplit(":", 1)[1])))
            self._holed = True
        else:
            self.cluster.inject_while_faulty("delay", path_contains="/ingresses", delay=1.0)

    def end(self) -> None:
        if self._holed:
            self._hole.close()
            self._holed = False
            self.cluster.api.up()
        self.cluster.faulty.clear()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("renderer", RENDERERS)
@pytest.mark.parametrize("kind", ["connect", "read"])
def test_timeout_keeps_files_and_loop_recovers(kind: str, renderer: str, tmp_path: Path) -> None:
    """Syncer + RunLoop in this process, with a KubeClient whose timeouts are 0.3 s and whose backoff is short."""
    with Cluster(tmp_path / "cluster", renderer) as cluster, captured_log() as log:
        timeout = Timeout(kind, cluster)
        dose = threading.Event()  # set: the first retry (after a logged timeout) ends the fault

        def sleep(seconds: float) -> None:
            if dose.is_set() and any(timeout.failure in message for message in log):
                dose.clear()
                timeout.end()
            threading.Event().wait(seconds)

        out = make_dir(tmp_path / "out")
        config = load_cluster_config(str(cluster.kubeconfig))
        client = KubeClient(
            config, connect_timeout=0.3, read_timeout=0.3, backoff_base=0.02, max_backoff=0.1, sleep=sleep
        )
        syncer = Syncer(ApiSource(client), load_renderer(renderer, {}, output_dir=str(out)), FileWriter(out))
        try:
            syncer.cycle()
            # One timeout: the retry absorbs it and the cycle writes the change.
            cluster.change_demo(b"/v2/api")
            dose.set()
            timeout.begin()
            assert syncer.cycle().write is not None
            assert not dose.is_set(), "the timeout never happened"
            retried = [m for m in log if timeout.failure in m and "retry 2/5" in m]
            assert retried and f"list {timeout.resource}" in retried[0], log
            assert folder_bytes(out) == cluster.fresh_render(out)
            assert mentions(out, b"/v2/api")

            good = folder_state(out)
            cluster.change_demo(b"/v3/api")
            timeout.begin()
            # A lasting timeout, under the loop: the cycle fails and keeps every byte and mtime; the first cycle
            # after the timeout ends writes.
            outcomes: list[bool] = []
            states: list[dict[str, tuple[bytes, int]]] = []

            def on_cycle(ok: bool) -> None:
                outcomes.append(ok)
                states.append(folder_state(out))
                if not ok:
                    timeout.end()
                if ok or len(outcomes) >= 10:
                    os.kill(os.getpid(), signal.SIGTERM)  # RunLoop's handler: stop after this cycle

            assert RunLoop(syncer, 0.05, on_cycle=on_cycle).run() == 0
        finally:
            timeout.end()
            client.close()
        assert outcomes == [False, True]
        assert states[0] == good
        failed_lines = [m for m in log if "cycle failed, last good files kept" in m]
        assert (
            failed_lines and f"cannot list {timeout.resource}" in failed_lines[0] and timeout.failure in failed_lines[0]
        )
        assert folder_bytes(out) == cluster.fresh_render(out)
        assert mentions(out, b"/v3/api")
