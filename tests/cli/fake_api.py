"""A stand-in for the daemon's API on loopback: canned JSON answers by method and path, and
the requests it was sent, for the commands whose server side is tested on its own.

HTTP/1.1 by h11 (httpx's and hypercorn's own parser) on a Trio listener, port 0.
"""

import functools
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import h11
import trio

Answers = dict[tuple[str, str], tuple[int, Any]]
"""(method, path) -> (status, JSON body)."""


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    body: Any


@dataclass
class FakeApi:
    answers: Answers
    requests: list[Request] = field(default_factory=list)
    address: str = ""
    """What to give ``--api``: 127.0.0.1:PORT."""

    async def serve(self, stream: trio.SocketStream) -> None:
        async with stream:
            connection = h11.Connection(h11.SERVER)
            while (request := await _receive(connection, stream)) is not None:
                status, answer = self._answer(request)
                data = json.dumps(answer).encode()
                headers = [("content-type", "application/json"), ("content-length", str(len(data)))]
                for event in (
                    h11.Response(status_code=status, headers=headers),
                    h11.Data(data=data),
                    h11.EndOfMessage(),
                ):
                    await stream.send_all(connection.send(event) or b"")
                if connection.our_state is h11.MUST_CLOSE:
                    return
                connection.start_next_cycle()

    def _answer(self, request: Request) -> tuple[int, Any]:
        self.requests.append(request)
        error = {"error": {"code": "not_found", "message": f"no {request.path} here"}}
        return self.answers.get((request.method, request.path), (404, error))


async def _receive(connection: h11.Connection, stream: trio.SocketStream) -> Request | None:
    """The next request on the connection, or None once the client has closed it."""
    head: h11.Request | None = None
    body = b""
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            connection.receive_data(await stream.receive_some())
        elif isinstance(event, h11.Request):
            head = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            assert head is not None
            target = urlsplit(head.target.decode("ascii"))
            return Request(
                head.method.decode("ascii"),
                unquote(target.path),
                dict(parse_qsl(target.query)),
                json.loads(body) if body else None,
            )
        else:
            return None  # ConnectionClosed


@asynccontextmanager
async def fake_api(answers: Answers) -> AsyncIterator[FakeApi]:
    api = FakeApi(answers)
    async with trio.open_nursery() as nursery:
        serve = functools.partial(trio.serve_tcp, api.serve, 0, host="127.0.0.1")
        listeners = await nursery.start(serve)
        api.address = f"127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        yield api
        nursery.cancel_scope.cancel()
