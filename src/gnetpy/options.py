"""Engine and client options: defaults, validation, and the error messages.

Every option is a keyword argument of ``run``/``rotate``/``start`` (and of
``Client``); :class:`Options` is the same set as a value you can keep and pass
as ``options=``.  An unknown name is a ``TypeError`` that lists the accepted
ones; a bad value is a ``ValueError`` that names the option and what it takes.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from typing import Any, Callable

from .address import parse_address
from .errors import GnetError
from .lb import LoadBalancing
from .proxystage import Trust
from .sockopts import MAX_SOCKET_BUFFER, check_keepalive

KiB = 1024
MiB = 1024 * KiB


@dataclasses.dataclass
class Options:
    multicore: bool = False
    num_event_loop: int = 0
    processes: bool | None = None
    lb: LoadBalancing = LoadBalancing.ROUND_ROBIN
    reuse_addr: bool = False
    reuse_port: bool = False
    read_buffer_cap: int = 64 * KiB
    write_buffer_cap: int = 64 * KiB
    ticker: bool = False
    tcp_no_delay: bool = True
    tcp_keepalive: float = 0
    tcp_keep_interval: float | None = None
    tcp_keep_count: int = 5
    socket_recv_buffer: int = 0
    socket_send_buffer: int = 0
    edge_triggered: bool = False
    edge_triggered_chunk: int = 1 * MiB
    bind_to_device: str = ""
    poller: str | None = None
    logger: logging.Logger | logging.LoggerAdapter[Any] | None = None
    close_timeout: float = 30.0
    cpu_affinity: bool = False
    idle_timeout: float = 0
    write_high_water: int | None = None
    write_low_water: int | None = None
    max_inbound_buffered: int = 4 * MiB
    max_inbound_total: int = 1024 * MiB
    async_write_limit: int = 16 * MiB
    max_connections: int = 0
    udp_session_timeout: float = 60.0
    max_udp_sessions: int = 65536
    max_udp_queued: int = 1 * MiB
    multicast_interface_index: int = 0
    codec: Any = None
    frame_budget: int = 256
    frame_budget_bytes: int = 1 * MiB
    ssl_context: Any = None
    tls_handshake_timeout: float = 10.0
    proxy_protocol: Any = None
    proxy_trusted: Any = ("127.0.0.0/8", "::1/128")
    proxy_header_timeout: float = 5.0
    metrics_addr: str | None = None

    def __post_init__(self) -> None:
        _check_bools(self)
        _check_ints(self)
        self.lb = LoadBalancing.parse(self.lb)
        if self.processes is not None and not isinstance(self.processes, bool):  # not "in": 1 == True
            raise ValueError(f"processes: {self.processes!r}; accepted: None (auto), True, False")
        if self.processes and not hasattr(os, "fork"):
            raise ValueError("processes=True: this platform has no fork(); use processes=False (threads)")
        if self.cpu_affinity and not hasattr(os, "sched_setaffinity"):
            raise ValueError("cpu_affinity=True: this platform cannot pin threads or processes to CPUs "
                             "(no sched_setaffinity); leave it False")
        _check_keepalive(self)
        if not isinstance(self.bind_to_device, str):
            raise ValueError(f"bind_to_device: {self.bind_to_device!r} is not an interface name (str)")
        if self.poller not in (None, "epoll", "poll"):
            raise ValueError(f"poller: {self.poller!r}; accepted: None (best available), 'epoll', 'poll'")
        if self.logger is None:
            self.logger = logging.getLogger("gnetpy")
        elif not isinstance(self.logger, (logging.Logger, logging.LoggerAdapter)):
            raise ValueError(f"logger: {self.logger!r}; accepted: None (the 'gnetpy' logger), "
                             f"a logging.Logger or a logging.LoggerAdapter")
        _check_seconds("close_timeout", self.close_timeout)
        for name in ("idle_timeout", "udp_session_timeout"):
            value = getattr(self, name)
            if not (value == 0 and not isinstance(value, bool)):
                _check_seconds(name, value, "seconds > 0, or 0 for none")
        if self.codec is not None and not (hasattr(self.codec, "frames") and hasattr(self.codec, "encode")):
            raise ValueError(f"codec: {self.codec!r}; accepted: None or a gnetpy.codec instance "
                             f"(LineBasedFrameCodec(), LengthFieldBasedFrameCodec(), ...)")
        _check_water_marks(self)
        _check_seconds("tls_handshake_timeout", self.tls_handshake_timeout)
        _check_ssl_context(self.ssl_context)
        _check_proxy_protocol(self.proxy_protocol)
        Trust.parse(self.proxy_trusted)  # raises ValueError naming a bad network
        _check_seconds("proxy_header_timeout", self.proxy_header_timeout)
        _check_metrics_addr(self.metrics_addr)

    @property
    def log(self) -> logging.Logger | logging.LoggerAdapter[Any]:
        """``logger``, typed as never None (``__post_init__`` fills in the default)."""
        return self.logger  # type: ignore[return-value]

    @property
    def water_marks(self) -> tuple[int, int]:
        """(write_high_water, write_low_water) in effect: by default write_buffer_cap and a quarter of it."""
        high = self.write_high_water if self.write_high_water is not None else self.write_buffer_cap
        low = self.write_low_water if self.write_low_water is not None else high // 4
        return high, low

    @classmethod
    def build(cls, options: Options | None = None, **overrides: Any) -> Options:
        """``options`` (or the defaults) with keyword ``overrides`` applied."""
        accepted = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - accepted)
        if unknown:
            raise TypeError(f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                            f"accepted: {', '.join(sorted(accepted))}")
        if options is not None and not isinstance(options, cls):
            raise TypeError(f"options: expected gnetpy.Options, got {type(options).__name__}")
        base = dataclasses.asdict(options) if options is not None else {}
        if options is not None:  # asdict would deep-copy these: one logger, one codec for every connection
            base["logger"] = options.logger
            base["codec"] = options.codec
            base["ssl_context"] = options.ssl_context
            base["proxy_protocol"] = options.proxy_protocol
        base.update(overrides)
        return cls(**base)

    def use_processes(self, gil_enabled: Callable[[], bool] | None = None) -> bool:
        """Worker processes or threads: ``processes``, or when it is None, processes on a GIL build with several loops.

        On a build with the GIL, threads give concurrency but not parallelism,
        so more than one loop means a process each; a free-threaded build runs
        loops in threads (``sys._is_gil_enabled()``).  ``gil_enabled`` stands
        in for that check in tests.
        """
        if self.processes is not None:
            return self.processes
        if self.event_loop_count() < 2:
            return False
        if gil_enabled is None:
            gil_enabled = getattr(sys, "_is_gil_enabled", _always)
        return bool(gil_enabled())

    def event_loop_count(self) -> int:
        if self.num_event_loop > 0:
            return self.num_event_loop
        if self.multicore:
            return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return 1


_BOOLS = ("multicore", "reuse_addr", "reuse_port", "ticker", "tcp_no_delay", "edge_triggered", "cpu_affinity")
# name -> smallest accepted value
# name -> (smallest, largest) accepted value.  The largest are far above any
# sensible setting and keep a typo (2**40) from turning into a MemoryError on
# every read: read_buffer_cap is the size of a read, write_buffer_cap of the
# outbound coalescing chunk, edge_triggered_chunk a per-iteration byte budget.
MAX_LOOPS = 4096
MAX_BUFFER_CAP = 64 * MiB
MAX_EDGE_TRIGGERED_CHUNK = 1024 * MiB
MAX_BUFFERED = 2**40  # water marks and max_inbound_buffered: only a sanity bound
_INTS = {"num_event_loop": (0, MAX_LOOPS), "read_buffer_cap": (1, MAX_BUFFER_CAP),
         "max_inbound_buffered": (1, MAX_BUFFERED), "async_write_limit": (1, MAX_BUFFERED),
         "max_inbound_total": (0, MAX_BUFFERED), "frame_budget": (1, 2**31 - 1),
         "frame_budget_bytes": (1, MAX_EDGE_TRIGGERED_CHUNK),
         "max_connections": (0, 2**31 - 1), "max_udp_sessions": (1, 2**31 - 1),
         "max_udp_queued": (1, MAX_BUFFERED), "multicast_interface_index": (0, 2**31 - 1),
         "write_buffer_cap": (1, MAX_BUFFER_CAP), "socket_recv_buffer": (0, MAX_SOCKET_BUFFER),
         "socket_send_buffer": (0, MAX_SOCKET_BUFFER), "edge_triggered_chunk": (1, MAX_EDGE_TRIGGERED_CHUNK)}


def _check_bools(opts: Options) -> None:
    for name in _BOOLS:
        value = getattr(opts, name)
        if not isinstance(value, bool):
            raise ValueError(f"{name}: {value!r} is not a bool (True or False)")


def _check_ints(opts: Options) -> None:
    for name, (low, high) in _INTS.items():
        value = getattr(opts, name)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"{name}: {value!r}; accepted: an int from {low} to {high}")


def _check_water_marks(opts: Options) -> None:
    """Backpressure marks: by default write_buffer_cap and a quarter of it (asyncio's 64 KiB/16 KiB)."""
    for name in ("write_high_water", "write_low_water"):
        value = getattr(opts, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or not 0 <= value <= MAX_BUFFERED):
            raise ValueError(f"{name}: {value!r}; accepted: None (the default) or bytes from 0 to {MAX_BUFFERED}")
    high, low = opts.water_marks
    if low > high:
        raise ValueError(f"write_low_water: {low!r} is above write_high_water ({high}); accepted: low <= high")


def _check_ssl_context(value: Any) -> None:
    """None, an ``ssl.SSLContext``, or a mapping from address strings to contexts (or None)."""
    import ssl

    if value is None or isinstance(value, ssl.SSLContext):
        return
    if isinstance(value, dict) and all(isinstance(k, str) and (v is None or isinstance(v, ssl.SSLContext))
                                       for k, v in value.items()):
        return
    raise ValueError(f"ssl_context: {value!r}; accepted: None, an ssl.SSLContext, or a dict "
                     f"{{address: ssl.SSLContext}} (e.g. {{'tcp://0.0.0.0:443': ctx}})")


PROXY_MODES = ("v1", "v2", "any")


def _check_proxy_protocol(value: Any) -> None:
    """None, a mode ("v1", "v2", "any"), or {address: mode or None}."""
    if value is None or value in PROXY_MODES:
        return
    if isinstance(value, dict) and all(isinstance(k, str) and (v is None or v in PROXY_MODES)
                                       for k, v in value.items()):
        return
    raise ValueError(f"proxy_protocol: {value!r}; accepted: None, 'v1', 'v2', 'any' (either version, never none), "
                     f"or a dict {{address: mode}} (e.g. {{'tcp://0.0.0.0:6379': 'v2'}})")


def _check_metrics_addr(value: Any) -> None:
    """None, or a tcp:// address to serve the /metrics page on (metricsserver.py)."""
    accepted = "None, or a tcp:// address to serve /metrics on (e.g. 'tcp://127.0.0.1:9100')"
    if value is None:
        return
    if not isinstance(value, str):
        raise ValueError(f"metrics_addr: {value!r}; accepted: {accepted}")
    try:
        address = parse_address(value)
    except GnetError as exc:  # InvalidAddressError, UnsupportedProtocolError: they say what is wrong
        raise ValueError(f"metrics_addr: {exc}") from None
    if address.network != "tcp":
        raise ValueError(f"metrics_addr: {value!r} is a {address.network} address; accepted: {accepted}")


def _check_seconds(name: str, value: Any, accepted: str = "seconds, a number > 0") -> None:
    """A positive, finite number of seconds."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
        raise ValueError(f"{name}: {value!r}; accepted: {accepted}")


def _check_keepalive(opts: Options) -> None:
    check_keepalive(opts.tcp_keepalive, opts.tcp_keep_interval, opts.tcp_keep_count,
                    ("tcp_keepalive: ", "tcp_keep_interval: ", "tcp_keep_count: "))


def _always() -> bool:
    """``sys._is_gil_enabled`` where there is none: every build before 3.13 has the GIL."""
    return True
