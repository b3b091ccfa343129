"""Peak memory and time of one training step (energy, forces, E/F loss, backward) per block-stage layout.

    python benchmarks/bench_train_memory.py                        # 64 demo frames (2048 atoms), eager
    python benchmarks/bench_train_memory.py --frames 16 --modes eager,inductor --attention blocks,pairs
    python benchmarks/bench_train_memory.py --against 10967f0      # also the code of another commit, interleaved
    python benchmarks/bench_train_memory.py --report benchmarks/results/train_memory.json   # re-render the .md
    python benchmarks/bench_train_memory.py --modes inductor --against caf4aa2 \
        --out benchmarks/results/train_memory_compiled.json        # compiled training, before the pair operators

A force loss keeps the graph of every piece of the batch for the double backward, so what the block stage
saves for its backward decides the step's memory. Each run is a fresh process: the CLI's ``small`` preset
(float64), statistics fitted, one warm-up step on 2 frames, then two steps on ``--frames`` EMT demo frames
(a step is ``TrainingForward``: forward with ``create_graph``, loss ``sum E + sum F^2``, ``backward``);
the peak RSS (``VmHWM``) after them (in the compiled modes it includes compiling) and the second step's wall
time. Runs of every code and layout are interleaved.
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

from _timing import check_code, code_env, command_line, commit, git_head, rerender, rss_kib, save_results, worktree

HERE = os.path.dirname(os.path.abspath(__file__))


def one_run(attention: str, mode: str, frames: int) -> dict:
    """Peak RSS (MiB) and seconds of one training step on ``frames`` demo frames."""
    import numpy as np
    import torch

    import graphdesc
    from graphdesc.cli import _new_model
    from graphdesc.train import emt_dataset, fit_statistics
    from graphdesc.train.batch import GraphCache
    from graphdesc.train.compiled import TrainingForward

    torch.set_num_threads(2)
    data = emt_dataset(frames, seed=0)
    model, _ = _new_model(data, "small")
    fit_statistics(model, data)
    model.attention = attention
    cache = GraphCache(data, model.config.rcut)
    forward = TrainingForward(model, mode)

    def step(batch):
        out = forward(batch.graph, batch.atype)
        (out["energy"].sum() + out["force"].square().sum()).backward()

    step(cache.batch(np.arange(2)))
    batch = cache.batch(np.arange(frames))
    before = rss_kib("VmHWM")
    step(batch)  # the first step with the batch's shapes (the compiled modes may compile again)
    t0 = time.perf_counter()
    step(batch)
    seconds = time.perf_counter() - t0
    deg = np.bincount(batch.graph.dst.numpy(), minlength=len(batch.atype))
    return dict(peak_mib=rss_kib("VmHWM") / 1024, warm_peak_mib=before / 1024, step_s=seconds,
                atoms=len(batch.atype), pairs=int((deg.astype(np.int64) ** 2).sum()),
                attn=model.config.descriptor.attn, package=os.path.dirname(graphdesc.__file__))


def markdown(result: dict) -> str:
    lines = [f"`{result['command']}`, small preset, float64, {result['frames']} frames, torch {result['torch']}, "
             f"{result['date']}, load {result['load']} at the start; {result['rounds']} round(s), medians.", "",
             "| code | mode | attention | atoms | pairs | one (P, attn) array MiB | peak MiB | step (s) |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for row in result["rows"]:
        lines.append(f"| {row['code']} | {row['mode']} | {row['attention']} | {row['atoms']} | {row['pairs']} | "
                     f"{row['pairs'] * row['attn'] * 8 / 2**20:.0f} | {row['peak_mib']:.0f} | {row['step_s']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--modes", default="eager")
    parser.add_argument("--attention", default="blocks,pairs")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--against", metavar="REV", help="also run graphdesc as of git revision REV, interleaved")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "train_memory.json"))
    parser.add_argument("--report", metavar="JSON", help="only re-render the .md of an earlier run")
    parser.add_argument("--child", nargs=2, metavar=("ATTENTION", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.report:
        rerender(args.report, markdown)
        return 0
    if args.child:
        print(json.dumps(one_run(*args.child, args.frames)))
        return 0
    import torch


    codes = {git_head(): os.path.dirname(HERE)}
    if args.against:
        codes[commit(args.against)] = worktree(args.against)
    result = dict(command=command_line("bench_train_memory.py", argv), frames=args.frames, rounds=args.rounds,
                  torch=torch.__version__, date=datetime.date.today().isoformat(),
                  load=round(os.getloadavg()[0], 1), rows=[])
    runs = {(c, m, a): [] for m in args.modes.split(",") for a in args.attention.split(",") for c in codes}
    for r in range(args.rounds):
        for (code, mode, attention), done in runs.items():
            proc = subprocess.run([sys.executable, __file__, "--child", attention, mode, "--frames", str(args.frames)],
                                  env=code_env(codes[code]), capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"{code} {mode} {attention} failed: {proc.stderr.strip().splitlines()[-1:]}")
            done.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            check_code(done[-1]["package"], codes[code], code)
            print(f"round {r + 1}: {code} {mode} {attention}: {done[-1]['peak_mib']:.0f} MiB, "
                  f"{done[-1]['step_s']:.2f} s", flush=True)
    for (code, mode, attention), done in runs.items():
        result["rows"].append(dict(code=code, mode=mode, attention=attention, atoms=done[0]["atoms"],
                                   pairs=done[0]["pairs"], attn=done[0]["attn"],
                                   peak_mib=statistics.median(d["peak_mib"] for d in done),
                                   step_s=statistics.median(d["step_s"] for d in done)))
    print("\n" + markdown(result))
    save_results(result, args.out, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
