"""Wall time of one training step (forward, forces, E/F/V loss, backward, Adam) in each execution mode.

EMT demo frames (32-atom fcc Cu/Al-Cu cells), the CLI's ``small`` preset
(rcut 5, neuron [8, 16, 32], attn 32, one attention layer, fitting [64]*3),
float64, DeePMD's prefactors with a virial term. For each mode the script
trains ``--steps`` steps through :func:`graphdesc.train.train` and reports
the first step (it includes tracing and compilation) and the median of the
others. The loss after the last step is printed too: every mode must land on
the same number (eager and compiled gradients agree to rounding).

    python benchmarks/bench_train_step.py [--steps 41] [--batch-size 4] [--modes eager,traced,aot_eager,inductor]
"""

from __future__ import annotations

import argparse
import json
import os
import platform

import torch

HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> None:
    from graphdesc.cli import _new_model
    from graphdesc.train import LossConfig, TrainConfig, emt_dataset, fit_statistics, train

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=41)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--modes", default="eager,traced,aot_eager,inductor")
    parser.add_argument("--json", default=os.path.join(HERE, "results", "train_step.json"))
    args = parser.parse_args()

    data = emt_dataset(48, seed=0)
    atoms = args.batch_size * 32
    rows = []
    print(f"training step, small preset, float64, {args.batch_size} frames = {atoms} atoms per step, "
          f"torch {torch.__version__}, {os.cpu_count()} CPUs\n")
    print(f"| mode | first step (s) | median step (ms) | µs/atom | loss after {args.steps} steps |")
    print("|---|---:|---:|---:|---:|")
    for mode in args.modes.split(","):
        model, _ = _new_model(data, "small")
        fit_statistics(model, data)
        config = TrainConfig(steps=args.steps, batch_size=args.batch_size, mode=mode,
                             loss=LossConfig(0.02, 1.0, 1000.0, 1.0, 0.02, 1.0))
        history = train(model, data, None, config, progress=False, log=lambda s: None)
        row = dict(mode=mode, first_step_s=history.step_seconds[0], median_step_ms=1e3 * history.median_step_seconds,
                   us_per_atom=1e6 * history.median_step_seconds / atoms, final_loss=history.rows[-1]["train_loss"])
        rows.append(row)
        print(f"| {mode} | {row['first_step_s']:.1f} | {row['median_step_ms']:.1f} | {row['us_per_atom']:.0f} | "
              f"{row['final_loss']:.12g} |", flush=True)
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as fh:
        json.dump({"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                   "torch": torch.__version__, "atoms_per_step": atoms, "steps": args.steps, "rows": rows}, fh,
                  indent=1)
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
