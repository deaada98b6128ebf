"""Unit tests of what ``Engine.stats()`` and ``metrics_addr`` are made of, without an engine.

tally.py (the loop's figures, the close causes), counters.py (a worker's published tally in
shared memory, across a fork), stats.py (snapshots and sums), metrics.py (the page, read
back by ``prometheus_client``'s own parser), metricsserver.py's ``respond`` (the HTTP
answers), and the option.  tests/integration/test_metrics.py runs them in engines.
"""

from __future__ import annotations

import dataclasses
import os
import ssl
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

import gnetpy
from gnetpy import tally
from gnetpy.counters import SharedCounterTable
from gnetpy.errors import (
    CloseTimeoutError,
    CodecError,
    EngineStoppedError,
    IdleTimeoutError,
    LimitExceededError,
    TooLongFrameError,
)
from gnetpy.metrics import CONTENT_TYPE, FAMILIES, render
from gnetpy.metricsserver import MAX_REQUEST, respond
from gnetpy.stats import Closes, Figures, summed, worker_stats

# -- tally.py: what a close counts as ---------------------------------------------------------

CASES = [
    (None, True, False, "local"),
    (None, False, True, "local"),  # a connection still reading its header when the engine stopped
    (EOFError("connection closed by the peer"), True, False, "eof"),
    (ssl.SSLEOFError(8, "EOF occurred in violation of protocol"), True, False, "eof"),
    (ConnectionResetError(104, "reset"), True, False, "reset"),
    (BrokenPipeError(32, "broken pipe"), True, False, "reset"),
    (IdleTimeoutError("idle for 1s (idle_timeout)"), True, False, "idle_timeout"),
    (CloseTimeoutError("close_timeout (30s) expired"), True, False, "close_timeout"),
    (LimitExceededError("max_inbound_buffered"), True, False, "limit"),
    (TooLongFrameError("frame too long"), True, False, "codec_error"),
    (CodecError("corrupt length"), True, False, "codec_error"),
    (RuntimeError("the handler's bug"), True, False, "handler_error"),
    (TypeError("a callback returned 1"), True, False, "handler_error"),
    (ssl.SSLError(1, "bad record mac"), True, False, "tls_failure"),
    (ssl.SSLError(1, "certificate unknown"), False, False, "tls_failure"),  # the handshake failed
    (TimeoutError("TLS handshake not done"), False, False, "tls_failure"),
    (EOFError("closed before its PROXY header was whole"), False, True, "proxy_refused"),
    (OSError(113, "no route to host"), True, False, "error"),
    (TimeoutError("a handler's own timeout"), True, False, "error"),  # an OSError: by type, not by origin
    (EngineStoppedError("event loop 0 stopped"), True, False, "error"),
]


@pytest.mark.parametrize(("err", "opened", "proxy", "cause"), CASES, ids=[case[3] + f"-{i}" for i, case in
                                                                         enumerate(CASES)])
def test_a_close_counts_under_the_cause_its_error_names(err: BaseException | None, opened: bool, proxy: bool,
                                                        cause: str) -> None:
    assert tally.CAUSES[tally.close_cause(err, opened, proxy)] == cause


def test_the_timeout_classes_are_still_timeout_errors() -> None:
    assert issubclass(IdleTimeoutError, TimeoutError) and issubclass(CloseTimeoutError, TimeoutError)


def test_a_tally_gives_its_figures_in_order_and_goes_on_from_them() -> None:
    t = tally.Tally()
    for i, name in enumerate(tally.FIELDS):
        setattr(t, name, 10 + i)
    t.closes[tally.EOF] += 3
    values = t.values()
    assert len(values) == tally.SIZE
    assert values[:len(tally.FIELDS)] == list(range(10, 10 + len(tally.FIELDS)))
    assert values[len(tally.FIELDS) + tally.EOF] == 3
    again = tally.Tally()
    again.load(values)
    assert again.values() == values
    again.closes[tally.EOF] += 1  # its own list, not the values'
    assert values[len(tally.FIELDS) + tally.EOF] == 3


