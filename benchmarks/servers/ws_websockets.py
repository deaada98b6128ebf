"""A WebSocket echo server on websockets' own asyncio implementation: W14's baseline.

    python benchmarks/servers/ws_websockets.py --addr 127.0.0.1:8765 [--uvloop]

``websockets.asyncio.server.serve`` with the handler users write for an echo,
``async for message in ws: await ws.send(message)``: every message comes back
whole, text or binary, on any path.  The framing is the same sans-I/O
``ServerProtocol`` that examples/websocket.py drives over gnetpy, so beside
the gnetpy example (``/ws`` on examples/http_server.py) what differs is the
transport, the event loop and websockets' asyncio layer.

Keepalive pings are off (``ping_interval=None``): the benchmark's client
(benchmarks/wsload.c) does not answer pings, and the gnetpy example and picows
send none.  Everything else is websockets' default (``max_size`` 1 MiB,
permessage-deflate offered only to a client that asks; wsload does not).
asyncio's own event loop, as websockets runs by default; ``--uvloop`` for
uvloop's.  Prints the listening address once bound; SIGTERM or SIGINT stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed


async def echo(ws: ServerConnection) -> None:
    try:
        async for message in ws:
            await ws.send(message)
    except ConnectionClosed:   # the client went away without a close frame (a benchmark's end): fine
        pass


async def main_async(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set_result, None)
    async with serve(echo, host, port, ping_interval=None, reuse_address=True) as server:
        name = next(iter(server.sockets)).getsockname()
        print(f"websockets echo ({type(loop).__module__}) on ws://{name[0]}:{name[1]}", flush=True)
        await stop
        server.close(close_connections=False)   # the process exits next; that closes the rest


def main(argv: Any = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addr", required=True, help="HOST:PORT (tcp://HOST:PORT also accepted)")
    parser.add_argument("--uvloop", action="store_true", help="uvloop's event loop instead of asyncio's")
    args = parser.parse_args(argv)
    host, _, port = args.addr.removeprefix("tcp://").rpartition(":")
    if args.uvloop:
        import uvloop

        uvloop.run(main_async(host.strip("[]"), int(port)))
    else:
        asyncio.run(main_async(host.strip("[]"), int(port)))


if __name__ == "__main__":
    main()
