"""``POST /v1/bans`` (a ban on an id connected or not), ``DELETE /v1/bans/{id}``'s
errors, and bans kept across a restart of the daemon."""

import socket
import time
from pathlib import Path
from typing import Any

import pytest
import trio
from api_support import api_daemon, assert_json_error, client_id, parse_time
from cryptography.hazmat.primitives.asymmetric import rsa

from mcrelay.core.bans import MAX_BANS, SavedBan, parse_bans
from mcrelay.daemon import banfile
from mcrelay.daemon.banfile import bans_file as bans_file_of
from mcrelay.files import FileError
from mcrelay.protocol import legacy
from mcrelay.protocol.legacy.events import PeerJoined, PeerLeft
from support import dropped, join, next_event, peer_on, raw_peer, wait_until

Keys = list[rsa.RSAPrivateKey]
KEY_ID = "k:AXQK9dm6xvZ7rOAaFe7PGW8CkxbY1bTyHkZ8yXid9hQ"
HOUR_S = 3600
SHORT_S = 0.2


def saved(path: Path) -> list[SavedBan]:
    return parse_bans(path.read_bytes())


def free_port() -> int:
    """A UDP port free now: a relay of port 0 keeps no bans file."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def test_bans_outlive_a_restart_with_their_remaining_time(
    relay_key_file: Path, keys: Keys
) -> None:
    """Every ban was lifted by a restart: it lived in memory only (found by review)."""
    port = free_port()
    bans_file = bans_file_of(relay_key_file.parent, port)
    async with (
        api_daemon(relay_key_file, port=port) as api,
        peer_on("127.0.0.2", api.relay, keys[1]) as peer,
    ):
        await peer.register()
        kicked = await api.http.delete(
            f"/v1/clients/{client_id(peer.address)}",
            params={"ban_s": str(HOUR_S), "ban_scope": "host"},
        )
        assert kicked.status_code == 200, kicked.text
        for body in ({"id": KEY_ID, "ban_s": HOUR_S}, {"id": "10.0.0.9", "ban_s": SHORT_S}):
            assert (await api.http.post("/v1/bans", json=body)).status_code == 201
        before = {ban["id"]: ban for ban in (await api.http.get("/v1/bans")).json()["bans"]}
        await wait_until(lambda: bans_file.exists() and len(saved(bans_file)) == 3)
    short = next(each for each in saved(bans_file) if each.target == "10.0.0.9")
    await wait_until(lambda: time.time() > short.until_wall)
    async with (
        api_daemon(relay_key_file, port=port) as api,
        peer_on("127.0.0.2", api.relay, keys[1]) as peer,
    ):
        after = {ban["id"]: ban for ban in (await api.http.get("/v1/bans")).json()["bans"]}
        # The short one ended while the daemon was down; the others end when they did.
        assert set(after) == {"127.0.0.2", KEY_ID}
        for ban_id, ban in after.items():
            # The end is kept on the monotonic clock and shown on the wall clock: each
            # side of the restart reads the two at two instants, a few ms apart under load.
            shift = parse_time(ban["until"]) - parse_time(before[ban_id]["until"])
            assert abs(shift.total_seconds()) < 0.1, shift
            assert ban["scope"] == before[ban_id]["scope"]
            assert HOUR_S - 60 < ban["remaining_s"] <= before[ban_id]["remaining_s"]
        # And the host is kept out.
        banned = dropped(api.relay, "banned")
        await peer.send(legacy.key_request(), legacy.client_key(keys[1].public_key()))
        await wait_until(lambda: dropped(api.relay, "banned") > banned)
        assert api.relay.roster.at(peer.address) is None


async def test_a_ban_a_lift_and_a_kick_that_bans_are_answered_once_on_disk(
    relay_key_file: Path, keys: Keys
) -> None:
    """They were answered before the file was written: a crash right after lost bans
    answered 201 and brought lifted ones back (found by review)."""
    port = free_port()
    path = bans_file_of(relay_key_file.parent, port)
    async with (
        api_daemon(relay_key_file, port=port) as api,
        peer_on("127.0.0.2", api.relay, keys[1]) as peer,
    ):
        banned = await api.http.post("/v1/bans", json={"id": "10.0.0.9", "ban_s": HOUR_S})
        assert banned.status_code == 201, banned.text
        assert banned.json()["persisted"] is True
        assert {each.target for each in saved(path)} == {"10.0.0.9"}  # as it was answered
        lifted = await api.http.delete("/v1/bans/10.0.0.9")
        assert lifted.json() == {
            "id": "10.0.0.9",
            "scope": "host",
            "lifted": True,
            "persisted": True,
        }
        assert saved(path) == []
        await peer.register()
        kicked = await api.http.delete(
            f"/v1/clients/{client_id(peer.address)}", params={"ban_s": str(HOUR_S)}
        )
        assert kicked.json()["persisted"] is True
        assert {each.target for each in saved(path)} == {peer.address}


async def test_a_ban_the_file_cannot_hold_is_answered_not_persisted(
    relay_key_file: Path, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk: the ban applies, and the answer says a restart would not find it (it
    said nothing: found by review). A relay of port 0 keeps no file: never persisted."""

    def full(path: Path, data: bytes, what: str) -> None:
        raise FileError(f"cannot write {what} {path}: No space left on device")

    async with api_daemon(relay_key_file) as api:
        banned = await api.http.post("/v1/bans", json={"id": "10.0.0.9", "ban_s": HOUR_S})
        assert banned.json()["persisted"] is False
    monkeypatch.setattr(banfile, "replace_private_file", full)
    async with (
        api_daemon(relay_key_file, port=free_port()) as api,
        peer_on("127.0.0.2", api.relay, keys[1]) as peer,
    ):
        banned = await api.http.post("/v1/bans", json={"id": "10.0.0.9", "ban_s": HOUR_S})
        assert banned.status_code == 201, banned.text
        assert banned.json()["persisted"] is False
        assert api.relay.bans.is_banned(("10.0.0.9", 1), trio.current_time())
        await peer.register()
        kicked = await api.http.delete(
            f"/v1/clients/{client_id(peer.address)}", params={"ban_s": str(HOUR_S)}
        )
        assert kicked.json()["persisted"] is False
        lifted = await api.http.delete("/v1/bans/10.0.0.9")
        assert lifted.json()["persisted"] is False
        assert api.relay.statistics().ban_writes_failed >= 1


