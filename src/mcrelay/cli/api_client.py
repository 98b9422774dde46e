"""The CLI's side of the control API: requests, errors as exceptions, the event stream."""

import json
import os
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import trio

from mcrelay.cli.options import UsageError
from mcrelay.cli.status import ApiAnswerError, ApiError, ApiUnreachable
from mcrelay.cli.trust import check_api_socket
from mcrelay.files import FileError, read_token_file
from mcrelay.settings.address import parse_api_address

REQUEST_TIMEOUT_S = 10.0
"""Connecting, and each write (httpx's timeout); reads have the whole answer's deadline."""
ANSWER_DEADLINE_S = 30.0
"""A whole answer: a server trickling a byte at a time never trips a read's timeout."""
MAX_ANSWER_BYTES = 256 * 1024 * 1024
"""The largest answer read (the clients of a full relay take some 20 MB)."""
MAX_EVENT_BYTES = 1024 * 1024
"""The largest event-stream line, or event, read (and of an error's body, what is read)."""
REQUEST_TIMEOUT = httpx.Timeout(REQUEST_TIMEOUT_S, read=None)
"""A read waits within :data:`ANSWER_DEADLINE_S` (a read timeout of 10 s ended the wait for
a stopped daemon first, with an empty message: found by review); the event stream as
long as it takes (its head, within that deadline)."""
JSON_ERRORS = (ValueError, RecursionError)
"""What parsing an answer may raise: deep nesting is a RecursionError, not a ValueError."""


def read_token(path: Path) -> str:
    try:
        return read_token_file(path, any_owner=True)  # sent to the daemon, which checks its own
    except FileError as exc:
        raise UsageError(str(exc)) from None


@asynccontextmanager
async def open_api(address: str, token: str | None) -> AsyncIterator["Api"]:
    parsed = parse_api_address(address)
    if parsed is None:
        raise ApiUnreachable("the API address is 'off'; give --api or MCRELAY_API")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if parsed.path is not None:
        check_api_socket(parsed.path, os.geteuid())
        transport = httpx.AsyncHTTPTransport(uds=str(parsed.path))
        base_url = "http://mcrelay"
    else:
        transport = httpx.AsyncHTTPTransport()
        base_url = f"http://{parsed}"
    async with httpx.AsyncClient(
        transport=transport, base_url=base_url, headers=headers, timeout=REQUEST_TIMEOUT
    ) as client:
        yield Api(client, str(parsed), has_token=token is not None)


