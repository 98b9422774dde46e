"""The NATS side of the bus: nats-py on an asyncio loop in a thread of its own.

One *session* is one nats-py ``Client``: it connects (retrying forever, also when no
server is up), subscribes, and rides nats-py's own reconnects across the servers it
was given and those the cluster advertises; nats-py re-subscribes before it calls
``reconnected_cb``, so CONNECTED always follows the subscriptions. A session that
nats-py closes for good (a server's -ERR, say) is replaced by a new one after
``reconnect_wait_s``. Outgoing items wait in the bridge's deque until one wake-up
(``call_soon_threadsafe``) per batch; incoming messages go into the other deque and
wake Trio once per batch (``run_sync_soon``). Nothing here blocks on the Trio side,
and nothing raised here reaches it: errors are logged and counted.
"""

import asyncio
import contextlib
import logging
import math
import ssl
import threading
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import ParseResult

import trio
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import MaxPayloadError, NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from mcrelay.federation.bridge import Bridge, BusEvent, BusOptions, Incoming, Publish, Request

log = logging.getLogger("mcrelay.federation.bus")

PENDING_SIZE_BYTES = 256 * 1024
"""nats-py's own outgoing buffer: past it a publish waits for the socket (so the
deque from Trio fills and drops are counted), and a publish while disconnected fails
rather than waiting in it. (It must be above 0: 0 would leave it unbounded while
connected.)"""
FLUSH_TIMEOUT_S = 1.0
"""How long a publish may wait for a full buffer to reach the socket."""
PING_INTERVAL_S = 2
MAX_OUTSTANDING_PINGS = 2
"""A server that answers no PING for about 2 x 2 s is taken as gone."""
CLOSE_TIMEOUT_S = 0.5
"""For what is queued to go out and nats-py's close, at shutdown."""
STOP_POLL_S = 0.05
"""How often a task that nats-py kept from its cancellation is cancelled again."""


def connect_options(options: BusOptions) -> dict[str, Any]:
    """nats-py's ``connect`` arguments for ``options``, but for the callbacks."""
    chosen: dict[str, Any] = {
        "servers": list(options.servers),
        "name": options.name,
        "no_echo": True,
        "allow_reconnect": True,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": options.reconnect_wait_s,
        "connect_timeout": options.connect_timeout_s,
        "ping_interval": PING_INTERVAL_S,
        "max_outstanding_pings": MAX_OUTSTANDING_PINGS,
        "pending_size": PENDING_SIZE_BYTES,
        "flush_timeout": FLUSH_TIMEOUT_S,
    }
    if options.credentials is not None:
        chosen["user_credentials"] = str(options.credentials)
    elif options.nkey_file is not None:
        chosen["nkeys_seed"] = str(options.nkey_file)
    if options.tls_ca is not None:
        chosen["tls"] = ssl.create_default_context(cafile=str(options.tls_ca))
    return chosen


class _Client(Client):
    """nats-py's client, but a message it cannot read is skipped and counted: its read
    loop ends at any exception (in 2.16: a header block cut short, a status line or a
    reply subject that is not UTF-8, from anyone allowed to publish on a subject we
    hear), and the connection then stays open and deaf until the ping check gives it
    up, some 6 s later."""

    def __init__(self, on_malformed: Callable[[Exception], None]) -> None:
        super().__init__()
        self._on_malformed = on_malformed

    async def _process_msg(self, *args: Any, **kwargs: Any) -> None:
        try:
            await super()._process_msg(*args, **kwargs)
        except Exception as error:
            self._on_malformed(error)

    async def _attempt_reconnect(self) -> None:
        """nats-py's, once the connection is dropped at once: it closes the socket the
        polite way and waits for it, and a server that hangs (stopped, or behind a black
        hole) never drains what a busy client wrote, so the wait lasted until it woke
        (the relay published nothing meanwhile, saying it was connected, and never moved
        to its other servers: found by review). Aborted, the socket goes now."""
        self._abort_transport()
        await super()._attempt_reconnect()

    async def _connect_to_server(self, *args: Any, **kwargs: Any) -> None:
        """nats-py's, once the last try's connection is dropped: a try that timed out
        (a hung server accepts the connection, then says nothing) left it open, and the
        next try's replaced it, unclosed (a ResourceWarning when collected)."""
        self._abort_transport()
        await super()._connect_to_server(*args, **kwargs)

    def _abort_transport(self) -> None:
        writer = getattr(self._transport, "_io_writer", None)
        if writer is not None:
            writer.transport.abort()


