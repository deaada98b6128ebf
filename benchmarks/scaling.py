"""Multi-core scaling: echo throughput with k = 1, 2, 4, ... worker processes.

    python -m gnetpy bench --scaling [--max-workers N] [--loadgen-cpus L] [--k 1,2,4,8]
                                     [--duration S] [--warmup S] [--reps R]
                                     [--workloads W1,W2,W4] [--servers ...] [--lb NAME] [--out DIR]
    python benchmarks/harness.py --scaling ...          # the same
    python benchmarks/scaling.py ...                    # the same

The usable CPUs (this process's affinity set) are split in two: the last L
for load generators (default: half of them, at least 1), the first N = usable
- L for servers (--max-workers caps N).  For each k, each workload and each
server (interleaved), a fresh server starts with its allowed CPU set = the
first k server CPUs and k worker processes (gnetpy: `--loops k --processes
--cpu-affinity`, with or without `--reuse-port`; the comparison:
benchmarks/servers/asyncio_echo.py `--workers k --reuse-port --cpu-affinity`
on uvloop, or on asyncio where uvloop is not importable).  L load
generators, each pinned to its own CPU with its share of the workload's
connections, measure the same wall-clock window (loadgen --measure-at); their
msgs/s are summed.  The server's CPU is its whole process tree's (loadgen
--pid).  Reported per k: msgs/s, the speed-up over k = 1, the fraction of
linear scaling msgs(k) / (k * msgs(1)), and server CPU.  See
benchmarks/README.md, "Multi-core scaling".
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):   # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import harness
from benchmarks.harness import HarnessError, Workload

DEFAULT_WORKLOADS = ["W1", "W2", "W4"]
SCALING_WORKLOADS = [w for w, wl in harness.WORKLOADS.items() if wl.mode == "load"]   # W1-W4
SETUP_ALLOWANCE_S = 0.5    # connection setup before the common window's warm-up begins
LISTENER_TIMEOUT_S = harness.READY_TIMEOUT_S
EST_OVERHEAD_S = 1.5       # per run beyond setup, warm-up and window: start, stop (for the estimate)
BUSY_LOADGEN = 0.9         # a load generator this busy may be what limits the run


# ---- servers ----------------------------------------------------------------


@dataclass(frozen=True)
class ScalingServer:
    name: str
    command: Callable[[str, int | str, str | None], list[str]]   # (addr, k, lb) -> argv
    listeners: Callable[[int], int]                        # k -> listening sockets once ready
    unavailable: Callable[[], str | None]
    env: Callable[[], dict[str, str]] = dict
    note: str = ""


def _gnetpy(addr: str, k: int | str, lb: str | None, *flags: str) -> list[str]:
    return [sys.executable, str(harness.GNETPY_ECHO), "--addr", addr, "--loops", str(k),
            "--processes", "--cpu-affinity", *flags, *(["--lb", lb] if lb else [])]


def _asyncio(addr: str, k: int | str, uvloop: bool) -> list[str]:
    return [sys.executable, str(harness.ASYNCIO_ECHO), "--addr", addr, *(["--uvloop"] if uvloop else []),
            "--workers", str(k), "--reuse-port", "--cpu-affinity"]


SERVERS = {
    s.name: s
    for s in (
        ScalingServer(
            "gnetpy-procs",
            lambda addr, k, lb: _gnetpy(addr, k, lb),
            lambda k: 1,
            harness._gnetpy_missing,
            harness._gnetpy_env,
            "gnetpy, k worker processes behind a main reactor (the parent accepts and hands "
            "each connection to a worker; with k=1 the lone worker accepts itself)",
        ),
        ScalingServer(
            "gnetpy-procs-rp",
            lambda addr, k, lb: _gnetpy(addr, k, None, "--reuse-port"),
            lambda k: k,
            harness._gnetpy_missing,
            harness._gnetpy_env,
            "gnetpy, k worker processes, each accepting on its own SO_REUSEPORT listener",
        ),
        ScalingServer(
            "uvloop",
            lambda addr, k, lb: _asyncio(addr, k, True),
            lambda k: k,
            harness._uvloop_missing,
            note="asyncio_echo.py on uvloop, k worker processes with SO_REUSEPORT listeners",
        ),
        ScalingServer(
            "asyncio",
            lambda addr, k, lb: _asyncio(addr, k, False),
            lambda k: k,
            lambda: None,
            note="asyncio_echo.py on asyncio's own loop, k worker processes with SO_REUSEPORT listeners",
        ),
    )
}


def default_servers() -> list[str]:
    """Both gnetpy modes, and uvloop -- or asyncio where uvloop is not importable."""
    return ["gnetpy-procs", "gnetpy-procs-rp", "asyncio" if harness._uvloop_missing() else "uvloop"]


# ---- CPUs -------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    server_cpus: list[int]     # the first k of these run a k-worker server
    loadgen_cpus: list[int]    # one load generator on each


def plan_cpus(usable: Sequence[int], loadgen_cpus: int | None, max_workers: int | None) -> Layout:
    """Split the usable CPUs: the last L for load generators, the first N for servers."""
    cpus = sorted(usable)
    n_lg = loadgen_cpus if loadgen_cpus is not None else max(1, len(cpus) // 2)
    if n_lg >= len(cpus):
        raise HarnessError(
            f"the scaling run needs a CPU for the server besides the load generators' {n_lg}: "
            f"{len(cpus)} usable CPU(s) ({', '.join(map(str, cpus))}); lower --loadgen-cpus")
    server = cpus[:len(cpus) - n_lg]
    if max_workers is not None:
        if max_workers > len(server):
            raise HarnessError(
                f"--max-workers {max_workers}: only {len(server)} CPU(s) are left for servers "
                f"({len(cpus)} usable, {n_lg} for load generators); one worker per CPU is the point")
        server = server[:max_workers]
    return Layout(server, cpus[len(cpus) - n_lg:])


def default_ks(n: int) -> list[int]:
    """1, 2, 4, ... up to n, and n itself."""
    ks, k = [], 1
    while k <= n:
        ks.append(k)
        k *= 2
    if ks[-1] != n:
        ks.append(n)
    return ks


def split_conns(total: int, parts: int) -> list[int]:
    """`total` connections over at most `parts` load generators, as evenly as can be."""
    parts = min(parts, total)
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def cpu_topology(cpus: Sequence[int]) -> dict[str, Any]:
    """Core and package of each CPU, and its SMT siblings, from sysfs (where readable)."""
    topo: dict[str, Any] = {}
    for cpu in cpus:
        base = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        entry: dict[str, Any] = {}
        for key, name in (("core_id", "core_id"), ("package", "physical_package_id"),
                          ("siblings", "thread_siblings_list")):
            with contextlib.suppress(OSError):
                entry[key] = (base / name).read_text().strip()
        topo[str(cpu)] = entry
    return topo


def shared_cores(layout: Layout, topo: dict[str, Any]) -> list[str]:
    """Notes on SMT siblings shared between server CPUs, or between a server and a load generator CPU."""
    def core(cpu: int) -> tuple[str, str] | None:
        e = topo.get(str(cpu), {})
        return (e["package"], e["core_id"]) if "package" in e and "core_id" in e else None

    notes = []
    server_cores = [core(c) for c in layout.server_cpus]
    if None not in server_cores and len(set(server_cores)) < len(server_cores):
        notes.append("some server CPUs are SMT siblings (hyperthreads of one core): scaling "
                     "across them is not scaling across cores")
    lg_cores = {core(c) for c in layout.loadgen_cpus}
    if None not in server_cores and any(c in lg_cores for c in server_cores):
        notes.append("some server CPUs share a core with a load generator CPU (SMT siblings)")
    return notes


# ---- one run ----------------------------------------------------------------


def count_listeners(port: int) -> int:
    """TCP sockets listening on `port` in this network namespace (/proc/net/tcp, tcp6)."""
    want = f":{port:04X}"
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            next(f, None)   # the header
            for line in f:
                fields = line.split()
                # Listening sockets come first (the kernel walks its listening hash
                # before the established one): stop at the first other state, so
                # tens of thousands of TIME_WAIT entries are not read.
                if len(fields) < 4 or fields[3] != "0A":
                    break
                if fields[1].endswith(want):
                    count += 1
    return count


def wait_for_listeners(server: harness.RunningServer, port: int, count: int,
                       timeout: float = LISTENER_TIMEOUT_S) -> None:
    """Wait until `count` sockets listen on the port: with SO_REUSEPORT, a connection made
    while a worker's listener is missing goes to another worker and stays there."""
    deadline = time.monotonic() + timeout
    while (have := count_listeners(port)) < count:
        server.check_alive("while its workers started listening")
        if time.monotonic() >= deadline:
            raise HarnessError(f"{server.name} server has {have} listening socket(s) on port {port} "
                               f"after {timeout:g} s, expected {count}; its output:\n{server.output()}")
        time.sleep(0.02)


