"""A kicked or banned secure member's session lives on until its NOTICE is
acknowledged (2 s at most): what it sends meanwhile reaches a relay that no longer
lists it, and must not break it (found by ``fuzz/fuzz_secure.py``)."""

import trio
import trio.testing
from cryptography.hazmat.primitives.asymmetric import rsa

from mcrelay.protocol.secure.messages import Notice, NoticeCode
from relay_harness import client_address, open_relay
from secure_harness import SecurePeer

Keys = list[rsa.RSAPrivateKey]


async def test_a_kicked_member_acknowledging_its_notice_is_let_go(
    keys: Keys, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_relay(keys[0]) as harness:
        a = SecurePeer(harness, client_address(0))
        b = SecurePeer(harness, client_address(1))
        await a.connect()
        await b.connect()
        harness.relay.kick(b.id, ban_s=60.0)
        assert harness.relay.roster.get(b.id) is None
        assert b.session is not None
        b.send(b.session.current.seal(b""))  # a keep-alive, before it read the NOTICE
        await b.pump()
        assert b.take()[-1] == Notice(NoticeCode.BANNED, b"banned")
        await trio.sleep(0.05)  # its ACK of the NOTICE goes out after the 10 ms coalescing
        await b.pump()
        b.send(b.session.current.seal(b""))  # the ACK closed its session: keypair gone
        assert harness.drops() == {"unknown_index": 1}
        await a.pump()
        assert len(harness.relay.roster) == 1
