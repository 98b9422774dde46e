"""The daemon's nursery tree, in one place.

run_until_signal
└── serve
    ├── Relay.run
    │   ├── _receive_loop         decode + dispatch, never waits on crypto
    │   ├── _send_loop            drains the bounded outbox
    │   ├── _cleanup_loop         expires idle clients
    │   └── per-message tasks     _reassemble (deadline = reassembly timeout) / _relay
    │                             (crypto in worker threads under a CapacityLimiter)
    └── serve_api                 hypercorn serving the control API (unless --api off)
"""

import logging
import signal
import socket
import time
from dataclasses import dataclass

import trio

from mcrelay.api.app import create_app
from mcrelay.api.context import ApiContext
from mcrelay.api.server import open_api_socket, serve_api
from mcrelay.daemon.config import RelayConfig
from mcrelay.daemon.keyfile import load_or_create_key
from mcrelay.daemon.relay import Relay
from mcrelay.sockets import open_relay_socket

log = logging.getLogger(__name__)


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
    api_sock = open_api_socket(api_address) if api_address is not None else None
    try:
        await _serve(config, api_sock, task_status)
    finally:
        if api_sock is not None:
            api_sock.close()  # a no-op once hypercorn has taken it over
        if api_address is not None and api_address.path is not None:
            api_address.path.unlink(missing_ok=True)


async def _serve(
    config: RelayConfig, api_sock: socket.socket | None, task_status: trio.TaskStatus[Daemon]
) -> None:
    sock, granted = await open_relay_socket(
        group=config.group,
        port=config.port,
        interface=config.interface,
        receive_buffer_bytes=config.receive_buffer_bytes,
    )
    with sock:
        # After the sockets, so a start that cannot bind leaves no new key behind.
        key = await trio.to_thread.run_sync(load_or_create_key, config.key_file)
        relay = Relay(config, sock, key)
        context = ApiContext(relay, config.api_token, time.time(), trio.current_time())
        log.info(
            "relay listening group=%s port=%d interface=%s fingerprint=%s",
            config.group,
            relay.address[1],
            config.interface,
            relay.fingerprint,
        )
        if granted < config.receive_buffer_bytes:
            log.warning(
                "receive buffer is %d bytes, %d asked for: raise net.core.rmem_max "
                "or grant CAP_NET_ADMIN, or bursts of fragments will be lost",
                granted,
                config.receive_buffer_bytes,
            )
        async with trio.open_nursery() as nursery:
            await nursery.start(relay.run)
            urls: list[str] = []
            if api_sock is not None:
                urls = await nursery.start(serve_api, create_app(context), api_sock)
                log.info("control API on %s", config.api_address)
            context.ready = True
            task_status.started(Daemon(relay, context, urls))


async def run_until_signal(config: RelayConfig) -> None:
    """Serve until SIGINT or SIGTERM, then stop cleanly."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(serve, config)
            async for signum in signals:
                log.info("stopping on %s", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break
