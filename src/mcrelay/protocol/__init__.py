"""The sans-I/O wire protocol of mcrelay: bytes in, events out; no sockets, no clocks.

Generic pieces (TLV framing, addresses, fragments, reassembly, RSA helpers) sit
in their own modules; a wire profile (today :mod:`mcrelay.protocol.legacy`)
combines them into the datagrams one protocol version speaks.
"""
