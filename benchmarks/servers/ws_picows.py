"""A WebSocket echo server on picows (Cython framing on uvloop): W14's fast reference.

    python benchmarks/servers/ws_picows.py --addr 127.0.0.1:8766 [--asyncio]

picows' own echo, as in its examples and benchmarks: a ``WSListener`` whose
``on_ws_frame`` sends each data frame straight back
(``transport.send(frame.msg_type, frame.get_payload_as_bytes(), frame.fin)``),
answers a close frame with a close frame and disconnects.  picows works at
the frame level: a fragmented message comes back fragment by fragment, not
reassembled (the benchmark sends single-frame messages, so the bytes on the
wire are the same as a message echo's).  Any path is accepted.  picows sends
no keepalive pings unless asked (``enable_auto_ping`` stays off) and answers
pings itself.  On uvloop, as picows recommends; ``--asyncio`` for asyncio's
own loop.  Prints the listening address once bound; SIGTERM or SIGINT stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any

from picows import WSFrame, WSListener, WSMsgType, WSTransport, WSUpgradeRequest, ws_create_server


class Echo(WSListener):
    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()
        elif frame.msg_type != WSMsgType.PING and frame.msg_type != WSMsgType.PONG:
            transport.send(frame.msg_type, frame.get_payload_as_bytes(), frame.fin)


def listener(request: WSUpgradeRequest) -> WSListener:
    return Echo()


async def main_async(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set_result, None)
    server = await ws_create_server(listener, host, port, reuse_address=True)
    name = server.sockets[0].getsockname()
    print(f"picows echo ({type(loop).__module__}) on ws://{name[0]}:{name[1]}", flush=True)
    await stop
    server.close()


def main(argv: Any = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addr", required=True, help="HOST:PORT (tcp://HOST:PORT also accepted)")
    parser.add_argument("--asyncio", action="store_true", help="asyncio's own event loop instead of uvloop")
    args = parser.parse_args(argv)
    host, _, port = args.addr.removeprefix("tcp://").rpartition(":")
    if args.asyncio:
        asyncio.run(main_async(host.strip("[]"), int(port)))
    else:
        import uvloop

        uvloop.run(main_async(host.strip("[]"), int(port)))


if __name__ == "__main__":
    main()
