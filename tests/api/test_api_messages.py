"""``POST /v1/messages``: a message from the relay itself, to everyone or to chosen clients."""

import base64
import json
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from api_support import ApiDaemon, api_daemon, assert_json_error, client_id
from cryptography.hazmat.primitives.asymmetric import rsa

from mcrelay.api.app import MAX_BODY_BYTES
from mcrelay.client import MessageReceived, Participant, PeerPresent
from mcrelay.daemon.legacy import sealing
from mcrelay.daemon.legacy.profile import identity
from mcrelay.daemon.legacy.sealing import SEAL_INLINE_MAX
from mcrelay.protocol.addresses import RELAY_ITSELF
from mcrelay.protocol.legacy.events import PeerJoined
from support import WAIT_S, dropped, hold_decryption, join, next_event, wait_until
from thread_workers import use_thread_workers

Keys = list[rsa.RSAPrivateKey]
JSON = {"Content-Type": "application/json"}


@asynccontextmanager
async def two_participants(
    relay_key_file: Path, keys: Keys, **overrides: Any
) -> AsyncIterator[tuple[ApiDaemon, Participant, Participant]]:
    async with api_daemon(relay_key_file, **overrides) as api:
        async with join(api.relay, keys[1]) as a, join(api.relay, keys[2]) as b:
            assert await next_event(a) == PeerJoined(b.address)
            assert await next_event(b) == PeerPresent(a.address)
            yield api, a, b


async def post_raw(api: ApiDaemon, body: bytes | str, content_type: str | None = None) -> Any:
    headers = {} if content_type is None else {"Content-Type": content_type}
    return await api.http.post("/v1/messages", content=body, headers=headers)


async def assert_nothing_pending(api: ApiDaemon, *participants: Participant) -> None:
    """A marker to everyone arrives next: nothing else was queued for them before it."""
    response = await api.http.post("/v1/messages", json={"text": "marker"})
    assert response.json() == {"recipients": len(api.relay.roster)}
    for participant in participants:
        assert await next_event(participant) == MessageReceived(RELAY_ITSELF, b"marker")


async def test_text_to_everyone(relay_key_file: Path, keys: Keys) -> None:
    async with two_participants(relay_key_file, keys) as (api, a, b):
        text = "maintenance at 18:00 ✓ — Größe 日本語"
        response = await api.http.post("/v1/messages", json={"text": text})
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert response.json() == {"recipients": 2}
        for participant in (a, b):
            assert await next_event(participant) == MessageReceived(RELAY_ITSELF, text.encode())
        assert RELAY_ITSELF == ("0.0.0.0", 0)
        counters = api.relay.statistics().counters
        assert (counters.messages_relayed, counters.copies_sent) == (1, 2)
        for participant in (a, b):
            record = (await api.http.get(f"/v1/clients/{client_id(participant.address)}")).json()
            assert record["messages_out"] == 1
            assert record["messages_in"] == 0


async def test_binary_data_to_everyone(relay_key_file: Path, keys: Keys) -> None:
    data = bytes(range(256)) * 3
    async with two_participants(relay_key_file, keys) as (api, a, b):
        body = {"data_b64": base64.b64encode(data).decode()}
        response = await api.http.post("/v1/messages", json=body)
        assert response.json() == {"recipients": 2}
        for participant in (a, b):
            assert await next_event(participant) == MessageReceived(RELAY_ITSELF, data)


async def test_empty_messages_are_sent(relay_key_file: Path, keys: Keys) -> None:
    async with two_participants(relay_key_file, keys) as (api, a, b):
        assert (await api.http.post("/v1/messages", json={"text": ""})).json()["recipients"] == 2
        assert (await api.http.post("/v1/messages", json={"data_b64": ""})).json() == {
            "recipients": 2
        }
        for participant in (a, b):
            assert await next_event(participant) == MessageReceived(RELAY_ITSELF, b"")
            assert await next_event(participant) == MessageReceived(RELAY_ITSELF, b"")


