"""A lossy link, deterministically: fragments lost, duplicated and reordered on the way
to the relay, copies lost on the way out, and every missing copy explained by the
relay's counters. (The statistical run across a real lossy link between network
namespaces is a bench: ``bench/lossy_link.py --check``.)

On the harness (``relay_harness``), with the mock clock. The link's choices come from
a seeded ``random.Random`` and from the test (a message with no fragment through),
never from timing, so every run makes the same ones.
"""

import random
from collections import Counter
from dataclasses import dataclass, field

import trio
import trio.testing
from cryptography.hazmat.primitives.asymmetric import rsa

from mcrelay.client import MessageReceived
from mcrelay.daemon.relay import Relay
from mcrelay.protocol import legacy
from mcrelay.protocol.legacy.events import FragmentReceived
from relay_harness import open_relay, settle

Keys = list[rsa.RSAPrivateKey]
SEED = 7
LOSS, DUPLICATE = 0.05, 0.05
"""Per datagram: no copy crosses with probability LOSS, two with DUPLICATE."""
LOSS_OUT = 0.05
"""Per relayed copy, on the way to its receiver."""
MESSAGES = {2: 40, 4: 20, 16: 8}
"""Messages of exactly F fragments (190-byte blocks of a 2048-bit relay key), and how many."""
BLOCKS = {2: 1, 4: 3, 16: 15}
ROUND = 4
"""Messages whose datagrams cross together, shuffled among each other."""
REASSEMBLY_TIMEOUT_S = 0.5
BENIGN = {"duplicate_fragment", "late_fragment", "reassembly_timeout"}


@dataclass
class Link:
    """What crossed: per message, the seqs that reached the relay; per copy, its fate."""

    rng: random.Random
    crossed: dict[bytes, set[int]] = field(default_factory=dict)
    repeats: int = 0
    """Fragment copies beyond the first that reached the relay."""
    lost_out: int = 0

    def to_relay(self, messages: list[list[bytes]], *, lose_all: bool = False) -> list[bytes]:
        """The datagrams of a round of messages as they reach the relay: each lost,
        crossing once or twice, all of them shuffled (``lose_all``: none crosses)."""
        arriving: list[bytes] = []
        for datagrams in messages:
            for datagram in datagrams:
                (event,) = legacy.decode_client_datagram_untrusted(datagram)
                assert isinstance(event, FragmentReceived)
                fragment = event.fragment
                seqs = self.crossed.setdefault(fragment.msg_id, set())
                draw = self.rng.random()
                copies = 0 if lose_all or draw < LOSS else 2 if draw > 1 - DUPLICATE else 1
                if copies:
                    seqs.add(fragment.seq)
                    self.repeats += copies - 1
                arriving += [datagram] * copies
        self.rng.shuffle(arriving)
        return arriving

    def to_receiver(self, datagrams: list[bytes]) -> list[bytes]:
        kept = [datagram for datagram in datagrams if self.rng.random() >= LOSS_OUT]
        self.lost_out += len(datagrams) - len(kept)
        return kept

    def view(self, sent: dict[bytes, int]) -> tuple[int, int, int]:
        """Messages whose fragments all crossed, some, none (``sent``: msg_id -> total)."""
        seen = Counter(
            "whole" if len(self.crossed[i]) == total else "partial" if self.crossed[i] else "none"
            for i, total in sent.items()
        )
        return seen["whole"], seen["partial"], seen["none"]


@dataclass(frozen=True)
class Figures:
    """The relay's counters at one moment (``statistics().counters`` is live)."""

    relayed: int
    copies_sent: int
    dropped: Counter[str]

    @classmethod
    def of(cls, relay: Relay) -> "Figures":
        statistics = relay.statistics()
        counters = statistics.counters
        return cls(counters.messages_relayed, counters.copies_sent, Counter(statistics.dropped))


def text(fragments: int, index: int) -> bytes:
    """The largest message of full blocks that takes exactly ``fragments`` fragments."""
    body = f"{fragments}:{index}:".encode()
    return body + bytes([index % 251]) * (BLOCKS[fragments] * 190 - len(body))


async def test_every_copy_a_lossy_link_costs_is_explained_and_none_is_delivered_twice(
    keys: Keys, autojump_clock: trio.testing.MockClock
) -> None:
    link = Link(random.Random(SEED))
    seen: Counter[str] = Counter()
    async with open_relay(
        keys[0], reassembly_timeout_s=REASSEMBLY_TIMEOUT_S, max_messages_per_source=ROUND
    ) as harness:
        relay = harness.relay
        sender, *receivers = await harness.members(keys, 3)
        read = [len(harness.sent_to(receiver.address)) for receiver in receivers]
        for fragments, count in MESSAGES.items():
            before = Figures.of(relay)
            repeats, lost_out = link.repeats, link.lost_out
            sent: dict[bytes, int] = {}
            originals: dict[bytes, int] = {}
            for first in range(0, count, ROUND):
                round_: list[list[bytes]] = []
                for index in range(first, min(first + ROUND, count)):
                    msg_id = (fragments << 16 | index).to_bytes(4, "big")
                    round_.append(sender.message(text(fragments, index), msg_id))
                    assert len(round_[-1]) == fragments
                    sent[msg_id], originals[text(fragments, index)] = fragments, index
                if first == 0:  # the phase's first message: no fragment of it crosses
                    sender.send(*link.to_relay(round_[:1], lose_all=True))
                    round_ = round_[1:]
                sender.send(*link.to_relay(round_))
                await trio.sleep(REASSEMBLY_TIMEOUT_S)  # what is incomplete times out
                await settle()

            # What each receiver got: no message twice, none corrupted.
            delivered = 0
            for n, receiver in enumerate(receivers):
                datagrams = harness.sent_to(receiver.address)
                arrived, read[n] = link.to_receiver(datagrams[read[n] :]), len(datagrams)
                got: Counter[int] = Counter()
                for datagram in arrived:
                    (event,) = legacy.decode_relay_datagram_untrusted(datagram)
                    opened = receiver.open(event)
                    assert isinstance(opened, MessageReceived)
                    assert opened.sender == sender.address
                    assert opened.data in originals, "corrupted"
                    got[originals[opened.data]] += 1
                assert set(got.values()) <= {1}, "delivered twice"
                delivered += len(got)

            # Where every other copy went, by the relay's counters and the link's view.
            after = Figures.of(relay)
            relayed = after.relayed - before.relayed
            copies_sent = after.copies_sent - before.copies_sent
            drops = after.dropped - before.dropped
            assert set(drops) <= BENIGN, drops
            timeouts = drops["reassembly_timeout"]
            assert drops["duplicate_fragment"] + drops["late_fragment"] == link.repeats - repeats
            missing = {
                "relay timed out": len(receivers) * timeouts,
                "no fragment reached the relay": len(receivers) * (len(sent) - relayed - timeouts),
                "relayed, not sent": len(receivers) * relayed - copies_sent,
                "lost on the way out": copies_sent - delivered,
            }
            assert min(missing.values()) >= 0, missing
            assert sum(missing.values()) == len(receivers) * len(sent) - delivered, missing
            assert missing["relayed, not sent"] == 0
            assert missing["lost on the way out"] == link.lost_out - lost_out
            assert link.view(sent) == (relayed, timeouts, len(sent) - relayed - timeouts)
            seen.update({name: n for name, n in missing.items() if n})
            seen.update(repeated=link.repeats - repeats)
    # The seed makes the link do each thing at least once.
    assert set(seen) == {
        "relay timed out",
        "no fragment reached the relay",
        "lost on the way out",
        "repeated",
    }, seen
