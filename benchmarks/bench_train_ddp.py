"""Data-parallel training throughput: 1 process vs N processes (torch DDP over gloo) on this machine.

Each configuration is the same ``graphdesc train --demo`` run (small preset,
float64, E/F/V loss), with the global batch fixed, so the processes split
every batch between them. Runs are interleaved (1, N, 1, N, ...) and the
median step time of each run is taken from its ``history.json`` (the first
step is left out); the table quotes medians over the repeats.

    python benchmarks/bench_train_ddp.py                      # 1 vs 2 processes, batch 4 and 8
    python benchmarks/bench_train_ddp.py --nproc 2 --batch-sizes 8 --repeats 3

What 2 processes on 2 cores can show: whether splitting a batch over
processes (1 thread each) beats one process using both cores through
intra-op threads. It cannot show multi-node scaling or GPU scaling.
Results: ``benchmarks/results/train_ddp.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def run(nproc: int, threads: int, batch: int, steps: int, frames: int, out: Path) -> dict:
    cmd = [sys.executable, "-m", "graphdesc", "train", "--demo", "--demo-frames", str(frames), "--steps", str(steps),
           "--batch-size", str(batch), "--pref-v", "0.02", "1", "--no-progress", "-o", str(out), "--nproc", str(nproc)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}")
    history = json.loads((out / "history.json").read_text())
    step_s = statistics.median(history["step_seconds"][1:])
    return {"nproc": nproc, "threads": threads, "batch": batch, "step_ms": 1e3 * step_s,
            "steps_per_s": 1 / step_s, "atoms_per_s": 32 * batch / step_s, "wall_s": time.perf_counter() - t0}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--batch-sizes", type=lambda t: [int(v) for v in t.split(",")], default=[4, 8])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--frames", type=int, default=96, help="demo frames (default 96)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--into", type=Path, default=RESULTS, help="results folder (default benchmarks/results)")
    args = parser.parse_args(argv)
    cores = os.cpu_count()
    # one process using every core, one process on one core, N processes on one core each
    configs = [(1, cores), (1, 1), (args.nproc, max(1, cores // args.nproc))]
    print(f"graphdesc DDP training benchmark: {cores} cores, load {os.getloadavg()[0]:.2f} at start; "
          f"{args.steps} steps x {args.repeats} repeats per row, interleaved", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for batch in args.batch_sizes:
            for rep in range(args.repeats):
                for nproc, threads in configs:
                    out = Path(tmp) / f"{nproc}-{threads}-{batch}-{rep}"
                    r = run(nproc, threads, batch, args.steps, args.frames, out)
                    r["repeat"] = rep
                    rows.append(r)
                    print(f"  batch {batch:2d}  {nproc} proc x {threads} thread(s): {r['step_ms']:7.1f} ms/step",
                          flush=True)
    table = []
    for batch in args.batch_sizes:
        base = None
        for nproc, threads in configs:
            mine = [r for r in rows if (r["nproc"], r["threads"], r["batch"]) == (nproc, threads, batch)]
            ms = statistics.median(r["step_ms"] for r in mine)
            spread = max(r["step_ms"] for r in mine) / min(r["step_ms"] for r in mine)
            base = base or ms
            table.append({"batch": batch, "atoms_per_batch": 32 * batch, "nproc": nproc, "threads": threads,
                          "step_ms": ms, "steps_per_s": 1e3 / ms, "atoms_per_s": 32 * batch * 1e3 / ms,
                          "speedup_vs_1proc_all_cores": base / ms, "max_over_min": spread})
    lines = ["| global batch (atoms) | processes x threads | ms/step | steps/s | atoms/s | vs 1 process | "
             "max/min of repeats |", "|---|---|---:|---:|---:|---:|---:|"]
    for t in table:
        lines.append(f"| {t['batch']} ({t['atoms_per_batch']}) | {t['nproc']} x {t['threads']} | {t['step_ms']:.1f} | "
                     f"{t['steps_per_s']:.2f} | {t['atoms_per_s']:.0f} | {t['speedup_vs_1proc_all_cores']:.2f}x | "
                     f"{t['max_over_min']:.2f} |")
    text = "\n".join(lines)
    print("\n" + text)
    meta = {"machine": platform.processor() or platform.machine(), "cores": cores, "python": sys.version.split()[0],
            "load_at_end": os.getloadavg()[0], "steps": args.steps, "repeats": args.repeats, "frames": args.frames,
            "model": "small preset, float64, E/F/V loss", "date": time.strftime("%Y-%m-%d %H:%M")}
    args.into.mkdir(parents=True, exist_ok=True)
    (args.into / "train_ddp.json").write_text(json.dumps({"meta": meta, "table": table, "runs": rows}, indent=1))
    (args.into / "train_ddp.md").write_text(text + "\n")
    print(f"\nwrote {args.into / 'train_ddp.json'} and train_ddp.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
