"""Hypothesis: any secure datagram (first byte 0x4D), any mutation of a valid INIT,
DATA or KEY_QUERY, and any plaintext sealed under a member's real keys, fed to
``Relay.handle_datagram``: nothing raises, every datagram is answered or counted as a
drop, the profile's state stays within its bounds, and members still join and chat.

On the harness with the mock clock, which the feed moves on between datagrams.
"""

import struct

import trio
import trio.testing
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from secure_hostile_peers import RecordingPeer

from mcrelay.protocol.addresses import Address
from mcrelay.protocol.secure.admission import MAX_UNCONFIRMED_HANDSHAKES
from mcrelay.protocol.secure.budget import MAX_TOTAL_BYTES
from mcrelay.protocol.secure.frames import FrameType
from mcrelay.protocol.secure.keyquery import encode_key_query
from mcrelay.protocol.secure.messages import RelayedChat
from relay_harness import Harness, client_address, open_relay, settle
from secure_harness import HarnessLink, SecurePeer

Keys = list[rsa.RSAPrivateKey]
EXAMPLES = 400
SOURCES = [client_address(0), client_address(1), client_address(9), ("10.9.8.7", 4242)]
"""The hostile member's address, an honest member's, and two strangers."""

any_secure = st.binary(max_size=1300).map(lambda rest: b"\x4d" + rest)
typed = st.builds(
    lambda kind, reserved, rest: struct.pack("<BBH", 0x4D, kind, reserved) + rest,
    st.integers(0, 8),
    st.sampled_from([0, 0, 1, 0xFFFF]),
    st.binary(max_size=200) | st.sampled_from([bytes(n) for n in (12, 28, 60, 92, 148)]),
)


@st.composite
def mutated(draw: st.DrawFn, pool: list[bytes]) -> bytes:
    """A valid datagram with a byte flipped, a range replaced, cut short or extended."""
    data = bytearray(draw(st.sampled_from(pool)))
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.integers(0, len(data)))
        how = draw(st.sampled_from(["flip", "replace", "cut", "extend"]))
        if how == "flip" and where < len(data):
            data[where] ^= draw(st.integers(1, 255))
        elif how == "replace":
            data[where : where + 4] = draw(st.binary(min_size=1, max_size=4))
        elif how == "cut":
            del data[where:]
        else:
            data[where:where] = draw(st.binary(min_size=1, max_size=16))
    return bytes(data)


def frame(kind: int, value: bytes) -> bytes:
    return struct.pack("<BH", kind, len(value)) + value


