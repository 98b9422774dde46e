import base64
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from natsserver import NatsServer, running, start_cluster


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """One nats-server on loopback, killed at the end."""
    server = NatsServer(tmp_path, "solo")
    with running([server]):
        server.start()
        yield server


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[list[NatsServer]]:
    """Three nats-servers routed into one cluster, killed at the end."""
    with running(start_cluster(tmp_path)) as servers:
        yield servers


@pytest.fixture
def cluster_key_file(tmp_path: Path) -> Path:
    """A cluster key file, as ``mcrelay keygen --federation`` makes one (0600)."""
    path = tmp_path / "federation.key"
    path.write_bytes(base64.b64encode(os.urandom(32)) + b"\n")
    path.chmod(0o600)
    return path
