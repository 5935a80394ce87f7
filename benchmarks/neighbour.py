"""A noisy neighbour: this VM's slow hours, on demand, so a benchmark can be run in one.

In this VM's slowest hours the bare Bolt app's CPU a command rose from 0.7 ms to 0.9-1.2 ms: the
host takes the virtual CPUs away for slices of time (steal) that the guest cannot see and charges
to whatever was running. Those hours come when they come; a claim about them needs them on demand.
This starts one process per CPU, pinned to it, that takes its CPU for `percent` of the time in
slices of a few milliseconds at random moments (each period 5-15 ms long, busy for `percent` of it),
as a busy host does, and spends them copying through more memory than the CPUs' shared cache holds,
as other guests' work does, so what runs beside it finds its data evicted. As root it runs under
SCHED_FIFO, so the kernel hands it the CPU the moment a slice begins, whatever runs there, even a
thread holding the interpreter lock, like steal; otherwise it runs at normal priority and the
kernel shares the CPU instead, which is milder (the header says which). The neighbours end when
the process that started them does, even if it is killed.

    .venv/bin/python -m benchmarks.ack_latency --clients 8 --requests 2000 --neighbour 40
    .venv/bin/python -m benchmarks.neighbour 40      # on its own, until Ctrl-C
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from typing import Iterator

SHORTEST_PERIOD, LONGEST_PERIOD = 0.005, 0.015  # seconds: slices of 0.5-13.5 ms at 10-90%
STREAMED, CHUNK = 64 << 20, 256 << 10  # bytes: twice this VM's 32 MiB L3, copied 256 KiB at a time
MOST = 90  # percent: SCHED_FIFO at 100% would starve the CPU (the kernel's own cap is 95%)


def check_share(percent: float) -> None:
    if not 0 < percent <= MOST:
        raise ValueError(f"a neighbour takes more than 0 and at most {MOST}% of a CPU, not {percent:g}")


@contextmanager
def noisy_neighbours(percent: float) -> Iterator[tuple[list[int], str]]:
    """One neighbour per CPU taking `percent` of it; yields their pids and how they run."""
    check_share(percent)
    processes = [subprocess.Popen([sys.executable, "-m", "benchmarks.neighbour", str(percent), "--cpu", str(cpu),
                                   "--parent", str(os.getpid())])
                 for cpu in range(os.cpu_count() or 1)]
    try:
        time.sleep(0.2)  # each has set its scheduling policy
        realtime = all(os.sched_getscheduler(p.pid) == os.SCHED_FIFO for p in processes)
        share_ms = percent / 100 * 1000  # a slice is this share of its period, in ms
        how = (f"{percent:g}% of each CPU taken in slices of {SHORTEST_PERIOD * share_ms:.1f}-"
               f"{LONGEST_PERIOD * share_ms:.1f} ms "
               + ("(SCHED_FIFO: as the host's steal)" if realtime else "(normal priority: not root, so milder than steal)"))
        yield [p.pid for p in processes], how
    finally:
        for p in processes:
            p.terminate()
        for p in processes:
            p.wait()


def take_cpu(percent: float, cpu: int, parent: int) -> None:
    os.sched_setaffinity(0, {cpu})
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    except PermissionError:
        pass  # noisy_neighbours says the neighbour is milder
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    share = percent / 100
    memory = memoryview(bytearray(STREAMED))
    offset = 0
    while os.getppid() == parent:  # the benchmark was killed: stop taking CPUs from whatever runs next
        period = random.uniform(SHORTEST_PERIOD, LONGEST_PERIOD)
        busy_until = time.perf_counter() + period * share
        while time.perf_counter() < busy_until:
            # Copy through more memory than the shared cache holds, as other guests' work does.
            source, offset = offset, (offset + CHUNK) % STREAMED
            memory[offset:offset + CHUNK] = memory[source:source + CHUNK]
        time.sleep(period * (1 - share))


def main() -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("percent", type=float, help=f"share of each CPU to take, up to {MOST}")
    parser.add_argument("--cpu", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--parent", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cpu is not None:
        take_cpu(args.percent, args.cpu, args.parent)
        return 0
    try:
        with noisy_neighbours(args.percent) as (_, how):
            print(f"neighbours: {how}; Ctrl-C ends them", flush=True)
            signal.pause()
    except ValueError as exc:
        parser.error(str(exc))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
