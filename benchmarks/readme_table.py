"""The README's benchmark table, from a results JSON the harness wrote.

    python benchmarks/readme_table.py [benchmarks/results/results.json]     # print it
    python benchmarks/readme_table.py [RESULTS.json] --write README.md      # put it in README.md

One row per workload: what it is, the figure compared (server user CPU per
message, per connection or handshake; W5's KiB per idle connection), that
figure's median for gnetpy compiled, gnetpy pure, asyncio, uvloop and the C
epoll server, and gnetpy's ratio to uvloop; then a one-line caption with the
run's date, machine and command.  With --write, the table and caption replace
whatever lies between the lines `<!-- bench-table:start -->` and
`<!-- bench-table:end -->` of the file (the marker lines stay).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks import harness  # noqa: E402

DEFAULT_RESULTS = harness.DEFAULT_OUT / "results.json"
START_MARKER = "<!-- bench-table:start -->"
END_MARKER = "<!-- bench-table:end -->"

# (column header, server) in the table's order; gnetpy's column is the compiled build.
COLUMNS = (
    ("gnetpy (compiled)", "gnetpy"),
    ("gnetpy (pure)", "gnetpy-pure"),
    ("asyncio", "asyncio"),
    ("uvloop", "uvloop"),
    ("C epoll", "c"),
)
# W8 has no plain gnetpy server: its gnetpy figure is the codec layer's and, after a slash,
# the same framing by hand in on_traffic (both compiled, like the gnetpy column).
FRAMES_GNETPY = ("gnetpy-codec", "gnetpy-frames")
# Per mode: the metric's name in the table.
METRIC_NAMES = {
    "load": "server user µs/msg",
    "idle": "server KiB per idle conn",
    "churn": "server user µs/conn",
    "udp": "server user µs/datagram",
    "frames": "server user µs/frame",
    "mixed": "server user µs/msg",
    "tls": "server user µs/msg",
    "tls-churn": "server user µs/handshake",
}
MISSING = "–"
# The application workloads (W12-W14): their own servers, one table of their own. Per mode,
# (column header, servers) in the table's order; a cell is "requests/s · user µs per request".
APP_COLUMNS = {
    "http": (("gnetpy (compiled)", "gnetpy-http"), ("gnetpy (pure)", "gnetpy-http-pure"),
             ("same handler on uvloop", "http-uvloop"), ("uvicorn", "uvicorn"), ("granian", "granian")),
    "resp": (("gnetpy (compiled)", "gnetpy-redis"), ("gnetpy (pure)", "gnetpy-redis-pure"),
             ("same handler on uvloop", "redis-uvloop"), ("redis-server", "redis-server")),
    "ws": (("gnetpy (compiled)", "gnetpy-http"), ("gnetpy (pure)", "gnetpy-http-pure"),
           ("websockets", "websockets"), ("picows", "picows")),
}


class TableError(Exception):
    """The table cannot be made or written; the message says why."""


def _mode(results: dict[str, Any], w: str) -> str:
    info = results.get("workloads", {}).get(w) or {}
    if "mode" in info:
        return str(info["mode"])
    if w in harness.WORKLOADS:
        return harness.WORKLOADS[w].mode
    raise TableError(f"workload {w}: no mode in the JSON's 'workloads' and not one the harness knows")


def _title(results: dict[str, Any], w: str) -> str:
    info = results.get("workloads", {}).get(w) or {}
    if "title" in info:
        return str(info["title"])
    return harness.WORKLOADS[w].title if w in harness.WORKLOADS else ""


def _median(per_server: dict[str, Any], server: str, metric: str) -> float | None:
    figure = per_server.get(server, {}).get(metric)
    return None if figure is None else figure["median"]


def _value(v: float | None) -> str:
    return MISSING if v is None else harness.num(v)


def table_rows(results: dict[str, Any]) -> list[list[str]]:
    rows = []
    for w, per_server in results["summary"].items():
        if not per_server:
            continue
        mode = _mode(results, w)
        if mode in APP_COLUMNS:
            continue  # their own table: app_rows
        metric = harness.COMPARED[mode][-1]
        cells = [_value(_median(per_server, srv, metric)) for _, srv in COLUMNS]
        gnetpy = _median(per_server, "gnetpy", metric)
        if gnetpy is None and any(s in per_server for s in FRAMES_GNETPY):
            codec, hand = (_median(per_server, s, metric) for s in FRAMES_GNETPY)
            cells[0] = f"{_value(codec)} / {_value(hand)}"
            gnetpy = codec
        uvloop = _median(per_server, "uvloop", metric)
        ratio = harness.ratio(gnetpy, uvloop) if gnetpy is not None and uvloop is not None else None
        rows.append([f"{w} {_title(results, w)}".strip(), METRIC_NAMES[mode], *cells,
                     MISSING if ratio is None else f"{ratio:.2f}×"])
    return rows


def app_rows(results: dict[str, Any]) -> list[list[str]]:
    """W12-W14: a row per workload and server, its rate and the server's user µs per request."""
    rows = []
    for w, per_server in results["summary"].items():
        mode = _mode(results, w) if per_server else ""
        if mode not in APP_COLUMNS:
            continue
        rate, cpu = harness.COMPARED[mode]
        for name, server in APP_COLUMNS[mode]:
            r = _median(per_server, server, rate)
            if r is not None:
                rows.append([f"{w} {_title(results, w)}".strip(), name, _value(r),
                             _value(_median(per_server, server, cpu))])
    return rows