@dataclass
class Config:
    layout: Layout
    ks: list[int]
    workloads: list[str]
    servers: list[str]
    duration: float
    warmup: float
    reps: int
    lb: str | None
    out: Path


def read_cpu_times() -> dict[int, tuple[int, int]]:
    """{cpu: (busy, total)} in clock ticks from /proc/stat; busy counts irq and softirq time too."""
    times = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/stat").read_text().splitlines():
            name, *fields = line.split()
            if name.startswith("cpu") and name[3:].isdigit():
                user, nice, system, idle, iowait, irq, softirq, steal = map(int, fields[:8])
                total = user + nice + system + idle + iowait + irq + softirq + steal
                times[int(name[3:])] = (total - idle - iowait, total)
    return times


def busy_fraction(before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]],
                  cpus: Sequence[int]) -> float | None:
    """How busy `cpus` were between two /proc/stat samples, 0..1 (their mean)."""
    busy = total = 0
    for cpu in cpus:
        if cpu not in before or cpu not in after:
            return None
        busy += after[cpu][0] - before[cpu][0]
        total += after[cpu][1] - before[cpu][1]
    return busy / total if total > 0 else None


CPU_SAMPLE_INTERVAL_S = 0.05   # /proc/stat samples while the load generators run
CONNECT_BATCH = 64             # connections being set up at once, over all load generators


