"""UDP echo server on asyncio's DatagramProtocol API: the baseline users would write.

    python benchmarks/servers/asyncio_udp_echo.py --addr udp://127.0.0.1:PORT [--uvloop]

Every datagram goes back to its sender.  Deliberately plain, like
asyncio_echo.py: no buffer tuning, no custom loop policy beyond --uvloop,
which runs the same code on uvloop's event loop.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any, cast


class Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.DatagramTransport; no isinstance check.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.transport.sendto(data, addr)


async def serve(addr: str) -> None:
    if not addr.startswith("udp://"):
        raise SystemExit(f"--addr must be udp://HOST:PORT, got {addr!r}")
    host, _, port = addr[len("udp://"):].rpartition(":")
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(Echo, local_addr=(host.strip("[]"), int(port)))
    try:
        await loop.create_future()   # until the process is stopped
    finally:
        transport.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addr", required=True, help="udp://HOST:PORT")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop's event loop")
    args = parser.parse_args()
    if args.uvloop:
        import uvloop

        uvloop.run(serve(args.addr))
    else:
        asyncio.run(serve(args.addr))


if __name__ == "__main__":
    main()
