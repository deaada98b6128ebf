"""The cost floor of gnetpy's handler API -- a measuring stick, not a server to use.

    python benchmarks/servers/floor_echo.py --addr tcp://127.0.0.1:PORT
    python benchmarks/servers/floor_echo.py --addr unix:///path/to/sock

A single-threaded pure-Python epoll echo with exactly gnetpy's call shape:
per readable event the loop reads into a fresh ``bytes`` and calls
``handler.on_traffic(conn)``, which calls ``conn.next()`` and
``conn.write(data)`` -- three Python-level calls per message, as with
``examples/echo.py`` -- and a read size that grows once a read fills it
(gnetpy's adaptive read, without the shrinking).

Everything that makes gnetpy correct is left out: no buffering of what a
handler leaves unconsumed, no queue for what the socket does not take (a
partial write loses data), no error handling, no closing protocol, no
actions, no tasks, no timers.  So:

- gnetpy's cost above this server is the price of those guarantees;
- this server's cost above a bare epoll loop (no handler, no ``Conn``) is
  the price of the API's three Python calls per message;
- and this server against uvloop shows what a pure-Python loop with this API
  can reach at best on the interpreter at hand.

The benchmark harness runs it on request only, e.g.
``./bench.sh --workloads W1,W2 --servers gnetpy,floor,uvloop --out /tmp/floor``.
"""

from __future__ import annotations

import argparse
import os
import select
import socket

SMALL_READ = 479  # as gnetpy (readsize.py): the largest bytes CPython's small-object allocator serves
LARGE_READ = 65536


class Conn:
    __slots__ = ("fd", "sock", "src", "size")

    def __init__(self, sock: socket.socket) -> None:
        self.fd = sock.fileno()
        self.sock = sock
        self.src = b""
        self.size = SMALL_READ

    def next(self) -> bytes:
        src = self.src
        self.src = b""
        return src

    def write(self, data: bytes) -> int:
        return os.write(self.fd, data)


class Echo:
    def on_traffic(self, c: Conn) -> None:
        c.write(c.next())


def serve(listener: socket.socket) -> None:
    listener.setblocking(False)
    poller = select.epoll()
    poller.register(listener.fileno(), select.EPOLLIN)
    conns: dict[int, Conn] = {}
    on_traffic = Echo().on_traffic
    read = os.read
    wait = poller.poll
    listener_fd = listener.fileno()
    while True:
        for fd, _ in wait(-1, 1024):
            try:
                c = conns[fd]
            except KeyError:
                if fd == listener_fd:
                    _accept(listener, poller, conns)
                continue
            size = c.size
            try:
                data = read(fd, size)
            except OSError:
                data = b""
            if not data:
                poller.unregister(fd)
                del conns[fd]
                c.sock.close()
                continue
            if len(data) == size:
                c.size = LARGE_READ
            c.src = data
            on_traffic(c)


def _accept(listener: socket.socket, poller: select.epoll, conns: dict[int, Conn]) -> None:
    try:
        sock, _ = listener.accept()
    except BlockingIOError:
        return
    sock.setblocking(False)
    if sock.family != socket.AF_UNIX:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conns[sock.fileno()] = Conn(sock)
    poller.register(sock.fileno(), select.EPOLLIN)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addr", required=True, help="tcp://HOST:PORT or unix:///path")
    args = parser.parse_args()
    if args.addr.startswith("tcp://"):
        host, _, port = args.addr[len("tcp://"):].rpartition(":")
        listener = socket.create_server((host.strip("[]"), int(port)), backlog=4096)
    elif args.addr.startswith("unix://"):
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(args.addr[len("unix://"):])
        listener.listen(4096)
    else:
        raise SystemExit(f"--addr must be tcp://HOST:PORT or unix:///path, got {args.addr!r}")
    try:
        serve(listener)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
