"""The secure wire profile ("mcrelay secure 1"), sans-I/O.

Its normative description is ``docs/protocol.md`` (after ``secure-wire.md``): Noise IK
sessions, AEAD on every DATA, replay windows, and reliable in-order messages carried
in frames.
"""
