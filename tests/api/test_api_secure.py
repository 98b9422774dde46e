"""The API with secure members on a real daemon (UDP on loopback): listed by their
``k:`` ids with their session's figures, kicked and banned by key, reached by posts,
and counted per profile."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from api_support import ApiDaemon, api_daemon, assert_json_error, client_id
from cryptography.hazmat.primitives.asymmetric import rsa

from mcrelay.protocol.secure.keys import encode_key
from mcrelay.protocol.secure.messages import (
    LeaveReason,
    Notice,
    NoticeCode,
    Presence,
    PresenceEvent,
    RelayedChat,
)
from mcrelay.protocol.secure.origins import RELAY_ORIGIN, Origin, OriginKind
from secure_harness import SecurePeer, secure_peer
from support import join, raw_peer, wait_until

Keys = list[rsa.RSAPrivateKey]


@asynccontextmanager
async def connected_peer(api: ApiDaemon) -> AsyncIterator[SecurePeer]:
    async with secure_peer(api.relay) as peer:
        await peer.connect()
        yield peer


async def test_secure_members_are_listed_with_their_session(relay_key_file: Path) -> None:
    async with api_daemon(relay_key_file) as api, connected_peer(api) as a:
        await wait_until(lambda: len(api.relay.roster) == 1)
        response = await api.http.get("/v1/clients")
        assert response.status_code == 200
        (record,) = response.json()["clients"]
        assert record["id"] == a.id
        assert record["id"].startswith("k:")
        assert record["profile"] == "secure"
        assert (record["host"], record["port"]) == a.address
        assert record["key"] == encode_key(a.static.public)
        assert record["epoch"] == a.epoch
        assert isinstance(record["relay_epoch"], int)
        assert record["rtt_ms"] is None or record["rtt_ms"] >= 0
        assert record["retransmissions"] == 0
        same = await api.http.get(f"/v1/clients/{a.id}")
        assert same.json()["id"] == a.id
        status = (await api.http.get("/v1/status")).json()["statistics"]
        assert status["profiles"]["secure"]["clients"] == 1


async def test_a_post_reaches_both_profiles(relay_key_file: Path, keys: Keys) -> None:
    async with (
        api_daemon(relay_key_file) as api,
        connected_peer(api) as s,
        join(api.relay, keys[1]),
    ):
        await wait_until(lambda: len(api.relay.roster) == 2)
        s.take()
        response = await api.http.post("/v1/messages", json={"text": "to all"})
        assert response.status_code == 200
        assert response.json()["recipients"] == 2
        received = await s.wait_for(2)
        assert received[-1] == RelayedChat(RELAY_ORIGIN, b"to all")


async def test_kick_and_ban_by_key(relay_key_file: Path, keys: Keys) -> None:
    async with (
        api_daemon(relay_key_file) as api,
        connected_peer(api) as a,
        connected_peer(api) as b,
    ):
        await wait_until(lambda: len(api.relay.roster) == 2)
        await a.wait_for(1)
        response = await api.http.delete(f"/v1/clients/{b.id}", params={"ban_s": "60"})
        assert response.status_code == 200
        assert (response.json()["ban_scope"], response.json()["removed"]) == ("key", [b.id])
        assert (await b.wait_for(1))[-1] == Notice(NoticeCode.BANNED, b"banned")
        origin = Origin(OriginKind.SECURE_CLIENT, b.static.public, b.address)
        assert await a.wait_for(1) == [Presence(PresenceEvent.LEFT, origin, LeaveReason.BAN)]
        bans = (await api.http.get("/v1/bans")).json()["bans"]
        assert [(ban["id"], ban["scope"]) for ban in bans] == [(b.id, "key")]
        assert not await b.handshake()
        lifted = await api.http.delete(f"/v1/bans/{b.id}")
        assert lifted.json() == {"id": b.id, "scope": "key", "lifted": True, "persisted": False}
        assert await b.handshake()


async def test_a_key_ban_is_for_secure_members_only(relay_key_file: Path, keys: Keys) -> None:
    async with api_daemon(relay_key_file) as api, raw_peer(api.relay, keys[1]) as raw:
        await raw.register()
        ident = client_id(raw.address)
        params = {"ban_s": "10", "ban_scope": "key"}
        response = await api.http.delete(f"/v1/clients/{ident}", params=params)
        assert "no key to ban" in assert_json_error(response, 400, "bad_query")["message"]
        assert api.relay.roster.get(ident) is not None


async def test_status_shows_the_secure_key_and_the_profiles(relay_key_file: Path) -> None:
    async with api_daemon(relay_key_file) as api:
        status = (await api.http.get("/v1/status")).json()
        assert api.relay.secure is not None
        assert status["secure_key"] == api.relay.secure.public_key
        assert status["profiles"] == ["legacy", "secure"]
    async with api_daemon(relay_key_file, profiles="legacy") as api:
        status = (await api.http.get("/v1/status")).json()
        assert (status["secure_key"], status["profiles"]) == (None, ["legacy"])
