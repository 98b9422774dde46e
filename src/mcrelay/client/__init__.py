"""The Trio participant used by ``mcrelay chat`` and ``mcrelay send``."""

from mcrelay.client.participant import (
    MessageReceived,
    Participant,
    ParticipantEvent,
    PeerPresent,
    RegistrationError,
    RelayKeyMismatch,
    RelayUnreachable,
    open_participant,
)

__all__ = [
    "MessageReceived",
    "Participant",
    "ParticipantEvent",
    "PeerPresent",
    "RegistrationError",
    "RelayKeyMismatch",
    "RelayUnreachable",
    "open_participant",
]
