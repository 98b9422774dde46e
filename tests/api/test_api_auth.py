"""The bearer token: every request but the health checks needs it once one is set."""

from pathlib import Path

import httpx
import pytest
from api_support import TOKEN, api_client, api_daemon, assert_json_error

PROTECTED: list[tuple[str, str]] = [
    ("GET", "/v1/status"),
    ("GET", "/metrics"),
    ("GET", "/v1/openapi.json"),
    ("GET", "/v1/clients"),
    ("GET", "/v1/clients?limit=bogus"),
    ("GET", "/v1/clients/127.0.0.1:1"),
    ("DELETE", "/v1/clients/127.0.0.1:1"),
    ("GET", "/v1/bans"),
    ("DELETE", "/v1/bans/127.0.0.1:1"),
    ("POST", "/v1/messages"),
    ("GET", "/v1/events"),
    ("GET", "/no/such/route"),
    ("PUT", "/v1/clients"),
]
BAD_AUTHORIZATION: list[str | bytes | None] = [  # bytes: sent as they are, not ASCII
    None,
    "",
    "Bearer",
    "Bearer wrong",
    "Bearer s3cre",
    "Bearer s3cretX",
    "Bearer S3CRET",
    "s3cret",
    "Basic czNjcmV0",
    "Basic s3cret",
    "Token s3cret",
    "Bearer s3cret, Bearer s3cret",
    "Bearer sécret".encode(),
    "Bearer s\xe9cret".encode("latin-1"),
]


def headers_with(authorization: str | bytes | None) -> dict[bytes, bytes]:
    if authorization is None:
        return {}
    if isinstance(authorization, str):
        authorization = authorization.encode("ascii")
    return {b"Authorization": authorization}


async def test_every_protected_route_refuses_a_missing_or_wrong_token(
    relay_key_file: Path,
) -> None:
    async with api_daemon(relay_key_file, api_token=TOKEN) as api:
        async with api_client(api.daemon) as anonymous:
            for authorization in BAD_AUTHORIZATION:
                for method, path in PROTECTED:
                    response = await anonymous.request(
                        method, path, headers=headers_with(authorization), json={"text": "x"}
                    )
                    error = assert_json_error(response, 401, "unauthorized")
                    assert "Bearer" in error["message"]
                    assert response.headers["WWW-Authenticate"].startswith("Bearer")
        # Nothing a refused request asked for happened.
        assert api.relay.statistics().counters.messages_relayed == 0
        assert api.relay.events.subscribers == 0


async def test_the_right_token_is_accepted_everywhere(relay_key_file: Path) -> None:
    async with api_daemon(relay_key_file, api_token=TOKEN) as api:
        http = api.http
        assert http.headers["Authorization"] == f"Bearer {TOKEN}"
        assert (await http.get("/v1/status")).status_code == 200
        assert (await http.get("/metrics")).status_code == 200
        assert (await http.get("/v1/openapi.json")).status_code == 200
        assert (await http.get("/v1/clients")).status_code == 200
        assert (await http.get("/v1/bans")).status_code == 200
        assert (await http.post("/v1/messages", json={"text": "hi"})).json() == {"recipients": 0}
        # Past the token check, the ordinary answers: validation and not-found errors.
        assert_json_error(await http.get("/v1/clients?limit=bogus"), 400, "bad_query")
        assert_json_error(await http.get("/v1/clients/127.0.0.1:1"), 404, "not_found")
        assert_json_error(await http.delete("/v1/bans/127.0.0.1:1"), 404, "not_found")
        assert_json_error(await http.get("/no/such/route"), 404, "not_found")
        async with http.stream("GET", "/v1/events") as stream:
            assert stream.status_code == 200


async def test_health_checks_need_no_token(relay_key_file: Path) -> None:
    async with api_daemon(relay_key_file, api_token=TOKEN) as api:
        async with api_client(api.daemon) as anonymous:
            for authorization in [*BAD_AUTHORIZATION, f"Bearer {TOKEN}"]:
                headers = headers_with(authorization)
                healthz = await anonymous.get("/healthz", headers=headers)
                assert healthz.status_code == 200
                assert healthz.json() == {"status": "ok"}
                readyz = await anonymous.get("/readyz", headers=headers)
                assert readyz.status_code == 200
                assert readyz.json() == {"status": "ready"}


async def test_without_a_token_no_header_is_needed(relay_key_file: Path) -> None:
    async with api_daemon(relay_key_file) as api:
        async with api_client(api.daemon, "anything") as with_header:
            assert (await with_header.get("/v1/status")).status_code == 200
        assert "Authorization" not in api.http.headers
        assert (await api.http.get("/v1/status")).status_code == 200


async def test_a_request_with_a_bad_token_never_reaches_the_relay(
    relay_key_file: Path,
) -> None:
    async with api_daemon(relay_key_file, api_token=TOKEN) as api:
        async with api_client(api.daemon, "wrong") as intruder:
            response = await intruder.post("/v1/messages", json={"text": "spoofed"})
            assert_json_error(response, 401, "unauthorized")
            with pytest.raises(httpx.HTTPStatusError):
                response.raise_for_status()
        assert api.relay.statistics().counters.messages_relayed == 0


async def test_the_scheme_is_case_insensitive(relay_key_file: Path) -> None:
    async with api_daemon(relay_key_file, api_token=TOKEN) as api:
        async with api_client(api.daemon) as anonymous:
            for scheme in ("bearer", "BEARER", "Bearer"):
                response = await anonymous.get(
                    "/v1/status", headers={"Authorization": f"{scheme} {TOKEN}"}
                )
                assert response.status_code == 200
