"""Shared pieces of the reliability tests: a fake cluster, `syncer` processes, folder snapshots. Loopback and disk I/O.

A `Cluster` is a FakeKubeAPI holding the demo plus a kubeconfig whose user reads its bearer token from a file, so
a token rotation can be acted out the way the kubelet does it (rewrite the file). A `SyncerProcess` is the real
command (`python -m syncer ...`) whose log is collected line by line while it runs.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from syncer.kube.client import KubeClient
from syncer.kube.kubeconfig import load_cluster_config
from syncer.output.lock import LOCK_NAME
from syncer.output.writer import MANIFEST_NAME, FileWriter
from syncer.render.plugins import load_renderer
from syncer.run.cycle import Syncer
from syncer.source import ApiSource, Source
from tests.fakeapi import TEST_TOKEN, FakeKubeAPI
from tests.test_api_source import load_demo

REPO = Path(__file__).resolve().parent.parent
RENDERERS = ("traefik", "envoy")
ROTATED_TOKEN = "tok-rotated-5c2d90ab-do-not-log"  # the token after a rotation; must never be logged either
CHANGED_PATH = b"/v2/api"  # what `Cluster.change_demo` puts into the output

FolderState = dict[str, tuple[bytes, int]]


def folder_state(path: Path) -> FolderState:
    """Bytes and mtime of every file below `path`, dotfiles (the writer's manifest) included; not the output
    folder's lock file, which is no output: every cycle that writes (or tries to) holds it and notes its pid there."""
    return {
        name: (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(path.rglob("*"))
        if p.is_file() and (name := str(p.relative_to(path))) != LOCK_NAME
    }


def folder_bytes(path: Path) -> dict[str, bytes]:
    """Bytes of every file below `path`, to compare with another render of the same input. The writer's manifest
    is compared without what no second render can reproduce: the recorded stat of the files (inodes, mtimes) and
    the input key (made of the writing process's code and settings; in-process renders have none). A manifest
    that does not parse stays as it is, so a torn one still shows."""
    files = {name: content for name, (content, _) in folder_state(path).items()}
    if MANIFEST_NAME in files:
        files[MANIFEST_NAME] = comparable_manifest(files[MANIFEST_NAME])
    return files


def comparable_manifest(content: bytes) -> bytes:
    try:
        manifest = json.loads(content)
        manifest.pop("stat", None)
        manifest.get("meta", {}).pop("input", None)
    except (ValueError, AttributeError):
        return content
    return json.dumps(manifest, sort_keys=True).encode()


def mentions(path: Path, needle: bytes) -> bool:
    """Whether any file below `path` holds `needle` (files may be replaced meanwhile: a vanished one is skipped)."""
    for p in path.rglob("*"):
        try:
            if p.is_file() and needle in p.read_bytes():
                return True
        except FileNotFoundError:
            continue
    return False


def make_dir(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


def syncer_env() -> dict[str, str]:
    """This environment minus anything that would configure `syncer` behind the test's back."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("SYNCER_", "KUBECONFIG", "KUBERNETES_"))}


class SyncerProcess:
    """`python -m syncer ARGS` in the background; its log (stderr) is collected line by line as it comes."""

    def __init__(self, args: Sequence[str], env: Mapping[str, str] | None = None, **popen: Any) -> None:
        self.args = list(args)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "syncer", *self.args],
            cwd=REPO,
            env={**syncer_env(), **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            **popen,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def wait_for_log(self, *needles: str, since: int = 0, timeout: float = 30.0) -> str:
        """The first log line (from line `since` on) holding every needle; fails, showing the log, at the deadline
        or when the process ends without it."""
        deadline = time.monotonic() + timeout
        while True:
            done = self.proc.poll() is not None
            if done:
                self._reader.join(timeout=5)
            found = next((line for line in self.lines[since:] if all(n in line for n in needles)), None)
            if found is not None:
                return found
            if done or time.monotonic() > deadline:
                state = f"exited {self.proc.returncode}" if done else f"still running after {timeout:g}s"
                raise AssertionError(f"no log line with {needles!r} ({state}); log:\n{self.log}")
            time.sleep(0.02)

    def wait(self, timeout: float = 60.0) -> int:
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return code

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, then the exit code."""
        self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.wait(timeout=10)

    def __enter__(self) -> SyncerProcess:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def write_kubeconfig(path: Path, api: FakeKubeAPI, token_file: Path) -> Path:
    """A kubeconfig for `api` whose user reads its token from `token_file` (re-read after a 401)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "fake",
                "cluster": {"server": api.url, "certificate-authority-data": base64.b64encode(api.ca_pem).decode()},
            }
        ],
        "users": [{"name": "syncer", "user": {"tokenFile": str(token_file)}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "syncer"}}],
        "current-context": "fake",
    }
    path.write_text(yaml.safe_dump(config))
    return path


def write_atomically(path: Path, text: str) -> None:
    """As the kubelet rotates a projected token: the reader sees the old file or the new one, never half."""
    temp = path.with_name(f".{path.name}.new")
    temp.write_text(text)
    os.replace(temp, path)


class Cluster:
    """A fake API server holding the demo, a token file, a kubeconfig naming both, and the renderer under test."""

    def __init__(self, root: Path, renderer: str) -> None:
        self.root = make_dir(root)
        self.renderer = renderer
        self.api = FakeKubeAPI(tls=True, tokens=[TEST_TOKEN]).start()
        load_demo(self.api)
        self.token_file = root / "token"
        self.token_file.write_text(TEST_TOKEN + "\n")
        self.kubeconfig = write_kubeconfig(root / "kubeconfig", self.api, self.token_file)
        self.faulty = threading.Event()  # the switch of faults injected with `inject_while_faulty`

    def args(self, verb: str, out: Path, *extra: str) -> list[str]:
        options = ["--kubeconfig", str(self.kubeconfig), "--renderer", self.renderer, "--output-dir", str(out)]
        return [verb, *options, *extra]

    def start(self, verb: str, out: Path, *extra: str, env: Mapping[str, str] | None = None) -> SyncerProcess:
        return SyncerProcess(self.args(verb, out, *extra), env=env)

    def inject_while_faulty(self, fault: int | str, **kwargs: Any) -> None:
        """`fault` on every matching request from now on until `faulty` is cleared."""
        self.api.inject(fault, times=10**9, match=lambda _req: self.faulty.is_set(), **kwargs)
        self.faulty.set()

    def change_demo(self, path: bytes = CHANGED_PATH) -> None:
        """A change the next cycle must write: the storefront's second path (`/api` in the demo) becomes `path`."""
        ingress = next(obj for obj in self.api.objects("Ingress") if obj["metadata"]["name"] == "storefront")
        ingress["spec"]["rules"][0]["http"]["paths"][1]["path"] = path.decode()
        self.api.add("Ingress", ingress)

    def fresh_render(self, out: Path) -> dict[str, bytes]:
        """What one good cycle writes into an empty folder at `out` (moved aside meanwhile: output names its path)."""
        with self.client() as client:
            return fresh_render(self.renderer, out, ApiSource(client))

    def client(self) -> KubeClient:
        return KubeClient(load_cluster_config(str(self.kubeconfig)))

    def close(self) -> None:
        self.faulty.clear()
        self.api.on_request = None
        self.api.close()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def fresh_render(renderer: str, out: Path, source: Source) -> dict[str, bytes]:
    """Files of one in-process cycle into an empty folder at `out`; the real `out` is moved aside and back."""
    aside = out.with_name(out.name + ".aside")
    out.rename(aside)
    try:
        out.mkdir()
        Syncer(source, load_renderer(renderer, {}, output_dir=str(out)), FileWriter(out)).cycle()
        return folder_bytes(out)
    finally:
        shutil.rmtree(out, ignore_errors=True)
        aside.rename(out)


@contextmanager
def captured_log(name: str = "syncer") -> Iterator[list[str]]:
    """Messages logged below `name` while inside (independent of caplog: the CLI's set-up turns propagation off)."""
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(f"{record.levelname} {record.name}: {record.getMessage()}")

    logger = logging.getLogger(name)
    handler = Collect(logging.DEBUG)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
