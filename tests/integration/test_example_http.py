"""examples/http_server.py driven by real clients: curl, h11 (100 pipelined requests, checked byte
for byte), wrk (pipelined, against the program itself), and raw sockets for keep-alive and bad input."""

from __future__ import annotations

import email.utils
import os
import random
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from http import HTTPStatus
from typing import Any

import pytest

from conftest import WAIT, connect, recv_until_eof

pytest.importorskip("httptools", reason="the example parses HTTP with httptools")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLE = os.path.join(ROOT, "examples", "http_server.py")
DATE = re.compile(rb"\r\nDate: ([^\r]*)\r\n")


def load_example() -> Any:
    sys.path.insert(0, os.path.dirname(EXAMPLE))
    try:
        import http_server
    finally:
        sys.path.pop(0)
    return http_server


@pytest.fixture
def addr(serve: Any) -> tuple[str, int]:
    return serve(load_example().HttpServer(), "tcp://127.0.0.1:0").addrs[0]


def expected(status: bytes, content_type: bytes, body: bytes, date: bytes, connection: bytes = b"") -> bytes:
    """A response exactly as the example writes it."""
    return (b"HTTP/1.1 %s\r\nServer: gnetpy\r\nDate: %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n%s\r\n%s"
            % (status, date, content_type, len(body), connection, body))


def check_date(date: bytes) -> None:
    """An IMF-fixdate within a few seconds of now."""
    assert re.fullmatch(rb"\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT", date), date
    assert abs(email.utils.parsedate_to_datetime(date.decode()).timestamp() - time.time()) < 3


def ask(addr: tuple[str, int], raw: bytes) -> bytes:
    """Send ``raw`` on a fresh connection; everything until the server closes it."""
    with connect(addr) as s:
        s.sendall(raw)
        return recv_until_eof(s)


def read_response(f: Any) -> tuple[bytes, bytes]:
    """One response (head, body) from a socket's file, by its Content-Length."""
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        line = f.readline()
        assert line, f"the server closed the connection after {head!r}"
        head += line
    size = int(re.search(rb"Content-Length: (\d+)", head).group(1))
    return head, f.read(size)


# -- curl ------------------------------------------------------------------------------------------


def curl(*args: str) -> str:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    run = subprocess.run(["curl", "-sS", "--max-time", str(WAIT), *args], capture_output=True, timeout=2 * WAIT)
    assert run.returncode == 0, run.stderr
    return run.stdout.decode("latin-1")


def test_curl_routes_keep_alive_http10_and_connection_close(addr: tuple[str, int]) -> None:
    base = f"http://{addr[0]}:{addr[1]}"
    plain = curl("-i", f"{base}/plaintext")
    assert plain.startswith("HTTP/1.1 200 OK\r\n") and plain.endswith("\r\n\r\nHello, World!")
    assert "Server: gnetpy\r\n" in plain and "Content-Type: text/plain\r\n" in plain
    check_date(DATE.search(plain.encode()).group(1))
    js = curl("-i", f"{base}/json?x=1")
    assert "Content-Type: application/json\r\n" in js and js.endswith('\r\n\r\n{"message": "Hello, World!"}')
    assert curl("-o", "/dev/null", "-w", "%{http_code}", f"{base}/nothing-here") == "404"
    # Two transfers in one curl: the second reuses the connection (0 new connects).
    url = f"{base}/plaintext"
    assert curl("-o", "/dev/null", "-o", "/dev/null", "-w", "%{num_connects} ", url, url) == "1 0 "
    assert "\r\nConnection: close\r\n" in curl("-i", "--http1.0", url)
    assert "\r\nConnection: keep-alive\r\n" in curl("-i", "--http1.0", "-H", "Connection: keep-alive", url)
    assert "\r\nConnection: close\r\n" in curl("-i", "-H", "Connection: close", url)


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_curl_echoes_bodies(addr: tuple[str, int], tmp_path: Any, framing: str) -> None:
    body = random.Random(framing).randbytes(300_000)   # several reads' worth
    (tmp_path / "body").write_bytes(body)
    extra = ["-H", "Transfer-Encoding: chunked"] if framing == "chunked" else ["-H", "Expect: 100-continue"]
    code = curl("--data-binary", f"@{tmp_path / 'body'}", *extra, "-o", str(tmp_path / "out"),
                "-w", "%{http_code}", f"http://{addr[0]}:{addr[1]}/echo")
    assert code == "200"
    assert (tmp_path / "out").read_bytes() == body


# -- h11: 100 pipelined requests, every response byte for byte ---------------------------------------


