"""The benchmark suite: the harness end to end, and the load generator's checks.

Everything listens on 127.0.0.1 ephemeral ports or in tmp_path, every wait is
bounded, and every process is stopped by the harness's Processes() context.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from benchmarks import harness, readme_table, scaling  # noqa: E402

# These tests compile the C load generators and drive real servers through the harness: CI runs
# them in its first (compiled) pass only, `-m "not bench"` in the others (.ci/run says why).
pytestmark = pytest.mark.bench

TINY_RUN = ["--reps", "1", "--duration", "0.5", "--warmup", "0.2",
            "--workloads", "W1,W5", "--idle-conns", "200"]
LOADGEN_TIMEOUT_S = 30


@pytest.fixture(scope="module")
def loadgen() -> Path:
    return harness.ensure_built("loadgen")


@pytest.fixture(scope="module")
def c_echo() -> Path:
    return harness.ensure_built("c_echo")


# ---- harness end to end ---------------------------------------------------


def run_harness(tmp_path: Path, servers: str, capsys: pytest.CaptureFixture[str], *extra: str
                ) -> tuple[dict, str]:
    rc = harness.main([*TINY_RUN, "--servers", servers, "--out", str(tmp_path), *extra])
    out = capsys.readouterr()
    assert rc == 0, out.err
    return json.loads((tmp_path / "results.json").read_text()), out.out


def check_results(results: dict, printed: str, servers: list[str]) -> None:
    assert results["config"]["servers"] == servers
    by_key = {(r["workload"], r["server"]): r for r in results["runs"]}
    assert set(by_key) == {(w, s) for w in ("W1", "W5") for s in servers}
    for srv in servers:
        load = by_key["W1", srv]
        assert load["connections"] == 50 and load["msg_size"] == 64 and load["depth"] == 1
        assert load["messages"] > 0
        assert load["msgs_per_s"] > 0 and load["mb_per_s"] > 0
        assert 0 < load["rtt_p50_us"] <= load["rtt_p99_us"]
        assert load["server_user_us_per_msg"] >= 0 and load["server_sys_us_per_msg"] >= 0
        assert load["server_user_us_per_msg"] + load["server_sys_us_per_msg"] > 0
        assert 0 < load["duration_s"] < 1
        idle = by_key["W5", srv]
        assert idle["connections"] == 200
        assert idle["rss_before_kib"] > 0 and idle["rss_after_kib"] >= idle["rss_before_kib"]
        assert results["summary"]["W1"][srv]["msgs_per_s"]["median"] == load["msgs_per_s"]
    for header in ("msgs/s", "user µs/msg", "KiB/conn"):
        assert header in printed
    row_starts = [line.split()[:2] for line in printed.splitlines()]
    for srv in servers:
        assert ["W1", srv] in row_starts and ["W5", srv] in row_starts
    assert results["machine"]["cpu_count"] >= 1 and results["machine"]["python"]


def test_harness_end_to_end_c_and_asyncio(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                         ) -> None:
    results, printed = run_harness(tmp_path, "asyncio,c", capsys)
    check_results(results, printed, ["asyncio", "c"])
    # The C server allocates almost nothing per connection; asyncio does.
    assert results["summary"]["W5"]["asyncio"]["kib_per_conn"]["median"] > 0
    ratios = results["summary"]["W1"]["asyncio"]["ratios"]
    assert ratios["msgs_per_s_vs_c"] > 0 and ratios["msgs_per_s_vs_uvloop"] is None
    for name in ("results.json", "results.md", "results.png"):
        assert (tmp_path / name).stat().st_size > 0


# Skipped only while examples/echo.py is not written; once it exists this must pass.
@pytest.mark.skipif(not harness.GNETPY_ECHO.exists(),
                    reason="examples/echo.py (the gnetpy echo server) does not exist yet")
def test_harness_end_to_end_gnetpy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results, printed = run_harness(tmp_path, "gnetpy", capsys)
    check_results(results, printed, ["gnetpy"])
    assert results["skipped"] == {}


def test_floor_server_runs_on_request_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                           ) -> None:
    results, printed = run_harness(tmp_path, "floor,c", capsys)
    check_results(results, printed, ["c", "floor"])  # the fixed interleaving order
    assert "floor" not in harness.DEFAULT_SERVERS
    assert set(harness.ON_REQUEST) == {"floor", "gnetpy-threads2", "gnetpy-procs1", "gnetpy-procs2",
                                       "gnetpy-procs2-rp", "gnetpy-idle", "gnetpy-codec", "gnetpy-frames",
                                       "websockets-uvloop", "gnetpy-proxy-v1", "gnetpy-proxy-v2", "gnetpy-haproxy"}
    assert set(harness.DEFAULT_SERVERS) == set(harness.SERVERS) - set(harness.ON_REQUEST) - set(harness.APP_SERVERS)
    # W8's gnetpy frame servers are in the default set only when W8 runs (it does by default), and
    # W12-W14's application servers only when those run (they do by default).
    assert harness.parse_args([]).servers == ["gnetpy", "gnetpy-pure", "asyncio", "uvloop", "c", "gnetpy-codec",
                                              "gnetpy-frames", *harness.APP_SERVERS]
    assert harness.parse_args(["--workloads", "W1,W7"]).servers == ["gnetpy", "gnetpy-pure", "asyncio", "uvloop", "c"]


def test_baseline_checkout_runs_beside_this_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--baseline adds another checkout (here: this one) as server 'baseline', in the same run."""
    try:
        assert harness.parse_args(["--baseline", str(harness.REPO_ROOT)]).servers[-1] == "baseline"
        results, printed = run_harness(tmp_path, "c", capsys, "--baseline", str(harness.REPO_ROOT))
        check_results(results, printed, ["c", "baseline"])
    finally:
        harness.SERVERS.pop("baseline", None)
    with pytest.raises(SystemExit):
        harness.parse_args(["--baseline", str(tmp_path)])  # no examples/echo.py there
    assert "no examples/echo.py" in capsys.readouterr().err


