"""Echo server on asyncio's Protocol API: the baseline users would write.

    python benchmarks/servers/asyncio_echo.py --addr tcp://127.0.0.1:PORT [--uvloop]
    python benchmarks/servers/asyncio_echo.py --addr unix:///path/to/sock [--uvloop]
    python benchmarks/servers/asyncio_echo.py --addr tcp://127.0.0.1:PORT --frames [--uvloop]
    python benchmarks/servers/asyncio_echo.py --addr tcp://127.0.0.1:PORT --workers K --reuse-port
                                              [--uvloop] [--cpu-affinity]

Deliberately plain: no buffer tuning, no custom loop policy beyond --uvloop,
which runs the same code on uvloop's event loop.

--frames echoes length-prefixed frames instead of bytes (W8): a 4-byte
big-endian length and that many bytes of body, each complete frame written
back with its own transport.write, the rest kept for the next read.

--workers K is the multi-core comparison: the parent binds the listener(s),
forks K worker processes, each running its own event loop, and then only
supervises them: SIGTERM or SIGINT is forwarded to every worker (each stops
within STOP_GRACE_S or is killed), and a worker that exits stops the others
(the parent exits 1 unless that worker was stopped by SIGTERM/SIGINT or
exited 0).  With
--reuse-port each worker accepts on its own SO_REUSEPORT listener on the same
port (the kernel spreads connections over them); without it the workers share
one listener.  Port 0 binds the first listener to a free port and the others
to the same one.  --cpu-affinity pins worker i to the i-th CPU of the allowed
set the parent started with (wrapping around when there are more workers than
CPUs).  The listening address is printed once the listeners are bound.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from typing import cast

STOP_GRACE_S = 5.0   # the parent's wait for its workers after forwarding SIGTERM


class Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; no isinstance check.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


class FrameEcho(asyncio.Protocol):
    """--frames: each complete length-prefixed frame written back as it is, one write per frame."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.buf = bytearray()

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        transport = self.transport
        pos, end = 0, len(buf)
        while end - pos >= 4:
            n = 4 + int.from_bytes(buf[pos:pos + 4], "big")
            if end - pos < n:
                break
            transport.write(buf[pos:pos + n])
            pos += n
            if transport.is_closing():   # the peer is gone: asyncio would log every further write
                return
        del buf[:pos]


async def serve(addr: str, protocol: type[asyncio.Protocol] = Echo) -> None:
    loop = asyncio.get_running_loop()
    if addr.startswith("tcp://"):
        host, _, port = addr[len("tcp://"):].rpartition(":")
        server = await loop.create_server(protocol, host.strip("[]"), int(port))
    elif addr.startswith("unix://"):
        server = await loop.create_unix_server(protocol, addr[len("unix://"):])
    else:
        raise SystemExit(f"--addr must be tcp://HOST:PORT or unix:///path, got {addr!r}")
    what = "frame echo" if protocol is FrameEcho else "echo"
    print(f"asyncio {what} on {describe(server.sockets[0])}", flush=True)
    async with server:
        await server.serve_forever()


# ---- worker processes -----------------------------------------------------


def describe(sock: socket.socket) -> str:
    name = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        return f"unix://{name}"
    host = f"[{name[0]}]" if sock.family == socket.AF_INET6 else name[0]
    return f"tcp://{host}:{name[1]}"


def bind_listeners(addr: str, count: int, reuse_port: bool) -> list[socket.socket]:
    """`count` listeners on one port (SO_REUSEPORT), or one shared listener."""
    if addr.startswith("unix://"):
        if reuse_port:
            raise SystemExit("--reuse-port is for tcp:// addresses (a Unix socket path has one listener)")
        path = addr[len("unix://"):]
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(path)
        sock.listen(100)
        return [sock]
    if not addr.startswith("tcp://"):
        raise SystemExit(f"--addr must be tcp://HOST:PORT or unix:///path, got {addr!r}")
    host, _, port_text = addr[len("tcp://"):].rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    port = int(port_text)
    listeners: list[socket.socket] = []
    for _ in range(count if reuse_port else 1):
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        port = sock.getsockname()[1]   # port 0: the others join the first one's port
        # Listening before any worker starts: every listener is in the kernel's
        # SO_REUSEPORT group before a connection can be routed to it.
        sock.listen(100)
        listeners.append(sock)
    return listeners


def die_with_parent(parent: int) -> None:
    """Linux: SIGTERM this worker when the parent dies (even by SIGKILL)."""
    try:
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:   # it died before prctl took effect
        os._exit(0)


