"""Ctrl-C, SIGTERM and a hangup end the commands that run until stopped (chat, events),
normally, and ``send`` after its goodbye."""

import signal
from dataclasses import dataclass

import trio


def ending_signals() -> list[signal.Signals]:
    """Ctrl-C, SIGTERM, and SIGHUP (the terminal hung up: it killed a chat before its
    goodbye, found by review) unless it is ignored (``nohup``: the command stays)."""
    ending = [signal.SIGINT, signal.SIGTERM]
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
        ending.append(signal.SIGHUP)
    return ending


@dataclass
class Stopped:
    """The ending signal that came, if one did."""

    received: signal.Signals | None = None


async def cancel_on_signal(
    scope: trio.CancelScope,
    stopped: Stopped | None = None,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Cancel ``scope`` at the first ending signal (kept in ``stopped``); started once
    they are listened for. A second Ctrl-C or SIGTERM then interrupts; a second hangup
    is ignored (a shell passes the kernel's on to its jobs: it killed the chat before
    its goodbye, found by review)."""
    ending = ending_signals()
    with trio.open_signal_receiver(*ending) as signals:
        task_status.started()
        async for received in signals:
            if stopped is not None:
                stopped.received = signal.Signals(received)
            scope.cancel()
            break
    if signal.SIGHUP in ending:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
