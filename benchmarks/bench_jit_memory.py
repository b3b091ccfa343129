"""The jitted JAX energy model's memory plan: one-width blocks, the pair path in chunks, the pair path whole.

    python benchmarks/bench_jit_memory.py                  # fcc Cu fp64, 32, 108 and 256 atoms
    python benchmarks/bench_jit_memory.py --cells 2,3 --rounds 3
    python benchmarks/bench_jit_memory.py --report benchmarks/results/jit_memory.json   # re-render the .md

Under ``jax.jit`` the static layout is one piece. The pair path maps over chunks of centers inside the
program (``lax.map`` of ``jax.checkpoint``), so its gathered ``(pairs, attn)`` rows exist for one chunk at a
time; "pairs, whole" is the same program with the chunk budget set beyond the system (one chunk), as it was
before the chunks, and "no checkpoint" maps the chunks without ``jax.checkpoint`` (the scan then keeps every
chunk's residuals for the backward). The memory is XLA's own plan for the compiled energy+force program
(``compiled.memory_analysis().temp_size_in_bytes``: scratch beyond the inputs and outputs), next to the size of
one ``(P, attn)`` array. Times are medians of interleaved calls (blocks and chunked pairs; the whole pair
program runs only where its plan is under ``--run-limit-gib``). The bench_dpa1 model (its cache) and structures.
"""

from __future__ import annotations

import argparse
import datetime
import os
import pickle
import statistics
import sys
import time

from _timing import command_line, git_head, save_results, start_sized_run, sized_run_args

VARIANTS = ("blocks", "pairs, chunks", "pairs, chunks, no checkpoint", "pairs, whole")


def measure(system: str, cells: int, cache: str, rounds: int, run_limit: float) -> dict:
    """XLA scratch bytes and median ms/atom of each variant, and their max |dF| against blocks."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    import graphdesc.descriptor.graph_path as gp
    from bench_dpa1 import RCUT, make_model, system_positions
    from graphdesc.descriptor import cast_params
    from graphdesc.graph import NeighborGraph, build_graph, to_static
    from graphdesc.jax import energy_jit

    with open(make_model(system, "float64", cache), "rb") as f:
        config, params = pickle.load(f)["graphdesc"]
    desc = config.descriptor
    positions, cell = system_positions(system, cells)
    static = to_static(build_graph(positions, RCUT, cell=cell, pbc=True), desc.sel)
    graph = NeighborGraph(*(jnp.asarray(np.asarray(getattr(static, k)))
                            for k in ("edge_index", "edge_vec", "edge_mask", "n_node")))
    pj, atype, n = cast_params(params, jnp.zeros(1)), jnp.zeros(len(positions), dtype=jnp.int64), len(positions)
    budget = gp.CHUNK_BYTES
    compiled, plan = {}, {}
    checkpoint = jax.checkpoint
    for variant in VARIANTS:
        gp.CHUNK_BYTES = 2**50 if variant == "pairs, whole" else budget
        if variant.endswith("no checkpoint"):
            jax.checkpoint = lambda f: f
        try:  # the budget and the checkpoint are read while tracing, so they are fixed once compiled
            lowered = jax.jit(energy_jit(config, attention=variant.split(",")[0])).lower(pj, graph, atype)
            compiled[variant] = lowered.compile()
        finally:
            gp.CHUNK_BYTES, jax.checkpoint = budget, checkpoint
        plan[variant] = compiled[variant].memory_analysis().temp_size_in_bytes
    run = [v for v in VARIANTS if plan[v] <= run_limit * 2**30]
    forces = {v: np.asarray(compiled[v](pj, graph, atype)["force"]) for v in run}
    times = {v: [] for v in run}
    for _ in range(rounds):
        for v in run:
            t0 = time.perf_counter()
            jax.block_until_ready(compiled[v](pj, graph, atype))
            times[v].append(time.perf_counter() - t0)
    pair_rows = n * desc.sel ** 2 * desc.attn * 8
    return dict(system=system, atoms=n, sel=desc.sel, attn=desc.attn, pair_rows_mib=pair_rows / 2**20, variants=[
        dict(variant=v, temp_mib=plan[v] / 2**20,
             ms_per_atom=1e3 * statistics.median(times[v]) / n if v in run else None,
             df_max_vs_blocks=float(np.abs(forces[v] - forces["blocks"]).max()) if v in run else None)
        for v in VARIANTS])


def markdown(result: dict) -> str:
    lines = [f"`{result['command']}`, jax {result['jax']} ({result['platform']}), {result['date']} at "
             f"{result['code']}, load {result['load']} at the start: the jitted energy+force program of the "
             "static layout, XLA's scratch plan and median time of interleaved calls.", "",
             "| system | atoms | variant | XLA scratch MiB | scratch MiB/atom | one (P, attn) array MiB | "
             "ms/atom | blocks / variant time | max \\|ΔF\\| vs blocks (eV/Å) |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for point in result["points"]:
        blocks = point["variants"][0]["ms_per_atom"]
        for v in point["variants"]:
            ran = v["ms_per_atom"] is not None
            lines.append(f"| {point['system']} | {point['atoms']} | {v['variant']} | {v['temp_mib']:.0f} | "
                         f"{v['temp_mib'] / point['atoms']:.2f} | {point['pair_rows_mib']:.0f} | "
                         + (f"{v['ms_per_atom']:.2f} | {blocks / v['ms_per_atom']:.2f}x | "
                            f"{v['df_max_vs_blocks']:.1e} |" if ran else "not run | – | – |"))
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--system", default="cu")
    parser.add_argument("--rounds", type=int, default=5, help="timed calls per variant, interleaved")
    parser.add_argument("--run-limit-gib", type=float, default=1.0,
                        help="run (time) a variant only if XLA plans at most this much scratch")
    sized_run_args(parser, "jit_memory.json", cells="2,3,4")
    started = start_sized_run(parser, argv, markdown)
    if started is None:
        return 0
    args, cells = started
    import jax

    jax.config.update("jax_enable_x64", True)
    result = dict(command=command_line("bench_jit_memory.py", argv), code=git_head(), jax=jax.__version__,
                  platform=jax.default_backend(), date=datetime.date.today().isoformat(),
                  load=round(os.getloadavg()[0], 1), points=[])
    for c in cells:
        result["points"].append(measure(args.system, c, args.cache, args.rounds, args.run_limit_gib))
        print("\n".join(markdown(result).splitlines()[-3:]), flush=True)
    print(markdown(result))
    save_results(result, args.out, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
