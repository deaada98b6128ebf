"""One gnetpy engine behind HAProxy: echo, PROXY v2 required, worker processes.

    python examples/haproxy/engine.py --port 9001 --workers 2

Each client connection is greeted with one line that says which engine and worker
serve it and who the client is (taken from the PROXY header HAProxy sends):

    gnetpy engine=e1 worker=48213 client=127.0.0.2:51720

After that line, every byte is echoed. HAProxy's health checks, which
``check-send-proxy`` sends as a v2 ``LOCAL`` header, get no greeting. The engine
prints one JSON line once it serves, for launch.py and the tests:
``{"name": ..., "port": ..., "pid": ..., "workers": [...]}``. SIGTERM or Ctrl-C
stops it gracefully.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "src"))

import gnetpy  # noqa: E402


def children() -> list[int]:
    """This process's child processes, which here are the worker processes."""
    pids: list[int] = []
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/children") as f:
                pids.extend(int(pid) for pid in f.read().split())
        except OSError:  # a thread that just ended, or no /proc (not Linux)
            pass
    return sorted(pids)


class Echo(gnetpy.EventHandler):
    def __init__(self, name: str) -> None:
        self.name = name

    def on_boot(self, engine: gnetpy.Engine) -> None:
        # In process mode the workers have already been forked and are serving when on_boot runs.
        ready = {"name": self.name, "port": engine.addrs[0][1], "pid": os.getpid(), "workers": children()}
        print(json.dumps(ready), flush=True)

    def on_open(self, c: gnetpy.Conn) -> None:
        if c.proxy.command == "LOCAL":  # HAProxy's health check: it connects, sends LOCAL, closes
            return
        host, port = c.remote_addr[:2]  # the client's address, from the header
        c.write(f"gnetpy engine={self.name} worker={os.getpid()} client={host}:{port}\n".encode())

    def on_traffic(self, c: gnetpy.Conn) -> None:
        c.write(c.next())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="a gnetpy echo engine behind HAProxy (PROXY protocol v2)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9001, help="0 picks a free port (printed when serving)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--name", default=None, help="shown in the greeting (default: the port)")
    parser.add_argument("--proxy", default="v2", choices=["v1", "v2", "any"], help="the PROXY header expected")
    parser.add_argument("--trusted", nargs="*", default=["127.0.0.0/8"],
                        help="networks HAProxy connects from (proxy_trusted)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    gnetpy.run(Echo(args.name or str(args.port)), f"tcp://{args.host}:{args.port}",
               num_event_loop=args.workers, processes=args.workers > 1,
               proxy_protocol=args.proxy, proxy_trusted=args.trusted,
               reuse_addr=True)  # a restarted engine must bind again despite its predecessor's TIME_WAITs
    return 0


if __name__ == "__main__":
    sys.exit(main())
