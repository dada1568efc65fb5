"""Shared pytest options and fixtures: the golden-file update flag; fake Kubernetes API servers (loopback I/O)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakeapi import TEST_TOKEN, FakeKubeAPI


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