def render_table(results: dict[str, Any]) -> str:
    header = ["workload", "metric", *(name for name, _ in COLUMNS), "gnetpy / uvloop"]
    rows = table_rows(results)
    if not rows:
        raise TableError("the JSON's summary has no results")
    table = harness.render_markdown(header, rows)
    apps = app_rows(results)
    if apps:
        head = ["application workload", "server", "per second", "server user µs per request"]
        table += "\n\n" + harness.render_markdown(head, apps)
    return table


def run_command(results: dict[str, Any]) -> str:
    """The command that made the run: the metadata's where it says, else one that repeats it."""
    for where in (results, results.get("machine", {}), results.get("config", {})):
        if where.get("command"):
            return str(where["command"])
    cfg = results.get("config", {})
    workloads = cfg.get("workloads", list(harness.WORKLOADS))
    servers = cfg.get("servers", [])
    defaults = {"quick": (1, 2.0, 0.5, 2000), "full": (5, 5.0, 1.0, 10_000)}
    mine = (cfg.get("reps"), cfg.get("duration"), cfg.get("warmup"), cfg.get("idle_conns"))
    known = all(w in harness.WORKLOADS for w in workloads)
    default_servers = harness.default_servers(workloads) if known else None
    if workloads == list(harness.WORKLOADS) and servers == default_servers and not cfg.get("unix"):
        if not cfg.get("quick") and mine == defaults["full"]:
            return "./bench.sh --full"
        if cfg.get("quick") and mine == defaults["quick"]:
            return "./bench.sh"
    args = ["python benchmarks/harness.py"]
    if cfg.get("quick"):
        args.append("--quick")
    for flag, key in (("--reps", "reps"), ("--duration", "duration"), ("--warmup", "warmup"),
                      ("--idle-conns", "idle_conns")):
        if cfg.get(key) is not None:
            args.append(f"{flag} {_arg(cfg[key])}")
    if workloads != list(harness.WORKLOADS):
        args.append(f"--workloads {','.join(workloads)}")
    if servers and servers != default_servers:
        args.append(f"--servers {','.join(servers)}")
    if cfg.get("unix"):
        args.append("--unix")
    return " ".join(args)


