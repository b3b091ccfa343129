"""Shared helpers of the benchmark scripts (run them as ``python benchmarks/NAME.py``): timing, RSS, results
files, and older code to compare with.

Every script imports this module before torch, and this module imports graphdesc: each benchmark process runs
under graphdesc's CPU policies (threads, malloc, MKL's kernels), as graphdesc's command line does."""

import os
import statistics
import time

import graphdesc  # noqa: F401  (before torch: its policies bind when torch loads)
from graphdesc.mkl import preload as mkl_preload

HERE = os.path.dirname(os.path.abspath(__file__))


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


def commit(rev: str) -> str:
    """The short hash of git revision ``rev`` (a branch, a tag, ``HEAD`` or a hash); a clear error if unknown."""
    import subprocess

    proc = subprocess.run(["git", "rev-parse", "--short", f"{rev}^{{commit}}"], cwd=HERE, capture_output=True,
                          text=True)
    if proc.returncode != 0:
        raise SystemExit(f"--against: {rev!r} is not a commit of this repository")
    return proc.stdout.strip()


def worktree(rev: str) -> str:
    """A checkout of git revision ``rev`` under ``benchmarks/.cache``, named by its commit (made once): the older
    graphdesc that an ``--against REV`` run imports."""
    import subprocess

    rev = commit(rev)
    path = os.path.join(HERE, ".cache", f"tree-{rev}")
    if not os.path.isdir(path):
        subprocess.run(["git", "worktree", "add", "--detach", path, rev], cwd=HERE, check=True, capture_output=True)
    return path


def code_env(root: str) -> dict:
    """This process's environment with the graphdesc of checkout ``root`` first on ``PYTHONPATH``, ahead of
    whatever is installed; the child reports ``graphdesc.__file__`` and the caller checks it with
    :func:`check_code`."""
    env = dict(os.environ)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    # MKL's kernels as in this process, for a revision older than graphdesc.mkl too (first: libtorch_cpu.so
    # answers MKL's CPU check itself)
    preload = os.pathsep.join(p for p in (mkl_preload(), env.get("LD_PRELOAD", "")) if p)
    if preload:
        env["LD_PRELOAD"] = preload
    return env


def check_code(package: str, root: str, what: str) -> None:
    """Stop unless the graphdesc a child imported (``package``, its directory) lies in checkout ``root``."""
    if not os.path.realpath(package).startswith(os.path.realpath(root) + os.sep):
        raise SystemExit(f"{what}: the run imported graphdesc from {package}, not from {root}")


def parse_cells(parser, text: str) -> list:
    """``--cells`` as a list of ints (an argparse error naming the flag otherwise)."""
    try:
        return [int(c) for c in text.split(",")]
    except ValueError:
        parser.error(f"--cells: expected a comma list of integers, got {text!r}")


def command_line(script: str, argv=None) -> str:
    """The command that ran: ``python benchmarks/SCRIPT`` and its arguments (``argv``, default the process's)."""
    import shlex
    import sys

    return " ".join([f"python benchmarks/{script}", shlex.join(sys.argv[1:] if argv is None else argv)]).rstrip()


def git_head() -> str:
    """The short commit of the checkout the benchmark runs from, with ``+changes`` when graphdesc has edits."""
    import subprocess

    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "graphdesc"], cwd=os.path.dirname(HERE),
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+changes" if dirty else "")


def run_header(script: str, argv, threads: int) -> dict:
    """What a torch benchmark's result records first: the command, the code, its threads, torch's version, the
    date and the load at the start."""
    import datetime

    import torch

    return dict(command=command_line(script, argv), code=git_head(), threads=threads, torch=torch.__version__,
                date=datetime.date.today().isoformat(), load=round(os.getloadavg()[0], 1))


def sized_run_args(parser, out_name: str, cells: str) -> None:
    """The options of a benchmark over cell counts of bench_dpa1's structures: ``--cells``, ``--threads``,
    ``--cache`` (bench_dpa1's model cache), ``--out`` (default ``results/OUT_NAME``) and ``--report``."""
    parser.add_argument("--cells", default=cells, help="comma list of cells per side (cu: 2 -> 32 atoms, 6 -> 864)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache", default=os.path.join(HERE, ".cache"))
    parser.add_argument("--out", default=os.path.join(HERE, "results", out_name))
    parser.add_argument("--report", metavar="JSON", help="only re-render the .md of an earlier run")


def start_sized_run(parser, argv, markdown):
    """Parse ``argv`` for a :func:`sized_run_args` benchmark: ``None`` after ``--report`` re-rendered a table,
    else ``(args, cells)`` with torch's threads set and the cache folder made."""
    args = parser.parse_args(argv)
    if args.report:
        rerender(args.report, markdown)
        return None
    cells = parse_cells(parser, args.cells)
    import torch

    torch.set_num_threads(args.threads)
    os.makedirs(args.cache, exist_ok=True)
    return args, cells
