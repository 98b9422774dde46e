"""When a relay's silence after a hold-back is a removal (``fell_behind``), and when it
is not: the refused messages taken since, or a relay that restarted, lose nothing to
holding back, and the connection joins again as after any silence (both closed
``fell_behind``: found by review). Messages go in order, so once one after the last
refused is taken, every refused one was."""

from mcrelay.protocol.secure.channel import Channel
from mcrelay.protocol.secure.client import ClientConnection
from mcrelay.protocol.secure.client_events import ChatReceived, Closed, CloseReason
from mcrelay.protocol.secure.frames import Abandon
from mcrelay.protocol.secure.messages import Notice, NoticeCode, RelayedChat, encode_message
from mcrelay.protocol.secure.sending import MESSAGE_DEADLINE_S

from .channel_support import client, feed, whole
from .client_support import Net, StubRelay
from .test_client import IDENTITY, ME, PEER, connected_net, inits_recorded, member, of_type


def relay_sends(net: Net, *bodies: bytes) -> None:
    for body in bodies:
        member(net).session.channel.send(body, net.now, bounded=False)


def chat(text: bytes) -> bytes:
    return encode_message(RelayedChat(PEER, text))


def received(net: Net) -> list[bytes]:
    return [event.text for event in of_type(net.events[ME], ChatReceived)]


def removed(net: Net) -> None:
    """The relay removes the member (as at a message's deadline) and stays up."""
    gone = net.relay.members.pop(IDENTITY.public)
    for index in [index for index, held in net.relay.by_index.items() if held is gone]:
        del net.relay.by_index[index]


def ended(net: Net, connection: ClientConnection) -> list[float]:
    """Run on after the relay's silence; the times of the INITs sent meanwhile."""
    inits = inits_recorded(net)
    net.run(lambda: connection.closed or bool(inits), limit_s=60.0)
    return inits


def test_a_brief_hold_back_that_lost_nothing_then_a_crash_is_a_relay_gone_as_any() -> None:
    """Held back 0.5 s, every message taken, then the relay crashed 4 s later: it
    closed ``fell_behind`` and started no handshake (found by review)."""
    net, connection = connected_net()
    connection.hold_back = True
    relay_sends(net, chat(b"m0"), chat(b"m1"), chat(b"m2"))
    net.run_for(0.5)
    assert connection.session is not None
    assert connection.session.channel.refused > 0
    connection.hold_back = False  # the reader caught up
    net.run_for(4.0)
    assert received(net) == [b"m0", b"m1", b"m2"]
    net.relay_down = True
    assert ended(net, connection)
    assert not connection.closed


def test_a_restart_whose_notice_was_refused_is_no_removal() -> None:
    """The relay restarted while the chat was 2 s behind: its NOTICE shutting down was
    refused, the relay fell silent, and the chat closed ``fell_behind`` instead of
    joining the relay that came back (found by review)."""
    net, connection = connected_net()
    connection.hold_back = True
    relay_sends(net, chat(b"last words"))
    net.run_for(0.5)
    relay_sends(net, encode_message(Notice(NoticeCode.SHUTTING_DOWN, b"shutting down")))
    net.run_for(0.3)
    net.relay_down = True
    net.run_for(1.5)
    connection.hold_back = False
    net.run_for(3.0)
    assert ended(net, connection)
    assert Closed(CloseReason.FELL_BEHIND) not in net.events[ME]


def test_a_relay_that_restarted_is_joined_again() -> None:
    """Silent while a refused message was not taken, then answering under another epoch:
    a restart, not a removal."""
    net, connection = connected_net()
    connection.hold_back = True
    relay_sends(net, chat(b"lost in the restart"))
    net.run_for(1.0)
    net.relay = StubRelay(epoch=10)  # it forgot every member
    net.run_for(1.0)  # what the old one sent is refused still
    assert connection.session is not None
    assert connection.session.channel.refusals_outstanding
    connection.hold_back = False
    net.run(lambda: IDENTITY.public in net.relay.members, limit_s=60.0)
    assert not connection.closed
    relay_sends(net, chat(b"after"))
    net.run_for(1.0)
    assert received(net) == [b"after"]