async def test_to_one_client_only(relay_key_file: Path, keys: Keys) -> None:
    async with two_participants(relay_key_file, keys) as (api, a, b):
        ident = client_id(b.address)
        response = await api.http.post("/v1/messages", json={"text": "just you", "to": [ident]})
        assert response.json() == {"recipients": 1}
        assert await next_event(b) == MessageReceived(RELAY_ITSELF, b"just you")
        # The same id twice is one recipient, one copy.
        response = await api.http.post(
            "/v1/messages", json={"data_b64": "AAE=", "to": [ident, ident]}
        )
        assert response.json() == {"recipients": 1}
        assert await next_event(b) == MessageReceived(RELAY_ITSELF, b"\x00\x01")
        await assert_nothing_pending(api, a, b)


async def test_to_both_by_id(relay_key_file: Path, keys: Keys) -> None:
    async with two_participants(relay_key_file, keys) as (api, a, b):
        to = [client_id(b.address), client_id(a.address)]
        response = await api.http.post("/v1/messages", json={"text": "both", "to": to})
        assert response.json() == {"recipients": 2}
        for participant in (a, b):
            assert await next_event(participant) == MessageReceived(RELAY_ITSELF, b"both")


async def test_unknown_recipients_are_404_and_nobody_gets_it(
    relay_key_file: Path, keys: Keys
) -> None:
    async with two_participants(relay_key_file, keys) as (api, a, b):
        to = [client_id(b.address), "127.0.0.1:1", "[::1]:9", "127.0.0.1:1"]
        response = await api.http.post("/v1/messages", json={"text": "lost", "to": to})
        error = assert_json_error(response, 404, "not_found")
        assert error["ids"] == ["127.0.0.1:1", "[::1]:9"]
        assert api.relay.statistics().counters.messages_relayed == 0
        await assert_nothing_pending(api, a, b)


async def test_over_max_message_bytes_is_413(relay_key_file: Path, keys: Keys) -> None:
    async with two_participants(relay_key_file, keys, max_message_bytes=100) as (api, a, b):
        fits = await api.http.post("/v1/messages", json={"text": "x" * 100})
        assert fits.json() == {"recipients": 2}
        for participant in (a, b):
            assert await next_event(participant) == MessageReceived(RELAY_ITSELF, b"x" * 100)
        too_large: list[dict[str, Any]] = [
            {"text": "x" * 101},
            {"text": "é" * 51},  # 51 characters, 102 bytes: the limit counts bytes
            {"data_b64": base64.b64encode(b"\x00" * 101).decode()},
            {"text": "y" * 101, "to": [client_id(a.address)]},
        ]
        for body in too_large:
            error = assert_json_error(
                await api.http.post("/v1/messages", json=body), 413, "too_large"
            )
            assert "100" in error["message"]
        assert api.relay.statistics().counters.messages_relayed == 1
        await assert_nothing_pending(api, a, b)


async def test_a_body_over_the_request_limit_is_413(relay_key_file: Path) -> None:
    async with api_daemon(relay_key_file) as api:
        body = json.dumps({"text": "z" * MAX_BODY_BYTES}).encode()
        response = await post_raw(api, body, "application/json")
        error = assert_json_error(response, 413)
        assert error["message"] == f"the body is over {MAX_BODY_BYTES} bytes"
        # Its body unread, the connection closes: the client is told so (it once sent
        # its next request into the close, and was not answered).
        assert response.headers["connection"] == "close"
        assert (await api.http.get("/v1/status")).status_code == 200


@pytest.mark.parametrize(
    "body",
    [b"", b"{", b"{'text': 'x'}", b'{"text": "x",}', b"nul", b"\xff\xfe\x00", b"\x80abc", b"[1,"],
)
async def test_bad_json_is_400(relay_key_file: Path, body: bytes) -> None:
    async with api_daemon(relay_key_file) as api:
        assert_json_error(await post_raw(api, body, "application/json"), 400, "bad_json")


@pytest.mark.parametrize("scope", ["", "all", "remote", "LOCAL"])
async def test_a_bad_scope_is_400(relay_key_file: Path, scope: str) -> None:
    async with api_daemon(relay_key_file) as api:
        response = await api.http.post("/v1/messages", params={"scope": scope}, json={"text": "x"})
        error = assert_json_error(response, 400, "bad_query")
        assert "scope" in error["message"]