async def test_a_ban_on_an_id_not_connected_is_201_and_listed(relay_key_file: Path) -> None:
    async with api_daemon(relay_key_file) as api:
        for ban_id, scope in (("10.0.0.7:4000", "address"), ("10.0.0.7", "host"), (KEY_ID, "key")):
            response = await api.http.post("/v1/bans", json={"id": ban_id, "ban_s": "600"})
            assert response.status_code == 201, response.text
            ban = response.json()
            assert set(ban) == {"id", "scope", "until", "remaining_s", "removed", "persisted"}
            assert (ban["id"], ban["scope"], ban["removed"]) == (ban_id, scope, [])
            assert 0 < ban["remaining_s"] <= 600
            parse_time(ban["until"])
        listed = (await api.http.get("/v1/bans")).json()
        assert {ban["id"] for ban in listed["bans"]} == {"10.0.0.7:4000", "10.0.0.7", KEY_ID}
        assert api.relay.bans.is_banned(("10.0.0.7", 1), trio.current_time())


async def test_a_ban_removes_the_members_it_names_here(relay_key_file: Path, keys: Keys) -> None:
    async with api_daemon(relay_key_file) as api, join(api.relay, keys[1]) as a:
        async with raw_peer(api.relay, keys[2]) as raw:
            await raw.register()
            assert await next_event(a) == PeerJoined(raw.address)
            ident = client_id(raw.address)
            response = await api.http.post("/v1/bans", json={"id": ident, "ban_s": 60})
            assert response.status_code == 201, response.text
            assert response.json()["removed"] == [ident]
            assert await next_event(a) == PeerLeft(raw.address)
            assert api.relay.roster.at(raw.address) is None


