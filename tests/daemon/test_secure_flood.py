"""An INIT and KEY_QUERY flood from spoofed sources while secure members chat: the relay
answers only with COOKIEs (and rate-limited KEY_INFOs), each smaller than what it
answers, keeps no state for the spoofers, and real members still join and chat.

The flood's INITs carry a valid mac1 (anyone who knows the relay's public key can make
one) over random bytes: what a spoofer that cannot see the COOKIE can send. Time is
the mock clock; the harness's stub socket records every answer.
"""

import os

import trio
import trio.testing
from cryptography.hazmat.primitives.asymmetric import rsa

from mcrelay.protocol.addresses import Address
from mcrelay.protocol.secure.admission import PER_IP_BURST, PER_IP_PER_S
from mcrelay.protocol.secure.cookies import add_macs, mac1_key
from mcrelay.protocol.secure.header import SIZES, DatagramType, header
from mcrelay.protocol.secure.keyquery import encode_key_query
from mcrelay.protocol.secure.messages import RelayedChat
from relay_harness import Harness, client_address, open_relay, settle
from secure_harness import HarnessLink, SecurePeer, connected

Keys = list[rsa.RSAPrivateKey]
INIT_BODY_BYTES = SIZES[DatagramType.INIT] - 32
ANSWERS = {
    DatagramType.COOKIE: DatagramType.INIT,
    DatagramType.RESPONSE: DatagramType.INIT,
    DatagramType.KEY_INFO: DatagramType.KEY_QUERY,
}
"""What each answer before a session answers."""


def spoofed(n: int) -> Address:
    return (f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}", 1024 + n % 50000)


def flood_init(harness: Harness) -> bytes:
    body = header(DatagramType.INIT) + os.urandom(INIT_BODY_BYTES - 4)
    return add_macs(body, mac1_key(harness.secure_key.public), None)


def check_answers(harness: Harness, flooders: set[Address]) -> int:
    """Every datagram sent before a session is smaller than the one it answers, and a
    spoofed source got COOKIE or KEY_INFO only: return how many they got."""
    to_flooders = 0
    for data, to in harness.sock.sent:
        kind = DatagramType(data[1])
        if kind in ANSWERS:
            assert len(data) == SIZES[kind] < SIZES[ANSWERS[kind]], kind
        if to in flooders:
            assert kind in (DatagramType.COOKIE, DatagramType.KEY_INFO), (kind, to)
            to_flooders += 1
    return to_flooders


async def chat(sender: SecurePeer, receiver: SecurePeer, text: bytes) -> None:
    await sender.say(text)
    await trio.sleep(0.05)
    await receiver.pump()
    await sender.pump()
    chats = [m.text for m in receiver.take() if isinstance(m, RelayedChat)]
    assert chats == [text]


async def test_cookies_always_answers_a_flood_with_cookies_only(
    keys: Keys, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_relay(keys[0], cookies="always") as harness:
        relay = harness.relay
        flooders = {spoofed(n) for n in range(1500)}
        for n in range(1000):
            relay.handle_datagram(flood_init(harness), spoofed(n), trio.current_time())
        for n in range(1000, 1500):
            query = encode_key_query(os.urandom(16))
            relay.handle_datagram(query, spoofed(n), trio.current_time())
        await settle()
        assert check_answers(harness, flooders) == 1000 + 100  # KEY_INFO: 100 per second
        assert harness.drops() == {"cookie_required": 1000, "key_query_limit": 400}
        assert relay.secure is not None
        assert relay.statistics().profiles["secure"]["handshakes_pending"] == 0

        a, b = await connected(harness, 2)
        assert (a.cookies, b.cookies) == (1, 1)
        await a.pump()
        await chat(a, b, b"through the flood")
        await chat(b, a, b"and back")


async def test_a_flood_past_the_load_threshold_gets_cookies_and_members_go_on(
    keys: Keys, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_relay(keys[0]) as harness:
        relay = harness.relay
        a, b = await connected(harness, 2)
        assert (a.cookies, b.cookies) == (0, 0)  # not under load: no cookie needed
        await a.pump()
        await trio.sleep(1.5)  # their INITs are out of the trailing second

        # 250 INITs with a valid mac1 in 0.5 s: more than 200 in the trailing second.
        flooders = {spoofed(n) for n in range(250)}
        for n in range(250):
            relay.handle_datagram(flood_init(harness), spoofed(n), trio.current_time())
            await trio.sleep(0.002)
        await settle()
        drops = harness.drops()
        assert drops == {"handshake_failed": 200, "cookie_required": 50}, drops
        assert check_answers(harness, flooders) == 50
        await chat(a, b, b"while under load")

        c = SecurePeer(HarnessLink(harness), client_address(2))  # under load: the cookie round trip
        await c.connect()
        assert c.cookies == 1
        await a.pump()
        await chat(c, a, b"joined under load")

        await trio.sleep(2.5)  # the load is over one second after the flood
        for peer in (a, b, c):
            await peer.pump()
        d = SecurePeer(HarnessLink(harness), client_address(3))
        await d.connect()
        assert d.cookies == 0
        assert check_answers(harness, flooders) == 50
        assert relay.secure is not None
        assert relay.statistics().profiles["secure"]["handshakes_pending"] == 0


async def test_under_load_a_valid_cookie_is_rate_limited_per_source_ip(
    keys: Keys, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_relay(keys[0], cookies="always") as harness:
        peer = SecurePeer(HarnessLink(harness), client_address(0))
        first = peer.initiator()
        peer.send(first.datagram)
        await settle()
        (answer,) = harness.sent_to(peer.address)
        cookie = first.read_cookie_untrusted(answer)
        for _ in range(PER_IP_BURST + 2):  # one burst at the same instant
            peer.send(peer.initiator(cookie=cookie).datagram)
        await settle()
        kinds = [DatagramType(data[1]) for data in harness.sent_to(peer.address)]
        assert kinds == [DatagramType.COOKIE] + [DatagramType.RESPONSE] * PER_IP_BURST
        assert harness.drops() == {"cookie_required": 1, "rate_limited": 2}
        await trio.sleep(1.0 / PER_IP_PER_S)
        peer.send(peer.initiator(cookie=cookie).datagram)  # a token came back
        await settle()
        assert DatagramType(harness.sent_to(peer.address)[-1][1]) is DatagramType.RESPONSE