def test_harness_reports_missing_gnetpy(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(harness, "GNETPY_ECHO", REPO_ROOT / "examples" / "no-such-echo.py")
    rc = harness.main(["--reps", "1", "--workloads", "W5", "--idle-conns", "20",
                       "--servers", "gnetpy,c", "--out", str(tmp_path)])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "SKIPPING gnetpy: gnetpy server missing" in out.err
    assert "SKIPPED gnetpy: gnetpy server missing" in out.out
    results = json.loads((tmp_path / "results.json").read_text())
    assert "gnetpy" in results["skipped"] and results["config"]["servers"] == ["c"]


def test_server_that_dies_is_an_error_with_its_output(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", "import sys; sys.stderr.write('boom: bad flag'); sys.exit(3)"]
    with harness.Processes() as procs, pytest.raises(harness.HarnessError) as err:
        harness.start_server(procs, "broken", argv, harness.free_tcp_addr(), tmp_path, None)
    assert "exited with code 3" in str(err.value) and "boom: bad flag" in str(err.value)


def test_server_that_never_listens_times_out(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", "import time; print('starting', flush=True); time.sleep(60)"]
    with harness.Processes() as procs:
        with pytest.raises(harness.HarnessError) as err:
            harness.start_server(procs, "mute", argv, harness.free_tcp_addr(), tmp_path, None,
                                 ready_timeout=0.5)
        proc = procs._procs[0]
    assert "did not accept a connection" in str(err.value) and "starting" in str(err.value)
    assert proc.returncode is not None   # killed and reaped


def test_build_is_stale_when_a_local_header_is_newer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # loadgen.c and tlsload.c share benchmarks/loadcommon.h: editing it rebuilds both.
    common = harness.BENCH_DIR / "loadcommon.h"
    assert harness.build_sources("loadgen")[1:] == [common]
    assert harness.build_sources("tlsload")[1:] == [common]
    assert harness.build_sources("wsload")[1:] == [common]
    assert harness.build_sources("c_echo")[1:] == []
    build = tmp_path / "build"
    monkeypatch.setattr(harness, "BENCH_DIR", tmp_path)
    monkeypatch.setattr(harness, "BUILD_DIR", build)
    (tmp_path / "prog.c").write_text('#include <stdlib.h>\n#include "common.h"\n'
                                     "int main(void) { return ANSWER; }\n")
    (tmp_path / "common.h").write_text('#include "inner.h"   /* nested: found too */\n')
    (tmp_path / "inner.h").write_text("#define ANSWER 7\n")
    binary = harness.ensure_built("prog")   # the headers resolve next to prog.c, whatever the cwd
    assert subprocess.run([str(binary)], timeout=10).returncode == 7
    for path, mtime in (("prog.c", 100), ("common.h", 100), ("inner.h", 100), ("build/prog", 200)):
        os.utime(tmp_path / path, (mtime, mtime))
    assert harness.is_built("prog")
    os.utime(tmp_path / "inner.h", (300, 300))
    assert not harness.is_built("prog")
    (tmp_path / "inner.h").write_text("#define ANSWER 9\n")
    assert subprocess.run([str(harness.ensure_built("prog"))], timeout=10).returncode == 9
    assert harness.is_built("prog")


# ---- load generator against the reference servers ------------------------


@pytest.mark.parametrize("server", ["c", "asyncio"])
def test_loadgen_large_pipelined_messages_over_unix_socket(
    server: str, loadgen: Path, c_echo: Path, tmp_path: Path
) -> None:
    # 4 x 1 MiB in flight per connection overruns the socket buffers, so the
    # servers' partial-write paths (c_echo's EPOLLOUT handling) are exercised.
    addr = f"unix://{tmp_path / 'echo.sock'}"
    with harness.Processes() as procs:
        srv = harness.start_server(procs, server, harness.SERVERS[server].command(addr), addr,
                                   tmp_path, None)
        out = subprocess.run(
            [str(loadgen), "--unix", str(tmp_path / "echo.sock"), "--conns", "3",
             "--size", str(1 << 20), "--depth", "4", "--duration", "0.5", "--warmup", "0.1",
             "--pid", str(srv.proc.pid)],
            capture_output=True, text=True, timeout=LOADGEN_TIMEOUT_S,
        )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["messages"] > 0 and report["mb_per_s"] > 0


# ---- load generator detects a misbehaving server --------------------------


class FaultyEcho:
    """Threaded echo server that misbehaves at one stream offset on each connection.

    fault: "flip" inverts the byte at `offset`, "drop" leaves it out, "close"
    closes the connection just before it.
    """

    def __init__(self, fault: str, offset: int) -> None:
        self.fault, self.offset = fault, offset
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self.threads.append(t)
            t.start()

    def _received(self, conn: socket.socket) -> Iterator[bytes]:
        """What `conn` sends, chunk by chunk, until it closes, fails or the server stops."""
        conn.settimeout(0.1)
        while not self.stopping.is_set():
            try:
                data = conn.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            yield data

    def _serve(self, conn: socket.socket) -> None:
        echoed = 0
        with conn:
            for data in self._received(conn):
                start, echoed = echoed, echoed + len(data)
                if start <= self.offset < echoed:
                    i = self.offset - start
                    if self.fault == "close":
                        conn.sendall(data[:i])
                        return
                    bad = bytes([data[i] ^ 0xFF]) if self.fault == "flip" else b""
                    data = data[:i] + bad + data[i + 1:]
                try:
                    conn.sendall(data)
                except OSError:
                    return

    def close(self) -> None:
        self.stopping.set()
        for t in self.threads:
            t.join(timeout=5)
        self.listener.close()


@pytest.fixture
def faulty() -> Iterator[Callable[[str, int], FaultyEcho]]:
    servers: list[FaultyEcho] = []

    def make(fault: str, offset: int) -> FaultyEcho:
        servers.append(FaultyEcho(fault, offset))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def run_loadgen(loadgen: Path, port: int, depth: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(loadgen), "--tcp", f"127.0.0.1:{port}", "--conns", "1", "--size", "64",
         "--depth", str(depth), "--duration", "0.5", "--warmup", "0.2"],
        capture_output=True, text=True, timeout=LOADGEN_TIMEOUT_S,
    )


# Offset 1000 is inside message 15 (after the 16-byte handshake), byte 24.
def test_loadgen_detects_corrupted_byte(loadgen: Path, faulty: Callable[[str, int], FaultyEcho]) -> None:
    server = faulty("flip", 1000)
    out = run_loadgen(loadgen, server.port, depth=4)
    assert out.returncode == 1
    assert out.stdout == ""
    assert ("connection 0: echo mismatch at stream offset 1000 (message 15, byte 24)"
            in out.stderr)


def test_loadgen_detects_dropped_byte(loadgen: Path, faulty: Callable[[str, int], FaultyEcho]) -> None:
    server = faulty("drop", 1000)
    out = run_loadgen(loadgen, server.port, depth=4)
    assert out.returncode == 1
    assert "connection 0: echo mismatch at stream offset" in out.stderr


def test_loadgen_detects_stalled_echo(loadgen: Path, faulty: Callable[[str, int], FaultyEcho]) -> None:
    # The last byte of message 15 never comes back: a ping-pong client waits
    # for it forever, which must be an error, not a quiet low number.
    server = faulty("drop", 16 + 15 * 64 + 63)
    out = run_loadgen(loadgen, server.port, depth=1)
    assert out.returncode == 1
    assert "connection 0: no echo for" in out.stderr and "1 bytes outstanding" in out.stderr


def test_loadgen_detects_server_closing_mid_run(loadgen: Path, faulty: Callable[[str, int], FaultyEcho]) -> None:
    server = faulty("close", 1000)
    out = run_loadgen(loadgen, server.port, depth=1)
    assert out.returncode == 1
    assert "connection 0: server closed the connection at stream offset 1000" in out.stderr


def test_chart_skipped_with_a_message_without_matplotlib(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)   # import now raises ImportError
    why_not = harness.write_chart(tmp_path / "chart.png", {})
    assert why_not and "matplotlib is not importable" in why_not
    assert not (tmp_path / "chart.png").exists()


def synthetic_results() -> dict:
    """A small results JSON of the harness's shape: W1 (all five servers), W5, W8 (no plain gnetpy)."""
    def fig(median: float) -> dict:
        return {"median": median, "min": median * 0.9, "max": median * 1.1}

    def load(msgs: float, user: float) -> dict:
        return {"msgs_per_s": fig(msgs), "server_user_us_per_msg": fig(user), "runs": 3, "ratios": {}}

    return {
        "machine": {"cpu_model": "Test CPU", "cpu_count": 2, "kernel": "6.1.0", "python": "3.11.7",
                    "python_implementation": "CPython", "uvloop": "0.22.1",
                    "date": "2026-01-02T03:04:05+00:00"},
        "config": {"quick": False, "reps": 3, "duration": 2.0, "warmup": 0.5, "idle_conns": 500,
                   "workloads": ["W1", "W5", "W8"],
                   "servers": ["gnetpy", "gnetpy-pure", "asyncio", "uvloop", "c", "gnetpy-codec",
                               "gnetpy-frames"], "unix": False},
        "workloads": {w: {"name": w, "title": harness.WORKLOADS[w].title, "mode": harness.WORKLOADS[w].mode}
                      for w in ("W1", "W5", "W8")},
        "summary": {
            "W1": {"gnetpy": load(1000, 0.5), "gnetpy-pure": load(900, 0.75), "asyncio": load(800, 2.0),
                   "uvloop": load(1000, 1.0), "c": load(1200, 0.125)},
            "W5": {s: {"kib_per_conn": fig(k), "runs": 3, "connections": 500, "ratios": {}}
                   for s, k in (("gnetpy", 0.5), ("asyncio", 1.5), ("uvloop", 1.25))},
            "W8": {"asyncio": load(100, 1.5), "uvloop": load(400, 0.8), "gnetpy-codec": load(150, 1.0),
                   "gnetpy-frames": load(160, 0.9)},
        },
    }


def test_readme_table_from_a_results_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "results.json"
    results.write_text(json.dumps(synthetic_results()))
    assert readme_table.main([str(results)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == ("| workload | metric | gnetpy (compiled) | gnetpy (pure) | asyncio | uvloop | C epoll "
                        "| gnetpy / uvloop |")
    assert lines[2] == ("| W1 50 conns x 64 B ping-pong | server user µs/msg | 0.500 | 0.750 | 2.00 | 1.00 "
                        "| 0.125 | 0.50× |")
    assert lines[3] == ("| W5 idle conns: server RSS per connection | server KiB per idle conn | 0.500 | – "
                        "| 1.50 | 1.25 | – | 0.40× |")
    # W8: gnetpy-codec / gnetpy-frames in gnetpy's column, the codec's figure in the ratio.
    assert lines[4] == ("| W8 50 conns x 4+64 B frames, 16 in flight | server user µs/frame | 1.00 / 0.900 "
                        "| – | 1.50 | 0.800 | – | 1.25× |")
    assert lines[5] == ""
    caption = lines[6]
    assert caption.startswith("(2026-01-02 03:04 UTC; Test CPU, 2 CPUs, Linux 6.1.0, CPython 3.11.7, "
                              "uvloop 0.22.1; ")
    assert ("`python benchmarks/harness.py --reps 3 --duration 2 --warmup 0.5 --idle-conns 500 "
            "--workloads W1,W5,W8`") in caption
    assert "W8: gnetpy is gnetpy-codec / gnetpy-frames" in caption and len(lines) == 7

    # The metadata's command wins where there is one.
    data = synthetic_results()
    data["command"] = "./bench.sh --full"
    assert "; `./bench.sh --full`;" in readme_table.caption(data)


def test_readme_table_gives_the_application_workloads_a_table_of_their_own() -> None:
    data = synthetic_results()
    fig = {"median": 1.0, "min": 1.0, "max": 1.0}

    def app(reqs: float, user: float) -> dict:
        return {"reqs_per_s": dict(fig, median=reqs), "server_user_us_per_req": dict(fig, median=user),
                "runs": 3, "ratios": {}}

    data["workloads"]["W12p"] = {"name": "W12p", "title": harness.WORKLOADS["W12p"].title, "mode": "http"}
    data["summary"]["W12p"] = {"gnetpy-http": app(150000, 4.5), "uvicorn": app(14000, 60.0)}
    table = readme_table.render_table(data).splitlines()
    assert not any(line.startswith("| W12p") and "metric" in line for line in table[:6])
    assert table[5:9] == [
        "",
        "| application workload | server | per second | server user µs per request |",
        "|---|---|---|---|",
        f"| W12p {harness.WORKLOADS['W12p'].title} | gnetpy (compiled) | 150.0k | 4.50 |",
    ]
    assert table[9] == f"| W12p {harness.WORKLOADS['W12p'].title} | uvicorn | 14.0k | 60.0 |"
    assert len(table) == 10  # servers without figures get no row


def test_readme_table_writes_between_the_markers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "results.json"
    results.write_text(json.dumps(synthetic_results()))
    readme = tmp_path / "README.md"
    readme.write_text("# title\n\nbefore\n<!-- bench-table:start -->\nold table\n"
                      "<!-- bench-table:end -->\nafter\n")
    assert readme_table.main([str(results), "--write", str(readme)]) == 0
    assert readme_table.main([str(results)]) == 0
    printed = capsys.readouterr().out
    assert readme.read_text() == ("# title\n\nbefore\n<!-- bench-table:start -->\n" + printed
                                  + "<!-- bench-table:end -->\nafter\n")
    assert readme_table.main([str(results), "--write", str(readme)]) == 0   # idempotent
    assert readme.read_text().count("| W1 ") == 1

    readme.write_text("# no markers\n")
    assert readme_table.main([str(results), "--write", str(readme)]) == 1
    err = capsys.readouterr().err
    assert "has no <!-- bench-table:start --> and <!-- bench-table:end --> line" in err
    assert readme.read_text() == "# no markers\n"


def test_chart_replotted_from_a_results_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    results = tmp_path / "results.json"
    results.write_text(json.dumps(synthetic_results()))
    assert harness.main(["--replot", str(results)]) == 0
    png = tmp_path / "results.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"Wrote {png}" in capsys.readouterr().out
    # W1's gnetpy at 0.5x uvloop, W5's at 0.4x; W8 has no plain gnetpy, W1 no gnetpy-codec.
    ratios = harness.summary_ratios(synthetic_results())
    assert ratios["W1"]["gnetpy"] == 0.5 and ratios["W5"]["gnetpy"] == 0.4
    assert "gnetpy" not in ratios["W8"] and "uvloop" not in ratios["W1"]
    # Without uvloop there is no summary panel, but still a chart.
    data = synthetic_results()
    for per_server in data["summary"].values():
        per_server.pop("uvloop")
    assert harness.summary_ratios(data) == {}
    assert harness.write_chart(tmp_path / "no-uvloop.png", data) is None
    assert harness.main(["--replot", str(tmp_path / "missing.json")]) == 1


# ---- W6 connection churn and W7 UDP echo ----------------------------------

CHURN_UDP_RUN = ["--reps", "1", "--duration", "0.5", "--warmup", "0.2", "--workloads", "W6,W7"]


def loadgen_run(loadgen: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(loadgen), *args], capture_output=True, text=True,
                          timeout=LOADGEN_TIMEOUT_S)


def check_churn_report(report: dict, clients: int) -> None:
    assert report["mode"] == "churn" and report["clients"] == clients
    assert report["msg_size"] == 64 and report["conns"] > 0 and report["conns_per_s"] > 0
    assert 0 < report["rtt_p50_us"] <= report["rtt_p99_us"]
    assert report["server_user_us_per_conn"] >= 0 and report["server_sys_us_per_conn"] >= 0
    assert report["server_user_us_per_conn"] + report["server_sys_us_per_conn"] > 0


def check_udp_report(report: dict, sockets: int) -> None:
    assert report["mode"] == "udp" and report["sockets"] == sockets and report["depth"] == 1
    assert report["messages"] > 0 and report["msgs_per_s"] > 0 and report["mb_per_s"] > 0
    assert 0 < report["rtt_p50_us"] <= report["rtt_p99_us"]
    assert report["server_user_us_per_msg"] + report["server_sys_us_per_msg"] > 0
    assert report["lost"] >= 0 and report["stale"] >= 0


@pytest.mark.parametrize("network", ["tcp", "unix"])
def test_loadgen_churn_against_c_echo(network: str, loadgen: Path, c_echo: Path,
                                      tmp_path: Path) -> None:
    addr = harness.free_tcp_addr() if network == "tcp" else f"unix://{tmp_path / 'echo.sock'}"
    spread = ["--src-addrs", "4"] if network == "tcp" else []
    with harness.Processes() as procs:
        srv = harness.start_server(procs, "c", harness.SERVERS["c"].argv(addr), addr, tmp_path, None)
        out = loadgen_run(loadgen, *harness.loadgen_target(addr), "--churn", "--conns", "8", *spread,
                          "--duration", "0.4", "--warmup", "0.1", "--pid", str(srv.proc.pid))
        srv.check_alive("after the churn run")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    check_churn_report(report, clients=8)
    if network == "tcp":
        # Four source addresses, each with the whole ephemeral port range.
        assert report["src_addrs"] == 4 and report["local_ports"] > 0
        assert report["time_wait_capacity_conns_per_s"] == pytest.approx(
            report["local_ports"] * 4 / 60, abs=1)
    else:
        assert report["local_ports"] is None and report["time_wait_capacity_conns_per_s"] is None


def test_loadgen_udp_against_c_echo(loadgen: Path, c_echo: Path, tmp_path: Path) -> None:
    addr = harness.free_udp_addr()
    with harness.Processes() as procs:
        srv = harness.start_server(procs, "c", harness.SERVERS["c"].argv(addr), addr, tmp_path, None)
        out = loadgen_run(loadgen, *harness.loadgen_target(addr), "--conns", "8", "--size", "200",
                          "--duration", "0.4", "--warmup", "0.1", "--pid", str(srv.proc.pid))
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    check_udp_report(report, sockets=8)
    assert report["msg_size"] == 200 and report["loss_timeout_ms"] == 200


@pytest.mark.parametrize("args, message", [
    (["--unix", "/tmp/x.sock", "--churn", "--src-addrs", "4"], "--src-addrs is for --churn over --tcp"),
    (["--tcp", "10.1.2.3:9", "--churn", "--src-addrs", "4"], "must be an IPv4 loopback address"),
    (["--udp", "127.0.0.1:9", "--depth", "2"], "--depth must be 1"),
    (["--tcp", "127.0.0.1:9", "--churn", "--depth", "4"], "--depth must be 1"),
    (["--udp", "127.0.0.1:9", "--size", "8"], "--size must be 16..65507"),
    (["--udp", "127.0.0.1:9", "--churn"], "separate modes"),
    (["--udp", "127.0.0.1:9", "--frames"], "--frames is load mode's"),
    (["--tcp", "127.0.0.1:9", "--churn", "--frames"], "--frames is load mode's"),
    (["--tcp", "127.0.0.1:9", "--proxy", "v2"], "--proxy is for --churn"),
    (["--tcp", "127.0.0.1:9", "--churn", "--proxy", "v3"], "--proxy: v3; expected v1 or v2"),
])
def test_loadgen_rejects_bad_churn_and_udp_options(loadgen: Path, args: list[str], message: str) -> None:
    out = loadgen_run(loadgen, *args)
    assert out.returncode == 1 and message in out.stderr


def test_loadgen_churn_reports_refused_connection(loadgen: Path) -> None:
    port = int(harness.free_tcp_addr().rpartition(":")[2])   # nothing listens there now
    out = loadgen_run(loadgen, "--tcp", f"127.0.0.1:{port}", "--churn", "--conns", "1",
                      "--duration", "0.3", "--warmup", "0")
    assert out.returncode == 1
    assert "connection 0 (client 0): connect: Connection refused" in out.stderr


def run_churn(loadgen: Path, port: int) -> subprocess.CompletedProcess[str]:
    return loadgen_run(loadgen, "--tcp", f"127.0.0.1:{port}", "--churn", "--conns", "1",
                       "--duration", "0.5", "--warmup", "0.1")


# FaultyEcho's offset counts from each connection's first byte: churn sends no handshake.
def test_loadgen_churn_detects_corrupted_byte(loadgen: Path,
                                              faulty: Callable[[str, int], FaultyEcho]) -> None:
    out = run_churn(loadgen, faulty("flip", 24).port)
    assert out.returncode == 1 and out.stdout == ""
    assert "connection 0 (client 0): echo mismatch at byte 24 of 64: expected 0x" in out.stderr


def test_loadgen_churn_detects_server_closing_first(loadgen: Path,
                                                    faulty: Callable[[str, int], FaultyEcho]) -> None:
    out = run_churn(loadgen, faulty("close", 10).port)
    assert out.returncode == 1
    assert ("connection 0 (client 0): server closed the connection after 10 of 64 bytes "
            "were echoed") in out.stderr


def test_loadgen_churn_detects_stalled_echo(loadgen: Path,
                                            faulty: Callable[[str, int], FaultyEcho]) -> None:
    # The last byte never comes back: the client must give up at the window's end.
    out = run_churn(loadgen, faulty("drop", 63).port)
    assert out.returncode == 1
    assert "connection 0 (client 0): not finished after" in out.stderr
    assert "echo incomplete" in out.stderr


class FaultyUdpEcho:
    """Single-threaded UDP echo that misbehaves on every `every`-th datagram.

    fault: "flip" inverts byte 40, "drop" leaves it out, "delay" sends it
    `delay` seconds late, "silent" answers nothing at all.
    """

    def __init__(self, fault: str, every: int = 5, delay: float = 0.15) -> None:
        self.fault, self.every, self.delay = fault, every, delay
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.01)
        self.port = self.sock.getsockname()[1]
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        count = 0
        held: list[tuple[float, bytes, tuple[str, int]]] = []
        while not self.stopping.is_set():
            now = time.monotonic()
            while held and held[0][0] <= now:
                _, data, addr = held.pop(0)
                self.sock.sendto(data, addr)
            try:
                data, addr = self.sock.recvfrom(65536)
            except TimeoutError:
                continue
            count += 1
            if self.fault == "silent":
                continue
            if count % self.every == 0:
                if self.fault == "drop":
                    continue
                if self.fault == "delay":
                    held.append((now + self.delay, data, addr))
                    continue
                if self.fault == "flip":
                    data = data[:40] + bytes([data[40] ^ 0xFF]) + data[41:]
            self.sock.sendto(data, addr)

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=5)
        self.sock.close()


@pytest.fixture
def faulty_udp() -> Iterator[Callable[..., FaultyUdpEcho]]:
    servers: list[FaultyUdpEcho] = []

    def make(fault: str, **kwargs: float) -> FaultyUdpEcho:
        servers.append(FaultyUdpEcho(fault, **kwargs))   # type: ignore[arg-type]
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def run_udp(loadgen: Path, port: int, *extra: str) -> subprocess.CompletedProcess[str]:
    return loadgen_run(loadgen, "--udp", f"127.0.0.1:{port}", "--conns", "2", "--duration", "0.5",
                       "--warmup", "0.1", "--loss-timeout", "50", *extra)


def test_loadgen_udp_detects_corrupted_datagram(loadgen: Path,
                                                faulty_udp: Callable[..., FaultyUdpEcho]) -> None:
    out = run_udp(loadgen, faulty_udp("flip").port)
    assert out.returncode == 1 and out.stdout == ""
    assert "echo mismatch in datagram" in out.stderr and "at byte 40 (payload)" in out.stderr


def test_loadgen_udp_counts_dropped_datagrams_as_lost(loadgen: Path,
                                                      faulty_udp: Callable[..., FaultyUdpEcho]) -> None:
    # Every 5th datagram vanishes: counted lost after 50 ms and replaced, the run goes on.
    out = run_udp(loadgen, faulty_udp("drop").port)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["messages"] > 0 and report["lost"] > 0 and report["stale"] == 0
    assert report["loss_timeout_ms"] == 50
    # One datagram in five is lost: about a quarter as many losses as echoes.
    assert report["lost"] * 8 >= report["messages"]


def test_loadgen_udp_accepts_late_echoes_as_stale(loadgen: Path,
                                                  faulty_udp: Callable[..., FaultyUdpEcho]) -> None:
    # Every 5th echo comes 150 ms late, after its 50 ms timeout: lost, then stale, not an error.
    out = run_udp(loadgen, faulty_udp("delay").port)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["lost"] > 0 and report["stale"] > 0


def test_loadgen_udp_fails_when_nothing_is_echoed(loadgen: Path,
                                                  faulty_udp: Callable[..., FaultyUdpEcho]) -> None:
    started = time.monotonic()
    out = run_udp(loadgen, faulty_udp("silent").port)
    assert time.monotonic() - started < 5   # bounded: warm-up + window, no hang
    assert out.returncode == 1
    assert "no datagram was echoed in the" in out.stderr and "lost after 50 ms" in out.stderr


def test_udp_server_that_never_echoes_times_out(tmp_path: Path) -> None:
    addr = harness.free_udp_addr()
    port = addr.rpartition(":")[2]
    code = (f"import socket, time; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
            f"s.bind(('127.0.0.1', {port})); print('bound', flush=True); time.sleep(60)")
    argv = [sys.executable, "-c", code]
    with harness.Processes() as procs, pytest.raises(harness.HarnessError) as err:
        harness.start_server(procs, "mute", argv, addr, tmp_path, None, ready_timeout=0.5)
    assert "did not echo a datagram" in str(err.value) and "bound" in str(err.value)


def test_harness_churn_and_udp_end_to_end_c_and_asyncio(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    rc = harness.main([*CHURN_UDP_RUN, "--servers", "asyncio,c", "--out", str(tmp_path)])
    out = capsys.readouterr()
    assert rc == 0, out.err
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["skipped"] == {} and results["skipped_workloads"] == {}
    by_key = {(r["workload"], r["server"]): r for r in results["runs"]}
    assert set(by_key) == {(w, s) for w in ("W6", "W7") for s in ("asyncio", "c")}
    for srv in ("asyncio", "c"):
        churn, udp = by_key["W6", srv], by_key["W7", srv]
        check_churn_report(churn, clients=50)
        assert churn["src_addrs"] == harness.CHURN_SRC_ADDRS and 0 < churn["duration_s"] < 1
        check_udp_report(udp, sockets=50)
        assert udp["msg_size"] == 64 and 0 < udp["duration_s"] < 1
        summary = results["summary"]
        assert summary["W6"][srv]["conns_per_s"]["median"] == churn["conns_per_s"]
        assert set(summary["W6"][srv]) >= {*harness.CHURN_METRICS, "ratios"}
        assert summary["W7"][srv]["lost"]["median"] == udp["lost"]
        assert set(summary["W7"][srv]) >= {*harness.UDP_METRICS, "ratios"}
    assert summary["W6"]["asyncio"]["ratios"]["conns_per_s_vs_c"] > 0
    assert summary["W7"]["asyncio"]["ratios"]["server_user_us_per_msg_vs_uvloop"] is None
    assert results["workloads"]["W6"]["mode"] == "churn" and results["workloads"]["W7"]["mode"] == "udp"
    for header in ("conns/s", "user µs/conn", "sys µs/conn", "user µs/datagram", "lost"):
        assert header in out.out
    row_starts = [line.split()[:2] for line in out.out.splitlines()]
    for key in by_key:
        assert list(key) in row_starts
    md = (tmp_path / "results.md").read_text()
    assert "| W6 | c |" in md and "| W7 | asyncio |" in md and "user µs/datagram" in md
    assert (tmp_path / "results.png").stat().st_size > 0
    assert "W6 rep 1/1 asyncio" in out.err and "conns/s" in out.err and "lost" in out.err


def test_harness_skips_servers_without_udp(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(harness, "GNETPY_UDP_ECHO", REPO_ROOT / "examples" / "no-such-udp-echo.py")
    rc = harness.main(["--reps", "1", "--duration", "0.3", "--warmup", "0.1", "--workloads", "W7",
                       "--servers", "gnetpy,floor,c", "--out", str(tmp_path)])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "SKIPPING gnetpy in W7: gnetpy UDP server missing" in out.err
    assert "SKIPPED gnetpy in W7: gnetpy UDP server missing" in out.out
    assert "SKIPPED floor in W7: floor has no UDP server" in out.out
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["skipped_workloads"]["W7"]) == {"gnetpy", "floor"}
    assert [(r["workload"], r["server"]) for r in results["runs"]] == [("W7", "c")]


def test_default_and_quick_runs_include_churn_and_udp() -> None:
    assert harness.parse_args([]).workloads == ["W1", "W2", "W3", "W4", "W5", "W6", "W7", "W8", "W9", "W10",
                                                "W11", "W12p", "W12np", "W13p", "W13np", "W14"]
    assert harness.parse_args(["--quick"]).workloads[-7:-5] == ["W10", "W11"]
    assert harness.parse_args(["--workloads", "W7,W6"]).workloads == ["W7", "W6"]


# Skipped only while the gnetpy examples are not written; once they exist these must pass.
@pytest.mark.skipif(not harness.GNETPY_ECHO.exists(),
                    reason="examples/echo.py (the gnetpy echo server) does not exist yet")
def test_harness_churn_gnetpy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = harness.main([*CHURN_UDP_RUN[:-1], "W6", "--servers", "gnetpy", "--out", str(tmp_path)])
    out = capsys.readouterr()
    assert rc == 0, out.err
    results = json.loads((tmp_path / "results.json").read_text())
    check_churn_report(results["runs"][0], clients=50)


def test_proxy_servers_run_w6_only_and_the_load_generator_sends_their_header() -> None:
    w1, w6 = harness.WORKLOADS["W1"], harness.WORKLOADS["W6"]
    for version in ("v1", "v2"):
        srv = harness.SERVERS[f"gnetpy-proxy-{version}"]
        assert srv.argv("tcp://127.0.0.1:1", w6)[-2:] == ["--proxy-protocol", version]
        assert srv.cannot_run(w6) is None and "runs only W6" in srv.cannot_run(w1)
        assert harness.proxy_args(srv.name) == ["--proxy", version]
    assert harness.proxy_args("gnetpy") == [] and harness.proxy_args("gnetpy-haproxy") == []
    assert not {"gnetpy-proxy-v1", "gnetpy-proxy-v2", "gnetpy-haproxy"} & set(harness.DEFAULT_SERVERS)


def test_harness_w6_with_proxy_headers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The servers refuse a connection without a header: a completed run means the header was sent and read."""
    rc = harness.main([*CHURN_UDP_RUN[:-1], "W6", "--servers", "gnetpy-proxy-v1,gnetpy-proxy-v2",
                       "--out", str(tmp_path)])
    out = capsys.readouterr()
    assert rc == 0, out.err
    runs = json.loads((tmp_path / "results.json").read_text())["runs"]
    assert sorted(run["server"] for run in runs) == ["gnetpy-proxy-v1", "gnetpy-proxy-v2"]
    for run in runs:
        check_churn_report(run, clients=50)


@pytest.mark.skipif(harness.GNETPY_HAPROXY.unavailable() is not None, reason="HAProxy is not installed")
def test_harness_w1_behind_haproxy(tmp_path: Path, capsys: pytest.CaptureFixture[str], no_strays: None) -> None:
    rc = harness.main(["--reps", "1", "--duration", "0.5", "--warmup", "0.2", "--workloads", "W1",
                       "--servers", "gnetpy-haproxy", "--out", str(tmp_path)])
    out = capsys.readouterr()
    assert rc == 0, out.err
    (run,) = json.loads((tmp_path / "results.json").read_text())["runs"]
    assert run["server"] == "gnetpy-haproxy" and run["msgs_per_s"] > 0


@pytest.mark.skipif(not harness.GNETPY_UDP_ECHO.exists(),
                    reason="examples/udp_echo.py (the gnetpy UDP echo server) does not exist yet")
def test_harness_udp_gnetpy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = harness.main([*CHURN_UDP_RUN[:-1], "W7", "--servers", "gnetpy", "--out", str(tmp_path)])
    out = capsys.readouterr()
    assert rc == 0, out.err
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["skipped_workloads"] == {}
    check_udp_report(results["runs"][0], sockets=50)


# ---- multi-process servers: CPU over the process tree, worker processes, scaling ----

STOP_WAIT_S = 10


def alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (dead, waiting to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def assert_all_gone(pids: list[int], timeout: float = STOP_WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while (left := [p for p in pids if alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not left, f"processes still running: {left}"


@pytest.fixture
def no_strays() -> Iterator[None]:
    """After the test: no process of the test's own left running."""
    yield
    assert_all_gone(harness.process_tree(os.getpid())[1:])


def proc_cpu_s(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# A server whose CPU is mostly not its own: a parent echoing with threads; a
# child spinning through the whole window, with a sleeping grandchild; a child
# that exits in the middle of the window (its CPU is lost: reported as exited);
# a child forked in the middle of the window that spins (all of its CPU is in
# the window: reported as started).  Everything ends by itself at T + 3 s.
FORKING_SERVER = r"""
import os, socket, sys, threading, time
port, t = int(sys.argv[1]), float(sys.argv[2])

def spin(until):
    while time.time() < until:
        pass

def child(fn):
    pid = os.fork()
    if pid == 0:
        try:
            fn()
        finally:
            os._exit(0)
    return pid

def reap():
    while True:
        try:
            os.wait()
        except ChildProcessError:
            time.sleep(0.02)

srv = socket.create_server(("127.0.0.1", port))
child(lambda: (child(lambda: time.sleep(max(0, t + 3 - time.time()))), spin(t + 3)))
child(lambda: time.sleep(max(0, t + 0.4 - time.time())))
threading.Timer(max(0, t + 0.3 - time.time()), lambda: child(lambda: spin(t + 3))).start()
threading.Thread(target=reap, daemon=True).start()

def serve(c):
    with c:
        while data := c.recv(65536):
            c.sendall(data)

while time.time() < t + 3:
    srv.settimeout(t + 3 - time.time())
    try:
        c, _ = srv.accept()
    except TimeoutError:
        break
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""


def sample_window_cpu(root: int, start: float, length: float, into: dict[str, float]) -> None:
    """CPU seconds of `root` and of its descendants from `start` to `start + length` (Unix time)."""
    def sample() -> dict[int, float]:
        cpu = {}
        for pid in harness.process_tree(root):
            with contextlib.suppress(OSError):
                cpu[pid] = proc_cpu_s(pid)
        return cpu
    time.sleep(max(0.0, start - time.time()))
    before = sample()
    time.sleep(max(0.0, start + length - time.time()))
    after = sample()
    into["parent"] = after[root] - before[root]
    into["children"] = sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items() if pid != root)


def test_loadgen_counts_cpu_of_the_whole_process_tree(loadgen: Path, tmp_path: Path, no_strays: None) -> None:
    addr = harness.free_tcp_addr()
    port = int(addr.rpartition(":")[2])
    window_at = time.time() + 1.0
    argv = [sys.executable, "-c", FORKING_SERVER, str(port), f"{window_at:.6f}"]
    with harness.Processes() as procs:
        srv = harness.start_server(procs, "forking", argv, addr, tmp_path, None)
        harness.wait_for_processes(srv, 4)   # parent, two children, a grandchild
        tree = harness.process_tree(srv.proc.pid)
        assert tree[0] == srv.proc.pid and len(tree) == 4
        # The parent's and the children's own CPU over the measuring window, sampled
        # from /proc at its edges while the load generator runs.
        window_cpu: dict[str, float] = {}
        sampler = threading.Thread(target=sample_window_cpu, args=(srv.proc.pid, window_at, 1.0, window_cpu))
        sampler.start()
        out = loadgen_run(loadgen, "--tcp", f"127.0.0.1:{port}", "--conns", "1", "--duration", "1.0",
                          "--measure-at", f"{window_at:.6f}", "--pid", str(srv.proc.pid))
        sampler.join(10)
        tree += harness.process_tree(srv.proc.pid)
        procs.stop(srv.proc)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["window_late_s"] == 0 and abs(report["window_start_unix"] - window_at) < 0.05
    # Summed: the parent, the spinning child, its grandchild and the child started in the window.
    assert report["server_processes"] == 4
    assert report["server_processes_started"] == 1 and report["server_processes_exited"] == 1
    assert report["server_processes_truncated"] is False
    tree_cpu = report["server_cpu_util"] * report["duration_s"]
    # The spinning children's CPU is in the figure, not just the parent's (relative
    # to what they got: on a loaded machine a spinner gets much less than a core).
    assert window_cpu["children"] >= 0.1, window_cpu
    assert tree_cpu >= window_cpu["parent"] + window_cpu["children"] / 2, (tree_cpu, window_cpu)
    assert_all_gone(tree)


def socket_fds(pid: int) -> int:
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            count += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
    return count


def wait_for_line(server: harness.RunningServer, prefix: str) -> str:
    deadline = time.monotonic() + harness.READY_TIMEOUT_S
    while time.monotonic() < deadline:
        server.check_alive("before printing its address")
        for line in server.output().splitlines():
            if line.startswith(prefix):
                return line
        time.sleep(0.02)
    pytest.fail(f"no line starting {prefix!r}; output:\n{server.output()}")


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_asyncio_echo_workers_share_a_port_and_stop_with_the_parent(
        loop: str, tmp_path: Path, no_strays: None) -> None:
    if loop == "uvloop" and harness._uvloop_missing():
        pytest.skip("uvloop is not importable")
    argv = [sys.executable, str(harness.ASYNCIO_ECHO), "--addr", "tcp://127.0.0.1:0", "--workers", "2",
            "--reuse-port", *(["--uvloop"] if loop == "uvloop" else [])]
    log = tmp_path / "server.log"
    with harness.Processes() as procs:
        with open(log, "wb") as out:
            proc = procs.spawn(argv, None, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        server = harness.RunningServer(loop, proc, "", log)
        line = wait_for_line(server, "asyncio echo on tcp://127.0.0.1:")
        assert f"(2 worker processes, reuse_port, {loop})" in line
        port = int(line.split()[3].rpartition(":")[2])   # port 0: both workers got the same real port
        assert harness.wait_for_processes(server, 3) == 3
        workers = harness.process_tree(proc.pid)[1:]
        assert scaling.count_listeners(port) == 2   # one SO_REUSEPORT listener per worker
        before = {w: socket_fds(w) for w in workers}
        clients = []
        try:
            for i in range(32):   # 32 source ports: the kernel's hash gives both workers some
                c = socket.create_connection(("127.0.0.1", port), timeout=5)
                clients.append(c)
                c.sendall(b"ping %d" % i)
                assert c.recv(64) == b"ping %d" % i
            gained = {w: socket_fds(w) - before[w] for w in workers}
            # Each worker holds some of the 32 (asyncio may open a descriptor or two of its own meanwhile).
            assert sum(gained.values()) >= 32 and all(n > 0 for n in gained.values()), gained
        finally:
            for c in clients:
                c.close()
        os.kill(proc.pid, signal.SIGTERM)   # the parent alone: it forwards SIGTERM to its workers
        assert proc.wait(STOP_WAIT_S) == 0, server.output()
        assert_all_gone(workers, timeout=0.5)   # stopped and reaped by the parent before it exited


def test_asyncio_echo_parent_stops_when_a_worker_dies(tmp_path: Path, no_strays: None) -> None:
    addr = harness.free_tcp_addr()
    argv = [sys.executable, str(harness.ASYNCIO_ECHO), "--addr", addr, "--workers", "2", "--reuse-port"]
    with harness.Processes() as procs:
        server = harness.start_server(procs, "asyncio-workers", argv, addr, tmp_path, None)
        harness.wait_for_processes(server, 3)
        workers = harness.process_tree(server.proc.pid)[1:]
        os.kill(workers[0], signal.SIGKILL)
        assert server.proc.wait(STOP_WAIT_S) == 1
        assert "exited (killed by SIGKILL); stopping the others" in server.output()
        assert_all_gone(workers, timeout=0.5)


def test_harness_measures_a_multi_process_server(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch, no_strays: None) -> None:
    """CPU (W1) and memory (W5) of a parent and its workers, summed; the run waits for the workers."""
    monkeypatch.setitem(harness.SERVERS, "asyncio-workers2", harness.Server(
        "asyncio-workers2",
        lambda addr: [sys.executable, str(harness.ASYNCIO_ECHO), "--addr", addr, "--workers", "2",
                      "--reuse-port"],
        lambda: None, workers=2))
    results, _ = run_harness(tmp_path, "asyncio-workers2", capsys)
    by_key = {r["workload"]: r for r in results["runs"]}
    assert by_key["W1"]["server_processes"] == 3 and by_key["W1"]["server_processes_exited"] == 0
    assert by_key["W5"]["server_processes"] == 3 and by_key["W5"]["kib_per_conn"] > 0


def test_server_rejecting_its_flags_is_skipped_with_its_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    # Like a gnetpy variant whose flags examples/echo.py does not have yet.
    monkeypatch.setitem(harness.SERVERS, "too-new", harness.Server(
        "too-new", lambda addr: [sys.executable, str(harness.ASYNCIO_ECHO), "--addr", addr, "--no-such-flag"],
        lambda: None))
    rc = harness.main(["--reps", "1", "--workloads", "W5,W1", "--idle-conns", "20", "--duration", "0.3",
                       "--warmup", "0.1", "--servers", "c,too-new", "--out", str(tmp_path)])
    out = capsys.readouterr()
    assert rc == 0, out.err
    why = "unrecognized arguments: --no-such-flag"
    assert "SKIPPING too-new: it does not accept its command line" in out.err and why in out.err
    assert out.err.count("SKIPPING too-new") == 1   # tried once, not again in W1
    assert "SKIPPED too-new: it does not accept its command line (python benchmarks/servers/" in out.out
    results = json.loads((tmp_path / "results.json").read_text())
    assert why in results["skipped"]["too-new"] and results["config"]["servers"] == ["c"]
    assert {r["server"] for r in results["runs"]} == {"c"}
    # A server that fails for another reason still stops the run (see the tests above).
    assert harness.usage_error(1, "usage: x\nx: error: boom") is None
    assert harness.usage_error(2, "Traceback ...\nValueError: bad") is None


@pytest.mark.skipif(not harness.GNETPY_ECHO.exists(), reason="examples/echo.py does not exist yet")
def test_gnetpy_variants_run_or_are_skipped_with_the_examples_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], no_strays: None) -> None:
    names = list(harness.GNETPY_VARIANTS)
    rc = harness.main(["--reps", "1", "--workloads", "W6", "--duration", "0.3", "--warmup", "0.1",
                       "--servers", ",".join(names), "--out", str(tmp_path)])
    out = capsys.readouterr()
    results = json.loads((tmp_path / "results.json").read_text()) if rc == 0 else {"runs": [], "skipped": {}}
    assert rc == 0 or "none of the requested servers can run here" in out.err, out.err
    ran = {r["server"]: r for r in results["runs"]}
    for name in names:
        if name in ran:   # the example has the flags: each worker's CPU is in the figure
            check_churn_report(ran[name], clients=50)
            assert ran[name]["server_processes"] == 1 + harness.SERVERS[name].workers
        else:
            assert f"SKIPPING {name}: it does not accept its command line" in out.err
            assert "unrecognized arguments" in out.err


# ---- the scaling run ----------------------------------------------------------


def test_scaling_plans_cpus_workers_and_connections() -> None:
    lay = scaling.plan_cpus(range(16), None, None)
    assert lay.server_cpus == list(range(8)) and lay.loadgen_cpus == list(range(8, 16))
    assert scaling.plan_cpus([0, 1], None, None) == scaling.Layout([0], [1])
    assert scaling.plan_cpus(range(16), 4, 6) == scaling.Layout(list(range(6)), [12, 13, 14, 15])
    with pytest.raises(harness.HarnessError, match="needs a CPU for the server"):
        scaling.plan_cpus([0, 1], 2, None)
    with pytest.raises(harness.HarnessError, match="only 1 CPU"):
        scaling.plan_cpus([0, 1], 1, 2)
    assert scaling.default_ks(8) == [1, 2, 4, 8] and scaling.default_ks(6) == [1, 2, 4, 6]
    assert scaling.default_ks(1) == [1]
    assert scaling.split_conns(50, 8) == [7, 7, 6, 6, 6, 6, 6, 6] and scaling.split_conns(10, 16) == [1] * 10
    assert scaling.default_servers()[:2] == ["gnetpy-procs", "gnetpy-procs-rp"]
    assert scaling.default_servers()[2] == ("asyncio" if harness._uvloop_missing() else "uvloop")
    cfg = scaling.parse_args(["--loadgen-cpus", "1", "--k", "1"])
    assert cfg.ks == [1] and cfg.layout.server_cpus == sorted(os.sched_getaffinity(0))[:1]
    assert (cfg.duration, cfg.warmup, cfg.reps, cfg.workloads) == (3.0, 1.0, 1, ["W1", "W2", "W4"])
    with pytest.raises(SystemExit):
        scaling.parse_args(["--k", "1,999"])   # more workers than server CPUs


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs a server CPU and a load generator CPU")
def test_scaling_tiny_run(tmp_path: Path, capsys: pytest.CaptureFixture[str], no_strays: None) -> None:
    rc = harness.main(["--scaling", "--max-workers", "1", "--loadgen-cpus", "1", "--duration", "0.5",
                       "--warmup", "0.2", "--workloads", "W1", "--out", str(tmp_path)])
    out = capsys.readouterr()
    assert rc == 0, out.err
    results = json.loads((tmp_path / "scaling.json").read_text())
    ran = results["config"]["servers"]
    comparison = "asyncio" if harness._uvloop_missing() else "uvloop"
    assert comparison in ran and results["config"]["ks"] == [1]
    for srv in ("gnetpy-procs", "gnetpy-procs-rp"):   # run, or skipped with the example's error
        assert srv in ran or "does not accept its command line" in results["skipped"][srv]
    assert {(r["server"], r["workload"], r["k"]) for r in results["runs"]} == {(s, "W1", 1) for s in ran}
    for run in results["runs"]:
        assert run["msgs_per_s"] > 0 and run["loadgens"] == 1 and run["server_processes"] == 2
        assert 0 < run["server_cpu_util"] <= 1.2 and run["window_late_s_max"] == 0
    point = results["summary"]["W1"][comparison]["1"]
    assert point["linear_fraction"] == 1.0 and point["speedup"] == 1.0
    machine = results["machine"]
    assert machine["cpu_model"] and machine["cpu_count"] >= 2 and machine["kernel"] and machine["python"]
    assert machine["pinning"] == {"server_cpus": results["layout"]["server_cpus"],
                                  "loadgen_cpus": results["layout"]["loadgen_cpus"]}
    assert f"W1        {comparison}" in out.out and "of linear" in out.out
    assert f"| W1 | {comparison} | 1 |" in (tmp_path / "scaling.md").read_text()
    assert (tmp_path / "scaling.png").exists() or "No chart: matplotlib" in out.err


def test_scaling_chart_skipped_without_matplotlib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    why_not = scaling.write_chart(tmp_path / "scaling.png", {"summary": {}})
    assert why_not and "matplotlib is not importable" in why_not


def test_bench_cli_dispatches_scaling(capsys: pytest.CaptureFixture[str]) -> None:
    from gnetpy import cli

    with pytest.raises(SystemExit) as exit_:
        cli.main(["bench", "--scaling", "--help"])
    assert exit_.value.code == 0
    help_text = capsys.readouterr().out
    assert "gnetpy bench --scaling" in help_text
    for option in ("--max-workers", "--loadgen-cpus", "--k", "--duration", "--reps", "--workloads", "--out"):
        assert option in help_text


# ---- W9: 1% of 10 000 connections active, gnetpy with and without idle timeouts ----

W9_RUN = ["--reps", "1", "--duration", "1", "--warmup", "0.2", "--workloads", "W9", "--idle-conns", "400"]


def test_w9_idle_connection_counts() -> None:
    w9 = harness.WORKLOADS["W9"]
    assert w9.mode == "mixed" and w9.conns == 100 and not w9.idle
    # --idle-conns is W9's total: the default 10 000 holds 9 900 idle beside the 100 active.
    assert harness.mixed_idle_count(harness.parse_args([]).idle_conns, w9) == 9_900
    assert harness.mixed_idle_count(harness.parse_args(["--quick"]).idle_conns, w9) == 1_900
    assert harness.mixed_idle_count(400, w9) == 300 and harness.mixed_idle_count(50, w9) == 1
    gnetpy_idle = harness.SERVERS["gnetpy-idle"]
    assert gnetpy_idle.command("tcp://127.0.0.1:1")[-2:] == ["--idle-timeout", "60"]
    assert gnetpy_idle.workers == 0 and "gnetpy-idle" not in harness.DEFAULT_SERVERS


def test_w9_scaled_down_by_the_descriptor_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(harness.resource, "getrlimit", lambda _which: (1024, 4096))
    n, note = harness.idle_conn_count(10_000, ["W1", "W5", "W9"])
    assert n == 4096 - harness.FD_MARGIN
    assert note and note.startswith(f"W5 and W9 used {n} connections instead of 10000")
    assert harness.idle_conn_count(10_000, ["W9"])[1].startswith("W9 used")
    assert harness.idle_conn_count(3_000, ["W9"]) == (3_000, None)


def test_w9_idle_timeout_cost_note() -> None:
    def server(user: list[float], vs_gnetpy: float | None = None) -> dict:
        return {"server_user_us_per_msg": harness.stat(user), "runs": len(user),
                "ratios": {"server_user_us_per_msg_vs_gnetpy": vs_gnetpy}}

    per_server = {"gnetpy": server([1.0, 1.1, 1.2], 1.0), "gnetpy-idle": server([1.2, 1.25, 1.3], 1.25 / 1.1)}
    note = harness.idle_timeout_cost(per_server)
    assert note and note.startswith("W9: idle_timeout costs +13.6% per message: gnetpy-idle / gnetpy user "
                                    "µs/msg = 1.136 (1.25 [1.20-1.30] against 1.10 [1.00-1.20], medians")
    assert "overlap" in note   # 1.20-1.30 and 1.00-1.20 touch: within the spread
    per_server["gnetpy"] = server([0.5, 0.5, 0.5], 1.0)
    assert "overlap" not in harness.idle_timeout_cost(per_server)
    assert harness.idle_timeout_cost({"gnetpy-idle": per_server["gnetpy-idle"]}) is None
    assert harness.idle_timeout_cost({"gnetpy": per_server["gnetpy"]}) is None


@pytest.mark.skipif(not harness.GNETPY_ECHO.exists(), reason="examples/echo.py does not exist yet")
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs a server CPU and a load generator CPU")
def test_w9_end_to_end_c_and_gnetpy_idle(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         no_strays: None) -> None:
    started = time.monotonic()
    rc = harness.main([*W9_RUN, "--servers", "c,gnetpy-idle", "--out", str(tmp_path)])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert time.monotonic() - started < 10
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["skipped"] == {}, results["skipped"]
    assert results["workloads"]["W9"]["mode"] == "mixed"
    by_key = {(r["workload"], r["server"]): r for r in results["runs"]}
    assert set(by_key) == {("W9", "c"), ("W9", "gnetpy-idle")}
    for srv in ("c", "gnetpy-idle"):
        run = by_key["W9", srv]
        assert run["idle_conns"] == 300 and run["idle_setup_s"] >= 0   # held through the whole window
        assert run["connections"] == 100 and run["msg_size"] == 64 and run["depth"] == 1
        assert run["messages"] > 0 and run["msgs_per_s"] > 0 and 0 < run["duration_s"] < 2
        assert 0 < run["rtt_p50_us"] <= run["rtt_p99_us"]
        assert run["server_user_us_per_msg"] >= 0 and run["server_sys_us_per_msg"] >= 0
        assert run["server_user_us_per_msg"] + run["server_sys_us_per_msg"] > 0
        assert run["server_processes"] == 1
        s = results["summary"]["W9"][srv]
        assert set(s) >= {*harness.MIXED_METRICS, "ratios", "runs"} and s["idle_conns"]["median"] == 300
        assert s["ratios"]["server_user_us_per_msg_vs_gnetpy"] is None   # plain gnetpy did not run
    assert results["summary"]["W9"]["gnetpy-idle"]["ratios"]["msgs_per_s_vs_c"] > 0
    for header in ("idle conns", "msgs/s", "p99 µs", "user µs/msg", "sys µs/msg"):
        assert header in out.out
    row_starts = [line.split()[:3] for line in out.out.splitlines()]
    assert ["W9", "c", "300"] in row_starts and ["W9", "gnetpy-idle", "300"] in row_starts
    assert "W9 rep 1/1 gnetpy-idle 300 idle + 100 active conns" in out.err
    assert "idle_timeout costs" not in out.out   # only with both gnetpy and gnetpy-idle
    md = (tmp_path / "results.md").read_text()
    assert "| W9 | gnetpy-idle | 300 |" in md and "--idle-timeout 60" in md


def test_w9_fails_when_the_server_closes_idle_connections(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch, no_strays: None) -> None:
    """An idle connection closed during the run (an idle timeout that fires) is an error, and every
    process is still stopped."""
    server = ("import socket, sys, threading, time\n"
              "srv = socket.create_server(('127.0.0.1', int(sys.argv[1].rpartition(':')[2])), backlog=512)\n"
              "def serve(c, n):\n"
              "    with c:\n"
              "        end = time.monotonic() + (0.3 if n < 20 else 60)\n"
              "        c.settimeout(0.05)\n"
              "        while time.monotonic() < end:\n"
              "            try:\n"
              "                data = c.recv(65536)\n"
              "            except TimeoutError:\n"
              "                continue\n"
              "            if not data:\n"
              "                return\n"
              "            c.sendall(data)\n"
              "n = 0\n"
              "while True:\n"
              "    c, _ = srv.accept()\n"
              "    threading.Thread(target=serve, args=(c, n), daemon=True).start()\n"
              "    n += 1\n")
    monkeypatch.setitem(harness.SERVERS, "closes-idle", harness.Server(
        "closes-idle", lambda addr: [sys.executable, "-c", server, addr], lambda: None))
    rc = harness.main([*W9_RUN, "--idle-conns", "150", "--servers", "closes-idle", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 1
    assert "idle load generator exited with code 1 against the closes-idle server" in err
    assert "server closed the connection" in err


# ---- W8: length-prefixed frames, gnetpy's codec layer against framing by hand ----

W8_RUN = ["--reps", "1", "--duration", "0.5", "--warmup", "0.2", "--workloads", "W8"]


def test_w8_servers_and_skips() -> None:
    w8 = harness.WORKLOADS["W8"]
    assert (w8.mode, w8.conns, w8.size, w8.depth) == ("frames", 50, 64, 16)
    assert harness.mode_args(w8, "tcp://127.0.0.1:1") == ["--frames", "--depth", "16"]
    addr = "tcp://127.0.0.1:1"
    for name, mode in (("gnetpy-codec", "codec"), ("gnetpy-frames", "hand")):
        srv = harness.SERVERS[name]
        assert srv.argv(addr, w8)[1:] == [str(harness.GNETPY_FRAMES), "--addr", addr, "--mode", mode]
        assert srv.cannot_run(w8) is None and srv.env()["PYTHONPATH"].startswith(str(REPO_ROOT / "src"))
        assert "runs only W8" in srv.cannot_run(harness.WORKLOADS["W1"])
        assert "runs only W8" in srv.cannot_run(harness.WORKLOADS["W7"])
    assert harness.SERVERS["uvloop"].argv(addr, w8)[-2:] == ["--uvloop", "--frames"]
    assert harness.SERVERS["uvloop"].argv(addr)[-1] == "--uvloop"   # a byte echo elsewhere
    for name in ("gnetpy", "c", "floor"):   # byte echoes: they would pass W8 without framing
        assert "has no length-prefixed frame echo" in harness.SERVERS[name].cannot_run(w8)


def test_w8_codec_cost_note() -> None:
    def server(user: list[float], vs_hand: float | None = None) -> dict:
        return {"server_user_us_per_msg": harness.stat(user), "runs": len(user),
                "ratios": {"server_user_us_per_msg_vs_gnetpy-frames": vs_hand}}

    per_server = {"gnetpy-frames": server([1.0, 1.1, 1.2], 1.0), "gnetpy-codec": server([1.2, 1.3, 1.4], 1.3 / 1.1)}
    note = harness.codec_cost(per_server)
    assert note == ("W8: the codec layer costs 1.18x: gnetpy-codec / gnetpy-frames user µs/frame = 1.182 "
                    "(1.30 [1.20-1.40] against 1.10 [1.00-1.20], medians; the ranges overlap); "
                    "within the target of 1.3x.")
    per_server["gnetpy-codec"] = server([2.0, 2.2, 2.4], 2.2 / 1.1)
    assert harness.codec_cost(per_server).endswith("= 2.000 (2.20 [2.00-2.40] against 1.10 [1.00-1.20], "
                                                   "medians); OVER the target of 1.3x.")
    assert harness.codec_cost({"gnetpy-codec": per_server["gnetpy-codec"]}) is None


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs a server CPU and a load generator CPU")
def test_w8_end_to_end_gnetpy_codec_and_frames(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               no_strays: None) -> None:
    started = time.monotonic()
    rc = harness.main([*W8_RUN, "--servers", "gnetpy-codec,gnetpy-frames,c", "--out", str(tmp_path)])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert time.monotonic() - started < 10
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["skipped"] == {} and results["workloads"]["W8"]["mode"] == "frames"
    assert results["skipped_workloads"] == {"W8": {"c": harness.SERVERS["c"].cannot_run(harness.WORKLOADS["W8"])}}
    by_key = {(r["workload"], r["server"]): r for r in results["runs"]}
    assert set(by_key) == {("W8", "gnetpy-codec"), ("W8", "gnetpy-frames")}
    for srv in ("gnetpy-codec", "gnetpy-frames"):
        run = by_key["W8", srv]
        assert run["mode"] == "frames" and run["frame_bytes"] == 68 and run["frame_header_bytes"] == 4
        assert run["connections"] == 50 and run["msg_size"] == 64 and run["depth"] == 16
        assert run["messages"] > 0 and run["msgs_per_s"] > 0 and 0 < run["duration_s"] < 1
        assert run["mb_per_s"] == pytest.approx(run["msgs_per_s"] * 68 / 1e6, rel=1e-3)
        assert 0 < run["rtt_p50_us"] <= run["rtt_p99_us"]
        assert run["server_user_us_per_msg"] + run["server_sys_us_per_msg"] > 0
        assert run["server_processes"] == 1
    summary = results["summary"]["W8"]
    ratio = summary["gnetpy-codec"]["ratios"]["server_user_us_per_msg_vs_gnetpy-frames"]
    assert ratio is not None and ratio > 0
    assert summary["gnetpy-frames"]["ratios"]["server_user_us_per_msg_vs_gnetpy-frames"] == 1.0
    for header in ("frames/s", "user µs/frame", "sys µs/frame", "user/hand"):
        assert header in out.out
    row_starts = [line.split()[:2] for line in out.out.splitlines()]
    assert ["W8", "gnetpy-codec"] in row_starts and ["W8", "gnetpy-frames"] in row_starts
    assert f"W8: the codec layer costs {ratio:.2f}x" in out.out
    assert "SKIPPED c in W8: c has no length-prefixed frame echo" in out.out
    assert "W8 rep 1/1 gnetpy-codec" in out.err and "frames/s" in out.err
    md = (tmp_path / "results.md").read_text()
    assert "| W8 | gnetpy-frames |" in md and f"the codec layer costs {ratio:.2f}x" in md


@pytest.mark.parametrize("server", ["gnetpy-codec", "gnetpy-frames", "asyncio"])
def test_loadgen_frames_large_frames_over_unix_socket(server: str, loadgen: Path, tmp_path: Path,
                                                      no_strays: None) -> None:
    # 100 kB frames arrive in pieces: each server must keep a partial frame until the rest comes.
    addr = f"unix://{tmp_path / 'frames.sock'}"
    spec = harness.SERVERS[server]
    with harness.Processes() as procs:
        srv = harness.start_server(procs, server, spec.argv(addr, harness.WORKLOADS["W8"]), addr, tmp_path,
                                   None, spec.env())
        out = loadgen_run(loadgen, "--unix", str(tmp_path / "frames.sock"), "--frames", "--conns", "2",
                          "--size", "100000", "--depth", "3", "--duration", "0.3", "--warmup", "0.1",
                          "--pid", str(srv.proc.pid))
        srv.check_alive("after the run")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["mode"] == "frames" and report["frame_bytes"] == 100_004 and report["messages"] > 0


class FaultyFrameEcho(FaultyEcho):
    """Threaded frame echo that mangles frame `offset` of each connection (frame 0: the handshake).

    fault: "flip" inverts body byte 10 of that frame, "swap" echoes the next frame
    before it, "short" echoes it one body byte short, with a header that says so.
    """

    def _serve(self, conn: socket.socket) -> None:
        buf, index, held = b"", 0, b""
        with conn:
            for data in self._received(conn):
                buf += data
                out = []
                while len(buf) >= 4 and len(buf) >= 4 + (n := int.from_bytes(buf[:4], "big")):
                    frame, buf = buf[:4 + n], buf[4 + n:]
                    if index == self.offset:
                        if self.fault == "flip":
                            frame = frame[:14] + bytes([frame[14] ^ 0xFF]) + frame[15:]
                        elif self.fault == "short":
                            frame = (n - 1).to_bytes(4, "big") + frame[4:-1]
                        elif self.fault == "swap":
                            held, frame = frame, b""
                    elif held:
                        frame, held = frame + held, b""
                    out.append(frame)
                    index += 1
                try:
                    conn.sendall(b"".join(out))
                except OSError:
                    return


# Frame 9 on the server's side is the load generator's frame 8 (its frames follow the
# handshake frame): stream offset 16 + 8 x 68.
@pytest.mark.parametrize("fault, where", [
    ("flip", "stream offset 574 (frame 8, body byte 10): expected 0x"),
    ("short", "stream offset 563 (frame 8, header byte 3): expected 0x40, got 0x3f"),
    ("swap", "(frame 8, body byte "),
])
def test_loadgen_frames_detects_a_mangled_frame(fault: str, where: str, loadgen: Path) -> None:
    server = FaultyFrameEcho(fault, 9)
    try:
        out = loadgen_run(loadgen, "--tcp", f"127.0.0.1:{server.port}", "--frames", "--conns", "1",
                          "--depth", "4", "--duration", "0.5", "--warmup", "0.2")
    finally:
        server.close()
    assert out.returncode == 1 and out.stdout == ""
    assert "loadgen: connection 0: echo mismatch at " in out.stderr and where in out.stderr


def test_loadgen_frames_detects_a_byte_echo_that_corrupts_the_header(
        loadgen: Path, faulty: Callable[[str, int], FaultyEcho]) -> None:
    # A byte echo is a correct frame echo; one that flips byte 16 + 3 x 68 + 1 breaks frame 3's header.
    out = loadgen_run(loadgen, "--tcp", f"127.0.0.1:{faulty('flip', 16 + 3 * 68 + 1).port}", "--frames",
                      "--conns", "1", "--depth", "4", "--duration", "0.5", "--warmup", "0.2")
    assert out.returncode == 1
    assert "connection 0: echo mismatch at stream offset 221 (frame 3, header byte 1): expected 0x00, got 0xff" \
        in out.stderr


# ---- W10, W11: TLS echo and TLS handshakes (benchmarks/tlsload.c) -----------

TLS_RUN = ["--reps", "1", "--duration", "0.5", "--warmup", "0.2", "--workloads", "W10,W11"]
needs_tls_tools = pytest.mark.skipif(
    bool(harness.missing_tls_packages()) and os.geteuid() != 0,
    reason="openssl or libssl-dev missing, and not root to install them")


@pytest.fixture(scope="module")
def tls_setup(tmp_path_factory: pytest.TempPathFactory) -> harness.TlsSetup:
    """The TLS load generator (installing openssl/libssl-dev where missing) and a certificate."""
    assert harness.install_tls_packages() is None
    return harness.TlsSetup(harness.ensure_built("tlsload", harness.TLS_LIBS),
                            harness.make_certificate(tmp_path_factory.mktemp("tls")))


def test_w10_w11_servers_and_skips() -> None:
    w10, w11 = harness.WORKLOADS["W10"], harness.WORKLOADS["W11"]
    assert (w10.mode, w10.conns, w10.size, w10.depth, w10.tls) == ("tls", 50, 64, 1, True)
    assert (w11.mode, w11.conns, w11.size, w11.tls) == ("tls-churn", 50, 64, True)
    assert harness.mode_args(w11, "tcp://127.0.0.1:1") == ["--churn", "--src-addrs", str(harness.CHURN_SRC_ADDRS)]
    addr, files = "tcp://127.0.0.1:1", harness.TlsFiles(Path("/c.pem"), Path("/k.pem"))
    for name in ("gnetpy", "asyncio", "uvloop"):
        srv = harness.SERVERS[name]
        assert srv.argv(addr, w10, files)[1:] == [str(harness.TLS_ECHO), "--loop", name, "--addr", addr,
                                                  "--cert", "/c.pem", "--key", "/k.pem"]
        assert srv.cannot_run(w10) is None and srv.cannot_run(w11) is None
    assert harness.SERVERS["gnetpy"].argv(addr, harness.WORKLOADS["W1"])[1] == str(harness.GNETPY_ECHO)
    for name in ("c", "floor", "gnetpy-idle"):
        assert harness.SERVERS[name].cannot_run(w10) == f"{name} has no TLS server"
    assert "runs only W8" in harness.SERVERS["gnetpy-codec"].cannot_run(w11)


def test_w10_w11_skipped_when_openssl_is_missing_and_not_root(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(harness, "missing_tls_packages", lambda: ["libssl-dev"])
    monkeypatch.setattr(harness.os, "geteuid", lambda: 1000)
    rc = harness.main([*TLS_RUN, "--servers", "asyncio,c", "--out", str(tmp_path)])
    out = capsys.readouterr()
    assert rc == 0, out.err
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["runs"] == []
    why = results["skipped_workloads"]["W10"]["asyncio"]
    assert why.startswith("TLS workloads cannot run here: missing libssl-dev") and "apt-get install -y libssl-dev" in why
    assert results["skipped_workloads"]["W11"]["c"] == "c has no TLS server"
    assert "SKIPPING W10, W11: TLS workloads cannot run here" in out.err
    assert f"SKIPPED asyncio in W10, W11: {why}" in out.out


@needs_tls_tools
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs a server CPU and a load generator CPU")
def test_w10_w11_end_to_end_gnetpy(tmp_path: Path, capsys: pytest.CaptureFixture[str], no_strays: None) -> None:
    started = time.monotonic()
    rc = harness.main([*TLS_RUN, "--servers", "gnetpy,c", "--out", str(tmp_path)])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert time.monotonic() - started < 20
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["skipped"] == {}
    assert results["skipped_workloads"] == {w: {"c": "c has no TLS server"} for w in ("W10", "W11")}
    by_key = {(r["workload"], r["server"]): r for r in results["runs"]}
    assert set(by_key) == {("W10", "gnetpy"), ("W11", "gnetpy")}
    for run in by_key.values():
        # What tlsload saw negotiated, connection by connection (it fails the run otherwise).
        assert run["tls_version"] == "TLSv1.3" and run["cipher"] == "TLS_AES_128_GCM_SHA256"
        assert run["session_resumption"] is False and run["server_processes"] == 1
        assert 0 < run["duration_s"] < 1 and 0 < run["rtt_p50_us"] <= run["rtt_p99_us"]
    echo, shakes = by_key["W10", "gnetpy"], by_key["W11", "gnetpy"]
    # Every message counted is 64 B that came back decrypted and byte-for-byte checked.
    assert echo["mode"] == "tls" and echo["connections"] == 50 and echo["msg_size"] == 64
    assert echo["messages"] > 0 and echo["mb_per_s"] == pytest.approx(echo["msgs_per_s"] * 64 / 1e6, rel=1e-3)
    assert echo["server_user_us_per_msg"] + echo["server_sys_us_per_msg"] > 0
    # Each connection counted did a full handshake and echoed its 64 B.
    assert shakes["mode"] == "tls-churn" and shakes["clients"] == 50 and shakes["msg_size"] == 64
    assert shakes["conns"] > 0 and shakes["handshakes"] == shakes["conns"]
    assert shakes["src_addrs"] == harness.CHURN_SRC_ADDRS and shakes["tickets_per_conn"] >= 0
    assert shakes["server_user_us_per_conn"] + shakes["server_sys_us_per_conn"] > 0
    summary = results["summary"]
    assert summary["W10"]["gnetpy"]["msgs_per_s"]["median"] == echo["msgs_per_s"]
    assert summary["W11"]["gnetpy"]["ratios"] == {"conns_per_s_vs_uvloop": None,
                                                  "server_user_us_per_conn_vs_uvloop": None}
    for header in ("user µs/msg", "handshakes/s", "user µs/handshake", "loadgen CPU"):
        assert header in out.out
    row_starts = [line.split()[:2] for line in out.out.splitlines()]
    assert ["W10", "gnetpy"] in row_starts and ["W11", "gnetpy"] in row_starts
    assert "W10: 50 TLS 1.3 connections" in out.out and "certificate: ECDSA P-256" in out.out
    assert "W11 rep 1/1 gnetpy" in out.err and "handshakes/s" in out.err
    assert "| W11 | gnetpy |" in (tmp_path / "results.md").read_text()


def test_w10_target_note() -> None:
    def server(user: list[float], vs_uvloop: float | None, loadgen: float = 0.5) -> dict:
        return {"server_user_us_per_msg": harness.stat(user), "runs": len(user),
                "loadgen_cpu_util": harness.stat([loadgen]),
                "ratios": {"server_user_us_per_msg_vs_uvloop": vs_uvloop}}

    per_server = {"gnetpy": server([5.0, 5.1, 5.2], 5.1 / 5.5), "uvloop": server([5.4, 5.5, 5.6], 1.0, 0.95)}
    notes = harness.tls_notes("W10", per_server)
    assert notes[1] == ("W10: gnetpy / uvloop server user µs/msg = 0.927 (5.10 [5.00-5.20] against 5.50 "
                        "[5.40-5.60], medians); within the target of 1x (gnetpy's user CPU per message at or "
                        "under uvloop's).")
    assert notes[2].startswith("W10: the load generator was at >= 90% of its CPU against uvloop:")
    per_server["gnetpy"] = server([6.0], 6.0 / 5.5)
    assert harness.tls_notes("W10", per_server)[1].endswith("medians); OVER the target of 1x (gnetpy's user "
                                                            "CPU per message at or under uvloop's).")
    assert len(harness.tls_notes("W10", {"gnetpy": per_server["gnetpy"]})) == 1


class FaultyTlsEcho(FaultyEcho):
    """FaultyEcho behind TLS: the faults hit the plaintext (the stream offsets tlsload checks)."""

    def __init__(self, fault: str, offset: int, files: harness.TlsFiles) -> None:
        from benchmarks.servers.tls_echo import server_context

        self.context = server_context(str(files.cert), str(files.key))
        super().__init__(fault, offset)

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        try:
            tls = self.context.wrap_socket(conn, server_side=True)
        except (OSError, ssl.SSLError):
            conn.close()
            return
        super()._serve(tls)


def run_tlsload(tls_setup: harness.TlsSetup, port: int, *extra: str) -> subprocess.CompletedProcess[str]:
    return loadgen_run(tls_setup.tlsload, "--tcp", f"127.0.0.1:{port}", "--conns", "1", "--duration", "0.5",
                       "--warmup", "0.1", "--io-timeout", "1", *extra)


@needs_tls_tools
@pytest.mark.parametrize("fault, offset, extra, message", [
    # Offset 1000 is inside message 15 (after the 16-byte check), byte 24.
    ("flip", 1000, [], "connection 0: echo mismatch at stream offset 1000 (message 15, byte 24): expected 0x"),
    ("flip", 24, ["--churn"], "connection 0 (client 0): echo mismatch at byte 24 of 64: expected 0x"),
    # The last byte of message 15 never comes back: the stall fails the run, at the latest after
    # --io-timeout or at the measured window's end.
    ("drop", 16 + 15 * 64 + 63, [], "connection 0: no echo "),
    # After 0.2 s, seen at the next 100 ms stall check (later on a loaded machine), not
    # after the default --io-timeout of 1 s (run_tlsload's).
    ("drop", 16 + 15 * 64 + 63, ["--io-timeout", "0.2"], re.compile(r"connection 0: no echo after 0\.[2-9]\d* s")),
    ("close", 1000, [], "connection 0: SSL_read failed at stream offset 1000 (1040 bytes sent, 40 not echoed)"),
])
def test_tlsload_detects_a_faulty_tls_echo(fault: str, offset: int, extra: list[str], message: str | re.Pattern[str],
                                           tls_setup: harness.TlsSetup) -> None:
    server = FaultyTlsEcho(fault, offset, tls_setup.files)
    try:
        out = run_tlsload(tls_setup, server.port, *extra)
    finally:
        server.close()
    assert out.returncode == 1 and out.stdout == ""
    if isinstance(message, re.Pattern):
        assert re.search("tlsload: " + message.pattern, out.stderr), out.stderr
    else:
        assert "tlsload: " + message in out.stderr, out.stderr


@needs_tls_tools
def test_tlsload_refuses_a_server_that_does_not_speak_tls(
        tls_setup: harness.TlsSetup, faulty: Callable[[str, int], FaultyEcho]) -> None:
    out = run_tlsload(tls_setup, faulty("flip", 10**9).port)   # a plain byte echo: our ClientHello back
    assert out.returncode == 1 and "connection 0: TLS handshake failed at stream offset 0" in out.stderr, out.stderr


# ---- W12-W14: application servers under wrk, redis-benchmark and wsload ----

APP_RUN = ["--reps", "1", "--duration", "1", "--warmup", "0"]   # wrk takes whole seconds
needs_wrk = pytest.mark.skipif(harness.missing_tool("http") is not None,
                               reason="wrk is not installed (apt-get install wrk)")
needs_redis_benchmark = pytest.mark.skipif(harness.missing_tool("resp") is not None,
                                           reason="redis-benchmark is not installed (apt-get install redis-tools)")
needs_two_cpus = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2,
                                    reason="needs a server CPU and a load generator CPU")

# wrk 4.1.0's reports, captured: W12p against examples/http_server.py (pipelined: wrk's latency
# distribution is per batch and reads as zeros), W12np against it, and a server answering 503 and
# closing every connection.
WRK_PIPELINED = """\
Running 1s test @ http://127.0.0.1:18080/plaintext
  1 threads and 256 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    10.70ms    6.62ms  47.47ms   36.85%
    Req/Sec   185.63k    32.33k  250.34k    70.00%
  Latency Distribution
     50%   21.13ms
     75%    0.00us
     90%    0.00us
     99%    0.00us
  184496 requests in 1.05s, 23.05MB read
Requests/sec: 176515.39
Transfer/sec:     22.05MB
"""
WRK_PLAIN = """\
Running 1s test @ http://127.0.0.1:18080/plaintext
  1 threads and 256 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     6.42ms    3.91ms  30.73ms   75.30%
    Req/Sec    36.98k    15.65k   72.13k    80.00%
  Latency Distribution
     50%    5.85ms
     75%    8.16ms
     90%   10.92ms
     99%   21.57ms
  36810 requests in 1.02s, 4.60MB read
Requests/sec:  36171.50
Transfer/sec:      4.52MB
"""
WRK_ERRORS = """\
Running 1s test @ http://127.0.0.1:18111/plaintext
  1 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   737.79us  261.13us   5.07ms   85.80%
    Req/Sec     4.62k   237.71     4.97k    81.82%
  Latency Distribution
     50%  712.00us
     75%  805.00us
     90%    0.94ms
     99%    1.58ms
  5059 requests in 1.10s, 271.72KB read
  Socket errors: connect 0, read 5058, write 0, timeout 0
  Non-2xx or 3xx responses: 5059
Requests/sec:   4601.92
Transfer/sec:    247.17KB
"""
# redis-benchmark 7.0.15 --csv, captured against redis-server (-P 16).
REDIS_BENCHMARK_CSV = """\
"test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
"SET","490196.09","1.335","0.312","1.247","2.231","2.703","4.039"
"GET","514138.81","1.164","0.152","1.151","1.767","2.367","5.143"
"""


def test_parse_wrk_reports() -> None:
    piped = harness.parse_wrk(WRK_PIPELINED)
    assert piped["requests"] == 184496 and piped["reqs_per_s"] == 176515.39
    assert piped["wrk_duration_s"] == pytest.approx(1.05)
    assert piped["errors"] == 0 and piped["non_2xx"] == 0
    assert piped["socket_errors"] == {"connect": 0, "read": 0, "write": 0, "timeout": 0}
    assert piped["latency_avg_us"] == pytest.approx(10700)
    assert piped["latency_p50_us"] is None and piped["latency_p99_us"] is None   # zeros: not per request
    plain = harness.parse_wrk(WRK_PLAIN)
    assert plain["requests"] == 36810 and plain["reqs_per_s"] == 36171.5 and plain["errors"] == 0
    assert plain["latency_p50_us"] == pytest.approx(5850) and plain["latency_p99_us"] == pytest.approx(21570)
    bad = harness.parse_wrk(WRK_ERRORS)
    assert bad["non_2xx"] == 5059 and bad["socket_errors"]["read"] == 5058
    assert bad["errors"] == 5059 + 5058 and bad["wrk_duration_s"] == pytest.approx(1.10)
    assert bad["latency_avg_us"] == pytest.approx(737.79) and bad["latency_p99_us"] == pytest.approx(1580)
    with pytest.raises(harness.HarnessError, match="cannot read wrk's report"):
        harness.parse_wrk("unable to connect to 127.0.0.1:1 Connection refused\n")


def test_parse_redis_benchmark_csv() -> None:
    tests = harness.parse_redis_benchmark(REDIS_BENCHMARK_CSV + "\n")
    assert set(tests) == {"SET", "GET"}
    assert tests["SET"]["rps"] == 490196.09 and tests["GET"]["p99_latency_ms"] == 2.367
    with pytest.raises(harness.HarnessError, match="cannot read redis-benchmark's --csv report"):
        harness.parse_redis_benchmark("Could not connect to Redis at 127.0.0.1:1: Connection refused\n")
    with pytest.raises(harness.HarnessError, match="cannot read redis-benchmark's --csv row"):
        harness.parse_redis_benchmark(REDIS_BENCHMARK_CSV.replace('"490196.09"', '"fast"'))


def test_w12_w14_workloads_servers_and_commands() -> None:
    w = harness.WORKLOADS
    assert [(n, w[n].mode, w[n].conns, w[n].depth) for n in ("W12p", "W12np", "W13p", "W13np", "W14")] == [
        ("W12p", "http", 256, 16), ("W12np", "http", 256, 1), ("W13p", "resp", 50, 16), ("W13np", "resp", 50, 1),
        ("W14", "ws", 50, 16)]
    assert w["W14"].size == 64
    # W12 and W13 name both their variants; the order given is kept, duplicates dropped.
    assert harness.parse_args(["--workloads", "W12,W13,W14"]).workloads == ["W12p", "W12np", "W13p", "W13np", "W14"]
    assert harness.parse_args(["--workloads", "W14,W12np,W12"]).workloads == ["W14", "W12np", "W12p"]
    assert harness.parse_args(["--workloads", "W12,W13,W14"]).servers == list(harness.APP_SERVERS)
    assert harness.parse_args(["--workloads", "W13"]).servers == ["gnetpy-redis", "gnetpy-redis-pure",
                                                                 "redis-uvloop", "redis-server"]
    assert harness.parse_args(["--workloads", "W1,W14"]).servers == [
        "gnetpy", "gnetpy-pure", "asyncio", "uvloop", "c", "gnetpy-http", "gnetpy-http-pure", "websockets", "picows"]
    # Echo servers run W1-W11 only, application servers their protocols' workloads only.
    servers = harness.SERVERS
    assert servers["gnetpy-http"].applies_to(w["W12p"]) and servers["gnetpy-http"].applies_to(w["W14"])
    assert not servers["gnetpy-http"].applies_to(w["W13p"]) and not servers["gnetpy-http"].applies_to(w["W1"])
    assert not servers["gnetpy"].applies_to(w["W14"]) and servers["gnetpy"].applies_to(w["W1"])
    assert servers["redis-server"].applies_to(w["W13np"]) and not servers["picows"].applies_to(w["W12np"])
    addr = "tcp://127.0.0.1:8000"
    assert servers["gnetpy-http"].command(addr)[1:] == [str(harness.GNETPY_HTTP), "--addr", addr, "--loops", "1"]
    assert servers["gnetpy-http-pure"].env()["GNETPY_NO_EXTENSIONS"] == "1"
    assert servers["http-uvloop"].command(addr)[-2:] == ["--addr", "127.0.0.1:8000"]
    uvicorn = servers["uvicorn"].command(addr)
    assert uvicorn[1:4] == ["-m", "uvicorn", "asgi_plaintext:app"]
    for flags in (["--loop", "uvloop"], ["--http", "httptools"], ["--workers", "1"], ["--port", "8000"]):
        assert " ".join(flags) in " ".join(uvicorn)
    assert "--no-access-log" in uvicorn
    granian = servers["granian"].command(addr)
    for flags in (["--interface", "rsgi"], ["--workers", "1"], ["--runtime-threads", "1"], ["--port", "8000"]):
        assert " ".join(flags) in " ".join(granian)
    assert granian[-1] == "rsgi_plaintext:app" and servers["granian"].workers == 1
    redis = servers["redis-server"].command(addr)
    assert redis[:5] == ["redis-server", "--port", "8000", "--bind", "127.0.0.1"]
    assert " ".join(redis[5:9]) == "--save  --appendonly no"
    wl = w["W12p"]
    argv = harness.wrk_argv(wl, addr, 2, Path("/tmp/pipeline.lua"))
    assert argv[:5] == ["wrk", "-t1", "-c256", "-d2s", "--latency"]
    assert argv[-4:] == ["/tmp/pipeline.lua", "http://127.0.0.1:8000/plaintext", "--", "16"]
    assert harness.wrk_argv(w["W12np"], addr, 2, Path("/x.lua"))[-1] == "http://127.0.0.1:8000/plaintext"
    assert "-s" not in harness.wrk_argv(w["W12np"], addr, 2, Path("/x.lua"))
    assert [harness.whole_seconds(x) for x in (0.2, 0.5, 1.4, 2.0, 2.6)] == [1, 1, 1, 2, 3]
    assert harness.redis_benchmark_argv(w["W13np"], addr, 5000) == [
        "redis-benchmark", "-h", "127.0.0.1", "-p", "8000", "-c", "50", "-n", "5000", "-t", "set,get", "-P", "1",
        "--csv"]


def test_w12_w13_skipped_without_their_load_tool(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(harness.TOOLS, "http", ("no-such-wrk-here", "apt-get install wrk"))
    monkeypatch.setitem(harness.TOOLS, "resp", ("no-such-redis-benchmark", "apt-get install redis-tools"))
    assert harness.missing_tool("http") == ("no-such-wrk-here is not installed here (its load generator; "
                                            "`apt-get install wrk`)")
    assert harness.missing_tool("ws") is None
    rc = harness.main([*APP_RUN, "--workloads", "W12np,W13np", "--servers", "gnetpy-http,redis-server",
                       "--out", str(tmp_path)])
    out = capsys.readouterr()
    assert rc == 0, out.err
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["runs"] == [] and results["failed"] == {}
    assert results["skipped_workloads"] == {"W12np": {"gnetpy-http": harness.missing_tool("http")},
                                            "W13np": {"redis-server": harness.missing_tool("resp")}}
    assert "SKIPPED gnetpy-http in W12np: no-such-wrk-here is not installed" in out.out


def test_workload_no_given_server_runs_is_said(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = harness.main([*APP_RUN, "--workloads", "W14", "--servers", "c", "--out", str(tmp_path)])
    out = capsys.readouterr()
    assert rc == 0, out.err
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["runs"] == [] and results["skipped_workloads"] == {}
    why = results["not_run"]["W14"]
    assert why.startswith("W14 ran no server: none of those given runs it (its servers: gnetpy-http, ")
    assert f"NOT RUN: {why}" in out.out and f"NOT RUN: {why}" in out.err


@needs_wrk
@needs_two_cpus
def test_w12_w14_end_to_end_gnetpy_http(tmp_path: Path, capsys: pytest.CaptureFixture[str], no_strays: None) -> None:
    started = time.monotonic()
    rc = harness.main([*APP_RUN, "--workloads", "W12,W14", "--servers", "gnetpy-http", "--out", str(tmp_path)])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert time.monotonic() - started < 30
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["failed"] == {} and results["skipped_workloads"] == {} and results["skipped"] == {}
    by_key = {(r["workload"], r["server"]): r for r in results["runs"]}
    assert set(by_key) == {("W12p", "gnetpy-http"), ("W12np", "gnetpy-http"), ("W14", "gnetpy-http")}
    for w, pipeline in (("W12p", 16), ("W12np", 1)):
        run = by_key[w, "gnetpy-http"]
        assert run["mode"] == "http" and run["pipeline"] == pipeline and run["connections"] == 256
        assert run["requests"] > 0 and run["reqs_per_s"] > 0 and run["errors"] == 0
        assert 0.9 < run["duration_s"] < 2 and run["window_s"] >= run["duration_s"] * 0.9
        assert run["server_user_us_per_req"] > 0 and run["server_sys_us_per_req"] >= 0
        assert 0 < run["server_cpu_util"] <= 1.2 and 0 < run["loadgen_cpu_util"] <= 1.2
        assert run["server_processes"] == 1 and run["command"].startswith("wrk -t1 -c256 -d1s")
        assert results["summary"][w]["gnetpy-http"]["reqs_per_s"]["median"] == run["reqs_per_s"]
    assert "--" in by_key["W12p", "gnetpy-http"]["command"]
    ws = by_key["W14", "gnetpy-http"]
    assert ws["mode"] == "ws" and ws["connections"] == 50 and ws["depth"] == 16 and ws["msg_size"] == 64
    assert ws["messages"] > 0 and ws["server_user_us_per_msg"] > 0 and ws["path"] == "/ws"
    for header in ("req/s", "user µs/req", "loadgen CPU", "errors", "thr/http-uvloop", "msgs/s", "user/picows"):
        assert header in out.out
    row_starts = [line.split()[:2] for line in out.out.splitlines()]
    for w in ("W12p", "W12np", "W14"):
        assert [w, "gnetpy-http"] in row_starts
        assert f"{w} rep 1/1 gnetpy-http" in out.err
    assert "W12p: wrk -t1 -c256 -d1s (whole seconds) GET /plaintext" in out.out
    assert "W14: benchmarks/wsload.c: 50 WebSocket connections" in out.out
    assert (tmp_path / "results.md").read_text().count("| gnetpy-http |") == 3


@needs_redis_benchmark
@needs_two_cpus
@pytest.mark.skipif(not harness.GNETPY_REDIS.exists(), reason="examples/redis_server.py does not exist yet")
def test_w13_end_to_end_gnetpy_redis(tmp_path: Path, capsys: pytest.CaptureFixture[str], no_strays: None) -> None:
    rc = harness.main([*APP_RUN, "--workloads", "W13", "--servers", "gnetpy-redis", "--out", str(tmp_path)])
    out = capsys.readouterr()
    assert rc == 0, out.err
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["failed"] == {}
    by_key = {(r["workload"], r["server"]): r for r in results["runs"]}
    assert set(by_key) == {("W13p", "gnetpy-redis"), ("W13np", "gnetpy-redis")}
    for w, pipeline in (("W13p", 16), ("W13np", 1)):
        run = by_key[w, "gnetpy-redis"]
        assert run["mode"] == "resp" and run["pipeline"] == pipeline and run["clients"] == 50
        assert run["requests"] == 2 * run["requests_per_test"] >= 2 * harness.RESP_MIN_REQUESTS
        assert run["set_per_s"] > 0 and run["get_per_s"] > 0
        # The harmonic mean of the two tests' rates: both tests' requests over both tests' times.
        assert run["reqs_per_s"] == pytest.approx(2 / (1 / run["set_per_s"] + 1 / run["get_per_s"]))
        assert 0.3 < run["duration_s"] < 3   # sized by the warm-up run to take about --duration
        assert run["server_user_us_per_req"] > 0 and 0 < run["loadgen_cpu_util"] <= 1.2
        assert run["command"].startswith("redis-benchmark -h 127.0.0.1 -p ")
    for header in ("SET/s", "GET/s", "user/redis-uvloop", "user/redis-server"):
        assert header in out.out
    assert "W13p: redis-benchmark -c 50 -P 16 -t set,get --csv" in out.out


# Stands in for a broken application server: every HTTP request is answered 500; anything that is
# not HTTP (RESP) gets a Redis error.  The harness must show both, and go on.
ERRORING_SERVER = r"""
import asyncio, sys

class Protocol(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport, self.buf = transport, b""

    def data_received(self, data):
        if data.startswith(b"*"):
            self.transport.write(b"-ERR this server errs\r\n")
            return
        self.buf += data
        done = self.buf.count(b"\r\n\r\n")
        self.buf = self.buf.rsplit(b"\r\n\r\n", 1)[-1]
        self.transport.write(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n" * done)

async def main():
    host, port = sys.argv[1].removeprefix("tcp://").rsplit(":", 1)
    server = await asyncio.get_running_loop().create_server(Protocol, host, int(port))
    await server.serve_forever()

asyncio.run(main())
"""


@needs_wrk
@needs_redis_benchmark
@needs_two_cpus
def test_w12_w14_errors_and_failures_are_shown(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch, no_strays: None) -> None:
    monkeypatch.setitem(harness.SERVERS, "erring", harness.Server(
        "erring", lambda addr: [sys.executable, "-c", ERRORING_SERVER, addr], lambda: None,
        serves=frozenset({"http", "resp", "ws"})))
    rc = harness.main([*APP_RUN, "--workloads", "W12np,W13np,W14", "--servers", "erring",
                       "--out", str(tmp_path)])
    out = capsys.readouterr()
    assert rc == 0, out.err
    results = json.loads((tmp_path / "results.json").read_text())
    # W12: wrk completes the requests; every one is an error, counted and shown.
    (run,) = results["runs"]
    assert run["workload"] == "W12np" and run["errors"] == run["non_2xx"] == run["requests"] > 0
    assert results["summary"]["W12np"]["erring"]["errors"]["median"] == run["errors"]
    row = next(line for line in out.out.splitlines() if line.startswith("W12np"))
    assert "ERRORS" in row
    assert f"ERRORS erring in W12np: {run['non_2xx']} responses not 2xx/3xx" in out.out
    # W13 (redis-benchmark stops at the first error reply) and W14 (no 101): FAILED, not fatal.
    assert set(results["failed"]) == {"W13np", "W14"}
    assert "ERR this server errs" in results["failed"]["W13np"]["erring"][0]
    assert "upgrade to WebSocket refused: the server answered 'HTTP/1.1 500 Internal Server Error'" in \
        results["failed"]["W14"]["erring"][0]
    for w in ("W13np", "W14"):
        assert [w, "erring", "FAILED"] in [line.split()[:3] for line in out.out.splitlines()]
        assert f"FAILED erring in {w} (1 of 1 repetition(s)): " in out.out
        assert f"{w} rep 1/1 erring   FAILED: " in out.err
    md = (tmp_path / "results.md").read_text()
    assert "| W14 | erring | FAILED |" in md and "| W13np | erring | FAILED |" in md


def test_chart_with_application_workloads(tmp_path: Path) -> None:
    """W12-W14 compare with their own references in the summary panel (http-uvloop, websockets)."""
    def fig(median: float) -> dict:
        return {"median": median, "min": median, "max": median}

    data = synthetic_results()
    data["workloads"].update({w: {"name": w, "title": harness.WORKLOADS[w].title, "mode": harness.WORKLOADS[w].mode}
                              for w in ("W12p", "W14")})
    data["config"]["workloads"] += ["W12p", "W14"]
    data["summary"]["W12p"] = {
        s: {"reqs_per_s": fig(r), "server_user_us_per_req": fig(u), "loadgen_cpu_util": fig(0.5),
            "errors": fig(e), "runs": 1, "ratios": {}}
        for s, r, u, e in (("gnetpy-http", 1000, 2.0, 0), ("http-uvloop", 500, 4.0, 0), ("uvicorn", 100, 8.0, 3))}
    data["summary"]["W14"] = {
        s: {"msgs_per_s": fig(r), "server_user_us_per_msg": fig(u), "loadgen_cpu_util": fig(0.95), "runs": 1,
            "ratios": {}}
        for s, r, u in (("gnetpy-http", 1000, 3.0), ("websockets", 300, 12.0), ("picows", 1200, 1.5))}
    ratios = harness.summary_ratios(data)
    assert ratios["W12p"] == {"gnetpy-http": 0.5, "uvicorn": 2.0}
    assert ratios["W14"] == {"gnetpy-http": 0.25, "picows": 0.125}
    assert ratios["W1"]["gnetpy"] == 0.5   # the echo workloads keep uvloop
    pytest.importorskip("matplotlib")
    assert harness.write_chart(tmp_path / "apps.png", data) is None
    assert (tmp_path / "apps.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# A WebSocket echo written from RFC 6455 with the standard library only (so wsload is checked
# against something that shares none of its code), which misbehaves on request at message
# `at` of each connection: "flip" a payload byte, "close" with a close frame, "text" echo as a
# text frame, "ping" send a ping, "pong" send an unsolicited pong before every echo (allowed),
# "accept" answer the upgrade with a wrong Sec-WebSocket-Accept, "status" answer it 404.
class TinyWsEcho(FaultyEcho):
    GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

    def __init__(self, fault: str = "", at: int = -1) -> None:
        self.at = at
        super().__init__(fault, 0)

    def _serve(self, conn: socket.socket) -> None:
        import base64
        import hashlib

        buf, upgraded, message = b"", False, 0
        with conn:
            for data in self._received(conn):
                buf += data
                if not upgraded:
                    if b"\r\n\r\n" not in buf:
                        continue
                    head, buf = buf.split(b"\r\n\r\n", 1)
                    if self.fault == "status":
                        conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                        return
                    key = next(line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
                               if line.lower().startswith(b"sec-websocket-key:"))
                    accept = base64.b64encode(hashlib.sha1(key + self.GUID).digest())
                    if self.fault == "accept":
                        accept = base64.b64encode(hashlib.sha1(key).digest())
                    conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                                 b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
                    upgraded = True
                out = b""
                while len(buf) >= 2:
                    length, at = buf[1] & 0x7F, 2
                    if length == 126:
                        length, at = int.from_bytes(buf[2:4], "big"), 4
                    elif length == 127:
                        length, at = int.from_bytes(buf[2:10], "big"), 10
                    if len(buf) < at + 4 + length:
                        break
                    mask, payload = buf[at:at + 4], buf[at + 4:at + 4 + length]
                    payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
                    buf = buf[at + 4 + length:]
                    opcode = 0x2
                    if message == self.at:
                        if self.fault == "flip":
                            payload = payload[:5] + bytes([payload[5] ^ 0xFF]) + payload[6:]
                        elif self.fault == "close":
                            out += b"\x88\x06\x03\xf3boom"   # 1011, "boom"
                            break
                        elif self.fault == "ping":
                            out += b"\x89\x00"
                        elif self.fault == "text":
                            opcode = 0x1
                    if self.fault == "pong":
                        out += b"\x8a\x02hi"
                    header = bytes([0x80 | opcode])
                    if length < 126:
                        header += bytes([length])
                    elif length < 65536:
                        header += bytes([126]) + length.to_bytes(2, "big")
                    else:
                        header += bytes([127]) + length.to_bytes(8, "big")
                    out += header + payload
                    message += 1
                try:
                    conn.sendall(out)
                except OSError:
                    return


@pytest.fixture(scope="module")
def wsload() -> Path:
    return harness.ensure_built("wsload")


@pytest.fixture
def tiny_ws() -> Iterator[Callable[..., TinyWsEcho]]:
    servers: list[TinyWsEcho] = []

    def make(fault: str = "", at: int = -1) -> TinyWsEcho:
        servers.append(TinyWsEcho(fault, at))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def run_wsload(wsload: Path, port: int, *extra: str) -> subprocess.CompletedProcess[str]:
    return loadgen_run(wsload, "--tcp", f"127.0.0.1:{port}", "--path", "/ws", "--conns", "2", "--duration", "0.5",
                       "--warmup", "0.1", "--io-timeout", "2", *extra)


@pytest.mark.parametrize("size, depth", [(64, 1), (64, 16), (300, 4), (70000, 2)])
def test_wsload_against_a_tiny_websocket_echo(size: int, depth: int, wsload: Path,
                                              tiny_ws: Callable[..., TinyWsEcho]) -> None:
    # 300 B and 70 000 B take the 16-bit and the 64-bit length encodings.
    out = run_wsload(wsload, tiny_ws().port, "--size", str(size), "--depth", str(depth))
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["mode"] == "ws" and report["connections"] == 2 and report["path"] == "/ws"
    assert report["msg_size"] == size and report["depth"] == depth and report["messages"] > 0
    header = 2 if size < 126 else 4 if size < 65536 else 10
    assert report["server_frame_bytes"] == header + size and report["client_frame_bytes"] == header + 4 + size
    assert report["msgs_per_s"] > 0 and 0 < report["rtt_p50_us"] <= report["rtt_p99_us"]
    assert report["mb_per_s"] == pytest.approx(report["msgs_per_s"] * size / 1e6, rel=1e-3)
    assert report["server_user_us_per_msg"] is None and report["pongs"] == 0   # no --pid


def test_wsload_measures_the_server_and_skips_unsolicited_pongs(wsload: Path,
                                                                tiny_ws: Callable[..., TinyWsEcho]) -> None:
    out = run_wsload(wsload, tiny_ws("pong").port, "--pid", str(os.getpid()))
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["pongs"] > 0 and report["server_pid"] == os.getpid() and report["server_processes"] >= 1
    assert report["server_user_us_per_msg"] is not None and report["server_cpu_util"] > 0


@pytest.mark.parametrize("fault, at, message", [
    ("flip", 3, "connection 0: echo mismatch in message 3 at payload byte 5: expected 0x"),
    ("close", 2, "the server sent a close frame (code 1011: boom) after 2 messages echoed, 1 in flight"),
    ("text", 1, "the echo of message 1 is not one final binary frame (first byte 0x81: FIN 1, RSV 0, opcode 0x1)"),
    ("ping", 0, "the server sent a ping after 0 messages echoed (wsload does not answer pings"),
    ("accept", -1, "wrong Sec-WebSocket-Accept: expected "),
    ("status", -1, "upgrade to WebSocket refused: the server answered 'HTTP/1.1 404 Not Found' to GET /ws"),
])
def test_wsload_detects_a_faulty_websocket_echo(fault: str, at: int, message: str, wsload: Path,
                                                tiny_ws: Callable[..., TinyWsEcho]) -> None:
    out = run_wsload(wsload, tiny_ws(fault, at).port, "--conns", "1")
    assert out.returncode == 1 and out.stdout == "", out.stdout
    assert message in out.stderr and out.stderr.startswith("wsload: "), out.stderr


def test_wsload_detects_a_plain_byte_echo_and_a_stall(wsload: Path,
                                                      faulty: Callable[[str, int], FaultyEcho]) -> None:
    # A byte echo sends the upgrade request back: not a 101.
    out = run_wsload(wsload, faulty("flip", 10**9).port, "--conns", "1")
    assert out.returncode == 1 and "upgrade to WebSocket refused: the server answered 'GET /ws HTTP/1.1'" in out.stderr
    # A server that accepts (into its backlog) and never answers: no 101 within --io-timeout.
    with socket.create_server(("127.0.0.1", 0)) as mute:
        out = run_wsload(wsload, mute.getsockname()[1], "--conns", "1", "--io-timeout", "0.3")
    assert out.returncode == 1 and "connection 0: no 101 response after 0." in out.stderr, out.stderr


def test_wsload_rejects_bad_options(wsload: Path) -> None:
    out = loadgen_run(wsload, "--tcp", "127.0.0.1:1", "--path", "ws")
    assert out.returncode == 1 and "--path must start with '/'" in out.stderr
    assert loadgen_run(wsload, "--conns", "1").returncode == 2   # no --tcp: usage