async def test_wrong_content_type_is_415(relay_key_file: Path) -> None:
    body = json.dumps({"text": "x"})
    async with api_daemon(relay_key_file) as api:
        for content_type in (
            None,
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/jsonx",
            "application/problem+json",
            "text/json",
        ):
            response = await post_raw(api, body, content_type)
            assert_json_error(response, 415, "unsupported_media_type")
        assert_json_error(
            await api.http.post("/v1/messages", data={"text": "x"}), 415, "unsupported_media_type"
        )
        # Parameters of the media type are fine.
        for content_type in ("application/json; charset=utf-8", "Application/JSON"):
            response = await post_raw(api, body, content_type)
            assert response.json() == {"recipients": 0}, content_type
        assert api.relay.statistics().counters.messages_relayed == 2


BAD_SHAPES: list[str] = [
    "[]",
    '["text"]',
    '"text"',
    "1",
    "null",
    "true",
    "NaN",
    "{}",
    '{"to": ["127.0.0.1:1"]}',
    '{"text": "a", "data_b64": "YQ=="}',
    '{"text": "a", "data_b64": null}',
    '{"text": 1}',
    '{"text": null}',
    '{"text": ["a"]}',
    '{"text": {"a": 1}}',
    '{"data_b64": 5}',
    '{"data_b64": null}',
    '{"data_b64": "not base64!"}',
    '{"data_b64": "YQ"}',
    '{"data_b64": "YQ==="}',
    '{"data_b64": "Y Q=="}',
    '{"data_b64": "YQ==\\n"}',
    '{"data_b64": "é"}',
    '{"text": "a", "extra": 1}',
    '{"text": "a", "TO": []}',
    '{"text": "a", "from": "0.0.0.0:0"}',
    '{"text": "a", "to": "127.0.0.1:1"}',
    '{"text": "a", "to": []}',
    '{"text": "a", "to": null}',
    '{"text": "a", "to": [1]}',
    '{"text": "a", "to": [null]}',
    '{"text": "a", "to": [["127.0.0.1:1"]]}',
    '{"text": "\\ud800"}',
    '{"text": "ok \\udfff then"}',
]


UNKNOWN_IDS = [
    "nonsense",
    "127.0.0.1",
    "127.0.0.1:99999",
    "::1:5",
    ":5",
    "127.0.0.1:+5",
    "127.0.0.1:\u0665",
]
"""Ids are opaque strings: these name nobody, so they are 404, not a malformed body."""


async def test_recipients_no_client_has_are_404_and_send_nothing(
    relay_key_file: Path, keys: Keys
) -> None:
    async with two_participants(relay_key_file, keys) as (api, a, b):
        for unknown in UNKNOWN_IDS:
            response = await api.http.post("/v1/messages", json={"text": "a", "to": [unknown]})
            assert assert_json_error(response, 404, "not_found")["ids"] == [unknown]
        assert api.relay.statistics().counters.messages_relayed == 0
        await assert_nothing_pending(api, a, b)


async def test_bad_shapes_are_422_and_send_nothing(relay_key_file: Path, keys: Keys) -> None:
    async with two_participants(relay_key_file, keys) as (api, a, b):
        for body in BAD_SHAPES:
            response = await post_raw(api, body, "application/json")
            error = assert_json_error(response, 422, "invalid_body")
            assert error["message"], body
        assert api.relay.statistics().counters.messages_relayed == 0
        await assert_nothing_pending(api, a, b)


async def test_lone_surrogate_in_utf8_bytes_is_refused(relay_key_file: Path) -> None:
    """``\\ud800`` encoded straight into the body (CESU-8 style), not as a JSON escape."""
    async with api_daemon(relay_key_file) as api:
        body = b'{"text": "\xed\xa0\x80"}'
        response = await post_raw(api, body, "application/json")
        assert 400 <= response.status_code < 500
        assert_json_error(response, response.status_code)


async def test_deeply_nested_json_is_a_client_error(relay_key_file: Path) -> None:
    async with api_daemon(relay_key_file) as api:
        for body in (b"[" * 50_000, b'{"a":' * 10_000, b'{"text": ' + b"[" * 5_000):
            response = await post_raw(api, body, "application/json")
            assert response.status_code == 400, response.text
            assert_json_error(response, 400, "bad_json")