def _arg(v: Any) -> str:
    """5.0 -> 5, 0.5 -> 0.5, 10000 -> 10000 (no exponents)."""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _date(date: str | None) -> str | None:
    if not date:
        return None
    try:
        d = datetime.datetime.fromisoformat(date)
    except ValueError:
        return date
    if d.utcoffset() is None:
        return d.strftime("%Y-%m-%d %H:%M")
    return d.astimezone(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def caption(results: dict[str, Any]) -> str:
    m = results.get("machine", {})
    cfg = results.get("config", {})
    parts = []
    if date := _date(m.get("date")):
        parts.append(date)
    machine = []
    if m.get("cpu_model"):
        machine.append(str(m["cpu_model"]) + (f", {m['cpu_count']} CPUs" if m.get("cpu_count") else ""))
    if m.get("kernel"):
        machine.append(f"Linux {m['kernel']}")
    if m.get("python"):
        machine.append(f"{m.get('python_implementation', 'CPython')} {m['python']}")
    if m.get("uvloop"):
        machine.append(f"uvloop {m['uvloop']}")
    if machine:
        parts.append(", ".join(machine))
    parts.append(f"`{run_command(results)}`")
    if cfg.get("reps") and cfg.get("duration"):
        parts.append(f"medians of {cfg['reps']} interleaved run(s) of {cfg['duration']:g} s")
    text = "; ".join(parts)
    w8 = [w for w, per in results["summary"].items()
          if "gnetpy" not in per and any(s in per for s in FRAMES_GNETPY)]
    if w8:
        text += (f"; {', '.join(w8)}: gnetpy is {FRAMES_GNETPY[0]} / {FRAMES_GNETPY[1]} "
                 "(the codec layer / framing by hand)")
    return f"({text}.)"


def render(results: dict[str, Any]) -> str:
    return f"{render_table(results)}\n\n{caption(results)}\n"


def replace_between_markers(text: str, block: str, name: str = "the file") -> str:
    """text with the lines between START_MARKER and END_MARKER replaced by block."""
    lines = text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.strip() == START_MARKER]
    ends = [i for i, line in enumerate(lines) if line.strip() == END_MARKER]
    if not starts or not ends:
        missing = " and ".join(m for m, found in ((START_MARKER, starts), (END_MARKER, ends)) if not found)
        raise TableError(f"{name} has no {missing} line: add the two marker lines "
                         f"{START_MARKER} and {END_MARKER} where the table goes")
    if len(starts) > 1 or len(ends) > 1:
        raise TableError(f"{name} has more than one {START_MARKER} / {END_MARKER} line")
    start, end = starts[0], ends[0]
    if end < start:
        raise TableError(f"{name}: {END_MARKER} comes before {START_MARKER}")
    return "".join([*lines[:start + 1], block if block.endswith("\n") else block + "\n", *lines[end:]])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="readme_table",
                                description="Print (or write into README.md) the benchmark table of a "
                                            "results JSON.")
    p.add_argument("results", nargs="?", type=Path, default=DEFAULT_RESULTS,
                   help=f"the harness's JSON (default {DEFAULT_RESULTS.relative_to(REPO_ROOT)})")
    p.add_argument("--write", type=Path, metavar="FILE",
                   help=f"replace the lines between {START_MARKER} and {END_MARKER} in FILE "
                        "instead of printing")
    a = p.parse_args(argv)
    try:
        try:
            results = json.loads(a.results.read_text())
        except (OSError, ValueError) as e:
            raise TableError(f"{a.results}: {e}") from e
        if not isinstance(results, dict) or not isinstance(results.get("summary"), dict):
            raise TableError(f"{a.results}: not a harness results JSON (no 'summary')")
        block = render(results)
        if a.write is None:
            sys.stdout.write(block)
            return 0
        try:
            text = a.write.read_text()
        except OSError as e:
            raise TableError(f"--write {a.write}: {e}") from e
        a.write.write_text(replace_between_markers(text, block, str(a.write)))
    except TableError as e:
        print(f"readme_table: {e}", file=sys.stderr)
        return 1
    print(f"Wrote the benchmark table into {a.write}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