def window_busy(samples: list[tuple[float, dict[int, tuple[int, int]]]], start: float, end: float,
                cpus: Sequence[int]) -> float | None:
    """Busy fraction of `cpus` between the last sample at or before `start` and the first at or after `end`."""
    before = [s for s in samples if s[0] <= start]
    after = [s for s in samples if s[0] >= end]
    if not before or not after:
        return None
    return busy_fraction(before[-1][1], after[0][1], cpus)


def run_loadgens(procs: harness.Processes, loadgen: Path, server: harness.RunningServer, port: int,
                 wl: Workload, cfg: Config, k: int) -> tuple[list[dict[str, Any]], dict[str, float | None]]:
    """L load generators, each on its own CPU with its share of the connections, one common window.

    Returns their reports, and how busy the server's and the load generators' CPUs were in the
    window by /proc/stat (which, unlike a process's CPU time, includes the kernel's softirq work).
    """
    shares = split_conns(wl.conns, len(cfg.layout.loadgen_cpus))
    # Together no more connects in flight than one load generator makes in the main
    # harness: L x 64 SYNs at once would overflow a 100-connection accept backlog
    # (asyncio's default), and a dropped SYN costs a 1 s retransmit.
    batch = max(1, CONNECT_BATCH // len(shares))
    measure_at = time.time() + SETUP_ALLOWANCE_S + cfg.warmup
    running = []
    for i, conns in enumerate(shares):
        argv = [str(loadgen), "--tcp", f"127.0.0.1:{port}", "--conns", str(conns), "--batch", str(batch),
                "--size", str(wl.size), "--depth", str(wl.depth), "--duration", str(cfg.duration),
                "--warmup", str(cfg.warmup), "--measure-at", f"{measure_at:.6f}",
                *(["--pid", str(server.proc.pid)] if i == 0 else [])]   # one reads the server's CPU
        running.append(procs.spawn(argv, cfg.layout.loadgen_cpus[i], stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    deadline = measure_at + cfg.duration + harness.LOADGEN_SLACK_S
    samples: list[tuple[float, dict[int, tuple[int, int]]]] = []
    reports = []
    try:
        # Sample the CPUs until every load generator is done; the window they
        # report picks the two samples around it afterwards (a late window too).
        while any(proc.poll() is None for proc in running) and time.time() < deadline:
            if any(proc.returncode not in (None, 0) for proc in running):
                break   # one failed: its error is reported below, the others are stopped
            samples.append((time.time(), read_cpu_times()))
            time.sleep(CPU_SAMPLE_INTERVAL_S)
        samples.append((time.time(), read_cpu_times()))
        for i, proc in enumerate(running):
            try:
                out, err = proc.communicate(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                raise harness.loadgen_failure(
                    server, None, f"load generator {i + 1} of {len(running)}".encode()) from None
            if proc.returncode != 0:
                raise harness.loadgen_failure(server, proc.returncode, err)
            reports.append(json.loads(out))
    finally:
        for proc in running:
            procs.stop(proc)
    start = min(r["window_start_unix"] for r in reports)
    end = max(r["window_start_unix"] + r["duration_s"] for r in reports)
    busy = {
        "server_cpus_busy": window_busy(samples, start, end, cfg.layout.server_cpus[:k]),
        "loadgen_cpus_busy": window_busy(samples, start, end, cfg.layout.loadgen_cpus[:len(shares)]),
    }
    return reports, busy


def combine(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """One run's figures from its load generators' reports (the first one measured the server)."""
    msgs = sum(r["msgs_per_s"] for r in reports)
    first = reports[0]
    # The first load generator measured the server: its figures per message of its own.
    user_cpu = first["server_user_us_per_msg"] * first["msgs_per_s"]   # server µs per second
    sys_cpu = first["server_sys_us_per_msg"] * first["msgs_per_s"]
    starts = [r["window_start_unix"] for r in reports]
    return {
        "msgs_per_s": msgs,
        "server_cpu_util": first["server_cpu_util"],
        "server_user_us_per_msg": user_cpu / msgs,
        "server_sys_us_per_msg": sys_cpu / msgs,
        "server_processes": first["server_processes"],
        "server_processes_exited": first["server_processes_exited"],
        "rtt_p99_us_max": max(r["rtt_p99_us"] for r in reports),
        "loadgen_cpu_util_max": max(r["loadgen_cpu_util"] for r in reports),
        "loadgens": len(reports),
        "window_skew_s": max(starts) - min(starts),
        "window_late_s_max": max(r["window_late_s"] for r in reports),
        "loadgen_reports": reports,
    }


def run_point(procs: harness.Processes, loadgen: Path, workdir: Path, spec: ScalingServer, k: int,
              wl: Workload, cfg: Config) -> dict[str, Any]:
    """A fresh k-worker server on the first k server CPUs, L load generators, server stopped."""
    addr = harness.free_tcp_addr()
    port = int(addr.rpartition(":")[2])
    server = harness.start_server(procs, f"{spec.name}-k{k}", spec.command(addr, k, cfg.lb), addr,
                                  workdir, frozenset(cfg.layout.server_cpus[:k]), spec.env())
    try:
        processes = harness.wait_for_processes(server, 1 + k)
        wait_for_listeners(server, port, spec.listeners(k))
        reports, busy = run_loadgens(procs, loadgen, server, port, wl, cfg, k)
        result = {**combine(reports), **busy}
        server.check_alive("during the run")
    finally:
        procs.stop(server.proc)
    result["processes_at_start"] = processes
    return result


# ---- statistics and reporting -------------------------------------------------


def stat(values: Sequence[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarize(runs: list[dict[str, Any]], cfg: Config, servers: list[str]) -> dict[str, Any]:
    """summary[workload][server][k] = msgs/s and server CPU stats, speed-up, fraction of linear."""
    summary: dict[str, Any] = {}
    for wl in cfg.workloads:
        per_server: dict[str, Any] = {}
        for srv in servers:
            per_k: dict[str, Any] = {}
            for k in cfg.ks:
                mine = [r for r in runs if (r["workload"], r["server"], r["k"]) == (wl, srv, k)]
                if not mine:
                    continue
                per_k[str(k)] = {
                    m: stat(values) if None not in (values := [r[m] for r in mine]) else None
                    for m in ("msgs_per_s", "server_cpu_util", "server_user_us_per_msg",
                              "server_sys_us_per_msg", "loadgen_cpu_util_max", "rtt_p99_us_max",
                              "server_cpus_busy", "loadgen_cpus_busy")
                }
                per_k[str(k)]["server_processes"] = mine[0]["server_processes"]
                per_k[str(k)]["runs"] = len(mine)
            one = per_k.get("1", {}).get("msgs_per_s", {}).get("median")
            for k_text, s in per_k.items():
                msgs = s["msgs_per_s"]["median"]
                s["speedup"] = msgs / one if one else None
                s["linear_fraction"] = msgs / (int(k_text) * one) if one else None
            if per_k:
                per_server[srv] = per_k
        summary[wl] = per_server
    return summary


HEADER = ["workload", "server", "k", "msgs/s", "x k=1", "of linear", "server CPUs", "µs/msg",
          "procs", "CPUs busy", "loadgen CPU"]


def table_rows(summary: dict[str, Any]) -> list[list[str]]:
    num, cell = harness.num, harness.cell
    rows = []
    for wl, per_server in summary.items():
        for srv, per_k in per_server.items():
            for k_text, s in per_k.items():
                us = s["server_user_us_per_msg"]["median"] + s["server_sys_us_per_msg"]["median"]
                rows.append([
                    wl, srv, k_text, cell(s["msgs_per_s"]),
                    "-" if s["speedup"] is None else f"{s['speedup']:.2f}x",
                    "-" if s["linear_fraction"] is None else f"{s['linear_fraction']:.0%}",
                    f"{s['server_cpu_util']['median']:.2f}", num(us), str(s["server_processes"]),
                    "-" if s["server_cpus_busy"] is None else f"{s['server_cpus_busy']['median']:.0%}",
                    f"{s['loadgen_cpu_util_max']['median']:.0%}",
                ])
    return rows


def notes(results: dict[str, Any]) -> list[str]:
    cfg, lay = results["config"], results["layout"]
    out = [
        (f"{cfg['reps']} repetition(s), {cfg['duration']:g} s measured after {cfg['warmup']:g} s warm-up, "
         f"one window for all load generators; medians, [min-max] when runs differ."),
        (f"Servers on CPUs {fmt_cpus(lay['server_cpus'])} (k workers: the first k of them, one each); "
         f"{len(lay['loadgen_cpus'])} load generator(s) on CPUs {fmt_cpus(lay['loadgen_cpus'])}, "
         f"one each, the workload's connections split between them."),
        ("x k=1: msgs/s over the same server's k=1; of linear: msgs(k) / (k * msgs(1)); server CPUs: "
         "CPU time of the server's whole process tree / window (2.0 = two CPUs busy); µs/msg: "
         "that CPU time (user + sys) per message; procs: processes in the server's tree; "
         "CPUs busy: how busy the k server CPUs were (/proc/stat, including the kernel's softirq "
         "network work that no process is charged for); loadgen CPU: the busiest load generator's "
         "own CPU use."),
    ]
    for srv, note in results["servers"].items():
        out.append(f"{srv}: {note['description']}.")
    if "uvloop" not in results["servers"] and "asyncio" in results["servers"]:
        out.append("The comparison ran on asyncio's own event loop: uvloop is not importable here.")
    busy = sorted({(r["server"], r["workload"], r["k"]) for r in results["runs"]
                   if r["loadgen_cpu_util_max"] >= BUSY_LOADGEN})
    if busy:
        out.append(f"A load generator was >= {BUSY_LOADGEN:.0%} busy in: "
                   + ", ".join(f"{s} {w} k={k}" for s, w, k in busy)
                   + " -- those msgs/s may be the load generators' limit, not the server's.")
    exited = sorted({(r["server"], r["workload"], r["k"]) for r in results["runs"]
                     if r["server_processes_exited"]})
    if exited:
        out.append("Server processes exited during the window (their CPU time in it is lost, and a "
                   "worker that died was not serving) in: "
                   + ", ".join(f"{s} {w} k={k}" for s, w, k in exited) + ".")
    skew = max((r["window_skew_s"] for r in results["runs"]), default=0.0)
    late = max((r["window_late_s_max"] for r in results["runs"]), default=0.0)
    if late > 0.05 * cfg["duration"] or skew > 0.05 * cfg["duration"]:
        out.append(f"The load generators' windows did not line up well (up to {skew * 1e3:.0f} ms apart, "
                   f"{late * 1e3:.0f} ms late): connection setup took longer than "
                   f"{SETUP_ALLOWANCE_S:g} s.")
    out += results["machine"].get("topology_notes", [])
    for srv, why in results["skipped"].items():
        out.append(f"SKIPPED {srv}: {why}")
    return out


def fmt_cpus(cpus: Sequence[int]) -> str:
    return ",".join(map(str, cpus))


def render(results: dict[str, Any]) -> tuple[str, str]:
    """(text, markdown)."""
    rows = table_rows(results["summary"])
    text = harness.render_text(HEADER, rows) if rows else "(no results)"
    md = harness.render_markdown(HEADER, rows) if rows else "(no results)"
    n = notes(results)
    m = results["machine"]
    md_parts = [
        "# gnetpy multi-core scaling",
        "",
        (f"{m['date']} · {m['cpu_model']} ({m['cpu_count']} CPUs, {m['usable_cpus']} usable) · "
         f"Linux {m['kernel']} · Python {m['python']} · uvloop {m['uvloop'] or 'n/a'}"),
        "",
        md,
        "",
        *[f"- {line}" for line in n],
    ]
    return "\n".join([text, "", *n]), "\n".join(md_parts) + "\n"


def write_chart(path: Path, results: dict[str, Any]) -> str | None:
    """msgs/s against k (top) and the fraction of linear (bottom) per workload; why not, if not."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not importable (pip install matplotlib); no chart written"
    summary = {w: s for w, s in results["summary"].items() if s}
    if not summary:
        return "no results to chart"
    fig, axes = plt.subplots(2, len(summary), figsize=(4 * len(summary), 6.5), squeeze=False)
    palette = ("tab:green", "tab:olive", "tab:purple", "tab:blue")
    colors = {name: palette[i % len(palette)] for i, name in enumerate(SERVERS)}
    for col, (wl, per_server) in enumerate(summary.items()):
        top, bottom = axes[0][col], axes[1][col]
        for srv, per_k in per_server.items():
            ks = [int(k) for k in per_k]
            med = [per_k[str(k)]["msgs_per_s"]["median"] for k in ks]
            lo = [m - per_k[str(k)]["msgs_per_s"]["min"] for m, k in zip(med, ks)]
            hi = [per_k[str(k)]["msgs_per_s"]["max"] - m for m, k in zip(med, ks)]
            top.errorbar(ks, med, yerr=[lo, hi], marker="o", capsize=3, color=colors[srv], label=srv)
            if "1" in per_k:
                one = per_k["1"]["msgs_per_s"]["median"]
                top.plot(ks, [k * one for k in ks], linestyle=":", color=colors[srv], linewidth=1)
                bottom.plot(ks, [per_k[str(k)]["linear_fraction"] for k in ks], marker="o",
                            color=colors[srv], label=srv)
        top.set_title(f"{wl}: {harness.WORKLOADS[wl].title}", fontsize=8)
        top.set_ylabel("msgs/s (dotted: linear from k=1)", fontsize=8)
        top.set_ylim(bottom=0)
        top.yaxis.set_major_formatter(lambda v, _pos: harness.num(v))
        bottom.set_ylabel("fraction of linear", fontsize=8)
        bottom.set_ylim(0, 1.2)
        bottom.axhline(1.0, color="gray", linewidth=0.5)
        for ax in (top, bottom):
            ax.set_xlabel("k (worker processes = server CPUs)", fontsize=8)
            ax.set_xticks(results["config"]["ks"])
            ax.tick_params(labelsize=8)
            ax.legend(fontsize=7)
    m = results["machine"]
    fig.suptitle(f"gnetpy multi-core scaling · {m['cpu_model']} · {m['date']} · "
                 f"median of {results['config']['reps']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def report(results: dict[str, Any], out: Path) -> None:
    text, md = render(results)
    print()
    print(text)
    out.mkdir(parents=True, exist_ok=True)
    (out / "scaling.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "scaling.md").write_text(md)
    written = ["scaling.json", "scaling.md"]
    why_not = write_chart(out / "scaling.png", results)
    if why_not:
        print(f"No chart: {why_not}", file=sys.stderr)
    else:
        written.append("scaling.png")
    print(f"Wrote {', '.join(written)} to {out}")


# ---- the whole run ------------------------------------------------------------


def machine(layout: Layout) -> dict[str, Any]:
    m = harness.machine_description()
    topo = cpu_topology(sorted(os.sched_getaffinity(0)))
    m["pinning"] = {"server_cpus": layout.server_cpus, "loadgen_cpus": layout.loadgen_cpus}
    m["topology"] = topo
    m["topology_notes"] = shared_cores(layout, topo)
    return m


def progress(run: dict[str, Any], cfg: Config) -> None:
    num = harness.num
    busy = run["server_cpus_busy"]
    print(f"{run['workload']} k={run['k']} rep {run['rep'] + 1}/{cfg.reps} {run['server']:16} "
          f"{num(run['msgs_per_s'])} msgs/s  server {run['server_cpu_util']:.2f} CPUs in "
          f"{run['server_processes']} processes, its CPUs {'-' if busy is None else f'{busy:.0%}'} busy  "
          f"loadgens {run['loadgens']} (busiest {run['loadgen_cpu_util_max']:.0%})",
          file=sys.stderr, flush=True)


def benchmark(cfg: Config) -> dict[str, Any]:
    skipped = {s: why for s in cfg.servers if (why := SERVERS[s].unavailable())}
    for srv, why in skipped.items():
        print(f"SKIPPING {srv}: {why}", file=sys.stderr)
    if all(s in skipped for s in cfg.servers):
        raise HarnessError("none of the requested servers can run here: "
                           + "; ".join(f"{s}: {why}" for s, why in skipped.items()))
    loadgen = harness.ensure_built("loadgen")
    points = len(cfg.ks) * len(cfg.workloads) * (len(cfg.servers) - len(skipped)) * cfg.reps
    per_point = SETUP_ALLOWANCE_S + cfg.warmup + cfg.duration + EST_OVERHEAD_S
    print(f"scaling: k in {fmt_cpus(cfg.ks)} on server CPUs {fmt_cpus(cfg.layout.server_cpus)}, "
          f"{len(cfg.layout.loadgen_cpus)} load generator(s) on CPUs {fmt_cpus(cfg.layout.loadgen_cpus)}; "
          f"{points} runs, about {points * per_point / 60:.1f} min", file=sys.stderr, flush=True)
    runs: list[dict[str, Any]] = []
    with harness.Processes() as procs, tempfile.TemporaryDirectory(prefix="gnetpy-scaling-") as tmp:
        for rep in range(cfg.reps):
            for k in cfg.ks:
                for wl_name in cfg.workloads:
                    for srv in cfg.servers:   # interleaved
                        if srv in skipped:
                            continue
                        try:
                            result = run_point(procs, loadgen, Path(tmp), SERVERS[srv], k,
                                               harness.WORKLOADS[wl_name], cfg)
                        except harness.ServerRejected as e:
                            skipped[srv] = str(e)
                            print(f"SKIPPING {srv}: {e}", file=sys.stderr)
                            continue
                        runs.append({"workload": wl_name, "server": srv, "k": k, "rep": rep, **result})
                        progress(runs[-1], cfg)
    ran = [s for s in cfg.servers if s not in skipped]
    return {
        "machine": machine(cfg.layout),
        "config": {**asdict(cfg), "out": str(cfg.out), "servers": ran},
        "layout": asdict(cfg.layout),
        "servers": {s: {"description": SERVERS[s].note,
                        "command": harness.show_argv(SERVERS[s].command("tcp://127.0.0.1:PORT", "K", cfg.lb))}
                    for s in ran},
        "workloads": {w: asdict(harness.WORKLOADS[w]) for w in cfg.workloads},
        "skipped": skipped,
        "runs": runs,
        "summary": summarize(runs, cfg, ran),
    }


# ---- command line ---------------------------------------------------------------


def _int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected integers >= 1, got {text!r}")
    return sorted(set(values))


def parse_args(argv: list[str] | None) -> Config:
    p = argparse.ArgumentParser(
        prog="gnetpy bench --scaling",
        description="Multi-core scaling: echo msgs/s with k = 1, 2, 4, ... worker processes, "
                    "gnetpy (main reactor and reuse_port) against uvloop.",
    )
    p.add_argument("--max-workers", type=harness._positive(int),
                   help="largest k (default: the usable CPUs minus the load generators')")
    p.add_argument("--loadgen-cpus", type=harness._positive(int),
                   help="CPUs (and load generator processes) for the load (default: half the usable "
                        "CPUs, at least 1)")
    p.add_argument("--k", type=_int_list, metavar="LIST",
                   help="worker counts to run, e.g. 1,2,4,8 (default: 1, 2, 4, ... up to the largest k, "
                        "and the largest k itself); include 1 for the fraction of linear")
    p.add_argument("--duration", type=harness._positive(float), default=3.0,
                   help="measured seconds per run (default 3)")
    p.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds per run (default 1)")
    p.add_argument("--reps", type=harness._positive(int), default=1, help="repetitions (default 1)")
    p.add_argument("--workloads", type=harness._names({w: None for w in SCALING_WORKLOADS}),
                   default=DEFAULT_WORKLOADS, help="comma-separated subset of "
                   + ",".join(SCALING_WORKLOADS) + " (default " + ",".join(DEFAULT_WORKLOADS) + ")")
    p.add_argument("--servers", type=harness._names(SERVERS), default=None,
                   help="comma-separated subset of " + ",".join(SERVERS)
                   + " (default: gnetpy-procs,gnetpy-procs-rp and uvloop, or asyncio without uvloop)")
    p.add_argument("--lb", help="gnetpy-procs's load balancer (--lb of examples/echo.py; default its own)")
    p.add_argument("--out", type=Path, default=harness.DEFAULT_OUT,
                   help="output directory for scaling.{json,md,png} (default benchmarks/results)")
    a = p.parse_args(argv)
    if a.warmup < 0:
        p.error("--warmup must be >= 0")
    try:
        layout = plan_cpus(sorted(os.sched_getaffinity(0)), a.loadgen_cpus, a.max_workers)
    except HarnessError as e:
        p.error(str(e))
    ks = a.k or default_ks(len(layout.server_cpus))
    if max(ks) > len(layout.server_cpus):
        p.error(f"--k {fmt_cpus(ks)}: at most {len(layout.server_cpus)} worker(s) here "
                f"(server CPUs {fmt_cpus(layout.server_cpus)})")
    servers = a.servers or default_servers()
    return Config(
        layout=Layout(layout.server_cpus[:max(ks)], layout.loadgen_cpus),
        ks=ks,
        workloads=a.workloads,
        servers=[s for s in SERVERS if s in servers],
        duration=a.duration,
        warmup=a.warmup,
        reps=a.reps,
        lb=a.lb,
        out=a.out,
    )


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    try:
        with harness.sigterm_unwinds():
            results = benchmark(cfg)
    except HarnessError as e:
        print(f"scaling benchmark failed: {e}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, harness.Terminated) as e:
        print("interrupted; all servers and load generators stopped", file=sys.stderr)
        return 130 if isinstance(e, KeyboardInterrupt) else 128 + signal.SIGTERM
    report(results, cfg.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
