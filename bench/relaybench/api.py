"""The daemon's control API, as the harness reads it: readiness, status, the client list."""

import time
from typing import Any

import httpx

REQUEST_TIMEOUT_S = 30.0


class Api:
    """A keep-alive HTTP client for one daemon's API (``--api 127.0.0.1:PORT``)."""

    def __init__(self, port: int) -> None:
        self._http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=REQUEST_TIMEOUT_S)

    def close(self) -> None:
        self._http.close()

    def ready(self) -> bool:
        try:
            return self._http.get("/readyz", timeout=1.0).status_code == 200
        except httpx.TransportError:
            return False

    def status(self) -> dict[str, Any]:
        response = self._http.get("/v1/status")
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    def statistics(self) -> dict[str, Any]:
        """The relay's counters: traffic, messages relayed, drops by reason, queue depths."""
        statistics: dict[str, Any] = self.status()["statistics"]
        return statistics

    def relays(self) -> dict[str, Any]:
        """``GET /v1/relays``: the federation's status and its relays."""
        response = self._http.get("/v1/relays")
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    def client_count(self) -> int:
        count: int = self.status()["clients"]
        return count

    def clients(self) -> list[dict[str, Any]]:
        """The first page of ``GET /v1/clients`` (1,000 clients)."""
        response = self._http.get("/v1/clients")
        response.raise_for_status()
        clients: list[dict[str, Any]] = response.json()["clients"]
        return clients

    def timed_clients(self, limit: int | None) -> tuple[float, int]:
        """Seconds one ``GET /v1/clients`` took (body read and parsed), and the clients in it."""
        params = {} if limit is None else {"limit": str(limit)}
        started = time.perf_counter()
        response = self._http.get("/v1/clients", params=params)
        response.raise_for_status()
        listed = len(response.json()["clients"])
        return time.perf_counter() - started, listed


def counter_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """The relay's counters over an interval: traffic, relayed, and the drops that happened."""
    keys = ("datagrams_in", "datagrams_out", "messages_relayed", "copies_sent")
    dropped = {
        reason: count - before["dropped"].get(reason, 0)
        for reason, count in after["dropped"].items()
        if count - before["dropped"].get(reason, 0)
    }
    return {**{key: after[key] - before[key] for key in keys}, "dropped": dropped}
