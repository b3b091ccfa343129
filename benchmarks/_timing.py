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


def save_results(result: dict, out_json: str, markdown) -> None:
    """Write ``result`` to ``out_json`` and its table, ``markdown(result)``, beside it as ``.md``.

    The docs include the ``.md`` files (``pymdownx.snippets``), so a table in the manual is always what the
    committed JSON renders to; ``--report JSON`` re-renders one without running anything.
    """
    import json
    import os

    os.makedirs(os.path.dirname(os.path.abspath(out_json)), exist_ok=True)
    with open(out_json, "w") as fh:
        json.dump(result, fh, indent=2)
    with open(os.path.splitext(out_json)[0] + ".md", "w") as fh:
        fh.write(markdown(result))
    print(f"\nwrote {out_json} and its .md")


def rerender(json_path: str, markdown) -> None:
    """``--report JSON``: re-render the ``.md`` of an earlier run from its JSON (nothing is measured)."""
    from graphdesc.safe_io import load_json

    save_results(load_json(json_path), json_path, markdown)
