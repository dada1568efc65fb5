"""Shared pytest options and fixtures: the golden-file update flag; fake Kubernetes API servers (loopback I/O)."""

from __future__ import annotations

import gc
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakeapi import TEST_TOKEN, FakeKubeAPI

DEMO = Path(__file__).resolve().parent.parent / "fixtures" / "demo"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="rewrite the golden files under fixtures/cases (and delete those no case produces)",
    )


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))


@pytest.fixture
def fake_api() -> Iterator[FakeKubeAPI]:
    """Plain HTTP, bearer-token auth with TEST_TOKEN."""
    with FakeKubeAPI(tokens=[TEST_TOKEN]) as api:
        yield api


@pytest.fixture
def fake_api_tls() -> Iterator[FakeKubeAPI]:
    """HTTPS with a trustme CA (`api.ca_pem`), certificate for 127.0.0.1/localhost, token auth with TEST_TOKEN."""
    with FakeKubeAPI(tls=True, tokens=[TEST_TOKEN]) as api:
        yield api


class _SecretsWatch(logging.Handler):
    """Collects every log line of the `syncer` loggers at DEBUG, to prove none carries a secret."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record))
        except Exception:  # a record that cannot even be formatted is a bug the test itself reports
            self.lines.append(f"<unformattable record from {record.name}>")


# What must never reach a log line: the test bearer token, key and certificate bodies, auth headers.
FORBIDDEN_IN_LOGS = (TEST_TOKEN, "PRIVATE KEY-----", "BEGIN CERTIFICATE", "Authorization: Bearer", "Bearer ")


@pytest.fixture(autouse=True)
def unfrozen_heap() -> Iterator[None]:
    """A cycle freezes what it allocated (syncer.run.heap.collector_paused); `run` reclaims it once a minute. Tests run
    thousands of short cycles in one process: each test gives its frozen objects back to the collector."""
    yield
    gc.unfreeze()


@pytest.fixture(autouse=True)
def no_secrets_in_logs() -> Iterator[None]:
    """Every test runs with `syncer` logging at DEBUG; afterwards no line may hold a secret."""
    logger = logging.getLogger("syncer")
    watch = _SecretsWatch()
    previous_level = logger.level
    logger.addHandler(watch)
    logger.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        logger.removeHandler(watch)
        logger.setLevel(previous_level)
    leaked = [line for line in watch.lines if any(secret in line for secret in FORBIDDEN_IN_LOGS)]
    assert not leaked, f"secrets in log lines: {leaked[:3]}"


@pytest.fixture
def manifests(tmp_path: Path) -> Path:
    """A copy of the built-in demo's manifests, free to edit (files named here override it where they need to)."""
    return Path(shutil.copytree(DEMO, tmp_path / "manifests"))


@pytest.fixture
def out(tmp_path: Path) -> Path:
    """An empty output folder."""
    (tmp_path / "out").mkdir()
    return tmp_path / "out"
