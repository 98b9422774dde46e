"""Federation over TLS: relays check the NATS server's certificate against the CA they
are given (``federation_tls_ca``), and one given no such CA never joins."""

import datetime
import ipaddress
from pathlib import Path

import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from mcrelay.cli.status import ExitStatus
from mcrelay.client import MessageReceived, PeerPresent
from mcrelay.protocol.legacy.events import PeerJoined
from mcrelay.settings.config import RelayConfig
from natsserver import NatsServer, running
from support import Console, events_until, join, relay_config, running_daemon, wait_until

Keys = list[rsa.RSAPrivateKey]


def _name(text: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA, and a certificate it signed for 127.0.0.1: (ca.pem, server.pem, server.key)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("test CA"))
        .issuer_name(_name("test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = (directory / "ca.pem", directory / "server.pem", directory / "server.key")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


async def test_relays_join_over_tls_with_the_ca_they_are_given(
    tmp_path: Path, relay_key_file: Path, cluster_key_file: Path, keys: Keys
) -> None:
    ca, certificate, key = make_certificates(tmp_path)
    tls = ("--tls", "--tlscert", str(certificate), "--tlskey", str(key))
    server = NatsServer(tmp_path, "tls", extra=tls)
    with running([server]):
        await trio.to_thread.run_sync(server.start)
        url = f"tls://127.0.0.1:{server.port}"

        def config(name: str, ca_file: Path | None) -> RelayConfig:
            return relay_config(
                relay_key_file,
                federation=url,
                federation_key_file=cluster_key_file,
                federation_tls_ca=ca_file,
                relay_name=name,
            )

        async with (
            running_daemon(config("r1", ca)) as one,
            running_daemon(config("r2", ca)) as two,
            running_daemon(config("r3", None)) as stranger,
        ):
            async with join(one.relay, keys[1]) as a, join(two.relay, keys[2]) as b:
                await events_until(
                    a, lambda e: e in (PeerJoined(b.address), PeerPresent(b.address))
                )
                await b.send("over tls")
                await events_until(a, lambda e: e == MessageReceived(b.address, b"over tls"))
            federation = stranger.relay.federation
            assert federation is not None
            # The system's CAs do not know ours: its every attempt fails.
            await wait_until(lambda: federation.status()["errors"] != 0)
            assert federation.status()["bus"] != "connected"
            assert len(stranger.relay.remotes) == 0


async def start_federated(console: Console, state: Path, key: Path, *more: str) -> ExitStatus:
    """``mcrelay daemon`` on loopback, its keys in ``state``, federating with ``key``
    (to a NATS server it never reaches: these tests stop before)."""
    return await console.run(
        "daemon",
        "--interface", "127.0.0.1",
        "--port", "0",
        "--api", "off",
        "--key-file", str(state / "relay-key.pem"),
        "--federation", "nats://127.0.0.1:1",
        "--federation-key-file", str(key),
        *more,
    )  # fmt: skip


@pytest.mark.parametrize("mode", [None, 0o644])
async def test_a_daemon_without_a_usable_cluster_key_stops_and_makes_no_key(
    tmp_path: Path, cluster_key_file: Path, mode: int | None
) -> None:
    """Exit 2 (a setting to fix) with one line; the relay's own keys are not made."""
    given = tmp_path / "missing.key"
    if mode is not None:
        given = cluster_key_file
        given.chmod(mode)
    console = Console()
    state = tmp_path / "state"
    status = await start_federated(console, state, given)
    assert status == ExitStatus.USAGE
    [line] = console.err_lines()
    assert "cluster key" in line
    assert not state.exists()


async def test_a_broken_epoch_file_stops_the_daemon_before_it_makes_keys(
    tmp_path: Path, cluster_key_file: Path
) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    epoch = state / "federation-r1.epoch"
    epoch.write_text("soon\n")
    epoch.chmod(0o600)
    console = Console()
    status = await start_federated(console, state, cluster_key_file, "--relay-name", "r1")
    assert status == ExitStatus.USAGE
    [line] = console.err_lines()
    assert "epoch" in line
    assert sorted(p.name for p in state.iterdir()) == ["federation-r1.epoch"]