class NatsThread:
    def __init__(
        self,
        options: BusOptions,
        subjects: Sequence[str],
        bridge: Bridge,
        trio_token: trio.lowlevel.TrioToken,
        wake_trio: Callable[[], None],
        on_exit: Callable[[], None],
    ) -> None:
        """``wake_trio`` runs on the Trio thread when ``bridge.incoming`` has news;
        ``on_exit`` runs on the Trio thread too, once the NATS thread's loop is closed."""
        self._options = options
        self._subjects = tuple(subjects)
        self._bridge = bridge
        self._trio_token = trio_token
        self._wake_trio = wake_trio
        self._on_exit = on_exit
        self._loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()
        self._out_ready = asyncio.Event()
        self._nc: Client | None = None
        self._ever_connected = False
        self._close_deadline = 0.0
        """Until when (the loop's time) a closing session is left to send what is queued;
        0 when none is closing."""
        self._quiet = False
        """Whether an error was logged as a warning since the last connect."""
        self._requests: set[asyncio.Task[None]] = set()
        self.thread = threading.Thread(
            target=self._main, name=f"mcrelay-bus-{options.name}", daemon=True
        )

    def start(self) -> None:
        self.thread.start()

    def wake(self) -> None:
        """From the Trio thread: ``bridge.outgoing`` has news."""
        with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to wake
            self._loop.call_soon_threadsafe(self._woken)

    def stop(self) -> None:
        """From the Trio thread: publish what is queued, close, end the thread."""
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._stop.set)

    def _main(self) -> None:
        try:
            with asyncio.Runner(loop_factory=lambda: self._loop) as runner:
                runner.run(self._serve())
        except Exception:
            log.exception("the NATS thread failed")
        finally:
            self._to_trio(self._on_exit)

    async def _serve(self) -> None:
        sessions = asyncio.create_task(self._sessions())
        sender = asyncio.create_task(self._send_loop())
        await self._stop.wait()
        self._bridge.state = "closed"
        # The session sends what is still queued, then closes the connection.
        await self._end(sessions)
        await self._end(sender)

    async def _end(self, task: asyncio.Task[None]) -> None:
        """Cancels ``task`` until it has ended, but not while a session closes within
        its CLOSE_TIMEOUT_S. nats-py swallows a cancellation in places: between two
        tries to connect (in its own close), and while a publish waits for room in its
        buffer (_flush_pending)."""
        while not task.done():
            if self._loop.time() >= self._close_deadline:
                task.cancel()
            await asyncio.wait([task], timeout=STOP_POLL_S)

    async def _sessions(self) -> None:
        while not self._stop.is_set():
            nc = _Client(self._malformed)
            lost = asyncio.Event()
            try:
                await self._session(nc, lost)
            except Exception as error:
                self._count_error(error)
            finally:
                await self._close(nc)  # with _nc still set, so that what is queued goes
                self._nc = None
            self._disconnected()
            await asyncio.sleep(self._options.reconnect_wait_s)

    async def _session(self, nc: Client, lost: asyncio.Event) -> None:
        async def closed() -> None:
            lost.set()

        self._nc = nc
        await nc.connect(
            **connect_options(self._options),
            error_cb=self._on_error,
            disconnected_cb=self._on_disconnected,
            reconnected_cb=self._on_reconnected,
            closed_cb=closed,
        )
        self._bridge.max_payload = nc.max_payload
        for subject in self._subjects:
            await nc.subscribe(subject, cb=self._on_message)
        # nats-py's flush writes its PING straight to the socket, ahead of the SUBs
        # still in its buffer: the first PONG only says the flusher has since written
        # them, the second that the server has them. (With one, a message published
        # right after CONNECTED was lost about once in 100 connects on a loaded machine.)
        timeout = math.ceil(self._options.connect_timeout_s)
        await nc.flush(timeout=timeout)
        await nc.flush(timeout=timeout)
        self._connected()
        await lost.wait()

    async def _close(self, nc: Client) -> None:
        """Sends what is queued if connected (at shutdown), then closes, in bounded time."""
        self._close_deadline = self._loop.time() + CLOSE_TIMEOUT_S
        try:
            async with asyncio.timeout_at(self._close_deadline):
                # nats-py may swallow the timeout's cancellation: the deadline is looked at too.
                while (
                    nc.is_connected
                    and self._bridge.outgoing
                    and self._loop.time() < self._close_deadline
                ):
                    await self._send(self._bridge.outgoing.popleft())
                await nc.close()
        except Exception as error:
            log.debug("closing the NATS connection: %r", error)
        finally:
            self._close_deadline = 0.0

    def _connected(self) -> None:
        if self._bridge.state == "connected" or self._stop.is_set():
            return
        if self._ever_connected:
            self._bridge.reconnects += 1
        self._ever_connected = True
        self._quiet = False
        self._bridge.state = "connected"
        log.info(
            "connected to NATS at %s", server_said(self._nc.connected_url if self._nc else None)
        )
        self._push(BusEvent.CONNECTED)

    def _disconnected(self) -> None:
        if self._bridge.state != "connected":
            return
        self._bridge.state = "disconnected"
        self._bridge.disconnects += 1
        log.warning("disconnected from NATS; envelopes are dropped until it is back")
        self._push(BusEvent.DISCONNECTED)

    async def _on_disconnected(self) -> None:
        self._disconnected()

    async def _on_reconnected(self) -> None:
        self._connected()

    async def _on_error(self, error: Exception) -> None:
        self._count_error(error)

    def _count_error(self, error: BaseException) -> None:
        """Counted always; logged as a warning once per outage, and then at debug level."""
        self._bridge.errors += 1
        level = logging.DEBUG if self._quiet else logging.WARNING
        self._quiet = True
        log.log(level, "NATS: %s", error or type(error).__name__)

    def _malformed(self, error: Exception) -> None:
        self._bridge.malformed += 1
        log.debug("a NATS message nats-py could not read: %r", error)

    async def _on_message(self, msg: Msg) -> None:
        bridge = self._bridge
        if msg.headers:
            # The server's status (503: no responders, answering a hello no relay heard
            # yet). Envelopes never carry headers.
            bridge.status_messages += 1
            return
        size = len(msg.data)
        if size > self._options.max_message_bytes:
            bridge.receive_too_large += 1
            return
        if (
            len(bridge.incoming) >= bridge.queue_limit
            or bridge.received_bytes - bridge.taken_bytes + size > bridge.queue_limit_bytes
        ):
            bridge.receive_overflow += 1
            return
        bridge.received += 1
        bridge.received_bytes += size
        self._push(Incoming(msg.subject, msg.data, msg.reply))

    def _push(self, item: Incoming | BusEvent) -> None:
        bridge = self._bridge
        bridge.incoming.append(item)
        if not bridge.in_wake_pending:
            bridge.in_wake_pending = True
            self._to_trio(self._wake_trio)

    def _to_trio(self, callback: Callable[..., None], *args: Any) -> None:
        with contextlib.suppress(trio.RunFinishedError):
            self._trio_token.run_sync_soon(callback, *args)

    def _woken(self) -> None:
        self._bridge.out_wake_pending = False
        self._out_ready.set()

    async def _send_loop(self) -> None:
        outgoing = self._bridge.outgoing
        while not self._stop.is_set():
            await self._out_ready.wait()
            self._out_ready.clear()
            while outgoing and not self._stop.is_set():
                await self._send(outgoing.popleft())

    async def _send(self, item: Publish | Request) -> None:
        nc = self._nc if self._nc is not None and self._nc.is_connected else None
        if isinstance(item, Request):
            if nc is None:
                self._to_trio(item.answer, None)
                return
            task = asyncio.create_task(self._request(nc, item))
            self._requests.add(task)
            task.add_done_callback(self._requests.discard)
            return
        dropped = self._bridge.dropped
        if nc is None:
            dropped["disconnected"] += 1
            return
        try:
            await nc.publish(item.subject, item.data, reply=item.reply)
        except MaxPayloadError:
            dropped["too_large"] += 1
        except Exception as error:
            dropped["error"] += 1
            self._count_error(error)
        else:
            self._bridge.published += 1

    async def _request(self, nc: Client, item: Request) -> None:
        reply = None
        try:
            msg = await nc.request(item.subject, item.data, timeout=item.timeout_s)
            reply = msg.data
        except (NatsTimeoutError, NoRespondersError):
            pass
        except Exception as error:
            self._count_error(error)
        finally:
            self._to_trio(item.answer, reply)


def server_said(url: ParseResult | None) -> str:
    """The server nats-py is connected to, for the log: its URL without credentials
    (the log said ``ParseResult(scheme='nats', ...)``: found by review)."""
    return "?" if url is None else f"{url.scheme}://{url.hostname}:{url.port}"
