"""`syncer run --metrics-address`: /healthz, /readyz and /metrics as an operator's probes see them."""

from __future__ import annotations

import shutil
import signal
import time
from pathlib import Path

import requests

from tests.proxies import free_port
from tests.test_cli import DEMO, Running


def get(url: str) -> requests.Response:
    with requests.Session() as session:
        session.trust_env = False
        return session.get(url, timeout=5)


def wait_for(predicate: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():  # type: ignore[operator]
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or (line.startswith(name + "{") and line.split(" ")[0] == name):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in metrics")


def test_health_readiness_and_metrics(tmp_path: Path) -> None:
    manifests = Path(shutil.copytree(DEMO, tmp_path / "manifests"))
    out = tmp_path / "out"
    out.mkdir()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    (manifests / "broken.yaml").write_text("kind: [\n")  # the first cycles fail: not ready yet
    proc = Running(["run", "--source", str(manifests), "--output-dir", str(out), "--interval", "0.3",
                    "--metrics-address", f"127.0.0.1:{port}"])  # fmt: skip
    try:
        wait_for(lambda: get(f"{base}/healthz").status_code == 200)
        ready = get(f"{base}/readyz")
        assert ready.status_code == 503 and "no files written" in ready.text
        wait_for(lambda: 'syncer_cycle_failures_total{reason="source"}' in get(f"{base}/metrics").text)
        (manifests / "broken.yaml").unlink()
        wait_for(lambda: get(f"{base}/readyz").status_code == 200)
        text = get(f"{base}/metrics").text
        assert metric(text, 'syncer_objects{kind="Ingress"}') == 5
        assert metric(text, 'syncer_rendered{what="routes"}') == 5
        assert metric(text, 'syncer_rendered{what="certificates"}') == 1
        assert metric(text, 'syncer_problems{kind="Ingress"}') == 5
        assert metric(text, "syncer_files_written_total") >= 1
        assert metric(text, "syncer_removal_guard_holding") == 0
        assert metric(text, "syncer_last_success_timestamp_seconds") > time.time() - 60
        assert metric(text, "syncer_cycle_duration_seconds_count") >= 2
        assert get(f"{base}/nope").status_code == 404
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.proc.poll() is None:
            proc.proc.kill()
            proc.wait(timeout=5)


def test_a_bad_metrics_address_is_a_usage_error(tmp_path: Path) -> None:
    from tests.test_cli import syncer

    result = syncer("run", "--source", str(DEMO), "--output-dir", str(tmp_path), "--metrics-address", "nonsense")
    assert result.returncode == 2 and "--metrics-address" in result.stderr
