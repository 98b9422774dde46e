"""The daemon's nursery tree, in one place.

run_until_signal                      SIGHUP reloads; SIGTERM/SIGINT drain, then stop
└── run_daemon
    ├── _report_status, _watchdog     sd_notify STATUS= and WATCHDOG=1 (under systemd)
    ├── _drain                        after the first SIGTERM: waits (within the grace
    │                                 period) for Relay.drained: messages in flight go out
    └── serve
        ├── Relay.run                 (daemon/relay.py)
        │   ├── BanFile.run           writes the bans file when the bans change
        │   ├── CryptoWorkers.run     a task per RSA worker process (daemon/workers.py):
        │   │                         jobs from one queue down its stdin, answers back
        │   ├── each profile's run    the secure one's: one task turns every session when
        │   │                         it is due (retransmissions, ACKs, keep-alives) and
        │   │                         forgets unconfirmed handshakes (daemon/secure/)
        │   ├── Outbox.run            sends the notices, and copies when the socket was full
        │   ├── _cleanup_loop         expires idle members
        │   └── messages              closes once receiving stops and every message settled
        │       ├── _receive_loop     read until it would block; each datagram to its
        │       │                     profile by its first byte; never waits on crypto
        │       ├── feed_remote       starts queued remote messages as there is room,
        │       │                     until receiving stops
        │       ├── a message's life  one task per message, from its first fragment
        │       │                     (LegacyProfile._message): the rest under
        │       │                     move_on_at(reassembly deadline); admitted, then the
        │       │                     pipeline (Messages): crypto in the workers, its
        │       │                     sender's earlier messages, send, settle
        │       ├── a post            an operator's message (POST /v1/messages), one at most
        │       └── a remote message  another relay's (federation), to the members here
        ├── Link.run                  with --federation (federation/link.py)
        │   ├── Bus.run               nats-py in its own thread (federation/bus.py)
        │   ├── _receive_loop         envelopes in: other relays' messages and presence
        │   ├── _snapshot_loop        this relay's members every 3 s (its heartbeat)
        │   └── _expiry_loop          silent relays' members leave after the lease
        ├── EventHub.run              publishes the counted drops once a second
        └── serve_api                 the control API (unless --api off): our accept loop,
                                      hypercorn's HTTP/1.1 per connection; all closed at stop
"""

import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import trio
from cryptography.hazmat.primitives.asymmetric import rsa

from mcrelay import __version__
from mcrelay.api.context import ApiContext
from mcrelay.api.server import open_api_socket, serve_api
from mcrelay.daemon.banfile import BanFile, bans_file
from mcrelay.daemon.legacy.keyfile import KeyFileError, load_or_create_key, read_key_file
from mcrelay.daemon.notify import Notifier
from mcrelay.daemon.relay import Relay
from mcrelay.daemon.secure.keyfile import load_or_create_secure_key, read_secure_key_file
from mcrelay.federation.bus import Bus, BusOptions
from mcrelay.federation.epoch import epoch_file, next_epoch
from mcrelay.federation.keyfile import (
    ClusterKeyError,
    check_bus_files,
    cluster_key_fingerprint,
    read_cluster_key,
)
from mcrelay.federation.link import Link
from mcrelay.federation.subjects import Subjects
from mcrelay.protocol.federation.envelope import MAX_ENVELOPE_BYTES
from mcrelay.protocol.legacy import crypto
from mcrelay.protocol.secure.keys import KeyPair, encode_key
from mcrelay.settings.config import RelayConfig
from mcrelay.settings.federation import default_relay_name
from mcrelay.settings.profiles import BRIDGE_WARNING, LEGACY, SECURE
from mcrelay.settings.table import live_changes, reloadable
from mcrelay.sockets import open_relay_socket

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_S = 2.0
"""After SIGTERM, how long messages already in flight may take to go out."""
STREAMS_END_S = 0.5
"""After them, at least this long for the event streams to send their last event."""
STATUS_INTERVAL_S = 5.0
RELOAD_TIMEOUT_S = 10.0
"""How long a reload may take to read its files before it is given up."""


