"""The CLI's side of the control API: requests, errors as exceptions, the event stream."""

import json
import os
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from mcrelay.cli.options import UsageError
from mcrelay.cli.status import ApiAnswerError, ApiError, ApiUnreachable
from mcrelay.cli.trust import check_api_socket
from mcrelay.files import FileError, read_token_file
from mcrelay.settings.address import parse_api_address

REQUEST_TIMEOUT_S = 10.0


def read_token(path: Path) -> str:
    try:
        return read_token_file(path)
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
        transport=transport, base_url=base_url, headers=headers, timeout=REQUEST_TIMEOUT_S
    ) as client:
        yield Api(client, str(parsed))


class Api:
    def __init__(self, client: httpx.AsyncClient, where: str) -> None:
        self._client = client
        self.where = where

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self._client.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ApiUnreachable(f"cannot reach the daemon's API at {self.where}: {exc}") from None
        if response.is_error:
            raise ApiError(response.status_code, _error_message(response))
        try:
            return response.json()
        except ValueError:
            raise ApiAnswerError(f"the API at {self.where} answered with no JSON") from None

    async def events(self) -> AsyncGenerator[dict[str, Any], None]:
        """Follow ``/v1/events``; one dict per event, until the stream ends.

        A daemon that stops closes the stream in the middle of its (endless) body: that
        is the end of the events, not a failure to reach the daemon."""
        try:
            async with self._client.stream("GET", "/v1/events", timeout=None) as response:
                if response.is_error:
                    await response.aread()
                    raise ApiError(response.status_code, _error_message(response))
                data: list[str] = []
                try:
                    async for line in response.aiter_lines():
                        if line.startswith("data:"):
                            data.append(line.removeprefix("data:").strip())
                        elif not line and data:
                            yield self._event("\n".join(data))
                            data = []
                except httpx.RemoteProtocolError:
                    return  # closed before the end of the body
        except httpx.TransportError as exc:
            raise ApiUnreachable(f"cannot reach the daemon's API at {self.where}: {exc}") from None

    def _event(self, data: str) -> dict[str, Any]:
        try:
            event = json.loads(data)
        except ValueError:
            event = None
        if not isinstance(event, dict):
            raise ApiAnswerError(f"the API at {self.where} sent an event that is no JSON object")
        return event


def _error_message(response: httpx.Response) -> str:
    try:
        error = response.json()["error"]
        message = f"{error['message']} ({response.status_code} {error['code']})"
        if "ids" in error:
            message += ": " + ", ".join(error["ids"])
        return message
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}: {response.text[:200]}"
