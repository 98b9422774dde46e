"""The secure profile in the relay: handshakes, sessions and members' reliable messages."""
