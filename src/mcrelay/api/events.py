"""``GET /v1/events``: the relay's events as Server-Sent Events."""

import json
import weakref
from collections.abc import AsyncIterator
from typing import Any

import trio
from quart import Blueprint, Response, jsonify, request

from mcrelay.api.context import api_context
from mcrelay.api.serialize import error_json, rfc3339
from mcrelay.core.events import EventHub, OperatorEvent

blueprint = Blueprint("events", __name__)

HEARTBEAT_S = 15.0
"""A comment line this often, so proxies keep the stream and dead peers are noticed."""
SUBSCRIBERS_RETRY_AFTER_S = 5


def encode_frame(event: OperatorEvent) -> bytes:
    """The event as one Server-Sent Events frame (the hub calls it once per event)."""
    data = {"id": event.id, "event": event.kind, "time": rfc3339(event.time), **event.data}
    return f"id: {event.id}\nevent: {event.kind}\ndata: {json.dumps(data)}\n\n".encode()


def sse_frame(event: OperatorEvent) -> bytes:
    return event.frame or encode_frame(event)


@blueprint.get("/v1/events")
async def stream_events() -> Response | tuple[Response, int]:
    headers = {"Cache-Control": "no-cache"}
    if request.method == "HEAD":
        # Quart routes HEAD here too; an endless body would never finish the response.
        return Response(b"", mimetype="text/event-stream", headers=headers)
    context = api_context()
    hub = context.relay.events
    limit = context.relay.config.api_max_event_subscribers
    if hub.subscribers + len(context.streams_starting) >= limit:
        context.subscribers_refused += 1
        message = f"{limit} event streams are open, as many as the relay serves"
        response = jsonify(error_json("too_many_subscribers", message))
        response.headers["Retry-After"] = str(SUBSCRIBERS_RETRY_AFTER_S)
        return response, 503
    frames = EventFrames(hub, context.streams_starting)
    response = Response(frames, mimetype="text/event-stream", headers=headers)
    response.timeout = None
    return response


class EventFrames:
    """A stream's body. It counts against the cap from the moment it is made (it is in
    ``starting``, so requests that come together cannot all pass) until it subscribes,
    or until it is dropped unsent (``starting`` holds it weakly)."""

    def __init__(self, hub: EventHub, starting: "weakref.WeakSet[Any]") -> None:
        self._hub = hub
        self._starting = starting
        starting.add(self)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._frames()

    async def _frames(self) -> AsyncIterator[bytes]:
        with self._hub.subscribe() as subscription:
            self._starting.discard(self)
            yield b": mcrelay events\n\n"
            while True:
                try:
                    with trio.move_on_after(HEARTBEAT_S) as idle:
                        event = await subscription.receive()
                except trio.EndOfChannel:  # the relay stops in order: the body ends whole
                    return
                yield b": heartbeat\n\n" if idle.cancelled_caught else sse_frame(event)
