"""Shared helpers of the benchmark scripts (run them as ``python benchmarks/NAME.py``): timing, RSS."""

import statistics
import time


def median_time(fn, repeats: int, budget_s: float = 20.0) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs after one warm-up;
    stops early (after at least 3 runs) once ``budget_s`` seconds are spent."""
    fn()
    times, start = [], time.perf_counter()
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if time.perf_counter() - start > budget_s and len(times) >= 3:
            break
    return statistics.median(times)


def rss_kib(field: str) -> int:
    """A memory field of ``/proc/self/status`` in KiB: ``"VmRSS"`` (now) or ``"VmHWM"`` (peak)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")
