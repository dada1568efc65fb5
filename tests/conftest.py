"""Shared pytest fixtures: fake Kubernetes API servers on loopback. Does network I/O (127.0.0.1 only)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakeapi import FakeKubeAPI

TEST_TOKEN = "tok-7f3a9c1e-do-not-log"


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
