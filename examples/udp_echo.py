"""A UDP echo server: every datagram comes back to its sender, whole.

    python examples/udp_echo.py --addr udp://127.0.0.1:9000 --loops 2

Each loop owns a datagram socket on the port (SO_REUSEPORT); every datagram
is one ``on_traffic``, and ``c.next()`` is exactly that datagram.  With
sessions on (``udp_session_timeout``, 60 s by default) ``c`` is the same
object for a peer's datagrams, so ``c.context`` can count them.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

import gnetpy  # noqa: E402


class UdpEcho(gnetpy.EventHandler):
    def on_boot(self, engine: gnetpy.Engine) -> None:
        logging.getLogger("udp_echo").info("udp echo server on %s", engine.addrs)

    def on_traffic(self, c: gnetpy.Conn) -> Any:
        c.write(c.next())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="gnetpy UDP echo server")
    parser.add_argument("--addr", default="udp://127.0.0.1:9000", help="udp://host:port, udp6://[::1]:port")
    parser.add_argument("--loops", type=int, default=1, help="event loops; 0 = one per CPU")
    parser.add_argument("--sessions", type=float, default=60.0, help="udp_session_timeout in seconds (0: none)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    gnetpy.run(UdpEcho(), args.addr, num_event_loop=args.loops, multicore=args.loops == 0,
               udp_session_timeout=args.sessions)
    return 0


if __name__ == "__main__":
    sys.exit(main())