def test_a_relay_that_removed_us_answers_under_its_epoch_and_the_connection_closes() -> None:
    """Held back past the message's deadline: the relay removed the member, and answers
    the handshake after the silence as the same relay. Joining it again would hide the
    loss."""
    net, connection = connected_net()
    connection.hold_back = True
    relay_sends(net, chat(b"m0"))
    net.run_for(MESSAGE_DEADLINE_S)
    removed(net)
    inits = ended(net, connection)
    net.run(lambda: connection.closed, limit_s=10.0)
    assert net.events[ME][-1] == Closed(CloseReason.FELL_BEHIND)
    assert len(inits) == 1
    assert received(net) == []


def test_a_removal_before_a_rekey_closes_the_connection_at_the_rekey() -> None:
    """The relay removed us at its deadline for a message we refused; the keypair's rekey
    (due every 120 s) came before 30 s of silence, the relay took it as a new join, and
    the chat went on as if nothing were lost (found by review). A refusal outstanding
    past the deadline is a message given up: a RESPONSE under the relay's epoch then
    closes the connection."""
    net, connection = connected_net()
    net.run_for(95.0 - net.now)  # the rekey is due at about 120 s
    connection.hold_back = True
    relay_sends(net, chat(b"m0"))
    net.run_for(MESSAGE_DEADLINE_S)
    removed(net)
    net.run(lambda: connection.closed or IDENTITY.public in net.relay.members, limit_s=60.0)
    assert net.now < 125.0  # the rekey's handshake, not one after 30 s of silence
    assert Closed(CloseReason.FELL_BEHIND) in net.events[ME]


def test_refused_then_taken_is_no_removal_even_if_the_relay_forgets_us() -> None:
    """Every refused message was taken: a later silence and a relay that answers under
    its epoch is a member timed out as any (no message of ours was lost to holding back)."""
    net, connection = connected_net()
    connection.hold_back = True
    relay_sends(net, chat(b"m0"))
    net.run_for(1.0)
    connection.hold_back = False
    net.run_for(1.0)
    assert received(net) == [b"m0"]
    removed(net)
    net.run(lambda: IDENTITY.public in net.relay.members, limit_s=60.0)
    assert not connection.closed


def refused_first(channel: Channel) -> None:
    channel.backpressure = True
    feed(channel, 0.0, *whole(0, b"\x01m0"))
    channel.backpressure = False
    assert channel.refused == 1
    assert channel.refusals_outstanding


def test_a_refused_message_taken_is_outstanding_no_more() -> None:
    channel = client()
    refused_first(channel)
    feed(channel, 0.1, *whole(0, b"\x01m0"))
    assert not channel.refusals_outstanding
    assert channel.given_up == 0


def test_a_refusal_taken_is_forgotten_before_the_sequence_wraps() -> None:
    """It was kept: half the sequence space later it read as ahead, outstanding again,
    and a silence after a brief hold-back closed the connection (found by review)."""
    channel = client()
    refused_first(channel)
    feed(channel, 0.1, *whole(0, b"\x01m0"))
    assert not channel.refusals_outstanding
    receiver = channel._receiver
    receiver._next_seq = 2**31 + 1  # as after 2^31 more messages
    assert not channel.refusals_outstanding


def test_a_refused_message_abandoned_is_counted_given_up() -> None:
    """The relay's ABANDON of a message we refused: it is lost, evidence of a removal."""
    channel = client()
    refused_first(channel)
    feed(channel, 0.1, Abandon(0))
    assert not channel.refusals_outstanding
    assert channel.given_up == 1


def test_a_refused_message_passed_over_is_counted_given_up() -> None:
    channel = client()
    refused_first(channel)
    feed(channel, 0.1, *whole(9, b"\x01m9"))  # settles every message below 2
    assert not channel.refusals_outstanding
    assert channel.given_up == 2
