"""An echo server: every byte a client sends comes back.

    python examples/echo.py --addr tcp://127.0.0.1:9000 --loops 4 --lb least-connections

The same server is ``python -m gnetpy echo``; the benchmark suite measures
this file against asyncio, uvloop and a C epoll server.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

import gnetpy  # noqa: E402


class Echo(gnetpy.EventHandler):
    def on_boot(self, engine: gnetpy.Engine) -> None:
        logging.getLogger("echo").info("echo server on %s", engine.addrs)

    def on_traffic(self, c: gnetpy.Conn) -> None:
        c.write(c.next())  # returning nothing means Action.NONE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="gnetpy echo server")
    parser.add_argument("--addr", default="tcp://127.0.0.1:9000", help="tcp://host:port or unix:///path")
    parser.add_argument("--loops", type=int, default=1, help="event loops; 0 = one per CPU")
    parser.add_argument("--lb", default="round-robin",
                        help="round-robin | least-connections | source-addr-hash")
    parser.add_argument("--reuse-port", action="store_true", help="every loop accepts on its own listener")
    parser.add_argument("--edge-triggered", action="store_true")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--processes", dest="processes", action="store_const", const=True,
                      help="loops in worker processes (the default with several loops on a GIL build)")
    mode.add_argument("--threads", dest="processes", action="store_const", const=False,
                      help="loops in threads of one process")
    parser.add_argument("--cpu-affinity", action="store_true", help="pin loop/worker i to the i-th CPU")
    parser.add_argument("--idle-timeout", type=float, default=0, help="close connections idle this long (s)")
    parser.add_argument("--proxy-protocol", choices=["v1", "v2", "any"], default=None,
                        help="every connection begins with a PROXY header (behind HAProxy, nginx stream)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    gnetpy.run(Echo(), args.addr, num_event_loop=args.loops, multicore=args.loops == 0, lb=args.lb,
               reuse_port=args.reuse_port, reuse_addr=True, edge_triggered=args.edge_triggered,
               processes=args.processes, cpu_affinity=args.cpu_affinity, idle_timeout=args.idle_timeout,
               proxy_protocol=args.proxy_protocol)
    return 0


if __name__ == "__main__":
    sys.exit(main())
