"""Instructions per echoed message, counted by callgrind: the repeatable hot-path measure.

    python benchmarks/callgrind.py                       # gnetpy, W1 and W2
    python benchmarks/callgrind.py --server floor --workloads W1
    python benchmarks/callgrind.py --server uvloop --env GNETPY_NO_EXTENSIONS=1
    python benchmarks/callgrind.py --server gnetpy-codec --workloads W8   # against --server gnetpy-frames

Throughput and CPU time swing +-20% between runs on shared machines;
instruction counts do not (the same binary, inputs and environment give the
same total, whatever else the machine is doing).  The server runs under
``valgrind --tool=callgrind --instr-atstart=no``; the C load generator warms it
up, instrumentation is switched on and zeroed, a measured window of the
workload runs, the counts are dumped, and the total user-space instructions
are divided by the messages the load generator counted.  The method, and the
figures it produced, are in docs/architecture.md ("How we measure") and benchmarks/results/2026-11-27-pure-hot-path.md.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.harness import (  # noqa: E402
    SERVERS,
    WORKLOADS,
    add_baseline_server,
    ensure_built,
    free_tcp_addr,
    free_udp_addr,
    loadgen_target,
    mode_args,
    try_connect,
    try_udp_echo,
)

WARMUP_S = 2.0


# Workloads driven by loadgen against one echo: a stream of messages, frames or datagrams.
# The others (idle memory, connection churn, TLS through tlsload) measure something else
# than instructions per echoed message.
MODES = ("load", "frames", "udp")


def wait_serving(addr: str, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited early with status {proc.returncode}")
        if (try_udp_echo if addr.startswith("udp://") else try_connect)(addr, 1.0):
            return
        time.sleep(0.2)
    raise SystemExit(f"server did not answer on {addr} within {timeout:g} s under valgrind")


def loadgen(addr: str, workload: str, duration: float) -> dict[str, object]:
    w = WORKLOADS[workload]
    cmd = [str(BENCH_DIR / "build" / "loadgen"), *loadgen_target(addr), "--conns", str(w.conns),
           "--size", str(w.size), *mode_args(w, addr), "--duration", str(duration), "--warmup", "0"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=duration + 120)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def measure(server: str, workload: str, duration: float, env: dict[str, str],
            keep: Path | None = None) -> tuple[int, int]:
    wl = WORKLOADS[workload]
    if wl.mode not in MODES:
        echoes = ", ".join(name for name, w in WORKLOADS.items() if w.mode in MODES)
        raise SystemExit(f"{workload} ({wl.mode}): not an echo of messages; callgrind.py measures {echoes}")
    addr = free_udp_addr() if wl.udp else free_tcp_addr()
    with tempfile.TemporaryDirectory(prefix="gnetpy-cg-") as tmp:
        out_file = os.path.join(tmp, "callgrind.out.%p")
        spec = SERVERS[server]
        if why := spec.cannot_run(WORKLOADS[workload]):
            raise SystemExit(why)
        cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out_file}",
               *spec.argv(addr, wl)]
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env={**os.environ, **spec.env(), **env},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_serving(addr, proc)
            loadgen(addr, workload, WARMUP_S)
            subprocess.run(["callgrind_control", "-i", "on", str(proc.pid)], check=True, capture_output=True)
            subprocess.run(["callgrind_control", "-z", str(proc.pid)], check=True, capture_output=True)
            result = loadgen(addr, workload, duration)
            subprocess.run(["callgrind_control", "-d", str(proc.pid)], check=True, capture_output=True)
            dumps = glob.glob(os.path.join(tmp, "callgrind.out.*"))
            instructions = sum(_total(path) for path in dumps)
            if keep is not None:
                keep.mkdir(parents=True, exist_ok=True)
                for path in dumps:
                    shutil.copy(path, keep / f"{server}-{workload}-{os.path.basename(path)}")
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return instructions, int(result["messages"])  # type: ignore[call-overload]


def _total(path: str) -> int:
    # Dumps made by callgrind_control -d end with "totals: N" (or "summary: N"
    # for the final one at exit, which instrumentation-off runs leave at 0).
    text = Path(path).read_text(errors="replace")
    match = re.search(r"^totals:\s+(\d+)", text, re.M) or re.search(r"^summary:\s+(\d+)", text, re.M)
    return int(match.group(1)) if match else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--server", default="gnetpy", help="a harness server name (gnetpy, floor, uvloop, ...)")
    parser.add_argument("--workloads", default="W1,W2")
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the server's environment")
    parser.add_argument("--baseline", type=Path, metavar="CHECKOUT",
                        help="make another checkout available as server 'baseline' (see harness.py --baseline)")
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="copy the callgrind dumps here (read them with callgrind_annotate)")
    args = parser.parse_args(argv)
    if args.baseline is not None:
        add_baseline_server(args.baseline.resolve())
    ensure_built("loadgen")
    env = dict(item.split("=", 1) for item in args.env)
    for workload in args.workloads.split(","):
        instructions, messages = measure(args.server, workload, args.duration, env, args.keep)
        per = instructions / messages if messages else float("nan")
        print(f"{args.server} {workload}: {per:,.0f} instructions/msg ({instructions:,} over {messages:,} messages)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
