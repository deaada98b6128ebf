"""examples/redis_server.py's Redis-compatible server on asyncio's Protocol API, run on uvloop.

    python benchmarks/servers/redis_uvloop.py --addr 127.0.0.1:6381 [--asyncio]
    redis-benchmark -p 6381 -t set,get -P 16 -q

The baseline for the RESP benchmark: the command handling is imported from
examples/redis_server.py (``Session``, ``Keyspace``, ``process``,
``start_expiry``), so only the transport differs.  ``data_received`` hands
the bytes to ``process``, which writes each reply with ``transport.write``
as soon as it is computed, as the gnetpy server does with ``c.write``.
One event loop and one keyspace, with the same active expire cycle on
``loop.call_later``.  ``--asyncio`` runs it on asyncio's own event loop.
The listening address is printed once the listener is bound.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples"))

from redis_server import Keyspace, Session, process, start_expiry  # noqa: E402


class RedisProtocol(asyncio.Protocol):
    def __init__(self, db: Keyspace) -> None:
        self.db = db

    def connection_made(self, transport: Any) -> None:
        # uvloop's transports do not subclass asyncio.Transport; no isinstance check.
        self.transport = transport
        self.write = transport.write
        self.session = Session(self.db)

    def data_received(self, data: bytes) -> None:
        if not process(self.session, data, self.write):
            self.transport.close()


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    db = Keyspace()
    start_expiry(db, loop.call_later)
    server = await loop.create_server(lambda: RedisProtocol(db), host, port, reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    name = server.sockets[0].getsockname()
    print(f"redis server ({type(loop).__module__}) on {name[0]}:{name[1]}", flush=True)
    await stop.wait()
    # close() stops accepting; the process exits next, which closes the rest.
    # (No wait_closed(): since Python 3.12 it waits for every connection.)
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addr", default="127.0.0.1:6381", help="HOST:PORT (port 0: a free one)")
    parser.add_argument("--asyncio", action="store_true", help="asyncio's event loop instead of uvloop's")
    args = parser.parse_args()
    host, _, port = args.addr.rpartition(":")
    if args.asyncio:
        asyncio.run(serve(host.strip("[]"), int(port)))
    else:
        import uvloop

        uvloop.run(serve(host.strip("[]"), int(port)))


if __name__ == "__main__":
    main()
