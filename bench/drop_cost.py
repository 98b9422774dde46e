"""What a fragment the relay refuses costs its loop, on its own (issue 10, overload).

    .venv/bin/python bench/drop_cost.py            # about 2 s

Past saturation most datagrams reaching the relay are fragments of messages it refuses:
the crypto stage has no room. This feeds DATAGRAMS such fragments from one member
straight into ``Relay.handle_datagram`` (the tests' harness: a stub socket, the crypto
jobs held, no network), and reports the loop's time per datagram, best of ROUNDS, for
messages of 100 and 1000 bytes (2 and 7 fragments), with the look at a lone
fragment's header (``legacy.lone_fragment_msg_id``) and with it turned off (every
datagram decoded, as before it). Nothing else runs meanwhile; the socket's
``recvfrom`` and the loop's wakeups are not in these figures.
"""

import statistics
import sys
import time
from pathlib import Path

import trio
import trio.testing
from cryptography.hazmat.primitives.asymmetric import rsa

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from mcrelay.protocol import legacy

DATAGRAMS = 20_000
MESSAGES = 400
"""Distinct messages, repeated to make DATAGRAMS (each refusal is forgotten between rounds)."""
ROUNDS = 5
SIZES = (100, 1000)


def refused_fragments(key: rsa.RSAPublicKey, size: int) -> list[bytes]:
    """DATAGRAMS fragments of messages of ``size`` bytes, each message's in order."""
    messages = [
        legacy.message_datagrams(key, b"x" * size, (n + 2).to_bytes(4, "big"))
        for n in range(MESSAGES)
    ]
    datagrams = [datagram for message in messages for datagram in message]
    return (datagrams * (DATAGRAMS // len(datagrams) + 1))[:DATAGRAMS]


async def per_datagram_us(keys: list[rsa.RSAPrivateKey], size: int) -> tuple[int, float]:
    from relay_harness import open_relay

    async with open_relay(keys[0], max_pending_relays=1) as harness:
        (sender, _other) = await harness.members(keys, 2)
        harness.workers.hold()
        sender.say(b"takes the only place")  # every message after it is refused
        datagrams = refused_fragments(keys[0].public_key(), size)
        fragments = len(legacy.message_datagrams(keys[0].public_key(), b"x" * size, bytes(4)))
        relay, address = harness.relay, sender.address
        rounds = []
        for _ in range(ROUNDS):
            now = trio.current_time()
            started = time.perf_counter()
            for datagram in datagrams:
                relay.handle_datagram(datagram, address, now)
            rounds.append((time.perf_counter() - started) / len(datagrams) * 1e6)
            await trio.sleep(10)  # past the refusals' deadlines: the next round starts afresh
        assert harness.drops().keys() == {"overloaded"}
        harness.workers.release()
        return fragments, min(rounds)


def main() -> None:
    keys = [rsa.generate_private_key(65537, 2048) for _ in range(3)]
    look = legacy.lone_fragment_msg_id
    rows = []
    for size in SIZES:
        for label, function in (("with the look", look), ("every datagram decoded", None)):
            legacy.lone_fragment_msg_id = function or (lambda _data: None)  # type: ignore[assignment]
            fragments, us = trio.run(
                per_datagram_us, keys, size, clock=trio.testing.MockClock(autojump_threshold=0)
            )
            rows.append((size, fragments, label, us))
    legacy.lone_fragment_msg_id = look
    print("| message | fragments | path | us per refused datagram (best of 5) |")
    print("|---:|---:|---|---:|")
    for size, fragments, label, us in rows:
        print(f"| {size} B | {fragments} | {label} | {us:.2f} |")
    ratio = statistics.mean(rows[i + 1][3] / rows[i][3] for i in range(0, len(rows), 2))
    print(f"\ndecoded / with the look, mean of the sizes: {ratio:.2f}")


if __name__ == "__main__":
    main()
