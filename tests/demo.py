"""The README demo in end-to-end tests: its echo backends, `syncer once` as a subprocess. Process and network I/O."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from tests.proxies import EchoServer

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_SOURCE = REPO_ROOT / "fixtures" / "demo"
MANIFEST_FILE = ".ingress-syncer/manifest.json"

# The demo's EndpointSlices: shop/web has two ready endpoints and one that is not ready; shop/api has one.
DEMO_BACKENDS = (
    ("127.0.0.11", 18081, "web-1"),
    ("127.0.0.12", 18081, "web-2"),
    ("127.0.0.13", 18081, "web-not-ready"),
    ("127.0.0.21", 18082, "api"),
)
WEB = frozenset({"web-1", "web-2"})
API = frozenset({"api"})


@contextlib.contextmanager
def serve_demo_backends() -> Iterator[dict[str, EchoServer]]:
    """An echo server at each address of DEMO_BACKENDS, by name; all stopped on exit."""
    with contextlib.ExitStack() as stack:
        yield {name: stack.enter_context(EchoServer(host, port, name)) for host, port, name in DEMO_BACKENDS}


def run_syncer_once(
    source: Path, output_dir: Path, renderer: str, renderer_opts: Mapping[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], float]:
    """`python -m syncer once` in a subprocess; asserts it exits 0. The result and the seconds it took."""
    # SYNCER_* variables are CLI options (click auto envvars): a developer's shell must not change the run.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCER_")}
    command = [
        sys.executable,
        "-m",
        "syncer",
        "once",
        "--source",
        str(source),
        "--renderer",
        renderer,
        "--output-dir",
        str(output_dir),
    ]
    for key, value in (renderer_opts or {}).items():
        command += ["--renderer-opt", f"{key}={value}"]
    started = time.monotonic()
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60)
    seconds = time.monotonic() - started
    assert result.returncode == 0, (
        f"`syncer once` exited {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )
    return result, seconds
