"""Measured DPA1 parity: the numbers behind the tests, printed instead of asserted.

Runs the test suite's case matrix (tests/dpa1_cases.py) and reports max
absolute errors (float64):

* graph path (compact and shape-static; one-width blocks, degree buckets and
  center-edge pairs) vs the dense reference, per backend, native and
  deepmd_compat semantics; cross-backend agreement with numpy;
* graphdesc loaded from DeePMD-kit's serialized dict vs DeePMD-kit 3.2's
  dense ``call`` (deepmd.dpmodel), with random davg (compat) and davg = 0 (native);
* rotation / translation / permutation invariance;
* the descriptor change across rcut relative to the median step nearby.

    python benchmarks/dpa1_parity.py [--out benchmarks/results/dpa1_parity.json]
    python benchmarks/dpa1_parity.py --report benchmarks/results/dpa1_parity.json   # re-render the .md

Writes the JSON and its tables as ``.md`` beside it (the manual includes the ``.md``).
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

from _timing import rerender, save_results  # noqa: E402

from dpa1_cases import CONFIGS, SEL, SYSTEMS, convert, make_config, make_system, random_params  # noqa: E402
from helpers import Backend, to_numpy  # noqa: E402

from graphdesc.descriptor import cast_params, dense_inputs, dpa1_dense, dpa1_graph, params_from_deepmd  # noqa: E402
from graphdesc.graph import build_graph, to_static  # noqa: E402


def graph_vs_dense():
    worst = {}
    cross = 0.0
    count = 0
    for name in CONFIGS:
        config = make_config(name)
        params = random_params(config, seed=len(name))
        for system in SYSTEMS:
            graph, atype, _ = make_system(system, config.ntypes)
            for compat in (False, True):
                ref = dpa1_graph(params, config, graph, atype, deepmd_compat=compat)
                for bname in ("numpy", "torch", "jax"):
                    b = Backend(bname)
                    p, a = cast_params(params, b.asarray(np.zeros(1))), b.asarray(atype)
                    dense = dpa1_dense(p, config, **{k: b.asarray(np.asarray(v)) for k, v in
                                                     dense_inputs(graph, atype, SEL).items()}, deepmd_compat=compat)
                    outs = {}
                    for att in ("blocks", "buckets", "pairs"):
                        outs[f"compact {att}"] = dpa1_graph(p, config, convert(graph, b), a, deepmd_compat=compat,
                                                            attention=att)
                        outs[f"static {att}"] = dpa1_graph(p, config, convert(to_static(graph, SEL), b), a,
                                                           deepmd_compat=compat, static=True, attention=att)
                    for layout, (d, r) in outs.items():
                        key = (bname, layout, "compat" if compat else "native")
                        err = max(np.abs(to_numpy(d) - to_numpy(dense[0])).max(),
                                  np.abs(to_numpy(r) - to_numpy(dense[1])).max())
                        worst[key] = max(worst.get(key, 0.0), float(err))
                    cross = max(cross, *(float(np.abs(to_numpy(outs[f"compact {att}"][0]) - ref[0]).max())
                                         for att in ("blocks", "pairs")))
                    count += 1
    return worst, cross, count


def deepmd_parity():
    from test_descriptor_deepmd import PARITY_CONFIGS, PARITY_SYSTEMS, deepmd_call, native_deepmd

    compat, native = 0.0, 0.0
    for name in PARITY_CONFIGS:
        config = make_config(name)
        for davg in (True, False):
            desc, serialized = native_deepmd(config, seed=3, davg=davg)
            cfg, params = params_from_deepmd(serialized)
            for system in PARITY_SYSTEMS:
                graph, atype, frames = make_system(system, config.ntypes)
                ref_d, ref_r, _ = deepmd_call(desc, graph, atype, frames)
                err = 0.0
                for att in ("blocks", "buckets", "pairs"):
                    d, r = dpa1_graph(params, cfg, graph, atype, deepmd_compat=davg, attention=att)
                    err = max(err, float(max(np.abs(d - ref_d).max(), np.abs(r - ref_r).max())))
                if davg:
                    compat = max(compat, err)
                else:
                    native = max(native, err)
    return compat, native, len(PARITY_CONFIGS) * len(PARITY_SYSTEMS)


INVARIANCE_CONFIGS, INVARIANCE_SYSTEMS = ("default", "rough_raw_3types"), ("triclinic", "cluster")


def invariances():
    from test_descriptor_props import _rotation

    worst = 0.0
    for name in INVARIANCE_CONFIGS:
        config = make_config(name)
        params = random_params(config, isotropic=True)
        for system in INVARIANCE_SYSTEMS:
            _, atype, frames = make_system(system, config.ntypes)
            pos, cell, pbc = frames[0]

            def run(p, c, t):
                return dpa1_graph(params, config, build_graph(p, config.rcut, cell=c, pbc=pbc), t)  # noqa: B023

            d0, r0 = run(pos, cell, atype)
            rot = _rotation(1)
            perm = np.random.default_rng(2).permutation(len(atype))
            for d, r, dr, rr in [(*run(pos @ rot.T, None if cell is None else cell @ rot.T, atype), d0, r0 @ rot.T),
                                 (*run(pos + 0.7, cell, atype), d0, r0),
                                 (*run(pos[perm], cell, atype[perm]), d0[perm], r0[perm])]:
                worst = max(worst, float(np.abs(d - dr).max()), float(np.abs(r - rr).max()))
    return worst


def smoothness():
    from test_descriptor_props import crossing_steps

    rows = []
    for name, sel in (("default", SEL), ("default", 3), ("raw_qkv_temp_oneside", SEL), ("no_attn_1type", SEL),
                      ("rough_nodotr_3types", SEL), ("rough_twoside_1layer", SEL)):
        config = make_config(name, sel=sel)
        steps, cross = crossing_steps(config, random_params(config))
        rows.append(dict(config=name, sel=sel, smooth=config.smooth_type_embedding and config.attn_layer > 0,
                         step_across_rcut=float(steps[cross]), median_step=float(np.median(steps))))
    return rows


def markdown(result: dict) -> str:
    """The summary table (the largest error of each check) and the smoothness table."""
    worst = result["graph_vs_dense"]
    native = max(v for k, v in worst.items() if k.endswith("native"))
    compat = max(v for k, v in worst.items() if k.endswith("compat"))
    n_sys = f"{len(CONFIGS)} configs x {len(SYSTEMS)} systems"
    lines = [f"`python benchmarks/dpa1_parity.py`, float64, {result.get('date', 'undated')}; max abs error of the "
             "descriptor.", "",
             "| check | cases | max abs error |", "|---|---|---:|",
             f"| graph (compact and static; blocks, buckets, pairs) vs dense, native | {n_sys} x numpy/torch/jax "
             f"| {native:.1e} |",
             f"| graph vs dense, `deepmd_compat` | same | {compat:.1e} |",
             f"| torch / jax vs numpy | same | {result['cross_backend']:.1e} |",
             f"| vs DeePMD-kit 3.2 `DescrptDPA1.call`, compat, random `davg`, every layout | "
             f"{result.get('deepmd_cases', 'every')} config x system cases | {result['deepmd_compat']:.1e} |",
             f"| vs DeePMD-kit, native, `davg = 0`, every layout | same | {result['deepmd_native_davg0']:.1e} |",
             f"| rotation, translation, permutation | {len(INVARIANCE_CONFIGS)} configs x {len(INVARIANCE_SYSTEMS)} "
             f"systems | {result['invariance']:.1e} |", "",
             "Moving one atom through `rcut` in steps of h = 5e-6 Å: the descriptor change across the cutoff "
             "against the median step.", "",
             "| config | sel | smooth | step across rcut | median step | ratio |", "|---|---:|---|---:|---:|---:|"]
    lines += [f"| {r['config']} | {r['sel']} | {r['smooth']} | {r['step_across_rcut']:.2e} | {r['median_step']:.2e} "
              f"| {r['step_across_rcut'] / r['median_step']:.2f} |" for r in result["smoothness"]]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(HERE, "results", "dpa1_parity.json"))
    parser.add_argument("--report", metavar="JSON", help="only re-render the .md of an earlier run")
    args = parser.parse_args(argv)
    if args.report:
        return rerender(args.report, markdown)
    worst, cross, count = graph_vs_dense()
    print(f"graph vs dense: {len(CONFIGS)} configs x {len(SYSTEMS)} systems x 3 backends x 2 semantics "
          f"({count} runs, each compact + static, blocks + buckets + pairs)")
    compat, native, n = deepmd_parity()
    result = dict(graph_vs_dense={" ".join(k): v for k, v in worst.items()}, cross_backend=cross,
                  deepmd_compat=compat, deepmd_native_davg0=native, deepmd_cases=n, invariance=invariances(),
                  smoothness=smoothness(), date=datetime.date.today().isoformat())
    print("\n| backend | layout | semantics | max abs error |\n|---|---|---|---:|")
    for (b, layout, sem), err in sorted(worst.items()):
        print(f"| {b} | {layout} | {sem} | {err:.1e} |")
    print("\n" + markdown(result))
    save_results(result, args.out, markdown)

if __name__ == "__main__":
    main()
