"""``GET /v1/events``: the relay's events as Server-Sent Events."""

import json
from collections.abc import AsyncIterator

import trio
from quart import Blueprint, Response, request

from mcrelay.api.context import api_context
from mcrelay.api.serialize import rfc3339
from mcrelay.daemon.events import RelayEvent

blueprint = Blueprint("events", __name__)

HEARTBEAT_S = 15.0
"""A comment line this often, so proxies keep the stream and dead peers are noticed."""


def encode_frame(event: RelayEvent) -> bytes:
    """The event as one Server-Sent Events frame (the hub calls it once per event)."""
    data = {"id": event.id, "event": event.kind, "time": rfc3339(event.time), **event.data}
    return f"id: {event.id}\nevent: {event.kind}\ndata: {json.dumps(data)}\n\n".encode()


def sse_frame(event: RelayEvent) -> bytes:
    return event.frame or encode_frame(event)


@blueprint.get("/v1/events")
async def stream_events() -> Response:
    headers = {"Cache-Control": "no-cache"}
    if request.method == "HEAD":
        # Quart routes HEAD here too; an endless body would never finish the response.
        return Response(b"", mimetype="text/event-stream", headers=headers)
    hub = api_context().relay.events

    async def frames() -> AsyncIterator[bytes]:
        with hub.subscribe() as subscription:
            yield b": mcrelay events\n\n"
            while True:
                with trio.move_on_after(HEARTBEAT_S) as idle:
                    event = await subscription.receive()
                yield b": heartbeat\n\n" if idle.cancelled_caught else sse_frame(event)

    response = Response(frames(), mimetype="text/event-stream", headers=headers)
    response.timeout = None
    return response
