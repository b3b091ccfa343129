"""One DeePMD-kit input.json, trained by graphdesc and by DeePMD-kit 3.2's own trainer (``dp --pt train``).

The demo data (192 EMT frames of 32-atom fcc Cu/Al-Cu; graphdesc's
``--demo`` split, 144 training and 48 validation frames) are written as
DeePMD-kit systems; one ``input.json`` (se_atten with the ``small`` preset's
sizes, ener fitting, exp learning rate 3e-3 -> 1e-4, ener loss with a virial
term; DeePMD-kit's input defaults elsewhere, e.g. the 1/N loss normalization)
is trained for 600 steps by both codes, with several seeds each, runs
interleaved. Both validate on the whole validation set (``numb_btch`` x
``batch_size`` = 48 frames) every ``disp_freq`` steps, and their learning
curves (``lcurve.out``) are compared: per step, the mean and the spread
(min-max) over the seeds of each code.

DeePMD-kit's compiled op library targets torch 2.11; its DPA1 training does
not need it, so the runner imports ``deepmd.pt`` without it (as
``bench_dpa1.py`` does).

    python benchmarks/bench_train_deepmd.py                   # 600 steps, 3 seeds each
    python benchmarks/bench_train_deepmd.py --steps 100 --seeds 1   # a quick look

Results: ``benchmarks/results/train_deepmd.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
COLUMNS = ("energy", "force", "virial")

_DP_RUNNER = """
import sys, types
stub = types.ModuleType("deepmd.pt.cxx_op")
stub.ENABLE_CUSTOMIZED_OP = False
stub.__all__ = ["ENABLE_CUSTOMIZED_OP"]
sys.modules["deepmd.pt.cxx_op"] = stub  # the op library is built for torch 2.11; DPA1 does not use it
from deepmd.main import main
sys.exit(main(sys.argv[1:]))
"""


def make_input(work: Path, steps: int, seed: int, disp: int) -> Path:
    """The demo data as DeePMD-kit systems and the input.json both codes train on."""
    from graphdesc.train import GraphCache, emt_dataset
    from graphdesc.train.deepmd_data import write_systems

    if not (work / "data").exists():
        train_set, val_set = emt_dataset(192, seed=0).split(0.25, seed=0)
        write_systems(train_set, work / "data" / "train")
        write_systems(val_set, work / "data" / "val")
        max_deg = GraphCache(train_set, 5.0).max_degree()
        (work / "sel.txt").write_text(str(4 * -(-int(1.1 * max_deg) // 4)))
    sel = int((work / "sel.txt").read_text())
    data = {
        "model": {"type_map": ["Al", "Cu"],
                  "descriptor": {"type": "se_atten", "sel": sel, "rcut": 5.0, "rcut_smth": 0.5, "neuron": [8, 16, 32],
                                 "axis_neuron": 8, "tebd_dim": 8, "attn": 32, "attn_layer": 1,
                                 "precision": "float64", "seed": seed},
                  "fitting_net": {"neuron": [64, 64, 64], "precision": "float64", "seed": seed}},
        "learning_rate": {"type": "exp", "start_lr": 3e-3, "stop_lr": 1e-4},
        "loss": {"type": "ener", "start_pref_e": 0.02, "limit_pref_e": 1, "start_pref_f": 1000, "limit_pref_f": 1,
                 "start_pref_v": 0.02, "limit_pref_v": 1},
        "training": {"training_data": {"systems": [str(work / "data" / "train" / "pbc-32")], "batch_size": 4},
                     "validation_data": {"systems": [str(work / "data" / "val" / "pbc-32")], "batch_size": 4,
                                         "numb_btch": 12},
                     "numb_steps": steps, "seed": seed, "disp_freq": disp, "save_freq": steps},
    }
    path = work / f"input-{seed}.json"
    path.write_text(json.dumps(data, indent=1))
    return path


def run_graphdesc(inp: Path, out: Path) -> dict:
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "graphdesc", "train", str(inp), "-o", str(out), "--no-progress"],
                          capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"graphdesc train failed:\n{done.stdout}\n{done.stderr}")
    curve = np.loadtxt(out / "lcurve.out", ndmin=2)
    history = json.loads((out / "history.json").read_text())
    return {"step": curve[:, 0].astype(int).tolist(), **{c: curve[:, 1 + k].tolist() for k, c in enumerate(COLUMNS)},
            "ms_per_step": 1e3 * float(np.median(history["step_seconds"][1:])), "wall_s": time.perf_counter() - t0}


def run_deepmd(inp: Path, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    runner = out / "run_dp.py"
    runner.write_text(_DP_RUNNER)
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, str(runner), "--pt", "train", str(inp)], cwd=out, capture_output=True,
                          text=True)
    if done.returncode:
        raise RuntimeError(f"dp --pt train failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    wall = time.perf_counter() - t0
    names = open(out / "lcurve.out").readline().lstrip("#").split()
    curve = np.loadtxt(out / "lcurve.out", ndmin=2)
    col = {n: k for k, n in enumerate(names)}
    per_batch = [float(line.split("average training time:")[1].split()[0]) for line in done.stderr.splitlines()
                 + done.stdout.splitlines() if "average training time:" in line]
    return {"step": curve[:, 0].astype(int).tolist(),
            **{c: curve[:, col[f"rmse_{c[0]}_val"]].tolist() for c in COLUMNS},
            "ms_per_step": 1e3 * per_batch[0] if per_batch else None, "wall_s": wall}


def summarize(runs: dict, steps: list) -> list:
    rows = []
    for step in steps:
        row = {"step": step}
        for code, seeds in runs.items():
            for c in COLUMNS:
                values = [r[c][r["step"].index(step)] for r in seeds if step in r["step"]]
                if values:
                    row[f"{code}_{c}"] = (float(np.mean(values)), float(np.min(values)), float(np.max(values)))
        rows.append(row)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--seeds", type=int, default=3, help="seeds per code (default 3)")
    parser.add_argument("--disp", type=int, default=50, help="steps between validations (default 50)")
    parser.add_argument("--into", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    print(f"graphdesc vs DeePMD-kit trainer on one input.json: {args.steps} steps, {args.seeds} seeds each; "
          f"load {os.getloadavg()[0]:.2f} at start", flush=True)
    runs = {"graphdesc": [], "deepmd": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for seed in range(1, args.seeds + 1):
            inp = make_input(work, args.steps, seed, args.disp)
            for code, fn in (("graphdesc", run_graphdesc), ("deepmd", run_deepmd)):
                r = fn(inp, work / f"{code}-{seed}")
                r["seed"] = seed
                runs[code].append(r)
                print(f"  {code:9s} seed {seed}: final val E {1e3 * r['energy'][-1]:7.2f} meV/atom, "
                      f"F {1e3 * r['force'][-1]:7.2f} meV/A, V {1e3 * r['virial'][-1]:7.2f} meV/atom; "
                      f"{r['ms_per_step']:.0f} ms/step, {r['wall_s']:.0f} s", flush=True)
        example = json.loads(inp.read_text())
    shared = sorted(set(runs["graphdesc"][0]["step"]) & set(runs["deepmd"][0]["step"]))
    table = summarize(runs, shared)
    lines = ["| step | " + " | ".join(f"{code} {c[0].upper()} val" for c in COLUMNS for code in runs) + " |",
             "|---:|" + "---:|" * (2 * len(COLUMNS))]
    for row in table:
        cells = []
        for c in COLUMNS:
            for code in runs:
                mean, lo, hi = row[f"{code}_{c}"]
                cells.append(f"{1e3 * mean:.1f} ({1e3 * lo:.1f}-{1e3 * hi:.1f})")
        lines.append(f"| {row['step']} | " + " | ".join(cells) + " |")
    speed = {code: float(np.median([r["ms_per_step"] for r in rs if r["ms_per_step"]])) for code, rs in runs.items()}
    wall = {code: float(np.median([r["wall_s"] for r in rs])) for code, rs in runs.items()}
    text = ("Validation RMSEs, meV/atom (E, V) and meV/A (F): mean (min-max) over "
            f"{args.seeds} seeds per code.\n\n" + "\n".join(lines)
            + f"\n\nmedian wall time of a whole run ({args.steps} steps, the same validations, start-up included): "
              f"graphdesc {wall['graphdesc']:.0f} s, DeePMD-kit {wall['deepmd']:.0f} s. Each code's own per-step "
              f"figure: graphdesc {speed['graphdesc']:.0f} ms (optimizer steps only), DeePMD-kit "
              f"{speed['deepmd']:.0f} ms ('average training time': display intervals, validation included)\n")
    print("\n" + text)
    meta = {"steps": args.steps, "seeds": args.seeds, "disp": args.disp, "load_at_end": os.getloadavg()[0],
            "date": time.strftime("%Y-%m-%d %H:%M"), "input": example, "ms_per_step": speed, "wall_s": wall}
    args.into.mkdir(parents=True, exist_ok=True)
    (args.into / "train_deepmd.json").write_text(json.dumps({"meta": meta, "table": table, "runs": runs}, indent=1))
    (args.into / "train_deepmd.md").write_text(text)
    _plot(runs, args.into / "train_deepmd.png")
    print(f"wrote {args.into}/train_deepmd.{{json,md,png}}")
    return 0


def _plot(runs: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, c, unit in zip(axes, COLUMNS, ("meV/atom", "meV/A", "meV/atom")):
        for code, color in (("graphdesc", "C0"), ("deepmd", "C3")):
            for k, r in enumerate(runs[code]):
                ax.plot(r["step"], 1e3 * np.array(r[c]), color=color, alpha=0.7,
                        label=("DeePMD-kit 3.2" if code == "deepmd" else code) if k == 0 else None)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel(f"validation {c} RMSE ({unit})")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle("one DeePMD-kit input.json, trained by graphdesc and by dp --pt train (demo data)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