async def test_a_ban_on_an_ipv4_mapped_address_bans_its_ipv4_host(
    relay_key_file: Path, keys: Keys
) -> None:
    """It was listed and kept as ``::ffff:127.0.0.1``, and matched nobody (found by
    review): the relay is IPv4 only."""
    async with api_daemon(relay_key_file) as api, join(api.relay, keys[1]) as a:
        async with raw_peer(api.relay, keys[2]) as raw:
            await raw.register()
            assert await next_event(a) == PeerJoined(raw.address)
            body = {"id": f"::ffff:{raw.address[0]}", "ban_s": 60}
            response = await api.http.post("/v1/bans", json=body)
            assert response.status_code == 201, response.text
            assert (response.json()["id"], response.json()["scope"]) == (raw.address[0], "host")
            assert client_id(raw.address) in response.json()["removed"]
            assert api.relay.bans.is_banned(raw.address, trio.current_time())


async def test_scope_host_bans_the_ip_of_an_address(relay_key_file: Path) -> None:
    async with api_daemon(relay_key_file) as api:
        body = {"id": "10.0.0.7:4000", "ban_s": 60, "scope": "host"}
        response = await api.http.post("/v1/bans", json=body)
        assert response.status_code == 201, response.text
        assert (response.json()["id"], response.json()["scope"]) == ("10.0.0.7", "host")


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ([], "a JSON object"),
        ({"id": "10.0.0.7"}, "'ban_s' must be"),
        ({"ban_s": 60}, "'id' must be"),
        ({"id": 7, "ban_s": 60}, "'id' must be"),
        ({"id": "nonsense", "ban_s": 60}, "'id': 'nonsense' is no ban's id"),
        ({"id": "fe80::1%eth0", "ban_s": 60}, "no IPv6 scope"),
        # Never matched: the relay is IPv4 only (found by review).
        ({"id": "2001:db8::1", "ban_s": 60}, "the relay serves IPv4 only"),
        ({"id": "[2001:db8::1]:4000", "ban_s": 60}, "the relay serves IPv4 only"),
        ({"id": "10.0.0.7", "ban_s": 0}, "'ban_s' must be"),
        ({"id": "10.0.0.7", "ban_s": -1}, "'ban_s' must be"),
        ({"id": "10.0.0.7", "ban_s": True}, "'ban_s' must be"),
        ({"id": "10.0.0.7", "ban_s": 1e300}, "'ban_s' must be"),
        ({"id": "10.0.0.7", "ban_s": "1e3"}, "plain decimal seconds"),
        ({"id": "10.0.0.7", "ban_s": 60, "scope": "everything"}, "'scope' must be"),
        ({"id": "10.0.0.7", "ban_s": 60, "scope": "address"}, "host is its own"),
        ({"id": "10.0.0.7:1", "ban_s": 60, "scope": "key"}, "address is its own"),
        ({"id": KEY_ID, "ban_s": 60, "scope": "host"}, "key is its own"),
        ({"id": "10.0.0.7", "ban_s": 60, "until": "never"}, "unknown fields: until"),
    ],
)
async def test_a_bad_ban_is_422_and_bans_nothing(
    relay_key_file: Path, body: Any, fragment: str
) -> None:
    async with api_daemon(relay_key_file) as api:
        error = assert_json_error(await api.http.post("/v1/bans", json=body), 422, "invalid_body")
        assert fragment in error["message"]
        assert (await api.http.get("/v1/bans")).json()["count"] == 0


