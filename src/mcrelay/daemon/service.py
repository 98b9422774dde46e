"""The daemon's nursery tree, in one place.

run_until_signal
└── serve
    └── Relay.run
        ├── _receive_loop         decode + dispatch, never waits on crypto
        ├── _send_loop            drains the bounded outbox
        ├── _cleanup_loop         expires idle clients
        └── per-message tasks     _reassemble (deadline = reassembly timeout) / _relay
                                  (crypto in worker threads under a CapacityLimiter)
"""

import logging
import signal

import trio

from mcrelay.daemon.config import RelayConfig
from mcrelay.daemon.keyfile import load_or_create_key
from mcrelay.daemon.relay import Relay
from mcrelay.sockets import open_relay_socket

log = logging.getLogger(__name__)


async def serve(
    config: RelayConfig, *, task_status: trio.TaskStatus[Relay] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run a relay until cancelled; ``task_status.started(relay)`` once it is receiving."""
    key = await trio.to_thread.run_sync(load_or_create_key, config.key_file)
    sock, granted = await open_relay_socket(
        group=config.group,
        port=config.port,
        interface=config.interface,
        receive_buffer_bytes=config.receive_buffer_bytes,
    )
    with sock:
        relay = Relay(config, sock, key)
        port = sock.getsockname()[1]
        log.info(
            "relay listening group=%s port=%d interface=%s fingerprint=%s",
            config.group,
            port,
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
            task_status.started(relay)


async def run_until_signal(config: RelayConfig) -> None:
    """Serve until SIGINT or SIGTERM, then stop cleanly."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(serve, config)
            async for signum in signals:
                log.info("stopping on %s", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break