# -- counters.py: a worker's published tally --------------------------------------------------


def test_each_worker_publishes_into_its_own_slot() -> None:
    table = SharedCounterTable(3)
    slots = [table.slot(i) for i in range(3)]
    assert slots[1].published() == [0] * tally.SIZE
    figures = list(range(1, tally.SIZE + 1))
    slots[1].publish(figures)
    slots[1].opened = 7
    assert slots[1].published() == figures
    assert slots[0].published() == slots[2].published() == [0] * tally.SIZE
    assert (slots[0].opened, slots[1].opened, slots[2].opened) == (0, 7, 0)
    assert table.slot(1).published() == [0] * tally.SIZE  # a slot handed out again starts from zero


def test_the_parent_reads_what_a_forked_worker_published() -> None:
    table = SharedCounterTable(2)
    slot = table.slot(1)
    pid = os.fork()
    if pid == 0:
        try:
            slot.publish([2**40 + i for i in range(tally.SIZE)])  # past 32 bits: 64-bit slots
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert slot.published() == [2**40 + i for i in range(tally.SIZE)]


# -- stats.py: snapshots ---------------------------------------------------------------------


def test_the_snapshot_names_every_tally_figure_and_cause() -> None:
    assert tuple(f.name for f in dataclasses.fields(Closes)) == tally.CAUSES
    names = {f.name for f in dataclasses.fields(Figures)}
    assert set(tally.FIELDS) <= names
    assert gnetpy.Stats is not None and gnetpy.WorkerStats is not None and gnetpy.Closes is Closes


def worker(index: int, base: int) -> Any:
    figures = [base + i for i in range(tally.SIZE)]
    return worker_stats(index, connections_open=base, tally=figures, tls_failures=2 * base, proxy_refused=3 * base,
                        worker_restarts=index)


def test_a_worker_snapshot_is_built_from_its_parts() -> None:
    w = worker(1, 100)
    assert (w.index, w.connections_open, w.tls_failures, w.proxy_refused, w.worker_restarts) == (1, 100, 200, 300, 1)
    assert [getattr(w, name) for name in tally.FIELDS] == list(range(100, 100 + len(tally.FIELDS)))
    assert w.closed.eof == 100 + len(tally.FIELDS) + tally.EOF
    assert w.closed.total == sum(range(100 + len(tally.FIELDS), 100 + tally.SIZE))
    assert w.closed.items()[tally.EOF] == ("eof", w.closed.eof)
    with pytest.raises(dataclasses.FrozenInstanceError):
        w.bytes_sent = 0  # type: ignore[misc]


def test_the_engine_snapshot_sums_its_workers() -> None:
    workers = [worker(0, 10), worker(1, 1000)]
    s = summed(workers)
    assert s.workers == tuple(workers)
    for f in dataclasses.fields(Figures):
        if f.name != "closed":
            assert getattr(s, f.name) == sum(getattr(w, f.name) for w in workers), f.name
    assert s.closed == Closes(**{c: workers[0].closed.items()[i][1] + workers[1].closed.items()[i][1]
                                 for i, c in enumerate(tally.CAUSES)})
    assert summed([]) == gnetpy.Stats()


# -- metrics.py: the page ----------------------------------------------------------------------


def test_the_page_parses_as_prometheus_text_with_a_sample_per_worker_and_cause() -> None:
    s = summed([worker(0, 10), worker(1, 1000)])
    families = {f.name: f for f in text_string_to_metric_families(render(s))}
    # The parser names a counter's family without its _total; the samples keep it.
    expected = {name.removesuffix("_total") for _, name, _, _ in FAMILIES}
    assert set(families) == expected
    for field, name, kind, _ in FAMILIES:
        family = families[name.removesuffix("_total")]
        assert family.type == kind
        assert family.documentation
        if kind == "counter":
            assert name.endswith("_total") and all(sample.name == name for sample in family.samples)
        for w in s.workers:
            mine = [sample for sample in family.samples if sample.labels["worker"] == str(w.index)]
            if field == "closed":
                assert {sample.labels["cause"]: sample.value for sample in mine} == dict(w.closed.items())
            else:
                assert [sample.value for sample in mine] == [getattr(w, field)]
    assert families["gnetpy_connections_open"].type == "gauge"


