"""Relays that federate over NATS: the Trio side."""
