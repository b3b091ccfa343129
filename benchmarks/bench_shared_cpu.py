"""Energy+force time on a shared CPU: each path's slowdown under a competing load, side by side.

A competitor is a separate process multiplying 800 x 800 float64 matrices in a loop with its own torch
threads, the kind of neighbour a shared node has. Levels of competition::

    none    nothing else running
    light   one competitor, 1 thread
    medium  one competitor, 2 threads
    heavy   two competitors, 2 threads each

For each round, each level in turn: start its competitors, let them run a second, then time every path once
(``bench_dpa1.py``'s child: one fresh process per point, warm-up, then the median of ``--repeats`` calls or more
within ``--budget`` seconds), then stop them. The paths of one level run back to back, under the same load;
rounds repeat the whole set. Per (path, level): the median over rounds, and the slowdown against the same
path with no competition in the same run.

Paths (``NAME[@THREADS][+POLICY]``): ``graph`` (eager, default layout), ``graph-pt2`` (the AOTInductor
package), ``deepmd`` (DeePMD-kit 3.2's dense torch model), with ``@1`` or ``@2`` torch threads (default 2);
``train``, one eager training step of ``bench_train_step.py`` (small preset, 4 x 32-atom frames: the system
size options do not apply), reported per atom of the step.
Each child runs with exactly the OpenMP wait policy its name says, libgomp's default when it names none:
``+passive`` is ``OMP_WAIT_POLICY=PASSIVE`` (threads sleep at once instead of spinning while they wait),
``+spinN`` is ``GOMP_SPINCOUNT=N`` (spin N times, then sleep; libgomp's default is 300,000; graphdesc's
policy, :mod:`graphdesc.threads`, is ``+spin1000``)::

    python benchmarks/bench_shared_cpu.py                         # Cu fp64 256 atoms, results/shared_cpu.*
    python benchmarks/bench_shared_cpu.py --rounds 2 \
        --paths graph+passive,graph+spin1000,graph+spin10000,graph+spin100000,graph@1 \
        --out benchmarks/results/shared_cpu_policies.json
    python benchmarks/bench_shared_cpu.py --cells 6 --rounds 3    # 864 atoms
    python benchmarks/bench_shared_cpu.py --report benchmarks/results/shared_cpu.json   # re-render the .md
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from _timing import rerender, save_results  # noqa: E402

from graphdesc.threads import USER_KNOBS  # noqa: E402  (sets nothing for the children: run_path chooses)

#: ``+SUFFIX`` of a path -> the OpenMP environment of its child. No suffix: libgomp's default spin count, set
#: explicitly, since the children import graphdesc before torch (benchmarks/_timing), which would set its own.
POLICIES = {"": {"GOMP_SPINCOUNT": "300000"}, "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
            **{f"spin{n}": {"GOMP_SPINCOUNT": str(n)} for n in (0, 1000, 10000, 100000, 1000000)}}
NAMES = ("graph", "graph-pt2", "deepmd", "train")
LEVELS = {"none": (), "light": (1,), "medium": (2,), "heavy": (2, 2)}  # threads of each competitor
COMPETITOR = ("import torch, sys\ntorch.set_num_threads(int(sys.argv[1]))\n"
              "a = torch.randn(800, 800, dtype=torch.float64)\nwhile True:\n    a = torch.tanh(a @ a)\n")


def start_competitors(level: str) -> list:
    """The competitors of ``level``, under libgomp's default wait policy (never the one this process may have)."""
    env = {k: v for k, v in os.environ.items() if k not in USER_KNOBS}
    procs = [subprocess.Popen([sys.executable, "-c", COMPETITOR, str(t)], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL) for t in LEVELS[level]]
    time.sleep(1.0 if procs else 0.0)
    return procs