async def test_the_other_methods_are_405(relay_key_file: Path) -> None:
    async with api_daemon(relay_key_file) as api:
        for method in ("GET", "PUT", "DELETE", "PATCH"):
            response = await api.http.request(method, "/v1/messages")
            assert_json_error(response, 405, "method_not_allowed")


async def test_a_post_while_another_is_sealed_is_503_and_reaches_nobody(
    relay_key_file: Path, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = threading.Event()
    real = sealing.SealJob.run

    def held(*args: Any) -> Any:
        gate.wait(WAIT_S)
        return real(*args)

    use_thread_workers(monkeypatch)
    monkeypatch.setattr(sealing.SealJob, "run", held)
    async with two_participants(relay_key_file, keys) as (api, a, b), trio.open_nursery() as n:
        first: list[httpx.Response] = []

        async def post_first() -> None:
            first.append(await api.http.post("/v1/messages", json={"text": "first"}))

        n.start_soon(post_first)
        await wait_until(lambda: api.relay.statistics().pending_relays == 1)
        second = await api.http.post("/v1/messages", json={"text": "second"})
        assert_json_error(second, 503, "overloaded")
        assert second.headers["Retry-After"] == "1"
        assert dropped(api.relay, "overloaded") == 1
        gate.set()
        await wait_until(lambda: bool(first))
        assert first[0].json() == {"recipients": 2}
        for participant in (a, b):
            assert await next_event(participant) == MessageReceived(RELAY_ITSELF, b"first")
        await assert_nothing_pending(api, a, b)


async def test_a_post_when_the_crypto_stage_is_full_is_503(
    relay_key_file: Path, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = hold_decryption(monkeypatch)
    async with two_participants(relay_key_file, keys, max_pending_relays=1) as (api, a, b):
        await a.send("held in the workers")
        await wait_until(lambda: api.relay.statistics().pending_relays == 1)
        response = await api.http.post("/v1/messages", json={"text": "refused"})
        assert_json_error(response, 503, "overloaded")
        assert "Retry-After" in response.headers
        gate.set()
        assert await next_event(b) == MessageReceived(a.address, b"held in the workers")
        await assert_nothing_pending(api, a, b)


async def test_clients_messages_are_sealed_between_the_batches_of_a_large_post(
    relay_key_file: Path, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With one worker, a client's message that completes while a post is sealed is
    decrypted after the post's current batch, not after the whole post."""
    order: list[str] = []
    first_batch = threading.Event()
    real_seal, real_open = sealing.SealJob.run, sealing.OpenJob.run

    def seal(job: sealing.SealJob, store: sealing.KeyStore) -> Any:
        order.append("post batch" if job.sender == RELAY_ITSELF else "client copies")
        if len(order) == 1:
            first_batch.wait(WAIT_S)
        return real_seal(job, store)

    def open_and_seal(job: sealing.OpenJob, store: sealing.KeyStore) -> Any:
        order.append("client message")
        return real_open(job, store)

    use_thread_workers(monkeypatch)
    monkeypatch.setattr(sealing.SealJob, "run", seal)
    monkeypatch.setattr(sealing.OpenJob, "run", open_and_seal)
    async with two_participants(relay_key_file, keys, crypto_workers=1) as (api, a, b):
        # Two real recipients and enough registered here to make three batches.
        for port in range(40000, 40000 + 2 * SEAL_INLINE_MAX + 2):
            address = ("127.0.0.2", port)
            api.relay.roster.register(identity(keys[3].public_key(), address), address, 0.0)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(api.http.post, "/v1/messages", json={"text": "x" * 400}))
            await wait_until(lambda: order == ["post batch"])
            await a.send("in between")
            await wait_until(lambda: api.relay.statistics().pending_relays == 2)
            first_batch.set()
        # The client's message went in after the post's first batch, not its whole.
        assert order[:2] == ["post batch", "client message"]
        assert order.count("post batch") == 3
        # Both arrive: the post's copy and the client's, in whichever order they finished.
        received = {await next_event(b), await next_event(b)}
        assert MessageReceived(a.address, b"in between") in received
