"""The `syncer` command line as users run it: a real process, real files, real signals."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "fixtures" / "demo"


def syncer(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "syncer", *args],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def snapshot_dir(path: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(path)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(path.rglob("*")) if p.is_file()
    }


@pytest.fixture
def source(tmp_path: Path) -> Path:
    copy = tmp_path / "manifests"
    shutil.copytree(DEMO, copy)
    return copy


@pytest.fixture
def out(tmp_path: Path) -> Path:
    path = tmp_path / "out"
    path.mkdir()
    return path


@pytest.mark.parametrize("renderer", ["traefik", "envoy"])
def test_once_writes_then_second_run_writes_nothing(source: Path, out: Path, renderer: str) -> None:
    first = syncer("once", "--source", str(source), "--renderer", renderer, "--output-dir", str(out))
    assert first.returncode == 0, first.stderr
    written = snapshot_dir(out)
    assert written, "nothing was written"
    assert "ingresses +5 ~0 -0" in first.stderr
    second = syncer("once", "--source", str(source), "--renderer", renderer, "--output-dir", str(out))
    assert second.returncode == 0, second.stderr
    assert "nothing to write" in second.stderr  # same input as the files on disk: not even rendered
    assert "problem: Ingress shop/mistakes" in second.stderr  # the demo's problems are still reported
    assert snapshot_dir(out) == written  # bytes and mtimes, the writer's manifest included
    (out / ".ingress-syncer" / "manifest.json").unlink()  # the memory of the last write is gone
    third = syncer("once", "--source", str(source), "--renderer", renderer, "--output-dir", str(out))
    assert third.returncode == 0, third.stderr
    assert "wrote 0 file(s)" in third.stderr  # rendered again, same bytes: nothing replaced
    option = "traefik.entrypoint-http=plain" if renderer == "traefik" else "envoy.http-port=9090"
    fourth = syncer(
        "once", "--source", str(source), "--renderer", renderer, "--output-dir", str(out), "--renderer-opt", option
    )
    assert fourth.returncode == 0, fourth.stderr
    assert "wrote 1 file(s)" in fourth.stderr  # another setting: rendered again, the main file changed


def test_python_dash_m_and_console_script_agree() -> None:
    script = shutil.which("syncer", path=str(Path(sys.executable).parent))
    assert script is not None, "console script `syncer` is not installed next to this Python"
    via_script = subprocess.run([script, "renderers"], capture_output=True, text=True, timeout=60)
    assert via_script.returncode == 0
    assert via_script.stdout == syncer("renderers").stdout


def test_renderers_lists_the_built_ins() -> None:
    result = syncer("renderers")
    assert result.returncode == 0
    names = [line.split("\t")[0] for line in result.stdout.splitlines()]
    assert names == ["envoy", "traefik"]


def test_broken_manifest_fails_the_cycle_and_keeps_files(source: Path, out: Path) -> None:
    assert syncer("once", "--source", str(source), "--output-dir", str(out)).returncode == 0
    before = snapshot_dir(out)
    (source / "broken.yaml").write_text("kind: Ingress\nmetadata: {name: [\n")
    result = syncer("once", "--source", str(source), "--output-dir", str(out))
    assert result.returncode == 1
    assert "broken.yaml" in result.stderr and "files untouched" in result.stderr
    assert snapshot_dir(out) == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--renderer", "nginx"], "unknown renderer 'nginx'; available: envoy, traefik"),
        (["--renderer-opt", "traefik.colour=blue"], "valid options: traefik.config-dir, traefik.entrypoint-http"),
        (["--renderer-opt", "nonsense"], "RENDERER.KEY=VALUE"),
        (["--log-format", "xml"], "xml"),
        (["--renderer-opt", "envoy.http-port=1"], "for renderer 'envoy'"),
        (["--cycle-timeout", "0"], "--cycle-timeout must be positive"),
        (["--secret-file-group", "no-such-group-here"], "--secret-file-group 'no-such-group-here': no such group"),
    ],
)
def test_usage_errors_exit_2(source: Path, out: Path, args: list[str], message: str) -> None:
    result = syncer("once", "--source", str(source), "--output-dir", str(out), *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert list(out.iterdir()) == []


def test_missing_output_dir_option_is_a_usage_error(source: Path) -> None:
    result = syncer("once", "--source", str(source))
    assert result.returncode == 2 and "--output-dir is required" in result.stderr


def test_missing_output_folder_is_named(source: Path, tmp_path: Path) -> None:
    result = syncer("once", "--source", str(source), "--output-dir", str(tmp_path / "absent"))
    assert result.returncode == 1 and str(tmp_path / "absent") in result.stderr


def test_options_come_from_environment_variables(source: Path, out: Path) -> None:
    result = syncer(
        "once",
        env={
            "SYNCER_SOURCE": str(source),
            "SYNCER_OUTPUT_DIR": str(out),
            "SYNCER_RENDERER": "envoy",
            "SYNCER_LOG_FORMAT": "json",
        },
    )
    assert result.returncode == 0, result.stderr
    assert (out / "lds.json").is_file()
    assert result.stderr.lstrip().startswith("{")


def test_dry_run_prints_a_diff_and_writes_nothing(source: Path, out: Path) -> None:
    result = syncer("once", "--source", str(source), "--output-dir", str(out), "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "+++ b/ingress-syncer.yaml" in result.stdout
    assert "PRIVATE KEY-----\n" not in result.stdout.replace("redacted", "")
    assert list(out.iterdir()) == []


def test_help_documents_every_option_and_its_environment_variable() -> None:
    text = syncer("run", "--help").stdout
    for option in (
        "--renderer",
        "--output-dir",
        "--namespace",
        "--ingress-class",
        "--source",
        "--kubeconfig",
        "--context",
        "--dry-run",
        "--log-level",
        "--log-format",
        "--interval",
        "--renderer-opt",
        "--cycle-timeout",
        "--secret-file-group",
    ):
        assert option in text
    assert "SYNCER_OUTPUT_DIR" in text and "SYNCER_INTERVAL" in text and "SYNCER_CYCLE_TIMEOUT" in text


def a_group_we_may_give_files_to() -> int:
    """Root may use any group (the official Envoy image's 101 is the case in point); anyone else their own."""
    return 101 if os.geteuid() == 0 and os.getegid() != 101 else os.getegid()


@pytest.mark.parametrize("renderer", ["traefik", "envoy"])
def test_secret_file_group_makes_keys_readable_by_that_group(source: Path, out: Path, renderer: str) -> None:
    group = a_group_we_may_give_files_to()
    result = syncer(
        "once", "--source", str(REPO / "fixtures" / "demo"), "--renderer", renderer, "--output-dir", str(out),
        env={**os.environ, "SYNCER_SECRET_FILE_GROUP": str(group)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    keys = [p for p in out.rglob("*") if p.is_file() and b"PRIVATE KEY" in p.read_bytes()]
    assert keys, "the demo has a certificate"
    for key in keys:
        assert (key.stat().st_mode & 0o777, key.stat().st_gid) == (0o640, group), key
        assert (key.parent.stat().st_mode & 0o777, key.parent.stat().st_gid) == (0o750, group), key.parent
    # Without the option again: back to owner only.
    result = syncer(
        "once", "--source", str(REPO / "fixtures" / "demo"), "--renderer", renderer, "--output-dir", str(out)
    )
    assert result.returncode == 0, result.stderr
    assert {(k.stat().st_mode & 0o777, k.parent.stat().st_mode & 0o777) for k in keys} == {(0o600, 0o700)}


class Running:
    """A `syncer run` process whose log lines are collected as they come."""

    def __init__(self, args: list[str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "syncer", *args], cwd=REPO, stderr=subprocess.PIPE, text=True
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    def log(self) -> str:
        return "".join(self.lines)

    def send_signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float) -> int:
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return code


@pytest.fixture
def running(source: Path, out: Path) -> Iterator[Running]:
    proc = Running(["run", "--source", str(source), "--output-dir", str(out), "--interval", "30"])
    try:
        yield proc
    finally:
        if proc.proc.poll() is None:
            proc.proc.kill()
        proc.wait(timeout=10)


def wait_for(predicate: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_run_stops_cleanly_at_once(running: Running, stop_signal: int) -> None:
    wait_for(lambda: "wrote " in running.log())  # logged as the first cycle ends: then the loop waits 30 s
    running.send_signal(stop_signal)
    # It stops in milliseconds; a loop that slept out its 30 s interval before looking would time out here.
    assert running.wait(timeout=10) == 0
    assert f"received {signal.Signals(stop_signal).name}, stopping" in running.log()


def test_sighup_syncs_at_once_and_failures_keep_files(running: Running, source: Path, out: Path) -> None:
    config = out / "ingress-syncer.yaml"
    wait_for(config.exists)
    # A change picked up only because of SIGHUP (the interval is 30 s).
    ingresses = source / "ingresses.yaml"
    ingresses.write_text(ingresses.read_text().replace("/api", "/v2/api"))
    running.send_signal(signal.SIGHUP)
    wait_for(lambda: b"/v2/api" in config.read_bytes())
    good = config.read_bytes()
    # A broken manifest: the cycle fails, the last good file stays, the process keeps running.
    (source / "broken.yaml").write_text("kind: [\n")
    running.send_signal(signal.SIGHUP)
    wait_for(lambda: "cycle failed, last good files kept" in running.log())
    assert running.proc.poll() is None
    assert config.read_bytes() == good
    (source / "broken.yaml").unlink()
    ingresses.write_text(ingresses.read_text().replace("/v2/api", "/v3/api"))
    running.send_signal(signal.SIGHUP)
    wait_for(lambda: b"/v3/api" in config.read_bytes())
    running.send_signal(signal.SIGTERM)
    assert running.wait(timeout=5) == 0
    assert "broken.yaml" in running.log()
