"""Arbitrary and mutated datagrams fed to a running relay never break it.

On the harness (``relay_harness``), with the mock clock, which the feed moves on
between datagrams so that reassembly deadlines pass in the middle of it.
"""

import trio
import trio.testing
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcrelay.client import MessageReceived
from mcrelay.protocol.legacy.fragments import FRAGMENT_HEADER
from mcrelay.protocol.legacy.tlv import TlvType, encode_tlv
from relay_harness import client_address, open_relay, settle

tlv_types = st.sampled_from([int(t) for t in TlvType]) | st.integers(0, 0xFFFF)
fragments = st.builds(
    lambda msg_id, seq, total, piece: encode_tlv(
        TlvType.FRAGMENT, FRAGMENT_HEADER.pack(msg_id, seq, total) + piece
    ),
    st.binary(min_size=4, max_size=4),
    st.integers(0, 0xFFFF) | st.integers(0, 4),
    st.integers(0, 0xFFFF) | st.integers(0, 4),
    st.binary(max_size=300),
)
tlv_runs = st.lists(
    st.builds(encode_tlv, tlv_types, st.binary(max_size=64)) | fragments, min_size=1, max_size=4
).map(b"".join)
datagrams = st.binary(max_size=600) | tlv_runs | tlv_runs.map(lambda d: d[:-1])


async def test_random_datagrams_never_break_the_relay(
    keys: list[rsa.RSAPrivateKey], autojump_clock: trio.testing.MockClock
) -> None:
    async with open_relay(keys[0], reassembly_timeout_s=0.05) as harness:
        relay = harness.relay
        a, raw = harness.peer(client_address(1), keys[1]), harness.peer(client_address(2), keys[2])
        a.register()
        raw.register()
        stranger = harness.peer(client_address(9), keys[3])

        @settings(
            max_examples=600,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture],
        )
        @given(data=datagrams, registered=st.booleans(), later_s=st.sampled_from([0, 0.01, 0.1]))
        def feed(data: bytes, registered: bool, later_s: float) -> None:
            autojump_clock.jump(later_s)
            (raw if registered else stranger).send(data)

        feed()
        await trio.sleep(1.0)  # every reassembly deadline passes, and the tasks settle
        await settle()
        statistics = relay.statistics()
        assert statistics.counters.datagrams_in >= 600
        assert statistics.dropped["internal_error"] == 0
        assert (statistics.reassembly_in_flight, statistics.reassembly_bytes) == (0, 0)
        assert (statistics.pending_relays, statistics.leaves_pending) == (0, 0)
        # The raw peer may have been disconnected or re-keyed by the noise: start clean.
        raw.register()
        a.register()
        await settle()
        a.take()
        raw.say(b"still alive", b"\xff\xfe\xfd\xfc")
        await settle()
        assert a.messages() == [MessageReceived(raw.address, b"still alive")]
