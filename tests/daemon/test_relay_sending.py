"""What the relay sends: the bounded send queue when the socket would block, its
order, refused sends, and the drain after ``stop_receiving``.

On the harness (``relay_harness``): the stub socket stalls (a send would block and
the socket is not writable, as with a full NIC queue) and resumes at the test's
word; time is the mock clock.
"""

import trio
import trio.testing
from cryptography.hazmat.primitives.asymmetric import rsa

from mcrelay.client import MessageReceived
from mcrelay.protocol import legacy
from mcrelay.protocol.addresses import Address, format_address
from mcrelay.protocol.legacy.events import PeerLeft
from relay_harness import open_relay, settle, stalled

Keys = list[rsa.RSAPrivateKey]
NOWHERE: Address = ("127.0.0.1", 9)


async def test_a_full_notice_backlog_counts_every_lost_notice_and_the_rest_go_out(
    keys: Keys, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_relay(keys[0], send_queue_datagrams=4) as harness:
        relay = harness.relay
        with stalled(harness.sock):
            with relay.events.subscribe() as subscription:
                relay.notify_all([(b"notice", NOWHERE)] * 10)
                relay.events.flush_drops()
                # Four wait in the backlog; the other six are lost, and counted, also
                # in the dropped events.
                assert harness.drops() == {"send_queue_full": 6}
                event = subscription.receive_channel.receive_nowait()
                assert (event.kind, event.data["count"]) == ("dropped", 6)
            await trio.sleep(60)  # however long the socket stays full
            assert relay.statistics().send_queue == 4
            assert harness.sock.sent == []
        await settle()
        assert relay.statistics().send_queue == 0
        assert harness.sock.sent == [(b"notice", NOWHERE)] * 4
        assert relay.counters.datagrams_out == 4


async def test_copies_wait_behind_queued_notices_and_are_bounded_apart(
    keys: Keys, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_relay(keys[0], send_queue_datagrams=2) as harness:
        a, b = await harness.members(keys, 2)
        with stalled(harness.sock):
            harness.relay.notify_all([(legacy.peer_left(NOWHERE), b.address)] * 3)  # one too many
            for n in range(3):  # and one copy too many
                a.say(f"copy {n}".encode(), n.to_bytes(4, "big"))
                await settle()
            assert harness.drops() == {"send_queue_full": 2}
            assert harness.relay.statistics().send_queue == 4
        await settle()
        assert b.take() == [
            PeerLeft(NOWHERE),
            PeerLeft(NOWHERE),
            MessageReceived(a.address, b"copy 0"),
            MessageReceived(a.address, b"copy 1"),
        ]


async def test_a_leave_notice_waits_behind_the_leavers_queued_copies(
    keys: Keys, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_relay(keys[0]) as harness:
        a, b = await harness.members(keys, 2)
        with stalled(harness.sock):
            a.say(b"last words")
            await settle()
            assert harness.relay.statistics().send_queue == 1  # the copy for b waits
            harness.relay.kick(format_address(a.address))
        await settle()
        assert b.take() == [MessageReceived(a.address, b"last words"), PeerLeft(a.address)]


async def test_a_send_the_kernel_refuses_costs_that_copy_and_is_counted(
    keys: Keys, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_relay(keys[0]) as harness:
        a, b, c = await harness.members(keys, 3)
        harness.sock.refused.add(b.address)
        a.say(b"to whoever can hear")
        await settle()
        assert c.messages() == [MessageReceived(a.address, b"to whoever can hear")]
        assert b.take() == []
        assert harness.drops() == {"send_failed": 1}
        counters = harness.relay.statistics().counters
        assert (counters.messages_relayed, counters.copies_sent) == (1, 1)


async def test_after_stop_receiving_the_relay_drains_once_messages_are_out(
    keys: Keys, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_relay(keys[0]) as harness:
        relay = harness.relay
        a, b = await harness.members(keys, 2)
        harness.workers.hold()
        a.say(b"in flight at the stop")
        await settle()
        relay.stop_receiving()
        assert relay.stopping
        await trio.sleep(60)  # however long its crypto takes, the message is waited for
        assert not relay.drained.is_set()
        assert relay.statistics().pending_relays == 1
        with stalled(harness.sock):
            harness.workers.release()
            await settle()
            assert relay.statistics().send_queue == 1
            assert not relay.drained.is_set()  # sealed, not yet sent
        await settle()
        assert relay.drained.is_set()
        assert b.messages() == [MessageReceived(a.address, b"in flight at the stop")]


async def test_copies_waiting_for_the_socket_are_bounded_in_bytes(
    keys: Keys, autojump_clock: trio.testing.MockClock
) -> None:
    """Found in review: 16,384 copies of up to 44 KB could wait, some 700 MB."""
    async with open_relay(keys[0], max_send_queue_bytes=131072) as harness:
        a, b = await harness.members(keys, 2)
        with stalled(harness.sock):
            for n in range(12):
                a.say(b"z" * 20000, n.to_bytes(4, "big"))  # a copy of some 26 KB each
                await settle()
            assert harness.relay.outbox.copy_bytes <= 131072
            assert harness.drops() == {"send_queue_full": 8}  # 4 copies fit in 128 KiB
        await settle()
        assert len(b.messages()) == 4
        assert harness.relay.outbox.copy_bytes == 0
