"""TLS echo server for W10 and W11: gnetpy, asyncio or uvloop, all with one and the same SSLContext.

    python benchmarks/servers/tls_echo.py --loop gnetpy  --addr tcp://127.0.0.1:PORT --cert C --key K
    python benchmarks/servers/tls_echo.py --loop asyncio --addr tcp://127.0.0.1:PORT --cert C --key K
    python benchmarks/servers/tls_echo.py --loop uvloop  --addr tcp://127.0.0.1:PORT --cert C --key K

The context is ``server_context``: ``ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)``
and ``load_cert_chain(cert, key)``, nothing else -- the defaults a user
gets (TLS 1.2 and 1.3, OpenSSL's default cipher suites and groups, two
TLS 1.3 session tickets sent after each handshake, no client certificate
asked for).  The harness's load generator (benchmarks/tlsload.c) picks TLS
1.3 and TLS_AES_128_GCM_SHA256 from that and never resumes a session.

* ``--loop gnetpy``: examples/echo.py's handler (``c.write(c.next())`` in
  ``on_traffic``) on one event loop, with ``ssl_context=``: gnetpy's TLS
  on the reactor (an ``ssl.SSLObject`` over memory BIOs per connection).
* ``--loop asyncio`` / ``--loop uvloop``: benchmarks/servers/asyncio_echo.py's
  Protocol echo, served by ``loop.create_server(..., ssl=context)`` on the
  stdlib loop or on uvloop's (each with its own TLS layer over the same
  ``ssl.SSLObject``: asyncio's sslproto.py, uvloop's sslproto.pyx).

This checkout's ``src/`` comes first on ``sys.path`` (the harness also sets
``PYTHONPATH``), so its gnetpy is what is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import ssl
import sys
from typing import cast

LOOPS = ("gnetpy", "asyncio", "uvloop")


def server_context(cert: str, key: str) -> ssl.SSLContext:
    """The one server context of W10/W11, for every loop."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx


def tcp_host_port(addr: str) -> tuple[str, int]:
    if not addr.startswith("tcp://"):
        raise SystemExit(f"--addr must be tcp://HOST:PORT, got {addr!r}")
    host, _, port = addr[len("tcp://"):].rpartition(":")
    return host.strip("[]"), int(port)


# ---- gnetpy -----------------------------------------------------------------


def serve_gnetpy(addr: str, ctx: ssl.SSLContext) -> None:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "src"))
    import gnetpy

    class Echo(gnetpy.EventHandler):
        def on_boot(self, engine: gnetpy.Engine) -> None:
            logging.getLogger("tls_echo").info("gnetpy TLS echo on %s", engine.addrs)

        def on_traffic(self, c: gnetpy.Conn) -> None:
            c.write(c.next())

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    gnetpy.run(Echo(), addr, num_event_loop=1, reuse_addr=True, ssl_context=ctx)


# ---- asyncio / uvloop --------------------------------------------------------


class Echo(asyncio.Protocol):
    """asyncio_echo.py's Echo: every byte that arrives is written back."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; no isinstance check.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


async def serve_asyncio(addr: str, ctx: ssl.SSLContext, name: str) -> None:
    host, port = tcp_host_port(addr)
    server = await asyncio.get_running_loop().create_server(Echo, host, port, ssl=ctx)
    print(f"{name} TLS echo on {addr}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loop", choices=LOOPS, required=True)
    parser.add_argument("--addr", required=True, help="tcp://HOST:PORT")
    parser.add_argument("--cert", required=True, help="the certificate (PEM)")
    parser.add_argument("--key", required=True, help="its private key (PEM)")
    args = parser.parse_args(argv)
    tcp_host_port(args.addr)
    ctx = server_context(args.cert, args.key)
    if args.loop == "gnetpy":
        serve_gnetpy(args.addr, ctx)
    elif args.loop == "uvloop":
        import uvloop

        uvloop.run(serve_asyncio(args.addr, ctx, "uvloop"))
    else:
        asyncio.run(serve_asyncio(args.addr, ctx, "asyncio"))


if __name__ == "__main__":
    main()
