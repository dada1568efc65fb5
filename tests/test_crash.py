"""kill -9 at random points of `syncer once`: files stay whole, no temp file shows, the next run converges. Disk I/O.

The input is a generated folder of manifests (Ingresses, Services and EndpointSlices, as JSON lists) in two
versions that differ in every route path and endpoint address, so a run rewrites every file: for Envoy one file
per backend, for Traefik one large YAML file. Each run is of the version the folder holds fewer files of, and is
killed (SIGKILL): every other run after a random delay between 0 and the typical run time, the others at a random
moment of their writes, counted from the first file they create or write (seen through inotify; Traefik replaces
its one file in about a millisecond, which random delays alone would hardly ever meet). After every kill each file in
the output folder is byte for byte the file of a complete render of one of the versions and parses (YAML for
Traefik, JSON for Envoy and the manifest), none is missing, and no other file (a temp file) is there. At the end
one more run (with files to write) converges to a fresh render and leaves no temp file anywhere.

Two lanes (output folders) per renderer are killed side by side, to fit the kills into about half a minute.
"""

from __future__ import annotations

import ctypes
import json
import os
import random
import select
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from syncer.source import DirectorySource
from tests.cluster import RENDERERS, REPO, folder_bytes, fresh_render, make_dir, syncer_env

OBJECTS = 400  # Ingresses, and as many Services and EndpointSlices
KILLS = 50  # per renderer: runs really killed (others, whose delay came after their end, do not count)
LANES = 2
SEED = 20261125
YAML_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # yaml.safe_load, with libyaml when there is one


def write_manifests(folder: Path, version: int, count: int = OBJECTS) -> Path:
    """`count` Ingresses, each with its own Service and EndpointSlice; `version` shows in every path and address."""
    make_dir(folder)
    ingresses, services, slices = [], [], []
    for i in range(count):
        namespace, name = f"team-{i % 20:02d}", f"app-{i:04d}"
        backend = {"service": {"name": name, "port": {"number": 80}}}
        ingresses.append(
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "Ingress",
                "metadata": {"name": name, "namespace": namespace, "creationTimestamp": "2026-01-01T00:00:00Z"},
                "spec": {
                    "ingressClassName": "syncer",
                    "rules": [
                        {
                            "host": f"{name}.{namespace}.example.com",
                            "http": {
                                "paths": [{"path": f"/v{version}/{name}", "pathType": "Prefix", "backend": backend}]
                            },
                        }
                    ],
                },
            }
        )
        services.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
            }
        )
        slices.append(
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": f"{name}-x",
                    "namespace": namespace,
                    "labels": {"kubernetes.io/service-name": name},
                },
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                "endpoints": [{"addresses": [f"10.{version}.{i // 250}.{i % 250 + 1}"], "conditions": {"ready": True}}],
            }
        )
    ingress_class = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IngressClass",
        "metadata": {"name": "syncer"},
        "spec": {"controller": "ingress-syncer.dev/controller"},
    }
    for name, items in (
        ("ingressclasses", [ingress_class]),
        ("ingresses", ingresses),
        ("services", services),
        ("endpointslices", slices),
    ):
        (folder / f"{name}.json").write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
    return folder


