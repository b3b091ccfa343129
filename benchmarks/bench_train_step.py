"""Wall time of one training step (forward, forces, E/F/V loss, backward, Adam) in each execution mode.

EMT demo frames (32-atom fcc Cu/Al-Cu cells), the CLI's ``small`` preset
(rcut 5, neuron [8, 16, 32], attn 32, one attention layer, fitting [64]*3),
float64, DeePMD's prefactors with a virial term. For each mode the script
trains ``--steps`` steps through :func:`graphdesc.train.train` and reports
the first step (it includes tracing and compilation) and the median of the
others. The loss after the last step is printed too: every mode must land on
the same number (eager and compiled gradients agree to rounding).

``--attention`` runs each mode with each layout of the block stage (``blocks``, ``buckets``, ``auto``...), and
``--rounds R`` repeats the whole set R times, interleaved, reporting per (mode, layout) the median over the
rounds of each run's median step; ``--against REV`` adds graphdesc as of git revision ``REV`` (a worktree under
``benchmarks/.cache``), run the same way, interleaved. Every run is a fresh process. Writes JSON and its table
as ``.md`` beside it.

    python benchmarks/bench_train_step.py [--steps 41] [--batch-size 4] [--modes eager,traced,aot_eager,inductor]
    python benchmarks/bench_train_step.py --modes eager --attention blocks,buckets --rounds 3 --steps 31 \
        --json benchmarks/results/train_step_layouts.json
    python benchmarks/bench_train_step.py --modes eager,inductor --against 789c41b --rounds 3 \
        --json benchmarks/results/train_step_vs_789c41b.json
    python benchmarks/bench_train_step.py --report benchmarks/results/train_step.json   # re-render the .md
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics

from _timing import check_code, code_env, commit, rerender, save_results, worktree  # first: graphdesc before torch

import torch  # noqa: I001

HERE = os.path.dirname(os.path.abspath(__file__))
HEAD = ("| mode | attention | first step (s) | median step (ms) | µs/atom | loss after the last step | "
        "max/min of rounds |\n|---|---|---:|---:|---:|---:|---:|")


def row_line(row: dict) -> str:
    code = f"{row['code']} " if row.get("code", "HEAD") != "HEAD" else ""
    return (f"| {code}{row['mode']} | {row.get('attention', 'auto')} | {row['first_step_s']:.1f} | "
            f"{row['median_step_ms']:.1f} | {row['us_per_atom']:.0f} | {row['final_loss']:.12g} | "
            f"{row.get('spread', 1.0):.2f} |")


def markdown(result: dict) -> str:
    return "\n".join([
        f"`python benchmarks/bench_train_step.py`, small preset, float64, {result['atoms_per_step']} atoms per step, "
        f"{result['steps']} steps, {result.get('rounds', 1)} round(s), torch {result['torch']}, {result['cpus']} CPUs, "
        f"{result.get('date', 'undated')}, load {result.get('load', '?')} at the start.", "",
        HEAD, *map(row_line, result["rows"])]) + "\n"


def one_run(mode: str, attention: str, steps: int, batch_size: int) -> dict:
    """Train a fresh small model ``steps`` steps in ``mode``; its first and median step and final loss."""
    from graphdesc.cli import _new_model
    from graphdesc.train import LossConfig, TrainConfig, emt_dataset, fit_statistics, train

    data = emt_dataset(48, seed=0)
    model, _ = _new_model(data, "small")
    model.attention = attention  # code that predates the layouts ignores it
    fit_statistics(model, data)
    config = TrainConfig(steps=steps, batch_size=batch_size, mode=mode,
                         loss=LossConfig(0.02, 1.0, 1000.0, 1.0, 0.02, 1.0))
    history = train(model, data, None, config, progress=False, log=lambda s: None)
    import graphdesc

    return dict(first_step_s=history.step_seconds[0], median_step_s=history.median_step_seconds,
                final_loss=history.rows[-1]["train_loss"], package=os.path.dirname(graphdesc.__file__))


def main() -> None:
    import json
    import subprocess
    import sys

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=41)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--modes", default="eager,traced,aot_eager,inductor")
    parser.add_argument("--json", default=os.path.join(HERE, "results", "train_step.json"))
    parser.add_argument("--attention", default="auto", help="comma list of block-stage layouts")
    parser.add_argument("--rounds", type=int, default=1, help="repeat every run, interleaved")
    parser.add_argument("--against", metavar="REV", help="also run graphdesc as of git revision REV, interleaved")
    parser.add_argument("--report", metavar="JSON", help="only re-render the .md of an earlier run")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "ATTENTION"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.report:
        return rerender(args.report, markdown)
    if args.child:
        print(json.dumps(one_run(*args.child, args.steps, args.batch_size)))
        return None

    atoms = args.batch_size * 32
    load = os.getloadavg()[0]
    print(f"training step, small preset, float64, {args.batch_size} frames = {atoms} atoms per step, "
          f"torch {torch.__version__}, {os.cpu_count()} CPUs, load {load:.1f}\n")
    against = commit(args.against) if args.against else None
    codes = {"HEAD": os.path.dirname(HERE), **({against: worktree(against)} if against else {})}
    runs = {(c, m, a): [] for m in args.modes.split(",") for a in args.attention.split(",") for c in codes}
    for r in range(args.rounds):
        for (code, mode, attention), done in runs.items():
            proc = subprocess.run([sys.executable, __file__, "--child", mode, attention, "--steps", str(args.steps),
                                   "--batch-size", str(args.batch_size)], env=code_env(codes[code]),
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"{code} {mode} {attention} failed: {proc.stderr.strip().splitlines()[-1:]}")
            done.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            check_code(done[-1]["package"], codes[code], code)
            print(f"round {r + 1}: {code} {mode} {attention} {1e3 * done[-1]['median_step_s']:.1f} ms/step",
                  flush=True)
    rows = []
    for (code, mode, attention), runs_ in runs.items():
        medians = [run["median_step_s"] for run in runs_]
        step = statistics.median(medians)
        rows.append(dict(code=code, mode=mode, attention=attention, first_step_s=runs_[0]["first_step_s"],
                         median_step_ms=1e3 * step, us_per_atom=1e6 * step / atoms,
                         final_loss=runs_[0]["final_loss"], spread=max(medians) / min(medians)))
    result = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
              "torch": torch.__version__, "atoms_per_step": atoms, "steps": args.steps, "rounds": args.rounds,
              "date": datetime.date.today().isoformat(), "load": round(load, 1), "rows": rows}
    print("\n" + markdown(result))
    save_results(result, args.json, markdown)


if __name__ == "__main__":
    main()
