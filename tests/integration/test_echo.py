"""Echo integrity: every byte sent comes back, in order, across the configurations users run.

10 concurrent clients each send random payloads from 1 byte to 1 MiB; the
matrix covers tcp over IPv4 and IPv6, unix sockets, one loop and four loops
under each balancer (and reuse_port), level- and edge-triggered polling, the
portable poll backend, and handlers that echo with write, writev and
async_write from a thread pool.
"""

from __future__ import annotations

import concurrent.futures
from typing import Any

import pytest

import gnetpy
from conftest import WriteEcho, has_ipv6_loopback, run_echo


class WritevEcho(gnetpy.EventHandler):
    def on_traffic(self, c: gnetpy.Conn) -> Any:
        data = c.next()
        third = len(data) // 3
        c.writev([data[:third], memoryview(data)[third:2 * third], bytearray(data[2 * third:])])


class AsyncWriteEcho(gnetpy.EventHandler):
    """Echoes from worker threads.  Each connection sticks to one single-thread
    executor, so its writes are issued in order, as a real application would
    ensure."""

    def __init__(self) -> None:
        self.workers = [concurrent.futures.ThreadPoolExecutor(max_workers=1) for _ in range(4)]
        self.errors: list[BaseException] = []

    def on_traffic(self, c: gnetpy.Conn) -> Any:
        data = c.next()
        self.workers[c.fd % len(self.workers)].submit(c.async_write, data, self.check)

    def check(self, c: gnetpy.Conn, err: BaseException | None) -> None:
        if err is not None:
            self.errors.append(err)

    def close(self) -> None:
        for worker in self.workers:
            worker.shutdown(wait=True)


HANDLERS = {"write": WriteEcho, "writev": WritevEcho, "async_write": AsyncWriteEcho}
# Loops in threads of this process (processes=False); worker processes are tests/integration/test_worker_processes.py's.
TOPOLOGIES = {
    "1-loop": {"num_event_loop": 1},
    "4-threads-round-robin": {"num_event_loop": 4, "lb": gnetpy.LoadBalancing.ROUND_ROBIN, "processes": False},
    "4-threads-least-connections": {"num_event_loop": 4, "lb": gnetpy.LoadBalancing.LEAST_CONNECTIONS,
                                    "processes": False},
    "4-threads-source-addr-hash": {"num_event_loop": 4, "lb": gnetpy.LoadBalancing.SOURCE_ADDR_HASH,
                                   "processes": False},
    "4-threads-reuse-port": {"num_event_loop": 4, "reuse_port": True, "processes": False},
}


def transport_addr(transport: str, tmp_path: Any) -> str:
    if transport == "tcp6":
        if not has_ipv6_loopback():
            pytest.skip("this machine has no ::1")
        return "tcp6://[::1]:0"
    if transport == "unix":
        return f"unix://{tmp_path}/echo.sock"
    return "tcp4://127.0.0.1:0"


@pytest.mark.parametrize("mode", list(HANDLERS))
@pytest.mark.parametrize("trigger", ["level", "edge"])
@pytest.mark.parametrize("topology", list(TOPOLOGIES))
@pytest.mark.parametrize("transport", ["tcp4", "tcp6", "unix"])
def test_echo_integrity(serve: Any, tmp_path: Any, transport: str, topology: str, trigger: str, mode: str) -> None:
    handler = HANDLERS[mode]()
    try:
        run_echo(serve, handler, transport_addr(transport, tmp_path), seed=hash((transport, topology, trigger, mode)),
                 edge_triggered=trigger == "edge", **TOPOLOGIES[topology])
    finally:
        if isinstance(handler, AsyncWriteEcho):
            handler.close()
            assert handler.errors == []


@pytest.mark.parametrize("mode", list(HANDLERS))
@pytest.mark.parametrize("loops", [1, 4])
def test_echo_integrity_poll_backend(serve: Any, loops: int, mode: str) -> None:
    handler = HANDLERS[mode]()
    try:
        run_echo(serve, handler, "tcp://127.0.0.1:0", seed=loops, poller="poll", num_event_loop=loops,
                 processes=False)
    finally:
        if isinstance(handler, AsyncWriteEcho):
            handler.close()


def test_echo_with_tiny_read_buffer_and_edge_budget(serve: Any) -> None:
    """A 1 KiB read buffer and a 4 KiB edge-triggered budget force many partial reads and re-queues."""
    run_echo(serve, WriteEcho(), "tcp://127.0.0.1:0", seed=7, edge_triggered=True,
             read_buffer_cap=1024, edge_triggered_chunk=4096, write_buffer_cap=1500)
