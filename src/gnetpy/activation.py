"""Listening sockets handed to us: ``fd://N`` (one inherited descriptor) and ``systemd://`` (socket activation).

A supervisor can bind a service's sockets itself and pass them on: systemd with a
``.socket`` unit (and ``systemd-socket-activate`` by hand) starts the program with the
sockets as descriptors 3, 4, ... and says so in the environment -- ``LISTEN_PID`` (this
process), ``LISTEN_FDS`` (how many), ``LISTEN_FDNAMES`` (their names, colon-separated,
from ``FileDescriptorName=``).  ``systemd://`` serves every one of them, ``systemd://NAME``
those named NAME; ``fd://N`` serves descriptor N, however it was inherited.  Nothing is
bound: the socket's kind -- stream or datagram, inet or unix -- is read from the
descriptor itself, and its address from ``getsockname``.

As ``sd_listen_fds`` does, the variables are removed once read, so that a program the
service starts does not take the sockets for its own; and the descriptors are marked
close-on-exec.  A unix socket's file is the supervisor's: gnetpy never removes it.
"""

from __future__ import annotations

import os
import socket
import stat

from .address import Address
from .errors import InvalidAddressError

SCHEMES = ("fd", "systemd")
# systemd's first passed descriptor (SD_LISTEN_FDS_START).
FIRST_FD = 3


def is_inherited(text: str) -> bool:
    """Whether ``text`` names an inherited socket rather than an address to bind."""
    return isinstance(text, str) and text.partition("://")[0].lower() in SCHEMES and "://" in text


def expand(text: str) -> list[Address]:
    """The inherited sockets ``text`` names, one ``Address`` each (with its descriptor in ``fd``)."""
    scheme, _, rest = text.partition("://")
    if scheme.lower() == "fd":
        return [describe(text, _descriptor(text, rest))]
    return [describe(text, fd) for fd in _activated(text, rest)]


def _descriptor(text: str, rest: str) -> int:
    if not rest.isdigit() or (len(rest) > 1 and rest[0] == "0"):
        raise InvalidAddressError(f"address {text!r}: expected fd://N, N a descriptor number")
    return int(rest)


def _activated(text: str, name: str) -> list[int]:
    """The descriptors passed by socket activation (named ``name``, if given); the environment read and cleared."""
    pid, count, names = (os.environ.get(k) for k in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"))
    if count is None:
        raise InvalidAddressError(f"address {text!r}: no sockets were passed to this process (LISTEN_FDS is not "
                                  f"set: start it from a systemd .socket unit, or systemd-socket-activate)")
    if pid is None or not pid.isdigit() or int(pid) != os.getpid():
        raise InvalidAddressError(f"address {text!r}: the sockets were passed to process {pid}, not this one "
                                  f"({os.getpid()}): LISTEN_PID does not match")
    if not count.isdigit():
        raise InvalidAddressError(f"address {text!r}: LISTEN_FDS is {count!r}, not a number")
    fds = list(range(FIRST_FD, FIRST_FD + int(count)))
    labels = names.split(":") if names else []
    for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(key, None)
    if name:
        if len(labels) != len(fds):
            raise InvalidAddressError(f"address {text!r}: the passed sockets have no names (LISTEN_FDNAMES)")
        fds = [fd for fd, label in zip(fds, labels) if label == name]
        if not fds:
            raise InvalidAddressError(f"address {text!r}: no passed socket is named {name!r} "
                                      f"(their names: {', '.join(labels)})")
    for fd in fds:
        os.set_inheritable(fd, False)
    return fds


def describe(text: str, fd: int) -> Address:
    """What the socket at ``fd`` is: an ``Address`` of its network and bound address, ``fd`` set."""
    try:
        if not stat.S_ISSOCK(os.fstat(fd).st_mode):
            raise InvalidAddressError(f"address {text!r}: descriptor {fd} is not a socket")
    except OSError as exc:
        raise InvalidAddressError(f"address {text!r}: descriptor {fd} is not open ({exc.strerror})") from None
    probe = socket.socket(fileno=os.dup(fd))  # a copy to look at: the descriptor stays as it was
    try:
        family, kind, bound = probe.family, probe.type, probe.getsockname()
    finally:
        probe.close()
    if family == socket.AF_UNIX and kind == socket.SOCK_STREAM:
        if isinstance(bound, bytes):
            bound = bound.decode(errors="replace")
        path = "@" + bound[1:] if bound.startswith("\0") else bound
        return Address(text, "unix", family, path=path, fd=fd)
    if family in (socket.AF_INET, socket.AF_INET6) and kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        host, port = bound[0], int(bound[1])
        network = "tcp" if kind == socket.SOCK_STREAM else "udp"
        return Address(text, network, family, host=host, port=port, fd=fd)
    raise InvalidAddressError(f"address {text!r}: descriptor {fd} is a socket gnetpy cannot serve "
                              f"(family {family!r}, type {kind!r}): expected a TCP, UDP or unix stream socket")