msg_seqs = st.integers(0, 16) | st.integers(0, 0xFFFFFFFF)
bodies = st.binary(max_size=40) | st.sampled_from([b"\x01hi", b"\x04", b"\x02", b"\x09x"])
whole_messages = st.builds(
    lambda seq, body: struct.pack("<IHH", seq, 0, 1) + body, st.integers(0, 12), bodies
)
fragment_values = whole_messages | st.builds(
    lambda seq, index, count, body: struct.pack("<IHH", seq, index, count) + body,
    msg_seqs,
    st.integers(0, 3) | st.integers(0, 0xFFFF),
    st.integers(1, 3) | st.integers(0, 0xFFFF),
    bodies,
)
ack_values = st.builds(
    lambda seq, count, bits: struct.pack("<IH", seq, count) + bits[: (count + 7) // 8],
    msg_seqs,
    st.integers(0, 70),
    st.binary(min_size=9, max_size=9),
)
frames = st.one_of(
    st.builds(frame, st.just(FrameType.FRAGMENT), fragment_values),
    st.builds(frame, st.just(FrameType.ACK), ack_values),
    st.builds(
        frame,
        st.sampled_from([FrameType.PATH_CHALLENGE, FrameType.PATH_RESPONSE]),
        st.binary(min_size=8, max_size=8),
    ),
    st.builds(frame, st.just(FrameType.ABANDON), msg_seqs.map(lambda s: struct.pack("<I", s))),
    st.builds(frame, st.integers(0, 255), st.binary(max_size=20)),
)
plaintexts = st.lists(frames, max_size=6).map(b"".join) | st.binary(max_size=300)


def check_bounds(harness: Harness) -> None:
    figures = harness.relay.statistics().profiles["secure"]
    assert figures["handshakes_pending"] <= MAX_UNCONFIRMED_HANDSHAKES
    assert 0 <= figures["receive_buffer_bytes"] <= MAX_TOTAL_BYTES
    assert 0 <= figures["send_buffer_bytes"] <= harness.relay.config.max_send_queue_bytes
    assert len(harness.relay.roster) <= 3
    assert harness.relay.statistics().dropped["internal_error"] == 0


async def members_still_chat(harness: Harness, first: int) -> None:
    d = SecurePeer(HarnessLink(harness), client_address(first))
    e = SecurePeer(HarnessLink(harness), client_address(first + 1))
    await d.connect()
    await e.connect()
    await d.pump()
    await d.say(b"after the garbage")
    await trio.sleep(0.05)
    await e.pump()
    assert [m.text for m in e.take() if isinstance(m, RelayedChat)] == [b"after the garbage"]


async def test_garbage_and_mutations_are_answered_or_counted(
    keys: Keys, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_relay(keys[0]) as harness:
        relay = harness.relay
        a = RecordingPeer(HarnessLink(harness), client_address(0))
        b = SecurePeer(HarnessLink(harness), client_address(1))
        await a.connect()
        await b.connect()
        for n in range(3):
            await a.say(b"seen %d" % n)
        await trio.sleep(0.05)
        await a.pump()
        pool = [*a.sent, encode_key_query(bytes(16))]
        fed = relay.counters.datagrams_in

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture],
        )
        @given(
            data=any_secure | typed | mutated(pool),
            source=st.sampled_from(SOURCES),
            later_s=st.sampled_from([0, 0.001, 0.01]),
        )
        def feed(data: bytes, source: Address, later_s: float) -> None:
            nonlocal fed
            autojump_clock.jump(later_s)
            dropped = sum(relay.counters.dropped.values())
            answered = len(harness.sock.sent) + len(relay.outbox)
            relay.handle_datagram(data, source, trio.current_time())
            fed += 1
            assert relay.counters.datagrams_in == fed
            assert (
                sum(relay.counters.dropped.values()) > dropped
                or len(harness.sock.sent) + len(relay.outbox) > answered
            ), data.hex()
            check_bounds(harness)

        feed()
        await trio.sleep(1.0)
        await settle()
        check_bounds(harness)
        assert relay.statistics().profiles["secure"]["handshakes_pending"] == 0
        await members_still_chat(harness, 20)


async def test_any_plaintext_under_a_members_keys_leaves_the_relay_whole(
    keys: Keys, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_relay(keys[0]) as harness:
        relay = harness.relay
        a = SecurePeer(HarnessLink(harness), client_address(0))
        b = SecurePeer(HarnessLink(harness), client_address(1))  # gets a's chats, and never reads
        await a.connect()
        await b.connect()
        assert a.session is not None
        keypair = a.session.current

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture],
        )
        @given(plaintext=plaintexts, later_s=st.sampled_from([0, 0.001, 0.01]))
        def feed(plaintext: bytes, later_s: float) -> None:
            autojump_clock.jump(later_s)
            datagram = keypair.seal(plaintext[:1200])
            relay.handle_datagram(datagram, a.address, trio.current_time())
            check_bounds(harness)

        feed()
        await trio.sleep(1.0)
        await settle()
        check_bounds(harness)
        await trio.sleep(40.0)  # a and b fall silent: they go, and every buffer they held
        check_bounds(harness)
        figures = relay.statistics().profiles["secure"]
        assert (figures["receive_buffer_bytes"], figures["send_buffer_bytes"]) == (0, 0)
        assert len(relay.roster) == 0
        await members_still_chat(harness, 20)
