"""mcrelay: a secure group-messaging relay for local networks."""

__version__ = "0.1.0"