@dataclass(frozen=True, slots=True)
class Daemon:
    """What ``serve`` hands its starter once the relay receives and the API listens."""

    relay: Relay
    api: ApiContext
    api_urls: list[str]


async def serve(
    config: RelayConfig, *, task_status: trio.TaskStatus[Daemon] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run a relay (and its API) until cancelled; ready once both are listening."""
    api_address = config.api_address
    api = open_api_socket(api_address) if api_address is not None else None
    try:
        await _serve(config, None if api is None else api.sock, task_status)
    finally:
        if api is not None:
            api.close()  # and its socket file, if still its own


async def _serve(
    config: RelayConfig, api_sock: socket.socket | None, task_status: trio.TaskStatus[Daemon]
) -> None:
    sock, granted = open_relay_socket(
        group=config.group,
        port=config.port,
        interface=config.interface,
        receive_buffer_bytes=config.receive_buffer_bytes,
    )
    with sock:
        # After the sockets, and the cluster key first, so that a start that cannot bind
        # or has no usable cluster key leaves no new key behind.
        joining = await prepare_federation(config, sock.getsockname()[1])
        key = await load_key(config)
        secure_key = await load_secure_key(config)
        # A relay of an ephemeral port (0: a test's, say) is another one at each start:
        # its bans are its run's (a file per start only piled up: found by review).
        ban_file = (
            await BanFile.open(bans_file(config.key_file.parent, config.port))
            if config.port
            else None
        )
        relay = Relay(config, sock, key, secure_key=secure_key, ban_file=ban_file)
        link = None if joining is None else federation_link(config, relay, joining)
        context = ApiContext(relay, config.api_token, time.time(), trio.current_time())
        log.info(
            "relay listening group=%s port=%d interface=%s%s version=%s",
            config.group,
            relay.address[1],
            config.interface,
            "" if relay.fingerprint is None else f" fingerprint={relay.fingerprint}",
            __version__,
        )
        log_profiles(config, secure_key)
        if granted < config.receive_buffer_bytes:
            log.warning(
                "receive buffer is %d bytes, %d asked for: raise net.core.rmem_max "
                "or grant CAP_NET_ADMIN, or bursts of fragments will be lost",
                granted,
                config.receive_buffer_bytes,
            )
        async with trio.open_nursery() as nursery:
            await nursery.start(relay.run)
            await nursery.start(relay.events.run)
            if link is not None:
                await nursery.start(link.run)
            urls: list[str] = []
            if api_sock is not None:
                urls = await nursery.start(serve_api, context, api_sock)
                # In --api's words, with the port that port 0 got.
                log.info(
                    "control API on %s", ", ".join(url.removeprefix("http://") for url in urls)
                )
            context.ready = True
            task_status.started(Daemon(relay, context, urls))


@dataclass(frozen=True, slots=True)
class Joining:
    """What a relay joins its federation with, read before anything is made."""

    key: bytes
    name: str
    epoch: int


async def prepare_federation(config: RelayConfig, port: int) -> Joining | None:
    """The cluster key, this relay's name and its epoch (kept in the state directory),
    when it joins a federation."""
    if not config.federation_servers:
        return None
    key = await trio.to_thread.run_sync(read_federation_files, config)
    name = config.relay_name or default_relay_name(port)
    path = epoch_file(config.key_file.parent, name)
    epoch = await trio.to_thread.run_sync(next_epoch, path, time.time_ns())
    return Joining(key, name, epoch)


def read_federation_files(config: RelayConfig, *, any_owner: bool = False) -> bytes:
    """The cluster key, once it and the NATS files are found fit (raises
    ``ClusterKeyError`` naming the file). ``any_owner``: for ``config check``, run by
    root, say, for the daemon's user: the files need not be ours."""
    assert config.federation_key_file is not None  # RelayConfig requires it
    key = read_cluster_key(config.federation_key_file, any_owner=any_owner)
    _require_not_the_relays_own(key, config, any_owner)
    check_bus_files(
        config.federation_credentials,
        config.federation_nkey_file,
        config.federation_tls_ca,
        any_owner=any_owner,
    )
    return key


def _require_not_the_relays_own(key: bytes, config: RelayConfig, any_owner: bool) -> None:
    """The cluster key is copied to every relay: one that is the relay's own secure
    private key would hand it to them all. Settings refuse the same path; a copy of the
    file, or a hard link, passed (found by review), so the keys themselves are compared.
    A secure key file that cannot be read is for its own load to say."""
    try:
        own = read_secure_key_file(config.secure_key_path, any_owner=any_owner)
    except KeyFileError:
        return
    if own is not None and own.private == key:
        raise ClusterKeyError(
            f"federation key file {config.federation_key_file} holds the relay's own secure "
            f"private key (that of {config.secure_key_path}): every relay gets a copy of the "
            "cluster key; make one of its own: mcrelay keygen --federation PATH"
        )


def federation_link(config: RelayConfig, relay: Relay, joining: Joining) -> Link:
    """The relay's link to its federation (the relay is told of it)."""
    name = joining.name
    subjects = Subjects(config.federation_cluster, name)
    options = BusOptions(
        servers=config.federation_servers,
        name=f"mcrelay {name}",
        credentials=config.federation_credentials,
        nkey_file=config.federation_nkey_file,
        tls_ca=config.federation_tls_ca,
        max_message_bytes=MAX_ENVELOPE_BYTES,
    )
    link = Link(
        relay,
        Bus(options, subjects.subscribed()),
        cluster=config.federation_cluster,
        name=name,
        key=joining.key,
        epoch=joining.epoch,
        servers=config.federation_servers,
    )
    relay.federation = link
    # The key's fingerprint: relays that hear nothing of each other (envelope_auth) may
    # hold different keys, and this is how their operators compare them.
    log.info(
        "federation cluster=%s relay=%s servers=%s key=%s",
        config.federation_cluster,
        name,
        ",".join(config.federation_servers),
        cluster_key_fingerprint(joining.key),
    )
    return link


async def load_key(config: RelayConfig) -> rsa.RSAPrivateKey | None:
    """The legacy profile's RSA key, made on first start, when that profile is served
    (a relay serving secure members only made and logged one it never used: found by
    review)."""
    if LEGACY not in config.served_profiles:
        return None
    return await trio.to_thread.run_sync(load_or_create_key, config.key_file)


async def load_secure_key(config: RelayConfig) -> KeyPair | None:
    """The secure profile's key pair, made on first start, when that profile is served."""
    if SECURE not in config.served_profiles:
        return None
    return await trio.to_thread.run_sync(load_or_create_secure_key, config.secure_key_path)


def log_profiles(config: RelayConfig, secure_key: KeyPair | None) -> None:
    """The profiles served and the secure public key (what clients pin with --relay-key),
    beside the RSA fingerprint's line; a warning when legacy members are bridged in."""
    line = f"profiles={','.join(config.served_profiles)}"
    if secure_key is not None:
        line += f" secure_key={encode_key(secure_key.public)}"
    if config.authorized_key_list is not None:
        line += f" authorized_keys={len(config.authorized_key_list)}"
    log.info("%s", line)
    if config.legacy_bridged:
        log.warning("%s", BRIDGE_WARNING)


async def run_until_signal(
    config: RelayConfig,
    *,
    reload: Callable[[], RelayConfig] | None = None,
    settings_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    grace_s: float = SHUTDOWN_GRACE_S,
) -> None:
    """Serve until SIGINT or SIGTERM; SIGHUP reloads (``reload``, which reads
    ``settings_file`` again). Tells systemd when NOTIFY_SOCKET is set."""
    notifier = Notifier(os.environ if environ is None else environ)
    try:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
            await run_daemon(
                config,
                signals,
                reload=reload,
                settings_file=settings_file,
                notifier=notifier,
                grace_s=grace_s,
            )
    finally:
        notifier.close()


async def run_daemon(
    config: RelayConfig,
    signals: AsyncIterator[int],
    *,
    reload: Callable[[], RelayConfig] | None,
    settings_file: Path | None = None,
    notifier: Notifier,
    grace_s: float = SHUTDOWN_GRACE_S,
    task_status: trio.TaskStatus[Daemon] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The daemon, driven by a stream of signal numbers (tests feed their own)."""
    async with trio.open_nursery() as nursery:
        daemon: Daemon = await nursery.start(serve, config)
        # Which file a reload reads again (the start did not say: found by review).
        log.info("settings file %s", "none" if settings_file is None else settings_file)
        notifier.notify("READY=1", f"STATUS={status_line(daemon.relay)}")
        task_status.started(daemon)
        if notifier.enabled:
            nursery.start_soon(_report_status, daemon.relay, notifier)
        if notifier.watchdog_s is not None:
            nursery.start_soon(_watchdog, daemon.relay, notifier, notifier.watchdog_s / 2)
        # Reloads run beside the signals: one that waits on its files (up to 20 s) held
        # a SIGTERM, and a second one, until it was done (found by review). A SIGHUP
        # during a reload asks for one more; more than that are the same one.
        wanted, reloads = trio.open_memory_channel[None](1)
        reloading = trio.CancelScope()
        if reload is not None:
            nursery.start_soon(_reload_each, daemon, reload, reloads, notifier, reloading)
        stopping = False
        async for signum in signals:
            name = signal.Signals(signum).name
            if signum == signal.SIGHUP:
                if not stopping:
                    with contextlib.suppress(trio.WouldBlock):
                        wanted.send_nowait(None)
                continue
            if stopping:
                log.info("second %s: stopping now", name)
                nursery.cancel_scope.cancel()
                return
            stopping = True
            reloading.cancel()
            log.info("stopping on %s: finishing messages in flight (%g s at most)", name, grace_s)
            notifier.notify("STOPPING=1")
            nursery.start_soon(_drain, daemon.relay, grace_s, nursery.cancel_scope)


async def _reload_each(
    daemon: Daemon,
    reload: Callable[[], RelayConfig],
    reloads: trio.MemoryReceiveChannel[None],
    notifier: Notifier,
    scope: trio.CancelScope,
) -> None:
    """Apply each reload asked for, one at a time, until ``scope`` is cancelled (the
    daemon stops: a reload under way is given up, none applied after)."""
    with scope:
        async for _ in reloads:
            notifier.reloading()
            await apply_reload(daemon, reload)
            notifier.notify("READY=1", f"STATUS={status_line(daemon.relay)}")


async def apply_reload(
    daemon: Daemon, load: Callable[[], RelayConfig], timeout_s: float = RELOAD_TIMEOUT_S
) -> None:
    """Read the configuration again and apply what can change live; keep the rest.

    The files are read in a thread, so the relay goes on meanwhile; a read still under
    way after ``timeout_s`` (a hung file system) is abandoned and the reload fails."""
    old = daemon.relay.config
    try:
        with trio.fail_after(timeout_s):
            new = await trio.to_thread.run_sync(load, abandon_on_cancel=True)
        # Keep what needs a restart; checking the merged whole again may still refuse it.
        new, fixed = reloadable(old, new)
    except trio.TooSlowError:
        log.error(
            "reload failed, the running configuration stays: reading the settings took over %g s",
            timeout_s,
        )
        return
    except Exception as exc:
        # Whatever the file holds (or however it fails to read), the daemon runs on.
        log.error("reload failed, the running configuration stays: %s", exc)
        return
    if fixed:
        log.warning("reload: %s cannot change while running; restart to apply", ", ".join(fixed))
    changed = live_changes(old, new)
    daemon.relay.reconfigure(new)
    daemon.api.token = new.api_token
    # Said at the more verbose of the two levels: a reload to warning, or from it, is
    # still said (found by review, each in turn).
    root = logging.getLogger()
    root.setLevel(min(root.level, logging.getLevelName(new.log_level.upper())))
    log.info(
        "configuration reloaded; %s",
        f"changed: {', '.join(changed)}" if changed else "no setting changed",
    )
    root.setLevel(new.log_level.upper())
    # The key files last, apart: a slow one must not cost the settings read above.
    key_notes = [f"the key files took over {timeout_s:g} s to read"]
    with trio.move_on_after(timeout_s):
        key_notes = await trio.to_thread.run_sync(
            key_file_notes, daemon.relay, abandon_on_cancel=True
        )
    for note in key_notes:
        log.warning("reload: %s", note)


def key_file_notes(relay: Relay) -> list[str]:
    """The relay's key files as they are now, where they differ from the keys it runs
    with: what its next start would find (a key replaced or removed meanwhile went
    unnoticed until then: found by review)."""
    config, notes = relay.config, []
    if relay.fingerprint is not None:
        try:
            key = read_key_file(config.key_file)
            now = None if key is None else crypto.fingerprint(key.public_key())
            notes += _key_note(config.key_file, relay.fingerprint, now)
        except KeyFileError as exc:
            notes.append(f"{exc}: a restart would stop there")
    if relay.secure_key is not None:  # on its own: one refused key hid the other's change
        try:
            pair = read_secure_key_file(config.secure_key_path)
            now = None if pair is None else encode_key(pair.public)
            notes += _key_note(config.secure_key_path, relay.secure_key, now)
        except KeyFileError as exc:
            notes.append(f"{exc}: a restart would stop there")
    return notes


def _key_note(path: Path, running: str, found: str | None) -> list[str]:
    if found is None:
        return [f"{path} is gone: the relay runs on with {running}; a restart makes a new key"]
    if found != running:
        return [f"{path} holds {found}: the relay runs on with {running} until a restart"]
    return []


def status_line(relay: Relay) -> str:
    return (
        f"serving {len(relay.roster)} clients, {relay.counters.messages_relayed} messages relayed"
    )


async def _report_status(relay: Relay, notifier: Notifier) -> None:
    shown = ""
    while True:
        await trio.sleep(STATUS_INTERVAL_S)
        line = status_line(relay)
        if line != shown:
            notifier.notify(f"STATUS={line}")
            shown = line


async def _watchdog(relay: Relay, notifier: Notifier, interval_s: float) -> None:
    """Ping only while the receive loop waits for datagrams or has read some within the
    interval: a relay whose loop is stuck, or whose receive loop ended, stops pinging."""
    while True:
        await trio.sleep(interval_s)
        if relay.receive_waiting or trio.current_time() - relay.last_turn <= interval_s:
            notifier.notify("WATCHDOG=1")
        elif not relay.stopping:
            log.error(
                "receive loop has not turned for %.1f s", trio.current_time() - relay.last_turn
            )


async def _drain(relay: Relay, grace_s: float, scope: trio.CancelScope) -> None:
    """Stop receiving; give the messages in flight ``grace_s`` to settle and go out; then
    end the event streams in order (a last ``relay_stopping`` each), within the grace
    left or STREAMS_END_S, whichever is longer."""
    relay.stop_receiving()
    deadline = trio.current_time() + grace_s
    with trio.move_on_at(deadline):
        await relay.drained.wait()
    relay.events.close()
    with trio.move_on_at(max(deadline, trio.current_time() + STREAMS_END_S)):
        await relay.events.wait_ended()
    scope.cancel()
