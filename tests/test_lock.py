"""The output folder's lock: overlapping runs (cron's `syncer once`) never interleave their writes or manifest
updates; a second writer waits, and past its deadline fails naming the holder's pid. Disk I/O and processes."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from syncer.deadline import Deadline
from syncer.errors import OutputLocked
from syncer.output.lock import LOCK_NAME, OutputLock
from syncer.output.manifest import MANIFEST_NAME
from syncer.source import DirectorySource
from tests.cluster import REPO, SyncerProcess, folder_state, fresh_render, make_dir

HOLDER = """
import sys
from syncer.output.lock import OutputLock
with OutputLock(sys.argv[1]).held(None):
    print("held", flush=True)
    sys.stdin.readline()
"""


def test_a_second_holder_fails_at_its_deadline_naming_the_pid_and_gets_the_lock_once_released(tmp_path: Path) -> None:
    out = make_dir(tmp_path / "out")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(out)], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdin is not None and holder.stdout is not None
    try:
        assert holder.stdout.readline() == "held\n"
        lock = OutputLock(out)
        expected = rf"output folder {re.escape(str(out))} is locked by pid {holder.pid} .* the test's deadline passed"
        with pytest.raises(OutputLocked, match=expected):
            with lock.held(Deadline.after(0.5, "the test's deadline")):
                pytest.fail("the lock was held twice")
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.wait(timeout=10) == 0
    finally:
        holder.kill()
        holder.wait(timeout=10)
    with lock.held(Deadline.after(0.5, "the test's deadline")):
        assert (out / LOCK_NAME).read_text() == f"{os.getpid()}\n"
    assert (out / LOCK_NAME).read_text() == ""  # released: no pid left behind
    assert [p.relative_to(out).as_posix() for p in out.rglob("*")] == [".ingress-syncer", LOCK_NAME]


def test_a_waiter_gets_the_lock_as_soon_as_the_holder_lets_go(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="syncer.output.lock")
    out = make_dir(tmp_path / "out")
    released = threading.Event()
    outcome: list[bool] = []

    def wait_for_the_lock() -> None:
        with OutputLock(out).held(Deadline.after(30.0)):
            outcome.append(released.is_set())

    with OutputLock(out).held(None):  # another open of the file: flock(2) keeps the two apart in one process too
        waiter = threading.Thread(target=wait_for_the_lock)
        waiter.start()
        give_up = time.monotonic() + 10
        while "waiting for it" not in caplog.text and time.monotonic() < give_up:
            time.sleep(0.01)
        assert f"is locked by pid {os.getpid()}; waiting for it" in caplog.text
        released.set()
    waiter.join(timeout=10)
    assert outcome == [True]


# --- the command ---------------------------------------------------------------------------------------------

SHARED, OWN = 60, 40  # backends every input has (same file names, other endpoints) and backends of its own


def write_input(folder: Path, name: str, number: int) -> Path:
    """Manifests whose Envoy render shares file names with every other input's (cds.json, lds.json, rds/, the
    shared backends' eds/ files, all with other content) and has files of its own: a mix of two renders shows."""
    items: list[dict[str, Any]] = [
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "IngressClass",
            "metadata": {"name": "syncer"},
            "spec": {"controller": "ingress-syncer.dev/controller"},
        }
    ]
    backends = [(f"shared-{i}", f"/{name}") for i in range(SHARED)] + [(f"{name}-{i}", "/") for i in range(OWN)]
    for i, (service, path) in enumerate(backends):
        meta = {"name": service, "namespace": "app"}
        items += [
            {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": {"ports": [{"port": 80}]}},
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {**meta, "labels": {"kubernetes.io/service-name": service}},
                "addressType": "IPv4",
                "ports": [{"port": 80}],
                "endpoints": [{"addresses": [f"10.{number}.{i // 200}.{i % 200 + 1}"]}],
            },
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "Ingress",
                "metadata": {**meta, "creationTimestamp": "2026-01-01T00:00:00Z"},
                "spec": {
                    "ingressClassName": "syncer",
                    "rules": [
                        {
                            "host": f"{service}.example.com",
                            "http": {
                                "paths": [
                                    {
                                        "path": path,
                                        "pathType": "Prefix",
                                        "backend": {"service": {"name": service, "port": {"number": 80}}},
                                    }
                                ]
                            },
                        }
                    ],
                },
            },
        ]
    make_dir(folder)
    (folder / "objects.json").write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
    return folder