ROUTES = {   # target -> (status, content type, body) of its response; POST /echo answers with the body
    "/plaintext": (b"200 OK", b"text/plain", b"Hello, World!"),
    "/json": (b"200 OK", b"application/json", b'{"message": "Hello, World!"}'),
    "/missing": (b"404 Not Found", b"text/plain", b"Not Found\n"),
}


def h11_request(h11: Any, i: int, rng: random.Random) -> tuple[list[Any], tuple[bytes, bytes, bytes]]:
    """Request ``i`` of 100 as h11 events, and the response it must get; the last one asks to close."""
    headers = [("Host", "test")] + ([("Connection", "close")] if i == 99 else [])
    target = ["/plaintext", "/json", "/missing", "/echo", "/echo"][i % 5]
    if target != "/echo":
        return [h11.Request(method="GET", target=target, headers=headers), h11.EndOfMessage()], ROUTES[target]
    body = rng.randbytes(rng.randrange(0, 3000))   # by Content-Length or chunked, in two pieces
    headers.append(("Content-Length", str(len(body))) if i % 5 == 3 else ("Transfer-Encoding", "chunked"))
    pieces = [h11.Data(data=piece) for piece in (body[:len(body) // 3], body[len(body) // 3:]) if piece]
    events = [h11.Request(method="POST", target="/echo", headers=headers), *pieces, h11.EndOfMessage()]
    return events, (b"200 OK", b"application/octet-stream", body)


def test_h11_pipelining_100_requests(addr: tuple[str, int]) -> None:
    h11 = pytest.importorskip("h11", reason="h11 is the independent HTTP/1.1 client here")
    rng = random.Random(100)
    plan = [h11_request(h11, i, rng) for i in range(100)]
    # All 100 in one write, each serialized by a fresh h11 client.
    wire = b"".join(b"".join(map(h11.Connection(h11.CLIENT).send, events)) for events, _ in plan)
    with connect(addr) as s:
        s.sendall(wire)
        raw = recv_until_eof(s)   # the last request asked the server to close
    # Parse the stream with one h11 client that is told what was sent, request by request.
    conn = h11.Connection(h11.CLIENT)
    for data in (raw, b""):   # b"": the server closed
        conn.receive_data(data)
    want = bytearray()
    for i, (events, (status, content_type, body)) in enumerate(plan):
        for event in events:
            conn.send(event)
        response, got = conn.next_event(), b""
        while isinstance(event := conn.next_event(), h11.Data):
            got += event.data
        assert isinstance(response, h11.Response) and isinstance(event, h11.EndOfMessage), (i, response, event)
        assert (response.status_code, got) == (int(status[:3]), body), i
        date = dict(response.headers)[b"date"]
        check_date(date)
        want += expected(status, content_type, body, date, b"Connection: close\r\n" if i == 99 else b"")
        if i < 99:
            conn.start_next_cycle()
    assert isinstance(conn.next_event(), h11.ConnectionClosed)
    assert raw == bytes(want)   # byte for byte, each Date as it came (checked above)


# -- wrk, against the program itself ---------------------------------------------------------------

PIPELINE_LUA = """\
-- wrk's pipeline.lua shape: DEPTH requests in every write
init = function(args)
   local r = {}
   for i = 1, tonumber(args[1]) do r[i] = wrk.format(nil, (i % 2 == 0) and "/json" or "/plaintext") end
   req = table.concat(r)
end
request = function() return req end
"""


def start_program(args: list[str]) -> tuple[subprocess.Popen[str], tuple[str, int]]:
    proc = subprocess.Popen([sys.executable, EXAMPLE, *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    while select.select([proc.stdout], [], [], WAIT)[0]:   # the program logs its address at boot
        if match := re.search(r"http server on \[\('([\d.]+)', (\d+)\)\]", proc.stdout.readline()):
            return proc, (match.group(1), int(match.group(2)))
    proc.kill()
    raise AssertionError(f"no address line from the server: {proc.communicate(timeout=WAIT)[0]}")


def test_wrk_pipelined(tmp_path: Any) -> None:
    if shutil.which("wrk") is None:
        pytest.skip("wrk is not installed")
    (tmp_path / "pipeline.lua").write_text(PIPELINE_LUA)
    proc, (host, port) = start_program(["--addr", "tcp://127.0.0.1:0", "--loops", "2"])
    try:
        run = subprocess.run(["wrk", "-c", "16", "-t", "1", "-d", "2", "--timeout", "5s",
                              "-s", str(tmp_path / "pipeline.lua"), f"http://{host}:{port}/", "--", "16"],
                             capture_output=True, text=True, timeout=30)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=WAIT)
    assert run.returncode == 0, run.stderr
    # wrk prints these two lines only when something went wrong.
    assert "Non-2xx" not in run.stdout and "Socket errors" not in run.stdout, run.stdout
    assert int(re.search(r"(\d+) requests in", run.stdout).group(1)) > 1000, run.stdout
    assert proc.returncode == 0, out


# -- raw sockets: keep-alive, the Date timer, bad input ------------------------------------------------


def test_keep_alive(addr: tuple[str, int]) -> None:
    with connect(addr) as s, s.makefile("rb") as f:
        for target in ["/plaintext", "/json", "/missing"] * 3:
            s.sendall(b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % target.encode())
            head, _ = read_response(f)
            assert b"Connection:" not in head
        s.sendall(b"GET /plaintext HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        assert b"\r\nConnection: keep-alive\r\n" in read_response(f)[0]
        s.sendall(b"GET /plaintext HTTP/1.0\r\n\r\n")   # HTTP/1.0 without keep-alive: closed after it
        head, body = read_response(f)
        assert b"\r\nConnection: close\r\n" in head and body == b"Hello, World!"
        assert f.read() == b""


def test_date_is_refreshed_every_second(addr: tuple[str, int]) -> None:
    dates = []
    for pause in (1.1, 0):
        dates.append(DATE.search(ask(addr, b"GET /plaintext HTTP/1.0\r\n\r\n")).group(1))
        check_date(dates[-1])
        time.sleep(pause)
    assert dates[0] != dates[1]


@pytest.mark.parametrize("raw", [
    b"garbage\r\n\r\n",
    b"GET /plaintext HTTP/1.1\r\nHost t\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
], ids=["garbage", "no-colon", "cl-then-te", "te-then-cl", "two-lengths", "bad-chunk"])
def test_malformed_request_is_400_then_closed(addr: tuple[str, int], raw: bytes) -> None:
    good = b"GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n"   # answered first: what came before the bad one
    reply = ask(addr, good + raw)
    date = DATE.search(reply).group(1)
    assert reply == (expected(b"200 OK", b"text/plain", b"Hello, World!", date)
                     + expected(b"400 Bad Request", b"text/plain", b"Bad Request\n", date, b"Connection: close\r\n"))


def refused(addr: tuple[str, int], raw: bytes) -> bytes:
    """The status line of the answer to ``raw``, which must come with Connection: close and then EOF."""
    reply = ask(addr, raw)
    assert b"\r\nConnection: close\r\n" in reply, reply
    return reply.split(b"\r\n", 1)[0]


def test_body_over_the_limit_is_413(addr: tuple[str, int]) -> None:
    # The reason phrase is the interpreter's: 3.13 renamed 413 "Content Too Large" (RFC 9110).
    limit, too_large = load_example().MAX_BODY, b"HTTP/1.1 413 %s" % HTTPStatus(413).phrase.encode()
    assert refused(addr, b"POST /echo HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % (limit + 1)) == too_large
    chunk = b"%x\r\n%s\r\n" % (65536, b"x" * 65536)
    assert refused(addr, b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                   + chunk * (limit // 65536 + 1)) == too_large
    # Expect: 100-continue: refused before the body is sent, or invited to send it.
    expect = b"POST /echo HTTP/1.1\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n"
    assert refused(addr, expect % (limit + 1)) == too_large
    with connect(addr) as s, s.makefile("rb") as f:
        s.sendall(expect % limit)
        assert f.readline() == b"HTTP/1.1 100 Continue\r\n" and f.readline() == b"\r\n"
        s.sendall(b"y" * limit)
        head, body = read_response(f)
        assert head.startswith(b"HTTP/1.1 200 OK\r\n") and body == b"y" * limit


def test_headers_over_the_limit_are_431(addr: tuple[str, int]) -> None:
    limit, too_large = load_example().MAX_HEADER, b"HTTP/1.1 431 %s" % HTTPStatus(431).phrase.encode()
    request = b"GET /plaintext HTTP/1.1\r\nConnection: close\r\nX-Big: %s\r\n\r\n"
    assert ask(addr, request % (b"a" * (limit - 100))).startswith(b"HTTP/1.1 200 OK\r\n")
    assert refused(addr, request % (b"a" * limit)) == too_large
    assert refused(addr, b"GET /%s HTTP/1.1\r\n\r\n" % (b"u" * limit)) == too_large
    # A header that never ends, sent in pieces: refused once the pieces pass the limit.
    with connect(addr) as s:
        s.sendall(b"GET /plaintext HTTP/1.1\r\nX-Slow: ")
        for _ in range(4 * limit // 1024):   # bounded: a server that never refuses fails the test below
            if select.select([s], [], [], 0.01)[0]:
                break
            s.sendall(b"s" * 1024)
        reply = recv_until_eof(s)
    assert reply.startswith(too_large + b"\r\n") and b"\r\nConnection: close\r\n" in reply
