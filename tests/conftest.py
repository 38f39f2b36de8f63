"""Shared fixtures: a real nats-server per test (port 0, temp store dir, always stopped)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.adapters.nats_server import NatsServerProcess
from tests.support.nats_server import running_nats_server


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServerProcess]:
    with running_nats_server(tmp_path / "nats") as server:
        yield server
