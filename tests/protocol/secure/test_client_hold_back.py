"""A ClientConnection that holds back (its application reads too slowly): the relay's
new messages go unacknowledged until it takes them again (when a silence after it is
a removal: test_client_fell_behind.py)."""

import pytest

from mcrelay.protocol.secure.client_events import ChatReceived
from mcrelay.protocol.secure.messages import RelayedChat, encode_message
from mcrelay.protocol.secure.sending import MESSAGE_DEADLINE_S, MESSAGE_WINDOW

from .client_support import RELAY_KEY, Net, StubRelay
from .test_client import ME, PEER, client, connected_net, inits_recorded, member, of_type

TEXTS = [f"m{n}".encode() for n in range(MESSAGE_WINDOW + 10)]


def relay_sends(net: Net, texts: list[bytes]) -> None:
    channel = member(net).session.channel
    for text in texts:
        channel.send(encode_message(RelayedChat(PEER, text)), net.now, bounded=False)


def received(net: Net) -> list[bytes]:
    return [event.text for event in of_type(net.events[ME], ChatReceived)]


def test_held_back_the_relay_s_messages_wait_unacknowledged_then_all_arrive() -> None:
    net, connection = connected_net()
    connection.hold_back = True
    relay_sends(net, TEXTS)
    net.run_for(3.0)
    assert received(net) == []
    assert connection.session is not None
    assert connection.session.channel.refused > 0
    relay_channel = member(net).session.channel
    assert relay_channel.statistics().in_flight == MESSAGE_WINDOW  # none acknowledged
    connection.hold_back = False
    net.run_for(MESSAGE_DEADLINE_S - 3.5)
    assert received(net) == TEXTS
    assert relay_channel.statistics().in_flight == 0


def test_a_silence_long_after_holding_back_is_a_relay_gone_as_any() -> None:
    net, connection = connected_net()
    connection.hold_back = True
    relay_sends(net, TEXTS[:3])
    net.run_for(1.0)
    connection.hold_back = False
    net.run_for(MESSAGE_DEADLINE_S + 5.0)
    assert received(net) == TEXTS[:3]
    assert connection.session is not None
    heard = connection.session.last_received
    net.relay_down = True
    inits = inits_recorded(net)
    net.run(lambda: bool(inits), limit_s=60.0)
    assert inits[0] == pytest.approx(heard + 30.0, abs=0.01)
    assert not connection.closed


def test_holding_back_before_the_session_applies_to_it() -> None:
    net = Net(StubRelay())
    connection = client(net, relay_key=RELAY_KEY.public)
    connection.hold_back = True
    net.run(lambda: connection.connected)
    assert connection.session is not None
    assert connection.session.channel.backpressure
    connection.hold_back = False
    assert not connection.session.channel.backpressure
