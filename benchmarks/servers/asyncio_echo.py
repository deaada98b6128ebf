"""Echo server on asyncio's Protocol API: the baseline users would write.

    python benchmarks/servers/asyncio_echo.py --addr tcp://127.0.0.1:PORT [--uvloop]
    python benchmarks/servers/asyncio_echo.py --addr unix:///path/to/sock [--uvloop]

Deliberately plain: no buffer tuning, no custom loop policy beyond --uvloop,
which runs the same code on uvloop's event loop.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import cast


class Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; no isinstance check.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


async def serve(addr: str) -> None:
    loop = asyncio.get_running_loop()
    if addr.startswith("tcp://"):
        host, _, port = addr[len("tcp://"):].rpartition(":")
        server = await loop.create_server(Echo, host.strip("[]"), int(port))
    elif addr.startswith("unix://"):
        server = await loop.create_unix_server(Echo, addr[len("unix://"):])
    else:
        raise SystemExit(f"--addr must be tcp://HOST:PORT or unix:///path, got {addr!r}")
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addr", required=True, help="tcp://HOST:PORT or unix:///path")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop's event loop")
    args = parser.parse_args()
    if args.uvloop:
        import uvloop

        uvloop.run(serve(args.addr))
    else:
        asyncio.run(serve(args.addr))


if __name__ == "__main__":
    main()