def stop(procs: list) -> float:
    """Kill the competitors; the CPU seconds they used (proof that they ran)."""
    used = 0.0
    for p in procs:
        with open(f"/proc/{p.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        used += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
        p.kill()
    for p in procs:
        p.wait()
    return used


def run_path(args, path: str, model_path: str, package: str | None) -> dict:
    path, _, policy = path.partition("+")
    name, _, threads = path.partition("@")
    # every child gets exactly its policy: none set means libgomp's default (importing graphdesc in this process
    # may have set graphdesc's policy in os.environ, which children would otherwise inherit)
    env = {k: v for k, v in os.environ.items() if k not in USER_KNOBS}
    env.update(POLICIES[policy])
    if name == "train":  # one eager training step of bench_train_step (small preset, 4 x 32 atoms), per atom
        cmd = [sys.executable, os.path.join(HERE, "bench_train_step.py"), "--child", "eager", "auto", "--steps", "21"]
        return dict(us_per_atom=1e6 * _child(cmd, env, path)["median_step_s"] / 128)
    cmd = [sys.executable, os.path.join(HERE, "bench_dpa1.py"), "--child", "--system", args.system,
           "--precision", args.precision, "--path", name, "--cells", str(args.cells), "--model", model_path,
           "--device", "cpu", "--threads", threads or "2", "--repeats", str(args.repeats), "--budget",
           str(args.budget), "--force-out", os.path.join(args.cache, f"shared-{name}.npy")]
    if package:
        cmd += ["--package", package]
    return _child(cmd, env, path)


def _child(cmd: list, env: dict, path: str) -> dict:
    """Run a benchmark child; the JSON of its last output line."""
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{path} failed: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def markdown(result: dict) -> str:
    meta = result["meta"]
    paths, levels = meta["paths"], meta["levels"]
    med = {(r["path"], r["level"]): r["ms_per_atom"] for r in result["rows"]}
    evals = [p for p in paths if not p.startswith("train")]
    what = [f"{meta['system']} {meta['precision']} {meta['atoms']} atoms energy+force"] if evals else []
    what += ["one eager training step (small preset, 4 x 32-atom frames)"] * (len(evals) < len(paths))
    lines = [f"`python benchmarks/bench_shared_cpu.py`, {' and '.join(what)}, {meta['rounds']} rounds, "
             f"torch {meta['torch']}, {meta['cpus']} CPUs, {meta['date']}, load {meta['load']} at the start. "
             "ms/atom (median over rounds), and the slowdown against no competition.", "",
             "| path | " + " | ".join(f"{lv} ms/atom" for lv in levels) + " | "
             + " | ".join(f"{lv} slowdown" for lv in levels if lv != "none") + " |",
             "|---|" + "---:|" * (2 * len(levels) - 1)]
    for path in paths:
        base = med[(path, "none")]
        lines.append(f"| {path} | " + " | ".join(f"{med[(path, lv)]:.2f}" for lv in levels) + " | "
                     + " | ".join(f"{med[(path, lv)] / base:.2f}x" for lv in levels if lv != "none") + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--system", default="cu")
    parser.add_argument("--precision", default="float64", choices=("float64", "float32"))
    parser.add_argument("--cells", type=int, default=4, help="cells per side (cu: 4 -> 256 atoms)")
    parser.add_argument("--paths", default="graph,graph+spin1000,graph@1,graph-pt2+spin1000,deepmd")
    parser.add_argument("--levels", default="none,light,medium,heavy")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--budget", type=float, default=3.0)
    parser.add_argument("--cache", default=os.path.join(HERE, ".cache"))
    parser.add_argument("--out", default=os.path.join(HERE, "results", "shared_cpu.json"))
    parser.add_argument("--report", metavar="JSON", help="only re-render the .md of an earlier run")
    args = parser.parse_args(argv)
    if args.report:
        rerender(args.report, markdown)
        return 0
    import torch

    from bench_dpa1 import SYSTEMS, _atoms, make_model, make_package

    levels = [lv.strip() for lv in args.levels.split(",")]
    paths = [p.strip() for p in args.paths.split(",")]
    names = [p.partition("@")[0].partition("+")[0] for p in paths]
    for flag, values, allowed in (("--levels", levels, LEVELS), ("--paths", names, NAMES),
                                  ("--paths", [p.partition("+")[2] for p in paths], POLICIES)):
        bad = [v for v in values if v not in allowed]
        if bad:
            parser.error(f"{flag}: unknown {bad}; choose from {', '.join(allowed)}")
    if "none" not in levels:
        parser.error("--levels: 'none' is the reference of every slowdown")
    if args.system not in SYSTEMS:
        parser.error(f"--system: unknown {args.system!r}")
    os.makedirs(args.cache, exist_ok=True)
    model_path = make_model(args.system, args.precision, args.cache)
    packages = {p: make_package(model_path, "cpu", args.cache) if p.startswith("graph-pt2") else None for p in paths}
    load = os.getloadavg()[0]
    times = {(p, lv): [] for p in paths for lv in levels}
    competitor_cpu = dict.fromkeys(levels, 0.0)
    for r in range(args.rounds):
        for level in levels:
            procs = start_competitors(level)
            try:
                for path in paths:
                    row = run_path(args, path, model_path, packages[path])
                    times[(path, level)].append(row["us_per_atom"] / 1e3)
                    print(f"round {r + 1} {level:6} {path:12} {times[(path, level)][-1]:8.2f} ms/atom", flush=True)
            finally:
                competitor_cpu[level] += stop(procs)
    rows = [dict(path=p, level=lv, ms_per_atom=statistics.median(t), rounds=t) for (p, lv), t in times.items()]
    meta = dict(system=args.system, precision=args.precision, atoms=_atoms(args.system, args.cells), paths=paths,
                levels=levels, competitor_cpu_s=competitor_cpu, rounds=args.rounds, torch=torch.__version__,
                cpus=os.cpu_count(),
                date=datetime.date.today().isoformat(), load=round(load, 1), command=" ".join(sys.argv))
    result = dict(meta=meta, rows=rows)
    print("\n" + markdown(result))
    save_results(result, args.out, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
