"""Arbitrary and mutated datagrams fed to a running relay never break it."""

from pathlib import Path

import trio
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcrelay.client import MessageReceived
from mcrelay.protocol.legacy.events import PeerJoined
from mcrelay.protocol.legacy.fragments import FRAGMENT_HEADER
from mcrelay.protocol.legacy.tlv import TlvType, encode_tlv
from support import join, next_event, raw_peer, relay_config, running_relay

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
    relay_key_file: Path, keys: list[rsa.RSAPrivateKey]
) -> None:
    config = relay_config(relay_key_file, reassembly_timeout_s=0.05)
    async with running_relay(config) as relay:
        async with join(relay, keys[1]) as a, raw_peer(relay, keys[2]) as raw:
            await raw.register()
            assert await next_event(a) == PeerJoined(raw.address)
            stranger = ("127.0.0.1", 9)

            @settings(
                max_examples=600,
                deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture],
            )
            @given(data=datagrams, registered=st.booleans())
            def feed(data: bytes, registered: bool) -> None:
                source = raw.address if registered else stranger
                relay.handle_datagram(data, source, trio.current_time())

            feed()
            await trio.sleep(0.1)  # let reassembly deadlines pass and tasks settle
            # The raw peer may have been disconnected or re-keyed by the noise: start clean.
            await raw.register()
            await raw.send(*raw.message(b"still alive", msg_id=b"\xff\xfe\xfd\xfc"))
            while (event := await next_event(a)) != MessageReceived(raw.address, b"still alive"):
                assert not isinstance(event, MessageReceived) or event.sender == raw.address
            assert relay.counters.datagrams_in >= 600