def settled_on(out: Path, renders: dict[str, dict[str, bytes]]) -> str:
    """Which single render the folder holds: the manifest lists exactly the files present, and every file it
    lists is that render's, byte for byte (none of the other's). Fails, saying what is mixed, otherwise."""
    manifest = json.loads((out / MANIFEST_NAME).read_bytes())
    present = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    present -= {MANIFEST_NAME, LOCK_NAME}
    listed = set(manifest["files"]) | set(manifest["stale"])
    assert present == listed, (
        f"unlisted: {sorted(present - listed)[:5]}; listed, missing: {sorted(listed - present)[:5]}"
    )
    matches = {}
    for name, render in renders.items():
        files = set(render) - {MANIFEST_NAME, LOCK_NAME}
        differ = sorted(f for f in files & set(manifest["files"]) if (out / f).read_bytes() != render[f])
        matches[name] = (files == set(manifest["files"]), differ)
    winners = [name for name, (same_names, differ) in matches.items() if same_names and not differ]
    assert len(winners) == 1, f"the folder is no single render: {matches}"
    meta = {k: v for k, v in manifest["meta"].items() if k != "input"}
    assert meta == json.loads(renders[winners[0]][MANIFEST_NAME])["meta"]
    return winners[0]


@pytest.mark.timeout(240)
def test_two_overlapping_runs_never_mix_their_writes(tmp_path: Path) -> None:
    """Two `syncer once` on one folder, started together, with inputs whose renders differ, round after round.
    The pairs alternate, so in every round both processes have something to write."""
    pairs = (("a", "b"), ("c", "d"))
    sources = {name: write_input(tmp_path / "in" / name, name, number) for number, name in enumerate("abcd")}
    out = make_dir(tmp_path / "out")
    renders = {name: fresh_render("envoy", out, DirectorySource(source)) for name, source in sources.items()}
    waited = 0
    for round_ in range(20):
        pair = pairs[round_ % 2]
        runs = [
            SyncerProcess(["once", "--source", str(sources[name]), "--renderer", "envoy", "--output-dir", str(out)])
            for name in pair
        ]
        try:
            codes = [run.wait(timeout=60) for run in runs]
        finally:
            for run in runs:
                run.close()
        assert codes == [0, 0], "\n".join(run.log for run in runs)
        settled_on(out, {name: renders[name] for name in pair})
        waited += sum("is locked by pid" in run.log for run in runs)
    print(f"a process waited for the other in {waited} of 20 rounds")


@pytest.mark.timeout(60)
def test_once_fails_when_the_folder_stays_locked_past_its_deadline(tmp_path: Path) -> None:
    source = write_input(tmp_path / "in", "a", 1)
    out = make_dir(tmp_path / "out")
    args = ["once", "--source", str(source), "--renderer", "envoy", "--output-dir", str(out)]
    with SyncerProcess(args) as first:
        assert first.wait() == 0, first.log
    before = folder_state(out)
    changed = write_input(tmp_path / "changed", "b", 2)
    args[2] = str(changed)
    with OutputLock(out).held(None):
        with SyncerProcess([*args, "--cycle-timeout", "1"]) as locked_out:
            assert locked_out.wait(timeout=30) == 1, locked_out.log
    assert folder_state(out) == before
    line = locked_out.wait_for_log("cycle failed, files untouched")
    assert f"output folder {out} is locked by pid {os.getpid()}" in line, locked_out.log
    assert "the cycle deadline (--cycle-timeout 1s) passed" in line
    with SyncerProcess(args) as after:
        assert after.wait() == 0, after.log
    assert folder_state(out) != before


@pytest.mark.timeout(60)
def test_run_holds_the_lock_only_while_it_writes(tmp_path: Path) -> None:
    source = write_input(tmp_path / "in", "a", 1)
    out = make_dir(tmp_path / "out")
    with SyncerProcess(["run", "--interval", "30", "--source", str(source), "--output-dir", str(out)]) as run:
        run.wait_for_log("wrote ")
        with OutputLock(out).held(Deadline.after(5.0, "the test's deadline")):
            pass  # between its cycles the folder is free
        assert run.stop() == 0, run.log
