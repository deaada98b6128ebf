"""Socket options: the one place where gnetpy sets them.

Listeners (``set_listener_options``), accepted and enrolled connections
(``configure_accepted``) and ``Conn.set_*`` all come through here, and each
value is checked against what the kernel accepts before it is set, so that a
bad one fails when the options are built -- not later, at accept time, where
it would silently drop every connection.
"""

from __future__ import annotations

import fcntl
import math
import socket
import sys
import termios
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .address import Address
    from .options import Options

# SO_RCVBUF/SO_SNDBUF are C ints: setsockopt raises OverflowError beyond this.
MAX_SOCKET_BUFFER = 2**31 - 1
# Linux's MAX_TCP_KEEPIDLE/MAX_TCP_KEEPINTVL and MAX_TCP_KEEPCNT.  The kernel
# refuses more with EINVAL -- at accept time, where it would silently drop
# every connection -- so larger values are refused up front instead.
MAX_KEEP_SECONDS = 32767
MAX_KEEP_COUNT = 127
_TIOCOUTQ = getattr(termios, "TIOCOUTQ", 0x5411)


def set_listener_options(sock: socket.socket, address: Address, opts: Options) -> None:
    """Before bind: the options of a listening (or datagram) socket -- and of what it accepts."""
    if opts.reuse_addr:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Linux has no SO_REUSEPORT for unix sockets: those are shared instead (see
    # docs/architecture.md); every loop binds its own UDP socket to the port.
    if address.network == "udp" or (opts.reuse_port and address.network != "unix"):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if address.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1 if address.v6only else 0)
    if opts.bind_to_device:
        set_bind_to_device(sock, opts.bind_to_device)
    # Accepted sockets inherit the buffer sizes set on the listener, and a
    # receive buffer above 64 KiB must be set before listen() to be advertised
    # in the TCP window scale of the SYN-ACK.
    if opts.socket_recv_buffer:
        set_read_buffer(sock, opts.socket_recv_buffer)
    if opts.socket_send_buffer:
        set_write_buffer(sock, opts.socket_send_buffer)


def bind(sock: socket.socket, address: Address) -> None:
    """``sock.bind``, with an error that names the address."""
    try:
        sock.bind(address.sockaddr)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot bind {address.text!r}: {exc.strerror}") from None


def configure_accepted(sock: socket.socket, opts: Options, is_tcp: bool) -> None:
    """Options every accepted (or enrolled) connection gets."""
    sock.setblocking(False)
    if not is_tcp:
        return
    if opts.tcp_no_delay:
        # Request/response protocols want each write on the wire now; Nagle's
        # algorithm would hold small replies back for up to one RTT.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if opts.tcp_keepalive:
        set_keep_alive(sock, opts.tcp_keepalive, opts.tcp_keep_interval, opts.tcp_keep_count)


def set_keep_alive(sock: socket.socket, idle: float, interval: float | None = None, count: int | None = None) -> None:
    """Enable TCP keep-alive probes after ``idle`` seconds (``idle`` 0 disables them).

    The kernel counts whole seconds; fractions round up so that a short
    positive idle time never becomes 0 (which the kernel rejects).
    """
    check_keepalive(idle, interval, count, ("set_keep_alive: idle=", "set_keep_alive: interval=",
                                            "set_keep_alive: count="))
    if not idle:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 0)
        return
    interval = idle / 5 if interval is None else interval
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, max(1, math.ceil(idle)))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, max(1, math.ceil(interval)))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 5 if count is None else count)


def set_read_buffer(sock: socket.socket, size: int) -> None:
    _check_size("socket_recv_buffer", size)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


def set_write_buffer(sock: socket.socket, size: int) -> None:
    _check_size("socket_send_buffer", size)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)


def set_bind_to_device(sock: socket.socket, device: str) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, device.encode())
    except OSError as exc:
        raise OSError(exc.errno, f"bind_to_device={device!r}: {exc.strerror}") from None


def set_linger(sock: socket.socket, seconds: int | None) -> None:
    """SO_LINGER: ``None`` restores the default; 0 makes close send a reset."""
    if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, int) or seconds < 0):
        raise ValueError(f"set_linger: {seconds!r}; accepted: None or whole seconds >= 0")
    onoff, value = (0, 0) if seconds is None else (1, seconds)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, onoff.to_bytes(4, "little", signed=True)
                    + value.to_bytes(4, "little", signed=True))


def reset_on_close(sock: socket.socket) -> None:
    """Make the coming close() send a TCP reset (SO_LINGER 0): for a close that drops written bytes.

    A unix socket has no reset: its peer reads what reached the kernel, then an end of file.
    """
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        try:
            set_linger(sock, 0)
        except OSError:
            pass  # the connection is gone already: nothing left to tell


def _check_size(name: str, size: int) -> None:
    if isinstance(size, bool) or not isinstance(size, int) or not 0 < size <= MAX_SOCKET_BUFFER:
        raise ValueError(f"{name}: {size!r}; accepted: a number of bytes from 1 to {MAX_SOCKET_BUFFER}")


def check_keepalive(idle: Any, interval: Any, count: Any, labels: tuple[str, str, str]) -> None:
    """Raise ``ValueError`` for a keep-alive setting the kernel would refuse.

    ``interval`` and ``count`` may be None (their defaults); ``labels`` prefix
    the bad value in the message ("tcp_keepalive: ", "set_keep_alive: idle=").
    """
    for label, value in ((labels[0], idle), (labels[1], interval)):
        # "not 0 <= value <= max" also refuses NaN.
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not 0 <= value <= MAX_KEEP_SECONDS):
            raise ValueError(f"{label}{value!r}; accepted: seconds as a number from 0 to {MAX_KEEP_SECONDS}")
    if idle is None:
        raise ValueError(f"{labels[0]}None; accepted: seconds as a number from 0 to {MAX_KEEP_SECONDS}")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int)
                              or not 1 <= count <= MAX_KEEP_COUNT):
        raise ValueError(f"{labels[2]}{count!r}; accepted: an int from 1 to {MAX_KEEP_COUNT}")


def unacked_bytes(sock: socket.socket) -> int | None:
    """Bytes this TCP socket sent that the peer has not acknowledged yet (a FIN counts one).

    ``TIOCOUTQ`` (``SIOCOUTQ``) on Linux.  None where the kernel cannot tell.
    """
    try:
        return int.from_bytes(fcntl.ioctl(sock.fileno(), _TIOCOUTQ, b"\0\0\0\0"), sys.byteorder, signed=True)
    except (OSError, ValueError):
        return None
