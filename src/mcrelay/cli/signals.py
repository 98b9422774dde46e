"""Ctrl-C and SIGTERM end the commands that run until stopped (chat, events), normally."""

import signal

import trio


async def cancel_on_signal(scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            scope.cancel()
            return
