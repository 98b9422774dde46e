"""Years under systemd: members of both profiles come, chat and go (leave, disconnect,
time out, a message never completed), round after round, from ever new addresses,
hosts and keys; once they are gone, nothing of them stays in the relay.

The check is generic, so that a table added later is covered too: every container
reachable from the relay through its own objects' attributes (the first items of a
container are followed, not all) is measured after each round, and none may be
larger after the last round than after the third. One table may grow, and is
bounded: the greatest INIT timestamp per key (the page's replay rule), held for
``MAX_MEMBERS + MAX_UNCONFIRMED_HANDSHAKES`` keys, least recently used first out.
"""

from collections import deque
from collections.abc import Sized

import trio
import trio.testing
from cryptography.hazmat.primitives.asymmetric import rsa

from mcrelay.protocol.addresses import Address
from mcrelay.protocol.legacy import wire
from relay_harness import open_relay, settle
from secure_harness import HarnessLink, SecurePeer

Keys = list[rsa.RSAPrivateKey]
ROUNDS = 8
BOUNDED = "._timestamps"
"""The path that may grow (bounded where it is defined)."""
FOLLOWED_ITEMS = 3
CONTAINERS = (dict, list, set, frozenset, tuple, deque, bytearray)


def address(profile: int, n: int) -> Address:
    """A new host and port for every client: per-host tables are churned too."""
    return (f"127.{profile}.{n // 250}.{n % 250 + 1}", 40000 + n)


def sizes(root: object) -> dict[str, int]:
    """The length of every container reachable from ``root``, by the attribute path
    that first reached it."""
    found: dict[str, int] = {}
    seen: set[int] = set()
    stack: list[tuple[str, object]] = [("relay", root)]
    while stack:
        path, obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        ours = type(obj).__module__.startswith("mcrelay")
        if isinstance(obj, CONTAINERS) or (ours and isinstance(obj, Sized)):
            found[path] = len(obj)
        if isinstance(obj, dict):
            stack.extend((f"{path}[]", value) for value in list(obj.values())[:FOLLOWED_ITEMS])
        elif isinstance(obj, CONTAINERS):
            stack.extend((f"{path}[]", item) for item in list(obj)[:FOLLOWED_ITEMS])
        elif ours:
            attributes = dict(getattr(obj, "__dict__", {}))
            for cls in type(obj).__mro__:
                for slot in getattr(cls, "__slots__", ()):
                    if hasattr(obj, slot):
                        attributes[slot] = getattr(obj, slot)
            stack.extend((f"{path}.{name}", value) for name, value in attributes.items())
    return found


async def test_members_that_came_and_went_leave_nothing_behind(
    keys: Keys, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_relay(keys[0], client_timeout_s=2.0) as harness:
        relay = harness.relay
        rounds: list[dict[str, int]] = []
        n = 0
        for round_ in range(ROUNDS):
            olds = []
            for key in keys[1:]:
                old = harness.peer(address(1, n), key)
                n += 1
                old.register()
                olds.append(old)
            await settle()
            news = []
            for _ in range(4):
                new = SecurePeer(HarnessLink(harness), address(2, n))
                n += 1
                await new.connect()
                news.append(new)
            olds[0].say(b"x" * 700, bytes([0, 0, round_, 1]))  # several fragments
            olds[1].send(olds[1].message(b"y" * 700, bytes([0, 0, round_, 2]))[0])  # never ends
            await news[0].say(b"hello")
            await settle()
            for new in news:
                await new.pump()
            olds[2].send(wire.disconnect())
            await news[1].leave()
            await settle()
            await trio.sleep(40)  # the rest time out; every deadline and window passes
            await settle()
            assert len(relay.roster) == 0
            rounds.append(sizes(relay))
        early, last = rounds[2], rounds[-1]
        grew = {
            path: (early.get(path, 0), size)
            for path, size in last.items()
            if size > early.get(path, 0) and BOUNDED not in path
        }
        assert not grew
        assert len(last) > 40  # the walk reached the relay's tables