class Api:
    def __init__(self, client: httpx.AsyncClient, where: str, *, has_token: bool = True) -> None:
        self._client = client
        self.where = where
        self._has_token = has_token

    def _error(self, status: int, body: bytes) -> ApiError:
        message = _error_message(status, body)
        if status == 401 and not self._has_token:
            # Said as the API's message alone, it did not tell what to do (found by review).
            message += "; this API needs its token: give --api-token-file or MCRELAY_API_TOKEN_FILE"
        return ApiError(status, message)

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        with trio.move_on_after(ANSWER_DEADLINE_S):
            status, body = await self._request(method, path, **kwargs)
            if status >= 400:
                raise self._error(status, body)
            try:
                return json.loads(body)
            except JSON_ERRORS:
                raise ApiAnswerError(f"the API at {self.where} answered with no JSON") from None
        raise self._late()

    def _late(self) -> ApiUnreachable:
        return ApiUnreachable(
            f"the daemon's API at {self.where} did not answer within {ANSWER_DEADLINE_S:.0f} s"
        )

    def _unreachable(self, exc: httpx.TransportError) -> ApiUnreachable:
        # A timeout's message is empty.
        return ApiUnreachable(
            f"cannot reach the daemon's API at {self.where}: {str(exc) or 'timed out'}"
        )

    async def _request(self, method: str, path: str, **kwargs: Any) -> tuple[int, bytes]:
        """The answer's status and body (at most :data:`MAX_ANSWER_BYTES`)."""
        try:
            async with self._client.stream(method, path, **kwargs) as response:
                body = bytearray()
                await _read_into(body, response, MAX_ANSWER_BYTES)
                if len(body) > MAX_ANSWER_BYTES:
                    raise ApiAnswerError(
                        f"the API at {self.where} answered with over {MAX_ANSWER_BYTES} bytes"
                    )
                return response.status_code, bytes(body)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None

    async def events(self) -> AsyncGenerator[dict[str, Any], None]:
        """Follow ``/v1/events``; one dict per event, until the stream ends.

        A daemon that stops in order ends the stream whole, after a last
        ``relay_stopping`` event; a stream cut short is :class:`ApiUnreachable`."""
        try:
            async with AsyncExitStack() as stack:
                response: httpx.Response | None = None
                with trio.move_on_after(ANSWER_DEADLINE_S):  # its head, at least, in time
                    response = await stack.enter_async_context(
                        self._client.stream("GET", "/v1/events")
                    )
                if response is None:
                    raise self._late()
                if response.is_error:
                    body = bytearray()
                    with trio.move_on_after(ANSWER_DEADLINE_S):  # what came by then
                        await _read_into(body, response, MAX_EVENT_BYTES)
                    status = response.status_code
                    raise self._error(status, bytes(body[:MAX_EVENT_BYTES]))
                data: list[str] = []
                size = 0
                last = ""
                try:
                    async for line in self._lines(response):
                        if line.startswith("data:"):
                            data.append(line.removeprefix("data:").strip())
                            size += len(line)
                            if size > MAX_EVENT_BYTES:
                                raise self._too_long()
                        elif not line and data:
                            event = self._event("\n".join(data))
                            last = str(event.get("event"))
                            yield event
                            data, size = [], 0
                except (httpx.RemoteProtocolError, httpx.ReadError):
                    raise self._cut() from None
                # Cut before the end of its body, reset, or ended by a proxy without the
                # daemon's word: not an orderly stop (each was taken for one, exit 0:
                # found by review, twice).
                if last != "relay_stopping":
                    raise self._cut()
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None

    def _cut(self) -> ApiUnreachable:
        return ApiUnreachable(
            f"the event stream from {self.where} was cut short: the daemon died or was "
            "stopped at once, or the connection broke"
        )

    async def _lines(self, response: httpx.Response) -> AsyncGenerator[str, None]:
        """The stream's lines, each at most :data:`MAX_EVENT_BYTES` (httpx's own line
        reader holds an endless line whole)."""
        pending = ""
        async for text in response.aiter_text():
            text = pending + text
            # A CR last may be the first half of a CRLF split between two reads.
            cut = len(text) - text.endswith("\r")
            *lines, pending = text[:cut].replace("\r\n", "\n").replace("\r", "\n").split("\n")
            pending += text[cut:]
            for line in lines:
                yield line
            if len(pending) > MAX_EVENT_BYTES:
                raise self._too_long()
        if pending.endswith("\r"):  # the stream's last line, ended by a CR
            yield pending[:-1]

    def _too_long(self) -> ApiAnswerError:
        return ApiAnswerError(
            f"the API at {self.where} sent an event of over {MAX_EVENT_BYTES} bytes"
        )

    def _event(self, data: str) -> dict[str, Any]:
        try:
            event = json.loads(data)
        except JSON_ERRORS:
            event = None
        if not isinstance(event, dict):
            raise ApiAnswerError(f"the API at {self.where} sent an event that is no JSON object")
        return event


async def _read_into(body: bytearray, response: httpx.Response, limit: int) -> None:
    """Add ``response``'s body to ``body`` until its end, or once it holds over ``limit``
    bytes (the caller tells which)."""
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > limit:
            return


def _error_message(status: int, body: bytes) -> str:
    try:
        error = json.loads(body)["error"]
        message = f"{error['message']} ({status} {error['code']})"
        if "ids" in error:
            message += ": " + ", ".join(error["ids"])
        return message
    except (*JSON_ERRORS, KeyError, TypeError):
        return f"HTTP {status}: {body[:200].decode('utf-8', 'replace')}"
