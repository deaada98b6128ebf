"""options.py: defaults (DESIGN §2), validation messages, ``Options.build`` and the loop count.

An unknown option is a ``TypeError`` that lists the accepted names; a bad
value is a ``ValueError`` whose message starts with the option's name and
says what it accepts.  A ``gnetpy.start`` refused for a bad option must leave
nothing behind (no thread, no descriptor).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from typing import Any

import pytest

import gnetpy
from conftest import connect, gnetpy_threads, open_fds, wait_for
from gnetpy import LoadBalancing, Options
from gnetpy.options import MAX_BUFFER_CAP, MAX_EDGE_TRIGGERED_CHUNK
from gnetpy.sockopts import MAX_KEEP_COUNT, MAX_KEEP_SECONDS

KiB = 1024
MiB = 1024 * KiB


def test_defaults_match_the_design() -> None:
    o = Options()
    assert o.multicore is False
    assert o.num_event_loop == 0
    assert o.processes is None
    assert o.lb is LoadBalancing.ROUND_ROBIN
    assert o.reuse_addr is False and o.reuse_port is False
    assert o.read_buffer_cap == 64 * KiB
    assert o.write_buffer_cap == 64 * KiB
    assert o.ticker is False
    assert o.tcp_no_delay is True
    assert o.tcp_keepalive == 0
    assert o.tcp_keep_interval is None  # meaning idle/5
    assert o.tcp_keep_count == 5
    assert o.socket_recv_buffer == 0 and o.socket_send_buffer == 0
    assert o.edge_triggered is False
    assert o.edge_triggered_chunk == 1 * MiB
    assert o.bind_to_device == ""
    assert o.poller is None
    assert o.logger is logging.getLogger("gnetpy")


def test_the_library_logger_has_only_a_null_handler() -> None:
    handlers = logging.getLogger("gnetpy").handlers
    assert handlers and all(isinstance(h, logging.NullHandler) for h in handlers)


def test_a_logger_adapter_is_accepted_and_used_by_the_error_path(serve: Any, caplog: Any) -> None:
    adapter = logging.LoggerAdapter(logging.getLogger("gnetpy.test-adapter"), {"app": "x"})

    class Raises(gnetpy.EventHandler):
        def on_traffic(self, c: gnetpy.Conn) -> Any:
            raise RuntimeError("handler bug")

    engine = serve(Raises(), logger=adapter)
    with caplog.at_level(logging.ERROR, logger="gnetpy.test-adapter"):
        with connect(engine.addrs[0]) as s:
            s.sendall(b"x")
            assert s.recv(10) == b""  # closed: the loop survived its error path
        wait_for(lambda: caplog.records)
    assert caplog.records[0].name == "gnetpy.test-adapter"


def test_a_custom_logger_is_kept() -> None:
    mine = logging.getLogger("my-app")
    adapter = logging.LoggerAdapter(mine, {})
    assert Options(logger=mine).logger is mine
    assert Options(logger=adapter).logger is adapter


# -- unknown options -----------------------------------------------------------


def test_unknown_option_is_a_type_error_listing_accepted_names() -> None:
    with pytest.raises(TypeError) as info:
        Options.build(bogus=1)
    message = str(info.value)
    assert "unknown option bogus" in message
    for f in dataclasses.fields(Options):
        assert f.name in message


def test_several_unknown_options_are_all_named() -> None:
    with pytest.raises(TypeError, match=r"unknown options bogus, nope;"):
        Options.build(nope=1, bogus=2, ticker=True)


def test_misspelled_option_is_not_silently_ignored() -> None:
    with pytest.raises(TypeError, match="multi_core"):
        Options.build(multi_core=True)


# -- bad values ----------------------------------------------------------------

BAD_VALUES = [
    # bools given ints and strings
    ("multicore", 1), ("multicore", "yes"), ("reuse_addr", 0), ("reuse_port", "False"),
    ("ticker", None), ("tcp_no_delay", 1), ("edge_triggered", "true"),
    # negative or zero ints where a positive one is needed, non-ints
    ("num_event_loop", -1), ("read_buffer_cap", 0), ("write_buffer_cap", -5),
    ("socket_recv_buffer", -1), ("socket_send_buffer", -1), ("edge_triggered_chunk", 0),
    ("read_buffer_cap", 1.5), ("num_event_loop", "4"),
    ("socket_recv_buffer", 2**31), ("socket_send_buffer", 2**40),
    # bool where an int is expected
    ("num_event_loop", True), ("read_buffer_cap", True), ("socket_send_buffer", False),
    # load balancer and poller
    ("lb", "random"), ("lb", 1), ("poller", "select"), ("poller", "kqueue-ish"), ("poller", 1),
    # processes
    ("processes", "yes"), ("processes", 1), ("processes", 0), ("processes", 1.0),
    # keep-alive
    ("tcp_keepalive", -1), ("tcp_keepalive", "30"), ("tcp_keepalive", True), ("tcp_keepalive", None),
    ("tcp_keepalive", float("nan")), ("tcp_keepalive", float("inf")), ("tcp_keepalive", MAX_KEEP_SECONDS + 1),
    ("tcp_keep_interval", -0.5), ("tcp_keep_interval", "1"), ("tcp_keep_interval", float("nan")),
    ("tcp_keep_interval", MAX_KEEP_SECONDS + 1),
    ("tcp_keep_count", 0), ("tcp_keep_count", 2.0), ("tcp_keep_count", True), ("tcp_keep_count", MAX_KEEP_COUNT + 1),
    # device
    ("bind_to_device", 1), ("bind_to_device", b"lo"),
    # upper bounds: a typo like 2**40 must not become a MemoryError on every read
    ("read_buffer_cap", 2**40), ("read_buffer_cap", MAX_BUFFER_CAP + 1), ("write_buffer_cap", 2**40),
    ("edge_triggered_chunk", 2**40), ("num_event_loop", 10**6),
    # the logger must be a logger: a string would fail inside the loop's error path
    ("logger", "oops"), ("logger", 1), ("logger", print),
    # close_timeout
    ("close_timeout", 0), ("close_timeout", -1), ("close_timeout", float("inf")), ("close_timeout", float("nan")),
    ("close_timeout", "30"), ("close_timeout", None), ("close_timeout", True),
]


@pytest.mark.parametrize("name, value", BAD_VALUES)
def test_bad_value_is_a_value_error_naming_the_option(name: str, value: Any) -> None:
    with pytest.raises(ValueError) as info:
        Options(**{name: value})
    message = str(info.value)
    assert message.startswith(f"{name}: "), message
    assert "accepted" in message or "not" in message


def test_bad_lb_lists_the_balancers() -> None:
    with pytest.raises(ValueError) as info:
        Options(lb="random")
    for member in LoadBalancing:
        assert member.name in str(info.value)


def test_processes_none_false_and_true_are_accepted() -> None:
    assert Options(processes=None).processes is None
    assert Options(processes=False).processes is False
    assert Options(processes=True).processes is True


GIL, FREE_THREADED = (lambda: True), (lambda: False)


@pytest.mark.parametrize("options, gil_enabled, processes", [
    (dict(), GIL, False),                                    # one loop: nothing to spread
    (dict(num_event_loop=2), GIL, True),                     # several loops, a GIL: a process each
    (dict(num_event_loop=2), FREE_THREADED, False),          # a free-threaded build runs threads in parallel
    (dict(multicore=True, num_event_loop=4), GIL, True),
    (dict(num_event_loop=4, processes=False), GIL, False),   # forced: one shared memory (chat rooms)
    (dict(processes=True), GIL, True),                       # forced: one worker process
    (dict(num_event_loop=2, processes=True), FREE_THREADED, True),
])
def test_threads_or_processes(options: dict[str, Any], gil_enabled: Any, processes: bool) -> None:
    assert Options(**options).use_processes(gil_enabled) is processes


def test_the_default_decision_reads_the_interpreter() -> None:
    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    assert Options(num_event_loop=2).use_processes() is gil


@pytest.mark.parametrize("spelling, member", [("least-connections", LoadBalancing.LEAST_CONNECTIONS),
                                               ("SOURCE_ADDR_HASH", LoadBalancing.SOURCE_ADDR_HASH),
                                               (LoadBalancing.ROUND_ROBIN, LoadBalancing.ROUND_ROBIN)])
def test_lb_is_normalised_to_the_member(spelling: Any, member: LoadBalancing) -> None:
    assert Options(lb=spelling).lb is member


@pytest.mark.parametrize("kwargs", [
    dict(tcp_keepalive=0), dict(tcp_keepalive=0.5), dict(tcp_keepalive=MAX_KEEP_SECONDS),
    dict(tcp_keepalive=30, tcp_keep_interval=0), dict(tcp_keepalive=30, tcp_keep_interval=2.5),
    dict(tcp_keep_count=1), dict(tcp_keep_count=MAX_KEEP_COUNT),
    dict(poller="epoll"), dict(poller="poll"), dict(bind_to_device="lo"),
    dict(socket_recv_buffer=2**31 - 1), dict(num_event_loop=0), dict(read_buffer_cap=1),
    dict(read_buffer_cap=MAX_BUFFER_CAP), dict(write_buffer_cap=MAX_BUFFER_CAP),
    dict(edge_triggered_chunk=MAX_EDGE_TRIGGERED_CHUNK), dict(close_timeout=0.1), dict(close_timeout=3600),
])
def test_good_edge_values_are_accepted(kwargs: dict[str, Any]) -> None:
    o = Options(**kwargs)
    for name, value in kwargs.items():
        assert getattr(o, name) == value


# -- build -------------------------------------------------------------------------


def test_build_without_options_is_the_defaults() -> None:
    assert Options.build() == Options()


def test_build_overrides_the_given_options_and_keeps_the_rest() -> None:
    mine = logging.getLogger("build-test")
    base = Options(ticker=True, num_event_loop=3, lb="least-connections", logger=mine)
    merged = Options.build(base, num_event_loop=2, tcp_no_delay=False)
    assert merged.num_event_loop == 2 and merged.tcp_no_delay is False
    assert merged.ticker is True and merged.lb is LoadBalancing.LEAST_CONNECTIONS
    assert merged.logger is mine  # the same logger, not a deep copy
    assert base.num_event_loop == 3 and base.tcp_no_delay is True  # the original is untouched
    assert merged is not base


def test_build_validates_the_overrides() -> None:
    with pytest.raises(ValueError, match="^num_event_loop: "):
        Options.build(Options(), num_event_loop=-2)


def test_build_refuses_something_that_is_not_options() -> None:
    with pytest.raises(TypeError, match="expected gnetpy.Options, got dict"):
        Options.build({"ticker": True})  # type: ignore[arg-type]


def test_start_accepts_options_and_overrides(serve: Any) -> None:
    engine = serve(gnetpy.EventHandler(), "tcp://127.0.0.1:0", options=Options(num_event_loop=3, processes=False),
                   num_event_loop=2)
    assert len(engine.event_loops) == 2


# -- gnetpy.start refusing options leaves nothing behind ---------------------------


@pytest.mark.parametrize("kwargs, error", [
    (dict(bogus=1), TypeError),
    (dict(num_event_loop=-1), ValueError),
    (dict(processes="yes"), ValueError),
    (dict(tcp_keepalive=float("nan")), ValueError),
])
def test_start_with_a_bad_option_leaves_no_thread_or_fd(kwargs: dict[str, Any], error: type) -> None:
    before = open_fds()
    with pytest.raises(error):
        gnetpy.start(gnetpy.EventHandler(), "tcp://127.0.0.1:0", **kwargs)
    assert not gnetpy_threads()
    assert open_fds() == before


# -- event loop count -------------------------------------------------------------


def test_one_loop_by_default() -> None:
    assert Options().event_loop_count() == 1


def test_num_event_loop_sets_the_count() -> None:
    assert Options(num_event_loop=3).event_loop_count() == 3


def test_multicore_means_one_loop_per_usable_cpu() -> None:
    assert Options(multicore=True).event_loop_count() == len(os.sched_getaffinity(0))


def test_num_event_loop_overrides_multicore() -> None:
    assert Options(multicore=True, num_event_loop=5).event_loop_count() == 5