# -- metricsserver.py: the answers -------------------------------------------------------------


def status_and_headers(reply: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = reply.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return lines[0], headers, body


def page() -> str:
    return "# HELP x y\n"


@pytest.mark.parametrize(("request_head", "status"), [
    (b"GET /metrics HTTP/1.1\r\nHost: a", "HTTP/1.1 200 OK"),
    (b"GET /metrics?name[]=x HTTP/1.0", "HTTP/1.1 200 OK"),
    (b"GET / HTTP/1.1", "HTTP/1.1 404 Not Found"),
    (b"GET /metricsx HTTP/1.1", "HTTP/1.1 404 Not Found"),
    (b"POST /metrics HTTP/1.1\r\nContent-Length: 0", "HTTP/1.1 405 Method Not Allowed"),
    (b"DELETE /metrics HTTP/1.1", "HTTP/1.1 405 Method Not Allowed"),
    (b"GET /metrics", "HTTP/1.1 400 Bad Request"),
    (b"PRI * HTTP/2.0", "HTTP/1.1 400 Bad Request"),
    (b"\x16\x03\x01\x02\x00", "HTTP/1.1 400 Bad Request"),  # a TLS ClientHello
])
def test_only_get_metrics_is_answered_with_the_page(request_head: bytes, status: str) -> None:
    line, headers, body = status_and_headers(respond(request_head, page))
    assert line == status
    assert headers["Connection"] == "close" and int(headers["Content-Length"]) == len(body)
    if status.endswith("200 OK"):
        assert headers["Content-Type"] == CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"
        assert body == page().encode()
    else:
        assert "version=0.0.4" not in headers["Content-Type"]
    if "405" in status:
        assert headers["Allow"] == "GET, HEAD"


def test_head_gets_the_headers_of_the_page_without_it() -> None:
    line, headers, body = status_and_headers(respond(b"HEAD /metrics HTTP/1.1", page))
    assert line == "HTTP/1.1 200 OK" and body == b""
    assert int(headers["Content-Length"]) == len(page().encode())


def test_the_request_bound_is_small() -> None:
    assert 1024 <= MAX_REQUEST <= 65536


# -- the option ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "message"), [
    (9100, "metrics_addr: 9100; accepted: None, or a tcp:// address"),
    ("127.0.0.1:9100", "metrics_addr: address '127.0.0.1:9100': no scheme"),
    ("udp://127.0.0.1:9100", "metrics_addr: 'udp://127.0.0.1:9100' is a udp address"),
    ("unix:///tmp/m.sock", "metrics_addr: 'unix:///tmp/m.sock' is a unix address"),
    ("http://127.0.0.1:9100", "metrics_addr: address 'http://127.0.0.1:9100': unsupported scheme"),
    ("tcp://127.0.0.1:99999", "metrics_addr: address 'tcp://127.0.0.1:99999'"),
])
def test_a_bad_metrics_addr_is_named(value: Any, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        gnetpy.Options(metrics_addr=value)
    assert str(caught.value).startswith(message), str(caught.value)


def test_a_tcp_metrics_addr_is_accepted() -> None:
    assert gnetpy.Options(metrics_addr="tcp://127.0.0.1:0").metrics_addr == "tcp://127.0.0.1:0"
    assert gnetpy.Options.build(gnetpy.Options(metrics_addr="tcp6://[::1]:9100")).metrics_addr == "tcp6://[::1]:9100"
    assert gnetpy.Options().metrics_addr is None