def _pause(seconds: float) -> None:
    """A precise short wait (time.sleep may overshoot a millisecond by more than the wait itself)."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def parses(name: str, content: bytes) -> bool:
    try:
        if name.endswith((".yaml", ".yml")):
            yaml.load(content, Loader=YAML_LOADER)
        elif name.endswith(".json"):
            json.loads(content)
        else:
            return bool(content)
    except ValueError:
        return False
    except yaml.YAMLError:
        return False
    return True


class WriteWatch:
    """inotify (Linux) on every folder below `root`: `wait()` returns at the first file created or written there
    (a temp file as the writer works; a target itself, were it ever written in place)."""

    EVENTS = 0x2 | 0x100  # IN_MODIFY | IN_CREATE

    def __init__(self, root: Path) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self._libc.inotify_init1(os.O_CLOEXEC | os.O_NONBLOCK)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        for folder in (root, *(p for p in root.rglob("*") if p.is_dir())):
            if self._libc.inotify_add_watch(self.fd, os.fsencode(folder), self.EVENTS) < 0:
                raise OSError(ctypes.get_errno(), f"inotify_add_watch {folder} failed")

    def drain(self) -> None:
        while select.select([self.fd], [], [], 0)[0]:
            os.read(self.fd, 65536)

    def wait(self, timeout: float) -> bool:
        return bool(select.select([self.fd], [], [], timeout)[0])

    def close(self) -> None:
        os.close(self.fd)


@dataclass
class Lane:
    """One output folder, killed again and again; `renders` holds the complete render of each version."""

    out: Path
    sources: tuple[Path, Path]
    renderer: str
    rng: random.Random
    renders: list[dict[str, bytes]] = field(default_factory=list)
    run_time: float = 0.0
    write_time: float = 0.0  # from the first file written to the last
    kills: int = 0
    completed: int = 0
    mixed: int = 0  # kills that left files of both versions: the kill came while files were being replaced
    temp_left: int = 0  # kills that left a new temp file beside the output folder: the kill came mid-write
    errors: list[str] = field(default_factory=list)
    next_version: int = 0  # the folder holds version 2 after `calibrate`

    @property
    def options(self) -> list[str]:
        return ["--renderer", self.renderer, "--output-dir", str(self.out)]

    def start(self, version: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "syncer", "once", "--source", str(self.sources[version]), *self.options],
            cwd=REPO,
            env=syncer_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def calibrate(self) -> None:
        """A complete run of each version: their files are the reference, their wall time the typical run time."""
        times = []
        for version in (0, 1):
            started = time.monotonic()
            proc = self.start(version)
            assert proc.wait(timeout=60) == 0, f"{self.renderer} run of version {version} failed"
            times.append(time.monotonic() - started)
            self.renders.append(folder_bytes(self.out))
        # The second run rewrote every file that differs between the versions, like the runs to kill will.
        changed = [name for name, content in self.renders[0].items() if self.renders[1].get(name) != content]
        written = [(self.out / name).stat().st_mtime for name in changed]
        self.run_time, self.write_time = max(times), max(written) - min(written)

    def kill_loop(self, kills: int, parsed: dict[bytes, bool], lock: threading.Lock) -> None:
        """Every other run is killed at a random moment of its whole run; the others at a random moment of their
        writes, counted from the first file it creates or writes (for Traefik, one large file replaced in about a
        millisecond, random moments alone would hardly ever meet a write)."""
        watch = WriteWatch(self.out.parent)
        version = self.next_version
        try:
            for attempt in range(kills * 3):  # bounded: most runs are killed, some end before their kill
                if self.kills >= kills or self.errors:
                    return
                watch.drain()
                temps = self.temp_files()
                proc = self.start(version)
                try:
                    if attempt % 2 == 0:
                        delay = self.rng.uniform(0.0, self.run_time)
                        moment = f"{delay:.3f}s after the start"
                        proc.wait(timeout=delay)
                    else:
                        delay = self.rng.uniform(0.0, max(self.write_time * 0.8, 0.002))
                        moment = f"{delay * 1000:.1f}ms into its writes"
                        if watch.wait(timeout=self.run_time * 3):
                            _pause(delay)
                except subprocess.TimeoutExpired:
                    pass
                finally:
                    proc.kill()
                    code = proc.wait(timeout=10)
                if code == -signal.SIGKILL:
                    self.kills += 1
                elif code == 0:
                    self.completed += 1
                else:
                    self.errors.append(f"run of version {version + 1} exited {code} (not killed)")
                held = self.check(moment, parsed, lock)
                if self.temp_files() - temps:
                    self.temp_left += 1  # beside the output folder (checked: none inside); the next run removes it
                # The version the folder holds fewer files of: a kill before the first rename changed nothing, and
                # a run of the version already there would have nothing to write.
                self.next_version = version = 0 if held[1] >= held[0] else 1
        finally:
            watch.close()

    def check(self, moment: str, parsed: dict[bytes, bool], lock: threading.Lock) -> tuple[int, int]:
        """Every file whole and parsing, none missing, none unknown; how many files of each version there are."""
        files = folder_bytes(self.out)
        held = [0, 0]
        for name, content in sorted(files.items()):
            candidates = [render.get(name) for render in self.renders]
            if content not in candidates:
                known = "a file of neither render (a temp file?)" if all(c is None for c in candidates) else "partial"
                self.errors.append(f"after a kill {moment}: {name} is {known} ({len(content)} bytes)")
                continue
            if candidates[0] != candidates[1]:
                held[candidates.index(content)] += 1
            with lock:
                if content not in parsed:
                    parsed[content] = parses(name, content)
            if not parsed[content]:
                self.errors.append(f"after a kill {moment}: {name} does not parse")
        missing = sorted(set(self.renders[0]) - set(files))
        if missing and files:
            self.errors.append(f"after a kill {moment}: {len(missing)} file(s) missing, e.g. {missing[0]}")
        if min(held) > 0:
            self.mixed += 1
        return held[0], held[1]

    def temp_files(self) -> set[Path]:
        return {p for p in self.out.parent.rglob("*.tmp")}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("renderer", RENDERERS)
def test_kill_9_during_writes_leaves_whole_files_and_converges(renderer: str, tmp_path: Path) -> None:
    sources = (write_manifests(tmp_path / "v1", 1), write_manifests(tmp_path / "v2", 2))
    lanes = [
        Lane(make_dir(tmp_path / f"lane-{i}" / "out"), sources, renderer, random.Random(f"{SEED}-{renderer}-{i}"))
        for i in range(LANES)
    ]
    with ThreadPoolExecutor(LANES) as pool:
        list(pool.map(Lane.calibrate, lanes))
    for lane in lanes:
        assert lane.renders[0] != lane.renders[1]
        assert all(parses(name, content) for render in lane.renders for name, content in render.items())

    parsed: dict[bytes, bool] = {}
    lock = threading.Lock()
    with ThreadPoolExecutor(LANES) as pool:
        list(pool.map(lambda lane: lane.kill_loop(KILLS // LANES, parsed, lock), lanes))
    report = ", ".join(
        f"lane {i}: {lane.kills} killed, {lane.completed} completed, {lane.mixed} mixed versions, "
        f"{lane.temp_left} left a temp file (run {lane.run_time:.2f}s, writes {lane.write_time * 1000:.1f}ms)"
        for i, lane in enumerate(lanes)
    )
    assert [error for lane in lanes for error in lane.errors] == [], report
    assert sum(lane.kills for lane in lanes) >= KILLS, report

    # One more run converges: exit 0 and exactly a fresh render (made in-process into an empty folder at the same
    # path) of its version, which is the one the folder holds fewer files of, so that the run has files to write:
    # the writer removes temp files left by killed runs when it next writes, not before.
    for lane in lanes:
        version = lane.next_version
        proc = lane.start(version)
        assert proc.wait(timeout=60) == 0
        assert folder_bytes(lane.out) == fresh_render(renderer, lane.out, DirectorySource(sources[version])), report
        assert not lane.temp_files(), "temp files left beside the output folder after a complete run"