async def test_a_ban_body_that_is_not_json_is_400_or_415(relay_key_file: Path) -> None:
    async with api_daemon(relay_key_file) as api:
        json_type = {"Content-Type": "application/json"}
        response = await api.http.post("/v1/bans", content=b"{", headers=json_type)
        assert_json_error(response, 400, "bad_json")
        response = await api.http.post("/v1/bans", content=b'{"id": "10.0.0.7", "ban_s": 60}')
        assert_json_error(response, 415, "unsupported_media_type")


@pytest.mark.parametrize(
    ("digits", "says"),
    [
        (20, "'ban_s' must be seconds above 0"),
        (21, "a number of 21 digits is too large for any field"),
        # Python's own message, "use sys.set_int_max_str_digits()", before (found by review).
        (5000, "a number of 5000 digits is too large for any field"),
    ],
)
async def test_a_number_too_large_for_any_field_is_422(
    relay_key_file: Path, digits: int, says: str
) -> None:
    async with api_daemon(relay_key_file) as api:
        body = b'{"id": "10.0.0.7", "ban_s": -' + b"9" * digits + b"}"
        json_type = {"Content-Type": "application/json"}
        response = await api.http.post("/v1/bans", content=body, headers=json_type)
        assert assert_json_error(response, 422, "invalid_body")["message"].startswith(says)


async def test_a_field_given_twice_is_422(relay_key_file: Path) -> None:
    """The last one won: ``{"id": A, "id": B}`` banned B (found by review)."""
    async with api_daemon(relay_key_file) as api:
        body = b'{"id": "10.0.0.9", "ban_s": 60, "id": "10.0.0.10"}'
        json_type = {"Content-Type": "application/json"}
        response = await api.http.post("/v1/bans", content=body, headers=json_type)
        error = assert_json_error(response, 422, "invalid_body")
        assert error["message"] == "the field 'id' is given twice"
        assert (await api.http.get("/v1/bans")).json()["bans"] == []
        # A 60,000-character field named twice was said whole (found by review).
        long_key = "k" * 60_000
        body = f'{{"{long_key}": 1, "{long_key}": 2}}'.encode()
        response = await api.http.post("/v1/bans", content=body, headers=json_type)
        assert len(assert_json_error(response, 422, "invalid_body")["message"]) < 200


async def test_lifting_a_malformed_id_is_400_and_an_unbanned_one_404(relay_key_file: Path) -> None:
    """A malformed id was 404 "no ban on 'garbage': ... is not ip:port" (found by review)."""
    async with api_daemon(relay_key_file) as api:
        for ident in ("garbage", "1.2.3.4:99999", "%20", "k:short", "[::1]:1", "2001:db8::1"):
            error = assert_json_error(await api.http.delete(f"/v1/bans/{ident}"), 400, "bad_query")
            assert error["message"].startswith("not a ban's id: ")
        assert_json_error(await api.http.delete("/v1/bans/10.0.0.7"), 404, "not_found")


async def test_a_full_ban_list_is_409_and_a_kick_with_a_ban_then_kicks_nobody(
    relay_key_file: Path, keys: Keys
) -> None:
    async with api_daemon(relay_key_file) as api, raw_peer(api.relay, keys[1]) as raw:
        await raw.register()
        now = trio.current_time()
        for n in range(MAX_BANS):
            api.relay.bans.ban((f"10.{n // 65536}.{n // 256 % 256}.{n % 256}", 1), HOUR_S, now)
        response = await api.http.post("/v1/bans", json={"id": "10.9.9.9", "ban_s": 60})
        assert "lift some first" in assert_json_error(response, 409, "too_many_bans")["message"]
        ident = client_id(raw.address)
        response = await api.http.delete(f"/v1/clients/{ident}", params={"ban_s": "60"})
        assert_json_error(response, 409, "too_many_bans")
        assert api.relay.roster.at(raw.address) is not None
        # A ban that is there already is replaced: it takes no room.
        response = await api.http.post("/v1/bans", json={"id": "10.0.0.1:1", "ban_s": 60})
        assert response.status_code == 201, response.text
