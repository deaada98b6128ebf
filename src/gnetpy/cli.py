"""``python -m gnetpy``: run the echo server, or the benchmark suite from a source checkout.

    python -m gnetpy echo --addr tcp://127.0.0.1:9000 --loops 4 --lb least-connections
    python -m gnetpy echo --metrics-addr tcp://127.0.0.1:9100    # then: curl 127.0.0.1:9100/metrics
    python -m gnetpy bench --quick
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import sys
from typing import Any

from . import compiled
from .conn import Conn
from .engine import Engine
from .errors import GnetError
from .handler import EventHandler
from .lb import LoadBalancing
from .serve import serve_forever


class Echo(EventHandler):
    def on_boot(self, engine: Engine) -> None:
        logging.getLogger("gnetpy").info("echo server on %s", engine.addrs)
        if isinstance(engine.metrics_addr, tuple):
            host, port = engine.metrics_addr
            logging.getLogger("gnetpy").info("metrics on http://%s/metrics",
                                             f"[{host}]:{port}" if ":" in host else f"{host}:{port}")

    def on_traffic(self, c: Conn) -> None:
        c.write(c.next())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m gnetpy", description=__doc__.split("\n")[0].strip("`"))
    commands = parser.add_subparsers(dest="command", required=True)
    echo = commands.add_parser("echo", help="serve an echo server until SIGINT/SIGTERM")
    echo.add_argument("--addr", action="append", help="tcp://host:port, tcp6://[::1]:port or unix:///path "
                      "(repeat to serve several; default tcp://127.0.0.1:9000)")
    echo.add_argument("--loops", type=int, default=1, help="event loops; 0 = one per CPU (default 1)")
    echo.add_argument("--lb", default="round-robin", choices=[m.value for m in LoadBalancing],
                      help="load balancer across loops (default round-robin)")
    echo.add_argument("--reuse-port", action="store_true", help="every loop accepts on its own listener")
    echo.add_argument("--edge-triggered", action="store_true", help="EPOLLET with a per-iteration budget")
    mode = echo.add_mutually_exclusive_group()
    mode.add_argument("--processes", dest="processes", action="store_const", const=True,
                      help="loops in worker processes (the default with several loops on a GIL build)")
    mode.add_argument("--threads", dest="processes", action="store_const", const=False,
                      help="loops in threads of one process")
    echo.add_argument("--cpu-affinity", action="store_true", help="pin loop/worker i to the i-th CPU")
    echo.add_argument("--metrics-addr", help="serve Prometheus metrics (GET /metrics) on this tcp:// address, "
                      "e.g. tcp://127.0.0.1:9100")
    echo.add_argument("--log-level", default="INFO")
    bench = commands.add_parser("bench", help="run the benchmark suite (source checkout only)", add_help=False)
    bench.add_argument("args", nargs=argparse.REMAINDER, help="passed to benchmarks/harness.py (try --help)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:
        return _bench(argv[1:])
    args = _parser().parse_args(argv)
    return _echo(args)


def _echo(args: Any) -> int:
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    addrs = args.addr or ["tcp://127.0.0.1:9000"]

    try:
        serve_forever(Echo(), addrs, num_event_loop=args.loops, multicore=args.loops == 0, lb=args.lb,
                      reuse_port=args.reuse_port, reuse_addr=True, edge_triggered=args.edge_triggered,
                      processes=args.processes, cpu_affinity=args.cpu_affinity, metrics_addr=args.metrics_addr)
    except (GnetError, OSError, ValueError) as exc:
        print(f"python -m gnetpy echo: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # a second Ctrl-C cut the graceful stop short
        print("python -m gnetpy echo: stopped at once; unsent output was dropped", file=sys.stderr)
        return 130
    return 0


def _bench(args: list[str]) -> int:
    """Run benchmarks/harness.py of the checkout this package was imported from."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    harness = os.path.join(root, "benchmarks", "harness.py")
    if not os.path.exists(harness):
        print(f"gnetpy bench: {harness} not found; the benchmark suite runs from a source checkout "
              f"(git clone, then `pip install -e '.[bench]'`)", file=sys.stderr)
        return 2
    if root not in sys.path:
        sys.path.insert(0, root)
    # The gnetpy servers the harness starts import the same build as this process (the switch is inherited).
    print(f"gnetpy bench: gnetpy.compiled = {compiled!r}", file=sys.stderr)
    spec = importlib.util.spec_from_file_location("benchmarks.harness", harness)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return int(module.main(args) or 0)


__all__ = ["main"]
