"""The parent's line to a worker process: accepted sockets one way, control messages both ways.

One ``SOCK_SEQPACKET`` unix socket pair per worker, made before the fork:
message boundaries are kept (one ``sendmsg`` is one ``recvmsg``), and a
message can carry descriptors (``SCM_RIGHTS``).  A message is one type byte
and a pickled payload -- both ends are the same program, forked from one
process, so pickle is safe here and carries exceptions whole.

Parent to worker:  ``SOCKETS`` (up to ``MAX_FDS`` accepted sockets, their
                   remote addresses as the payload), ``STOP`` (seconds to flush).
Worker to parent:  ``READY`` (serving; the addresses its own listeners got),
                   ``FAILED`` (could not start: the exception),
                   ``SHUTDOWN`` (``Action.SHUTDOWN``, or the exception that
                   should stop the engine).

An end of file on either side means the other process is gone: a worker
whose parent died stops; a parent whose worker died replaces it.
"""

from __future__ import annotations

import array
import pickle
import socket
import traceback
from typing import Any

SOCKETS, STOP, READY, FAILED, SHUTDOWN = b"s", b"x", b"r", b"f", b"d"
# Descriptors per message: the kernel's SCM_MAX_FD.
MAX_FDS = 253
# Room for a message's payload: remote addresses of MAX_FDS sockets, an
# exception with its traceback text.
MAX_MESSAGE = 1 << 20


def pair() -> tuple[socket.socket, socket.socket]:
    """(parent's end, worker's end)."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


def encode(kind: bytes, payload: Any = None) -> bytes:
    return kind + pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)


def decode(message: bytes) -> tuple[bytes, Any]:
    return message[:1], pickle.loads(message[1:])


def send(sock: socket.socket, kind: bytes, payload: Any = None, fds: list[int] | None = None) -> None:
    """One message (raises ``BlockingIOError`` on a full non-blocking socket, ``OSError`` on a dead peer)."""
    data = encode(kind, payload)
    if fds:
        sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
    else:
        sock.send(data)


def receive(sock: socket.socket) -> tuple[bytes, Any, list[int]] | None:
    """One message with its descriptors; None at end of file (the other process is gone)."""
    data, fds, flags, _ = socket.recv_fds(sock, MAX_MESSAGE, MAX_FDS)
    if not data:
        for fd in fds:
            socket.close(fd)
        return None
    if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
        for fd in fds:
            socket.close(fd)
        raise OSError(f"channel: a message was truncated (flags {flags:#x})")
    kind, payload = decode(data)
    return kind, payload, fds


def portable_error(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling, else a ``RuntimeError`` carrying its text and traceback."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        text = "".join(traceback.format_exception(exc)).rstrip()
        return RuntimeError(f"{type(exc).__name__}: {exc}\n{text}")
