"""Federated relays for the bench: the daemon's flags, waiting for the cluster to form,
its counters, and a raw bus client that publishes sealed MSG envelopes at a rate.

The relays are ``relaybench.daemon`` daemons given ``--federation`` flags; the bus is
a nats-server on loopback (tests/natsserver.py, started by the caller).
"""

import base64
import os
import socket
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from mcrelay.protocol.federation.bodies import (
    MemberRecord,
    Message,
    Snapshot,
    SnapshotRequest,
    decode_body_untrusted,
    encode_body,
)
from mcrelay.protocol.federation.envelope import Kind, Opener, Sealer
from mcrelay.protocol.secure.origins import Origin, OriginKind
from relaybench.api import Api

CLUSTER = "bench"
MSG_SUBJECT = f"mcrelay.{CLUSTER}.msg"
HELLO_SUBJECT = f"mcrelay.{CLUSTER}.hello"
PRESENCE_SUBJECT = f"mcrelay.{CLUSTER}.presence"
ANSWER_TIMEOUT_S = 10.0
"""How long the publisher waits for the relay's SNAPSHOT_REQUEST before its first step."""
LINK_TIMEOUT_S = 15.0
PUBLISHER_NAME = "bench-publisher"
PUBLISH_EVERY_S = 0.005
"""The publisher writes what is due this often (one sendall per batch)."""
SEND_SLACK_S = 2.0


def write_cluster_key(path: Path) -> Path:
    """A cluster key file as ``mcrelay keygen --federation`` writes it (base64, 0600)."""
    path.write_bytes(base64.b64encode(os.urandom(32)) + b"\n")
    path.chmod(0o600)
    return path


def federation_flags(url: str, cluster_key: Path, name: str) -> list[str]:
    return [
        "--federation", url,
        "--federation-cluster", CLUSTER,
        "--federation-key-file", str(cluster_key),
        "--relay-name", name,
    ]  # fmt: skip


def federation(api: Api) -> dict[str, Any]:
    """The relay's ``federation`` status: bus state, envelopes in and out, drops, gaps."""
    status: dict[str, Any] = api.status()["federation"]
    return status


def wait_linked(apis: dict[str, Api], others: int | None = None) -> None:
    """Until each relay's bus is connected and it has heard from ``others`` relays
    (default: all the other relays given)."""
    expected = len(apis) - 1 if others is None else others
    deadline = time.monotonic() + LINK_TIMEOUT_S
    while True:
        linked = True
        for api in apis.values():
            body = api.relays()
            linked &= body["federation"]["bus"] == "connected" and body["count"] - 1 >= expected
        if linked:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the relays {sorted(apis)} did not link in {LINK_TIMEOUT_S:g} s")
        time.sleep(0.05)


@dataclass(frozen=True)
class PublisherSpec:
    port: int
    """The nats-server's client port on 127.0.0.1."""
    cluster_key: bytes
    message_bytes: int


def _frames(sealer: Sealer, record: MemberRecord, count: int, size: int) -> list[bytes]:
    body = encode_body(Message(record, bytes(size)))
    head = f"PUB {MSG_SUBJECT} ".encode()
    frames = []
    for _ in range(count):
        envelope = sealer.seal(Kind.MSG, body)
        frames.append(head + b"%d\r\n" % len(envelope) + envelope + b"\r\n")
    return frames


def _heard_and_verified(sock: socket.socket, stream: Any, sealer: Sealer, key: bytes) -> None:
    """A snapshot, which makes the relay hear this run and ask it (SNAPSHOT_REQUEST);
    then the answer, as a relay gives it: an empty snapshot with the request's nonce and
    the last MSG sealed so far (the frames are sealed per step). The relay takes this
    run's messages from then on (docs/federation.md)."""
    opener = Opener(key)
    sock.sendall(b"SUB %s 1\r\n" % HELLO_SUBJECT.encode())
    envelope = sealer.seal(Kind.SNAPSHOT, encode_body(Snapshot(0, 0, 1, ())))
    sock.sendall(b"PUB %s %d\r\n%s\r\n" % (PRESENCE_SUBJECT.encode(), len(envelope), envelope))
    sock.settimeout(ANSWER_TIMEOUT_S)  # a relay that never asks fails the bench
    while True:
        line = stream.readline()
        if line == b"PING\r\n":
            sock.sendall(b"PONG\r\n")
        if not line.startswith(b"MSG "):
            continue
        words = line.split()
        payload = stream.read(int(words[-1]) + 2)[:-2]
        if len(words) != 5:  # no reply subject: nothing to answer
            continue
        header, data = opener.open_untrusted(payload)
        request = decode_body_untrusted(header.kind, data)
        if isinstance(request, SnapshotRequest) and request.target in ("", PUBLISHER_NAME):
            answer = Snapshot(0, 0, 1, (), request.nonce, sealer.last_seq(Kind.MSG), 0)
            envelope = sealer.seal(Kind.SNAPSHOT, encode_body(answer))
            sock.sendall(b"PUB %s %d\r\n%s\r\nUNSUB 1\r\n" % (words[3], len(envelope), envelope))
            sock.settimeout(None)
            return


def publisher_main(conn: Connection, spec: PublisherSpec) -> None:
    """A worker (relaybench.workers): MSG envelopes of relay ``bench-publisher``, sealed
    before each step, written on a raw NATS connection at a paced rate; the step ends
    with PING/PONG, so the server has them all."""
    sealer = Sealer(spec.cluster_key, PUBLISHER_NAME, time.time_ns())
    origin = Origin(OriginKind.LEGACY_CLIENT, bytes(32), ("127.0.0.9", 40000))
    record = MemberRecord(origin, "127.0.0.9:40000", time.time())
    with socket.create_connection(("127.0.0.1", spec.port)) as sock:
        stream = sock.makefile("rb")
        stream.readline()  # INFO
        sock.sendall(b'CONNECT {"verbose":false,"pedantic":false,"echo":false}\r\nPING\r\n')
        if stream.readline() != b"PONG\r\n":
            raise RuntimeError("the nats-server did not answer PING")
        conn.send(("ok", None))
        while True:
            command = conn.recv()
            if command[0] == "stop":
                return
            _send, rate_per_s, duration_s, verify = command
            if verify:  # a relay that has not heard this run yet
                _heard_and_verified(sock, stream, sealer, spec.cluster_key)
            total = max(1, round(rate_per_s * duration_s))
            frames = _frames(sealer, record, total, spec.message_bytes)
            started = time.monotonic()
            sent = 0
            while sent < total and time.monotonic() - started < duration_s + SEND_SLACK_S:
                due = min(total, int((time.monotonic() - started) * rate_per_s) + 1)
                if due > sent:
                    sock.sendall(b"".join(frames[sent:due]))
                    sent = due
                time.sleep(PUBLISH_EVERY_S)
            elapsed = time.monotonic() - started
            sock.sendall(b"PING\r\n")
            while stream.readline() != b"PONG\r\n":
                pass
            conn.send(("ok", {"sent": sent, "elapsed_s": elapsed}))
