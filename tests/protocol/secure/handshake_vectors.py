"""The handshake's vector inputs (secure-vectors.json) as the objects the tests build."""

from mcrelay.protocol.addresses import Address
from mcrelay.protocol.secure.handshake import Initiator, Responder
from mcrelay.protocol.secure.keys import KeyPair

from .conftest import SECURE_VECTORS

INPUTS = SECURE_VECTORS["inputs"]
PUBLIC = SECURE_VECTORS["public_keys"]
STEPS = {
    name.split(" (")[0]: bytes.fromhex(value)
    for name, value in SECURE_VECTORS["intermediate"].items()
}
"""The intermediate values, by the name before their parenthesised explanation."""
DATAGRAMS = {name: bytes.fromhex(value) for name, value in SECURE_VECTORS["datagrams"].items()}
INIT = DATAGRAMS["INIT"]
INIT_WITH_MAC2 = DATAGRAMS["INIT with mac2 (same body, cookie above)"]
RESPONSE = DATAGRAMS["RESPONSE"]
COOKIE = DATAGRAMS["COOKIE (for the INIT above)"]

CLIENT = KeyPair.from_private(bytes.fromhex(INPUTS["client_static_private"]))
RELAY = KeyPair.from_private(bytes.fromhex(INPUTS["relay_static_private"]))
CLIENT_EPHEMERAL = bytes.fromhex(INPUTS["client_ephemeral_private"])
RELAY_EPHEMERAL = bytes.fromhex(INPUTS["relay_ephemeral_private"])
CLIENT_INDEX: int = INPUTS["client_index"]
RELAY_INDEX: int = INPUTS["relay_index"]
CLIENT_EPOCH: int = INPUTS["client_epoch"]
RELAY_EPOCH: int = INPUTS["relay_epoch"]
TIMESTAMP = bytes.fromhex(INPUTS["timestamp"])
CLIENT_ADDRESS: Address = (INPUTS["client_address"][0], INPUTS["client_address"][1])
COOKIE_SECRET = bytes.fromhex(INPUTS["cookie_secret"])
COOKIE_NONCE = bytes.fromhex(INPUTS["cookie_nonce"])
KEY_QUERY_NONCE = bytes.fromhex(INPUTS["key_query_nonce"])


def initiator(cookie: bytes | None = None) -> Initiator:
    return Initiator(
        CLIENT,
        RELAY.public,
        ephemeral_private=CLIENT_EPHEMERAL,
        sender_index=CLIENT_INDEX,
        timestamp=TIMESTAMP,
        epoch=CLIENT_EPOCH,
        cookie=cookie,
    )


def responder() -> Responder:
    return Responder(RELAY)