async def serve_socket(sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if sock.family == socket.AF_UNIX:
        server = await loop.create_unix_server(Echo, sock=sock)
    else:
        server = await loop.create_server(Echo, sock=sock)
    await stop.wait()
    # close() stops accepting; the process exits next, which closes the rest.
    # (No wait_closed(): since Python 3.12 it waits for every connection.)
    server.close()


def worker(sock: socket.socket, cpu: int | None, use_uvloop: bool, parent: int) -> None:
    """A forked worker: one event loop on its own listener (or the shared one)."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
    die_with_parent(parent)
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    if use_uvloop:
        import uvloop

        uvloop.run(serve_socket(sock))
    else:
        asyncio.run(serve_socket(sock))


class _Stop(Exception):
    """SIGTERM or SIGINT reached the parent."""


def _raise_stop(signum: int, frame: object) -> None:
    raise _Stop


def stop_workers(workers: dict[int, int]) -> None:
    """SIGTERM every worker still running, SIGKILL after STOP_GRACE_S; reap them all."""
    for pid in workers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    while workers:
        for pid in list(workers):
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                del workers[pid]
        if not workers:
            return
        if time.monotonic() >= deadline:
            for pid in workers:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            for pid in workers:
                os.waitpid(pid, 0)
            return
        time.sleep(0.01)


def run_workers(addr: str, count: int, reuse_port: bool, use_uvloop: bool, cpu_affinity: bool) -> int:
    if use_uvloop:
        import uvloop  # noqa: F401  (fail here, once, if it is missing)
    cpus = sorted(os.sched_getaffinity(0))
    listeners = bind_listeners(addr, count, reuse_port)
    mode = "reuse_port" if reuse_port else "one shared listener"
    loop_name = "uvloop" if use_uvloop else "asyncio"
    print(f"asyncio echo on {describe(listeners[0])} ({count} worker processes, {mode}, {loop_name})",
          flush=True)
    parent = os.getpid()
    workers: dict[int, int] = {}   # pid -> worker index
    # Signals wait until every worker is forked and the handlers are in place;
    # the workers unblock them after restoring the default handlers.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    try:
        for i in range(count):
            sock = listeners[i] if reuse_port else listeners[0]
            cpu = cpus[i % len(cpus)] if cpu_affinity else None
            pid = os.fork()
            if pid == 0:
                code = 0
                try:
                    for other in listeners:
                        if other is not sock:
                            other.close()
                    worker(sock, cpu, use_uvloop, parent)
                except BaseException as exc:   # noqa: BLE001  (report, never return into the parent's code)
                    print(f"asyncio echo worker {i}: {exc!r}", file=sys.stderr, flush=True)
                    code = 1
                finally:
                    sys.stdout.flush()
                    os._exit(code)
            workers[pid] = i
    finally:
        for sock in listeners:   # the workers hold them now
            sock.close()
        signal.signal(signal.SIGTERM, _raise_stop)
        signal.signal(signal.SIGINT, _raise_stop)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
    code = 0
    try:
        while workers:
            pid, status = os.wait()
            if pid in workers:
                i = workers.pop(pid)
                print(f"asyncio echo: worker {i} (pid {pid}) exited ({describe_status(status)}); "
                      f"stopping the others", file=sys.stderr, flush=True)
                # Stopped from outside (a signal to the whole group) is not a failure.
                stopped = (os.WIFSIGNALED(status) and os.WTERMSIG(status) in (signal.SIGTERM, signal.SIGINT)
                           or os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0)
                code = 0 if stopped else 1
                break
    except _Stop:
        pass
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)   # the stop below is bounded; let it finish
        stop_workers(workers)
    return code


def describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addr", required=True, help="tcp://HOST:PORT or unix:///path")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop's event loop")
    parser.add_argument("--frames", action="store_true",
                        help="echo length-prefixed frames (4-byte big-endian length + body), "
                             "one write per frame")
    parser.add_argument("--workers", type=int, default=0,
                        help="K >= 1: a supervising parent and K worker processes, each with its "
                             "own event loop (default 0: serve in this process)")
    parser.add_argument("--reuse-port", action="store_true",
                        help="with --workers: one SO_REUSEPORT listener per worker")
    parser.add_argument("--cpu-affinity", action="store_true",
                        help="with --workers: pin worker i to the i-th CPU of the allowed set")
    args = parser.parse_args()
    if args.workers < 0:
        parser.error("--workers must be >= 0")
    if args.workers == 0:
        if args.reuse_port or args.cpu_affinity:
            parser.error("--reuse-port and --cpu-affinity need --workers K")
        protocol = FrameEcho if args.frames else Echo
        if args.uvloop:
            import uvloop

            uvloop.run(serve(args.addr, protocol))
        else:
            asyncio.run(serve(args.addr, protocol))
        return
    if args.frames:
        parser.error("--frames serves in one process: not with --workers")
    sys.exit(run_workers(args.addr, args.workers, args.reuse_port, args.uvloop, args.cpu_affinity))


if __name__ == "__main__":
    main()
