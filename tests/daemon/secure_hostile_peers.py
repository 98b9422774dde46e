"""Secure peers for the hostile tests: one that records every datagram it sent (to
replay them), and one that does the cookie round trip when the relay asks for it."""

from dataclasses import dataclass, field

import trio

from mcrelay.protocol.secure.channel import Role
from mcrelay.protocol.secure.header import DatagramType, datagram_type_untrusted
from mcrelay.protocol.secure.keypairs import Keypair
from mcrelay.protocol.secure.session import Session
from relay_harness import RELAY_ADDRESS, settle
from secure_harness import SecurePeer


@dataclass
class RecordingPeer(SecurePeer):
    """A secure client that keeps a copy of everything it sends, in order."""

    sent: list[bytes] = field(default_factory=list)

    def send(self, *datagrams: bytes) -> None:
        self.sent.extend(datagrams)
        super().send(*datagrams)


@dataclass
class CookiePeer(SecurePeer):
    """A secure client that answers a COOKIE with a fresh INIT carrying mac2."""

    cookies: int = 0
    """COOKIEs the relay sent it."""

    async def handshake(self) -> bool:
        cookie: bytes | None = None
        for _ in range(2):
            initiator = self.initiator(cookie=cookie)
            self.send(initiator.datagram)
            await settle()
            for data in self._new_datagrams():
                kind = datagram_type_untrusted(data)
                if kind is DatagramType.COOKIE:
                    self.cookies += 1
                    cookie = initiator.read_cookie_untrusted(data)
                elif kind is DatagramType.RESPONSE:
                    established = initiator.read_response_untrusted(data)
                    now = trio.current_time()
                    keypair = Keypair.from_handshake(established.keys, established.relay_epoch, now)
                    self.session = Session(Role.CLIENT, keypair, RELAY_ADDRESS, now)
                    return True
                else:
                    self.others.append((data, kind))
        return False
