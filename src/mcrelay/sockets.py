"""UDP sockets for the relay and for participants, with their multicast options."""

import socket

import trio

RECEIVE_BUFFER_BYTES = 4 * 1024 * 1024
MULTICAST_TTL = 1
MAX_DATAGRAM_BYTES = 65535
"""What one read of a UDP socket takes: the largest datagram."""
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)


def _set_receive_buffer(sock: socket.socket | trio.socket.SocketType, wanted: int) -> int:
    """Ask for ``wanted`` bytes of receive buffer; return what the kernel granted, in the
    units asked (Linux reports twice the size it books, for its own overhead: compared
    as reported, a grant of half the request passed for the whole, found by review).

    SO_RCVBUFFORCE passes ``net.core.rmem_max`` but needs CAP_NET_ADMIN; without it
    SO_RCVBUF gets at most that sysctl.
    """
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, wanted)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, wanted)
    reported: int = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    return reported // 2


def open_relay_socket(
    *, group: str, port: int, interface: str, receive_buffer_bytes: int
) -> tuple[socket.socket, int]:
    """Bind ``0.0.0.0:port``, join ``group`` on ``interface``; return the socket and its buffer.

    The socket is a plain non-blocking one: the relay reads and writes it until it
    would block, and waits with ``trio.lowlevel.wait_readable``/``wait_writable``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        # No SO_REUSEADDR: a second relay on the same port must fail to start, not
        # silently take over the unicast traffic.
        try:
            sock.bind(("0.0.0.0", port))
        except OSError as exc:
            raise OSError(exc.errno, f"cannot bind UDP port {port}: {exc.strerror}") from None
        membership = socket.inet_aton(group) + socket.inet_aton(interface)
        try:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
        except OSError as exc:
            raise OSError(
                exc.errno, f"cannot join {group} on interface {interface}: {exc.strerror}"
            ) from None
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(interface))
        granted = _set_receive_buffer(sock, receive_buffer_bytes)
    except BaseException:
        sock.close()
        raise
    return sock, granted


async def open_client_socket(
    *, interface: str, ttl: int = MULTICAST_TTL, receive_buffer_bytes: int = RECEIVE_BUFFER_BYTES
) -> trio.socket.SocketType:
    """An ephemeral unicast socket that sends multicast out of ``interface``."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        await sock.bind((interface, 0))
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(interface))
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
        _set_receive_buffer(sock, receive_buffer_bytes)
    except BaseException:
        sock.close()
        raise
    return sock
