"""Energy+force time with graphdesc's malloc policy and with glibc's defaults, path by path, size by size.

graphdesc keeps freed memory in the process (:mod:`graphdesc.allocator`); glibc by default hands the top of
the heap back to the kernel and takes it again, page by page, on the next call. Each point is
``bench_dpa1.py``'s child (a fresh process: warm-up, then the median of ``--repeats`` calls or more within
``--budget`` seconds), run once under each policy, back to back, the order alternating from round to round.
Per (path, size): the median ms/atom over rounds under each policy, the median of the rounds' paired ratios
(glibc's time over graphdesc's), the minor page faults per call and the peak RSS of each::

    python benchmarks/bench_allocator.py                          # Cu fp64, 32-864 atoms, graph and deepmd
    python benchmarks/bench_allocator.py --paths graph --cells 2,3 --rounds 5
    python benchmarks/bench_allocator.py --report benchmarks/results/allocator.json   # re-render the .md

Paths: ``graph`` (eager, default layout), ``graph-pt2`` (the AOTInductor package), ``deepmd`` (DeePMD-kit 3.2's
dense torch model), as in ``bench_dpa1.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from _timing import parse_cells, rerender, run_header, save_results  # noqa: E402

from graphdesc.allocator import POLICY, USER_KNOBS  # noqa: E402  (the children get exactly their policy)

#: policy name -> the malloc environment of a child (``GLIBC_TUNABLES`` set, empty: glibc's defaults, and
#: graphdesc leaves them)
POLICIES = {"graphdesc": {k: str(v) for k, v in POLICY.items()}, "glibc": {"GLIBC_TUNABLES": ""}}
PATHS = ("graph", "graph-pt2", "deepmd")


def run_point(args, path: str, cells: int, env: dict, model_path: str, package: str | None, tag: str) -> dict:
    """One ``bench_dpa1.py`` child with the environment ``env`` (named ``tag`` in errors): its JSON row."""
    cmd = [sys.executable, os.path.join(HERE, "bench_dpa1.py"), "--child", "--system", args.system,
           "--precision", args.precision, "--path", path, "--cells", str(cells), "--model", model_path,
           "--device", "cpu", "--threads", str(args.threads), "--repeats", str(args.repeats), "--budget",
           str(args.budget), "--force-out", os.path.join(args.cache, f"ab-{path}.npy")]
    if package:
        cmd += ["--package", package]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{path} under {tag}: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def paired_rounds(args, variants: dict, paths: list, cells: list, model_path: str, packages: dict) -> dict:
    """Every (path, size) under each of ``variants`` (name -> the child's environment), back to back, the order
    alternating from round to round: ``{(path, cells, name): [row per round]}``."""
    runs = {(p, c, v): [] for p in paths for c in cells for v in variants}
    for r in range(args.rounds):
        for c in cells:
            for p in paths:
                for v in alternating(variants, r):
                    row = run_point(args, p, c, variants[v], model_path, packages[p], v)
                    runs[(p, c, v)].append(row)
                    print(f"round {r + 1} {p:10} {row['atoms']:5} atoms {v:9} "
                          f"{row['us_per_atom'] / 1e3:7.3f} ms/atom {row['faults']:8.0f} faults/call", flush=True)
    return runs


def alternating(names, r: int) -> list:
    """``names`` in their order in even rounds ``r``, reversed in odd ones: A/B, then B/A."""
    return list(names) if r % 2 == 0 else list(names)[::-1]


def paired_medians(first: list, second: list, value) -> tuple:
    """``(median first, median second, median of second / first per round)`` of ``value(row)`` over the rounds'
    rows of two variants run back to back."""
    med = [statistics.median(value(x) for x in rows) for rows in (first, second)]
    return (*med, statistics.median(value(b) / value(a) for a, b in zip(first, second)))


def _policy_env(policy: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in USER_KNOBS}
    env.update(POLICIES[policy])
    return env


def markdown(result: dict) -> str:
    lines = [f"`{result['command']}`, {result['system']} {result['precision']}, {result['threads']} threads, "
             f"torch {result['torch']}, {result['date']} at {result['code']}, load {result['load']} at the start, "
             f"{result['rounds']} rounds: energy+force ms/atom (median over rounds) under graphdesc's malloc policy "
             "and glibc's defaults, the median of the paired ratios, minor page faults per call, peak RSS.", "",
             "| path | atoms | graphdesc ms/atom | glibc ms/atom | glibc / graphdesc time | graphdesc faults/call | "
             "glibc faults/call | graphdesc peak RSS MiB | glibc peak RSS MiB |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        lines.append(f"| {r['path']} | {r['atoms']} | {r['graphdesc_ms']:.3f} | {r['glibc_ms']:.3f} | "
                     f"{r['ratio']:.2f}x | {r['graphdesc_faults']:.0f} | {r['glibc_faults']:.0f} | "
                     f"{r['graphdesc_rss']:.0f} | {r['glibc_rss']:.0f} |")
    return "\n".join(lines) + "\n"


def ab_options(parser, out_name: str) -> None:
    """The options of an A/B benchmark over ``bench_dpa1.py``'s children: system, precision, sizes, paths,
    rounds, threads, timing, cache, ``--out`` (default ``results/OUT_NAME``) and ``--report``."""
    parser.add_argument("--system", default="cu")
    parser.add_argument("--precision", default="float64", choices=("float64", "float32"))
    parser.add_argument("--cells", default="2,3,4,6", help="comma list of cells per side (cu: 2 -> 32 atoms)")
    parser.add_argument("--paths", default="graph,deepmd", help="comma list of: " + ", ".join(PATHS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--budget", type=float, default=3.0)
    parser.add_argument("--cache", default=os.path.join(HERE, ".cache"))
    parser.add_argument("--out", default=os.path.join(HERE, "results", out_name))
    parser.add_argument("--report", metavar="JSON", help="only re-render the .md of an earlier run")


def ab_points(parser, args) -> tuple:
    """Check :func:`ab_options`' choices; ``(cells, paths, model_path, {path: package or None})``, the model (and
    any ``.pt2`` package) made or found in the cache."""
    from bench_dpa1 import SYSTEMS, make_model, make_package

    cells = parse_cells(parser, args.cells)
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]  # "" for none
    bad = [p for p in paths if p not in PATHS]
    if bad:
        parser.error(f"--paths: unknown {bad}; choose from {', '.join(PATHS)}")
    if args.system not in SYSTEMS:
        parser.error(f"--system: unknown {args.system!r}")
    os.makedirs(args.cache, exist_ok=True)
    model_path = make_model(args.system, args.precision, args.cache)
    return cells, paths, model_path, {p: make_package(model_path, "cpu", args.cache) if p == "graph-pt2" else None
                                      for p in paths}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ab_options(parser, "allocator.json")
    args = parser.parse_args(argv)
    if args.report:
        rerender(args.report, markdown)
        return 0
    header = run_header("bench_allocator.py", argv, args.threads)
    cells, paths, model_path, packages = ab_points(parser, args)
    runs = paired_rounds(args, {pol: _policy_env(pol) for pol in POLICIES}, paths, cells, model_path, packages)
    rows = []
    for p in paths:
        for c in cells:
            mine, theirs = runs[(p, c, "graphdesc")], runs[(p, c, "glibc")]
            med = lambda rs, key: statistics.median(x[key] for x in rs)  # noqa: E731
            ours, glibc, ratio = paired_medians(mine, theirs, lambda x: x["us_per_atom"] / 1e3)
            rows.append(dict(path=p, atoms=mine[0]["atoms"], graphdesc_ms=ours, glibc_ms=glibc, ratio=ratio,
                             graphdesc_faults=med(mine, "faults"), glibc_faults=med(theirs, "faults"),
                             graphdesc_rss=med(mine, "max_rss_mib"), glibc_rss=med(theirs, "max_rss_mib"),
                             runs={"graphdesc": mine, "glibc": theirs}))
    result = dict(header, system=args.system, precision=args.precision, rounds=args.rounds, rows=rows)
    print("\n" + markdown(result))
    save_results(result, args.out, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
