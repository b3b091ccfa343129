"""Energy+force cost of a DPA1 model per atom: graphdesc's graph path against dense DPA1 codes.

One command regenerates the JSON, the Markdown table and the PNG plot::

    python benchmarks/bench_dpa1.py                  # CPU: results/dpa1_cpu.{json,md,png}
    python benchmarks/bench_dpa1.py --device cuda    # GPU: results/dpa1_cuda.{json,md,png}
    python benchmarks/bench_dpa1.py --quick          # small sizes only (a smoke run)
    python benchmarks/bench_dpa1.py --uneven         # results/dpa1_uneven.*: the block-stage layouts on
                                                     # uneven systems, next to homogeneous fcc Cu
    python benchmarks/bench_dpa1.py --systems cu --paths graph --against 5137df1   # path graph@5137df1: the
                                                     # graph path of an older commit, beside today's, size by size

Model: DPA1 with attn_layer 2, attn 128, neuron [25, 50, 100], axis_neuron 16,
tebd_dim 8, rcut 6 (smooth from 0.5), fitting [240, 240, 240]; one random
model per (system, precision), built by DeePMD-kit (``deepmd.dpmodel``) when it
is installed so that every path computes the same function. Systems: fcc Cu
(a = 3.61 Å, sel 120) and diamond C (a = 3.567 Å, sel 180), periodic, with
0.05 Å Gaussian jitter; the table reports the real neighbor counts. Uneven
systems (``--uneven``), all Cu with the same model but ``sel`` 120 or 256:
``cu-slab``, an 8-layer (4-cell) fcc (100) slab with 12 Å of vacuum;
``cu-cluster``, a sphere of fcc Cu of diameter ``cells * a`` in a box with
12 Å of vacuum; ``cu-dense``, fcc Cu with a spherical inclusion (radius a
quarter of the box) of fcc Cu compressed to 0.74 of its lattice constant, so
that its largest neighbor count is over twice the mean.

Paths, each timed on the same inputs in its own subprocess:

* ``graph``     -- graphdesc's EnergyModel, eager torch, on the compact graph
  (one-width blocks, ``attention="blocks"``);
* ``graph-buckets`` / ``graph-pairs`` -- the same with ``attention="buckets"``
  (degree-ordered centers, each chunk's own block width) and ``"pairs"``
  (center-edge pairs with ``segment_softmax``);
* ``graph-pt2`` -- the same model exported to an AOTInductor package
  (``graphdesc export``; compiled once per precision, cached in ``--cache``);
* ``dense``     -- graphdesc's dense reference path (``dpa1_dense`` on padded
  ``(N, sel)`` slots + the same fitting net), forces by autograd;
* ``deepmd``    -- DeePMD-kit 3.2's dense torch model (``deepmd.pt``,
  ``forward_lower`` on its own extended coordinates and neighbor list). Its
  compiled op library targets torch 2.11; the DPA1 energy path does not use
  it, so the child stubs ``deepmd.pt.cxx_op`` (no custom op) and checks its
  energy against the graph path.

Per point: the neighbor build is timed separately (median of 3); one
energy+force call warms up, then repeated calls (at least
``--repeats``, 2 for the slowest points, more while the point has spent less
than ``--budget`` seconds) give the median time, and a last call measures peak
memory. CPU: peak RSS above the pre-call RSS (``/proc/self/clear_refs``),
with glibc set to map every block over 128 KiB on its own and the freed heap
trimmed first, so the peak is that of live data rather than of what the
allocator kept; also the minor page faults per timed call (``faults``) and the process's
peak RSS up to then (``max_rss_mib``); CUDA: peak allocated by torch. Achieved
GFLOP/s uses the model's matmul FLOP count for energy+force (3x the forward
count, on real edges only) and is compared with a large matmul's rate
measured in the same run. A size is skipped (and listed as such) when the
previous size predicts more than ``--max-mem`` GiB or ``--max-call`` seconds.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import pickle
import platform
import resource
import subprocess
import sys
import time
import types

from _timing import check_code, code_env, commit, worktree

HERE = os.path.dirname(os.path.abspath(__file__))
PATHS = ("graph", "graph-pt2", "dense", "deepmd", "graph-buckets", "graph-pairs")
ATTENTION = {"graph-buckets": "buckets", "graph-pairs": "pairs"}  # eager paths with another block-stage layout
SYSTEMS = {
    # name: (lattice, lattice constant, sel, cells per side for the sweep, cells for --quick)
    "cu": ("fcc", 3.61, 120, (2, 3, 4, 6, 8, 10, 13, 16), (2, 3)),
    "diamond": ("diamond", 3.567, 180, (2, 3, 4, 6, 8, 10, 12), (2,)),
    "cu-slab": ("slab", 3.61, 120, (4, 6, 8, 10), (4,)),
    "cu-cluster": ("cluster", 3.61, 120, (4, 6, 8, 10), (4,)),
    "cu-dense": ("dense", 3.61, 256, (8, 10), (8,)),
}
UNEVEN = dict(systems="cu,cu-slab,cu-cluster,cu-dense", paths="graph,graph-buckets,graph-pairs",
              precisions="float64", sizes={"cu": (3, 4, 6, 8)})
RCUT, RCUT_SMTH, JITTER = 6.0, 0.5, 0.05
VACUUM, SLAB_CELLS, DENSE_SCALE = 12.0, 4, 0.74
SLOW_CALL_S = 20.0  # calls slower than this are timed twice, not --repeats times


def deepmd_params(sel: int, precision: str) -> dict:
    """The benchmark model, in DeePMD-kit's input format (one type)."""
    return {"type_map": ["X"],
            "descriptor": {"type": "se_atten", "sel": sel, "rcut": RCUT, "rcut_smth": RCUT_SMTH,
                           "neuron": [25, 50, 100], "axis_neuron": 16, "attn": 128, "attn_layer": 2,
                           "tebd_dim": 8, "precision": precision, "seed": 1},
            "fitting_net": {"neuron": [240, 240, 240], "precision": precision, "seed": 2}}


@functools.lru_cache(maxsize=None)
def system_positions(system: str, cells: int):
    """``(positions (N, 3), cell (3, 3))`` of ``system`` at size ``cells``, float64 numpy, periodic cell.

    ``cu``/``diamond``: ``cells^3`` conventional cells. ``cu-slab``: ``cells x cells x 4`` cells and
    :data:`VACUUM` Å above. ``cu-cluster``: the atoms of a ``cells^3`` block within ``cells * a / 2`` of
    its center, :data:`VACUUM` Å from the box's faces. ``cu-dense``: ``cells^3`` cells whose atoms within
    ``cells * a / 4`` of the center (plus 1 Å) are replaced by a lattice scaled by :data:`DENSE_SCALE`.
    """
    import numpy as np

    from graphdesc.examples import diamond_positions, fcc_positions

    lattice, a = SYSTEMS[system][:2]
    if lattice == "diamond":
        return diamond_positions(cells, a, jitter=JITTER, seed=1), np.eye(3) * a * cells
    block = fcc_positions(cells, a, jitter=JITTER, seed=1)
    side = a * cells
    if lattice == "fcc":
        return block, np.eye(3) * side
    if lattice == "slab":
        slab = fcc_positions(max(cells, SLAB_CELLS), a, jitter=JITTER, seed=1)
        keep = np.all(slab < np.array([side, side, a * SLAB_CELLS]) - a / 4, axis=1)  # whole layers only
        return slab[keep], np.diag([side, side, a * SLAB_CELLS + VACUUM])
    center = np.full(3, side / 2)
    if lattice == "cluster":
        sphere = block[np.linalg.norm(block - center, axis=1) < side / 2]
        return sphere + VACUUM / 2, np.eye(3) * (side + VACUUM)
    # dense: the inclusion's lattice fills the sphere, the host lattice keeps 1 A away from it
    radius = side / 4
    dense_cells = int(np.ceil(side / (a * DENSE_SCALE)))
    inner = fcc_positions(dense_cells, a * DENSE_SCALE, jitter=JITTER, seed=2)
    inner = inner - inner.mean(axis=0) + center
    inner = inner[np.linalg.norm(inner - center, axis=1) < radius]
    outer = block[np.linalg.norm(block - center, axis=1) > radius + 1.0]
    return np.concatenate([outer, inner]), np.eye(3) * side


def model_flops(config, degrees) -> float:
    """Matmul FLOPs of one energy+force call, counted on real edges: 3x the forward count.

    ``degrees``: the neighbor count of every atom. Elementwise work is not counted.
    """
    d = config.descriptor
    edges, pairs, n = sum(degrees), sum(k * k for k in degrees), len(degrees)
    widths = (d.embed_input_dim, *d.neuron)
    fwd = edges * sum(2 * a * b for a, b in zip(widths[:-1], widths[1:]))  # embedding net
    fwd += d.attn_layer * (edges * 2 * d.ng * 3 * d.attn + 2 * 2 * pairs * d.attn + edges * 2 * d.attn * d.ng)
    fwd += edges * 2 * d.ng * 4 + n * 2 * d.ng * d.axis_neuron * 4  # contraction G^T R, readout
    fit = (d.dim_out, *config.neuron, 1)
    fwd += n * sum(2 * a * b for a, b in zip(fit[:-1], fit[1:]))
    return 3.0 * fwd


# -- child: one (system, precision, path, size) point -----------------------------------------------------
class _Peak:
    """Peak memory of a block above its start: torch's CUDA peak, or the process's peak RSS."""

    def __init__(self, device):
        from _timing import rss_kib  # the script's folder is on sys.path in the child

        self.device, self.rss_kib = device, rss_kib

    def __enter__(self):
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.before = torch.cuda.memory_allocated()
        else:
            import ctypes
            import gc

            gc.collect()
            libc = ctypes.CDLL("libc.so.6")
            # every block above 128 KiB is mapped and unmapped on its own from here on (no dynamic
            # threshold, no heap reuse), and freed heap pages go back now: the peak RSS is then the
            # peak of live data, not of what the allocator kept
            libc.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD
            libc.malloc_trim(0)
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset VmHWM (peak RSS) to the current RSS
            self.before = self.rss_kib("VmRSS") * 1024
        return self

    def __exit__(self, *exc):
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.bytes = torch.cuda.max_memory_allocated() - self.before
        else:
            self.bytes = self.rss_kib("VmHWM") * 1024 - self.before


def _median_call(fn, sync, repeats: int, budget: float) -> list:
    """Wall times of ``fn()``: at least ``repeats`` calls (2 when the first takes over
    ``SLOW_CALL_S``), more while under ``budget`` seconds in all (at most 50)."""
    times, start = [], time.perf_counter()
    while len(times) < (repeats if not times or times[0] < SLOW_CALL_S else min(repeats, 2)) \
            or (time.perf_counter() - start < budget and len(times) < 50):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return times


def _stub_deepmd_ops() -> None:
    """Import ``deepmd.pt`` without its compiled op library (built for torch 2.11)."""
    stub = types.ModuleType("deepmd.pt.cxx_op")
    stub.ENABLE_CUSTOMIZED_OP = False
    stub.__all__ = ["ENABLE_CUSTOMIZED_OP"]
    sys.modules["deepmd.pt.cxx_op"] = stub


def child(args) -> dict:
    import numpy as np
    import torch

    import graphdesc
    from graphdesc.graph import build_graph
    from graphdesc.torch import EnergyModel

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = getattr(torch, args.precision)
    sel = SYSTEMS[args.system][2]
    positions, cell = system_positions(args.system, args.cells)
    n = len(positions)
    with open(args.model, "rb") as f:
        source = pickle.load(f)
    config, params = source["graphdesc"]
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    pos_t = torch.as_tensor(positions, dtype=dtype, device=device)
    cell_t = torch.as_tensor(cell, dtype=dtype, device=device)
    atype = torch.zeros(n, dtype=torch.int64, device=device)

    if args.path == "deepmd":
        _stub_deepmd_ops()
        from deepmd.pt.model.model.ener_model import EnergyModel as DPEnergyModel
        from deepmd.pt.utils.nlist import extend_input_and_build_neighbor_list

        model = DPEnergyModel.deserialize(source["deepmd"]).to(device).eval()
        # DeePMD-kit's interface takes float64 coordinates whatever the model's precision
        coord = torch.as_tensor(positions, dtype=torch.float64, device=device)
        box = torch.as_tensor(cell, dtype=torch.float64, device=device).reshape(1, 9)

        def build():
            return extend_input_and_build_neighbor_list(coord[None], atype[None], RCUT, [sel], mixed_types=True,
                                                        box=box)

        def call(inputs):
            ext_coord, ext_atype, mapping, nlist = inputs
            out = model.forward_lower(ext_coord, ext_atype, nlist, mapping)
            ext_force = out["extended_force"]
            force = torch.zeros(1, n, 3, dtype=ext_force.dtype, device=device).index_add_(1, mapping[0], ext_force)
            return out["energy"].reshape(()), force[0]
    else:
        model = EnergyModel(config, params, attention=ATTENTION.get(args.path, "blocks")).to(device=device,
                                                                                            dtype=dtype).eval()

        def build():
            return build_graph(pos_t, RCUT, cell=cell_t, pbc=True)

        if args.path == "graph" or args.path in ATTENTION:
            def call(graph):
                out = model(graph, atype)
                return out["energy"].reshape(()), out["force"]
        elif args.path == "graph-pt2":
            from graphdesc.export import load_package

            package = load_package(args.package)

            def call(graph):
                out = package(atype, graph.edge_index, graph.edge_vec, graph.edge_mask, graph.n_node, check=False)
                return out["energy"].reshape(()), out["force"]
        else:
            from graphdesc.descriptor import dense_inputs, dpa1_dense
            from graphdesc.graph import edge_force_virial
            from graphdesc.model import frame_energy
            from graphdesc.model.fitting import fitting_energy

            def call(graph):
                # edge_vec -> padded (N, sel) slots inside the autograd graph, so the
                # gradient lands on edge_vec and forces assemble as for the graph path
                vec = graph.edge_vec.detach().requires_grad_(True)
                g = graph.replace(edge_vec=vec)
                p = model.params()
                with torch.enable_grad():
                    desc = dpa1_dense(p["descriptor"], config.descriptor, **dense_inputs(g, atype, sel))[0]
                    energy = frame_energy(fitting_energy(p["fitting"], config, desc, atype), g.n_node)
                    (grad,) = torch.autograd.grad(energy.sum(), vec)
                return energy.detach().reshape(()), edge_force_virial(grad, g, n)[0]

    build_times = _median_call(build, sync, 3, 0.0)
    inputs = build()
    if args.path == "deepmd":
        degrees = (inputs[3][0] >= 0).sum(-1).tolist()
    else:
        degrees = torch.bincount(inputs.edge_index[1][inputs.edge_mask], minlength=n).tolist()
    if max(degrees) > sel:
        raise SystemExit(f"max degree {max(degrees)} > sel {sel}: raise sel for {args.system}")
    call(inputs)  # warm-up: one-off allocations (thread pools, kernels, lazy loading) land here
    sync()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    times = _median_call(lambda: call(inputs), sync, args.repeats, args.budget)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    faults, max_rss_mib = (usage.ru_minflt - faults) / len(times), usage.ru_maxrss / 1024
    with _Peak(device) as peak:  # last: it changes the allocator's settings for good
        energy, force = call(inputs)
        sync()
    np.save(args.force_out, force.detach().cpu().numpy())
    flops = model_flops(config, degrees)
    seconds = float(np.median(times))
    return dict(system=args.system, precision=args.precision, path=args.path, atoms=n, cells=args.cells,
                neighbors_mean=float(np.mean(degrees)), neighbors_max=int(max(degrees)),
                neighbors_sq_mean=float(np.mean(np.square(degrees))), sel=sel,
                build_ms=1e3 * float(np.median(build_times)), calls=len(times), seconds=seconds, faults=faults,
                max_rss_mib=max_rss_mib,
                us_per_atom=1e6 * seconds / n, peak_mib=peak.bytes / 2**20, peak_kib_per_atom=peak.bytes / 1024 / n,
                mflop_per_atom=flops / n / 1e6, gflops=flops / seconds / 1e9, energy=float(energy.detach()),
                force_max=float(force.abs().max()), package=os.path.dirname(graphdesc.__file__),
                torch=torch.__version__, device=_device_name(device), mkl=_mkl_policy(graphdesc))


def _mkl_policy(graphdesc) -> str:
    """Which kernels MKL runs in this process (graphdesc.mkl; "n/a" for a revision without it)."""
    return graphdesc.mkl.policy() if hasattr(graphdesc, "mkl") else "n/a"


def _device_name(device) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# -- parent: models, packages, the sweep, the reports ----------------------------------------------------
def make_model(system: str, precision: str, cache: str) -> str:
    """Pickle ``{"graphdesc": (config, params), "deepmd": dict | None}`` for one system and precision."""
    import dataclasses

    import numpy as np

    path = os.path.join(cache, f"model-{system}-{precision}.pkl")
    if os.path.exists(path):
        return path
    sel = SYSTEMS[system][2]
    try:
        from deepmd.dpmodel.model.model import get_model
    except ImportError:  # no DeePMD-kit: a graphdesc model with the same hyperparameters
        from graphdesc.descriptor import DPA1Config
        from graphdesc.model import EnergyConfig, init_model_params

        d = deepmd_params(sel, precision)["descriptor"]
        config = EnergyConfig(DPA1Config(rcut=RCUT, rcut_smth=RCUT_SMTH, sel=sel, ntypes=1, neuron=d["neuron"],
                                         axis_neuron=16, tebd_dim=8, attn=128, attn_layer=2, precision=precision))
        params = init_model_params(config, seed=1)
        params["descriptor"]["dstd"] = _dstd(system, sel).astype(params["descriptor"]["dstd"].dtype)
        source = {"graphdesc": (config, params), "deepmd": None}
    else:
        from graphdesc.model import model_from_deepmd

        serialized = get_model(deepmd_params(sel, precision)).serialize()
        # statistics as DeePMD's set_davg_zero: davg = 0, dstd from the system, so that the
        # descriptor's inputs have unit scale and the forces compared across paths are O(1)
        stats = serialized["descriptor"]["@variables"]
        stats["dstd"] = np.broadcast_to(_dstd(system, sel), stats["dstd"].shape).astype(stats["dstd"].dtype)
        stats["davg"] = np.zeros_like(stats["davg"])
        config, params = model_from_deepmd(serialized)
        # with davg = 0 DeePMD's padding-row term vanishes: the native descriptor is the same function
        config = dataclasses.replace(config, deepmd_compat=False)
        source = {"graphdesc": (config, params), "deepmd": serialized}
    with open(path, "wb") as f:
        pickle.dump(source, f)
    return path


def _dstd(system: str, sel: int):
    """DeePMD's per-channel standard deviation of the environment rows, from one small cell."""
    import numpy as np

    from graphdesc.descriptor import DPA1Config, compute_stats
    from graphdesc.graph import build_graph

    positions, cell = system_positions(system, 2)
    config = DPA1Config(rcut=RCUT, rcut_smth=RCUT_SMTH, sel=sel, ntypes=1, set_davg_zero=True)
    graph = build_graph(positions, RCUT, cell=cell, pbc=True)
    return np.asarray(compute_stats(config, [(graph, np.zeros(len(positions), dtype=np.int64))])[1])


def make_package(model_path: str, device: str, cache: str) -> str:
    """The AOTInductor package of a pickled model (compiled once, then cached)."""
    import torch

    from graphdesc.export import export_package
    from graphdesc.torch import EnergyModel

    path = model_path.replace(".pkl", f"-{device}-torch{torch.__version__.split('+')[0]}-{_code_tag()}.pt2")
    if not os.path.exists(path):
        with open(model_path, "rb") as f:
            config, params = pickle.load(f)["graphdesc"]
        t0 = time.perf_counter()
        print(f"  compiling {os.path.basename(path)} ...", end=" ", flush=True)
        export_package(EnergyModel(config, params), path, device=device)
        print(f"{time.perf_counter() - t0:.0f} s", flush=True)
    return path


def _code_tag() -> str:
    """Hash of graphdesc's sources: a package compiled from other code is not reused."""
    import hashlib

    import graphdesc

    root = os.path.dirname(graphdesc.__file__)
    digest = hashlib.sha1()
    for folder, _, files in sorted(os.walk(root)):
        for name in sorted(f for f in files if f.endswith(".py")):
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                digest.update(os.path.relpath(path, root).encode() + b"\0" + f.read())
    return digest.hexdigest()[:10]


def gemm_gflops(precision: str, device: str, threads: int, size: int = 2048) -> float:
    """Median rate of a ``size^3`` matmul: the machine's practical FLOP ceiling."""
    import torch

    torch.set_num_threads(threads)
    a = torch.randn(size, size, dtype=getattr(torch, precision), device=device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    times = _median_call(lambda: a @ a, sync, 5, 2.0)
    return 2 * size**3 / sorted(times)[len(times) // 2] / 1e9


def run_point(args, system, precision, path, cells, model_path, package, force_dir):
    """One point in a fresh process; ``path@REV`` runs ``path`` with the graphdesc of git revision ``REV``."""
    force_out = os.path.join(force_dir, f"{system}-{precision}-{cells}-{path}.npy")
    base, _, rev = path.partition("@")
    root = worktree(rev) if rev else os.path.dirname(HERE)
    cmd = [sys.executable, __file__, "--child", "--system", system, "--precision", precision, "--path", base,
           "--cells", str(cells), "--model", model_path, "--device", args.device, "--threads", str(args.threads),
           "--repeats", str(args.repeats), "--budget", str(args.budget), "--force-out", force_out]
    if package:
        cmd += ["--package", package]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=code_env(root))
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
        return None, f"failed: {tail[0][:200]}"
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    check_code(row["package"], root, path)
    return {**row, "path": path}, force_out


def path_key(path: str) -> tuple:
    """Sort key of a path: :data:`PATHS` order, each ``path@REV`` right after its ``path``."""
    base, _, rev = path.partition("@")
    return PATHS.index(base), rev


def sweep(args) -> dict:
    import torch

    import graphdesc  # (imported before torch by _timing: the large-matmul rate under the children's MKL kernels)

    os.makedirs(args.cache, exist_ok=True)
    force_dir = os.path.join(args.cache, "forces")
    os.makedirs(force_dir, exist_ok=True)
    meta = dict(date=datetime.date.today().isoformat(), torch=torch.__version__, device=args.device,
                device_name=_device_name(torch.device(args.device)), threads=args.threads,
                python=platform.python_version(), machine=platform.machine(), gemm_gflops={},
                deepmd=_version("deepmd-kit"), command=" ".join(sys.argv), mkl=_mkl_policy(graphdesc))
    rows, skipped = [], []
    if args.into:  # (re)run some paths into an earlier result: its other rows stay, its matmul rates are kept
        with open(args.into) as f:
            earlier = json.load(f)
        todo = {(s, p, q) for s in args.systems for p in args.precisions for q in args.paths}

        def kept(r):  # not among the points run now
            return (r["system"], r["precision"], r["path"]) not in todo or (
                args.sizes is not None and r.get("atoms") not in {_atoms(r["system"], c) for c in args.sizes})

        rows = [r for r in earlier["rows"] if kept(r)]
        skipped = [r for r in earlier["skipped"] if kept(r)]
        # the matmul rate is measured again: the machine may have changed since, and every row's
        # fraction of it is recomputed below from its own GFLOP/s (rerun all paths for a fair table)
        meta = {**earlier["meta"], "command": earlier["meta"]["command"] + " ; " + meta["command"],
                "gemm_gflops": {}, "date": meta["date"], "torch": meta["torch"]}
    for precision in args.precisions:
        if precision not in meta["gemm_gflops"]:
            meta["gemm_gflops"][precision] = gemm_gflops(precision, args.device, args.threads)
        print(f"{precision}: {args.size}^3 matmul {meta['gemm_gflops'][precision]:.1f} GFLOP/s", flush=True)
    for system in args.systems:
        for precision in args.precisions:
            model_path = make_model(system, precision, args.cache)
            with open(model_path, "rb") as f:
                has_deepmd = pickle.load(f)["deepmd"] is not None
            paths = []
            for path in args.paths:
                if path == "deepmd" and not has_deepmd:
                    skipped.append(dict(system=system, precision=precision, path=path, why="deepmd-kit not installed"))
                else:
                    paths.append(path)
            packages = {path: make_package(model_path, args.device, args.cache) if path == "graph-pt2" else None
                        for path in paths}
            last = dict.fromkeys(paths)
            stopped = set()
            # size by size, every path in turn: the paths compared at one size run minutes apart, not an hour
            default = UNEVEN["sizes"].get(system, SYSTEMS[system][3]) if args.uneven else SYSTEMS[system][3]
            for cells in args.sizes or (SYSTEMS[system][4] if args.quick else default):
                atoms = _atoms(system, cells)
                for path in paths:
                    if path in stopped:
                        continue
                    why = _predicted_over(last[path], atoms, args)
                    if why:
                        skipped.append(dict(system=system, precision=precision, path=path, atoms=atoms, why=why))
                        print(f"  {system} {precision} {path:9} {atoms:6d} atoms: skipped ({why})", flush=True)
                        continue
                    row, force_file = run_point(args, system, precision, path, cells, model_path, packages[path],
                                                force_dir)
                    if row is None:
                        skipped.append(dict(system=system, precision=precision, path=path, atoms=atoms,
                                            why=force_file))
                        print(f"  {system} {precision} {path:9} {atoms:6d} atoms: {force_file}", flush=True)
                        stopped.add(path)
                        continue
                    _cross_check(row, rows, force_dir)
                    row["gemm_fraction"] = row["gflops"] / meta["gemm_gflops"][precision]
                    rows.append(row)
                    last[path] = row
                    print(f"  {system} {precision} {path:9} {atoms:6d} atoms  {row['us_per_atom']:9.1f} us/atom  "
                          f"{row['peak_kib_per_atom'] / 1024:6.2f} MiB/atom  {row['gflops']:6.1f} GFLOP/s  "
                          f"build {row['build_ms']:8.1f} ms", flush=True)
    for row in rows:
        if row["precision"] in meta["gemm_gflops"]:
            row["gemm_fraction"] = row["gflops"] / meta["gemm_gflops"][row["precision"]]
    if args.into and "graph" in args.paths:  # the kept rows are checked against the new graph run
        for row in rows:
            if (row["system"], row["precision"], row["path"]) not in todo:
                _cross_check(row, rows, force_dir)
    def key(r):
        return (list(SYSTEMS).index(r["system"]), ["float64", "float32"].index(r["precision"]),
                path_key(r["path"]), r.get("atoms", 0))

    return dict(meta=meta, rows=sorted(rows, key=key), skipped=sorted(skipped, key=key))


def _cross_check(row, rows, force_dir) -> None:
    """``row``'s |dE|/atom and max |dF| against the graph path's point of the same size (when in ``rows``)."""
    import numpy as np

    ref = next((r for r in rows if r["path"] == "graph" and
                (r["system"], r["precision"], r["atoms"]) == (row["system"], row["precision"], row["atoms"])), None)
    if ref is None or row["path"] == "graph":
        return
    cells = row.get("cells") or round((row["atoms"] / _atoms(row["system"], 1)) ** (1 / 3))
    files = [os.path.join(force_dir, f"{row['system']}-{row['precision']}-{cells}-{path}.npy")
             for path in ("graph", row["path"])]
    if not all(os.path.exists(f) for f in files):  # a kept row measured on another machine: its check stays
        return
    forces = [np.load(f) for f in files]
    row["de_per_atom_vs_graph"] = abs(row["energy"] - ref["energy"]) / row["atoms"]
    row["df_max_vs_graph"] = float(np.abs(forces[1] - forces[0]).max())


def _atoms(system: str, cells: int) -> int:
    """Atoms of ``system`` at size ``cells``."""
    return len(system_positions(system, cells)[0])


def _predicted_over(last, atoms, args):
    if last is None:
        return None
    scale = atoms / last["atoms"]
    mem = last["peak_mib"] * scale / 1024
    call = last["seconds"] * scale
    if mem > args.max_mem:
        return f"predicted peak {mem:.0f} GiB > --max-mem {args.max_mem:g}"
    if call > args.max_call:
        return f"predicted {call:.0f} s per call > --max-call {args.max_call:g}"
    return None


def _version(dist: str):
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def summary(result: dict) -> str:
    """One row per (system, precision, atoms): time and memory per atom of every path side by side."""
    rows = result["rows"]
    paths = sorted({r["path"] for r in rows}, key=path_key)
    by = {(r["system"], r["precision"], r["atoms"], r["path"]): r for r in rows}
    head = ("| system | precision | atoms | neighbors | " + " | ".join(f"{p} ms/atom" for p in paths)
            + " | " + " | ".join(f"{p} MiB/atom" for p in paths) + " |")
    ratios = [("deepmd", "graph"), ("deepmd", "graph-pt2"), ("dense", "graph"), ("graph", "graph-buckets"),
              ("graph", "graph-pairs")]
    ratios += [(p, "graph") for p in paths if "@" in p]  # an older commit's graph path against today's
    ratios = [(a, b) for a, b in ratios if a in paths and b in paths]
    head += "".join(f" {a} / {b} time |" for a, b in ratios)
    lines = [head, "|" + "---|" * 4 + "---:|" * (2 * len(paths) + len(ratios))]
    keys = sorted({k[:3] for k in by}, key=lambda k: (list(SYSTEMS).index(k[0]), k[1] != "float64", k[2]))
    for system, precision, atoms in keys:
        cells = [by.get((system, precision, atoms, p)) for p in paths]
        first = next(c for c in cells if c is not None)
        line = f"| {system} | {precision} | {atoms} | {first['neighbors_mean']:.0f} | "
        line += " | ".join(f"{c['us_per_atom'] / 1e3:.2f}" if c else "–" for c in cells) + " | "
        line += " | ".join(f"{c['peak_kib_per_atom'] / 1024:.2f}" if c else "–" for c in cells) + " |"
        for a, b in ratios:
            ra, rb = by.get((system, precision, atoms, a)), by.get((system, precision, atoms, b))
            line += f" {ra['seconds'] / rb['seconds']:.2f}x |" if ra and rb else " – |"
        lines.append(line)
    return "\n".join(lines) + "\n"


def _sq_mean_degree(row: dict) -> float:
    """Mean squared degree of a row's system (recomputed from its deterministic geometry for rows that predate
    the ``neighbors_sq_mean`` field)."""
    if "neighbors_sq_mean" in row:
        return row["neighbors_sq_mean"]
    import numpy as np

    from graphdesc.graph import build_graph

    positions, cell = system_positions(row["system"], row["cells"])
    graph = build_graph(positions, RCUT, cell=cell, pbc=True)
    return float(np.mean(np.square(np.bincount(graph.edge_index[1], minlength=len(positions)))))


def padding_table(result: dict) -> list:
    """What one-width blocks pad, against what degree buckets saved: ``N max / sum deg`` (row work),
    ``N max^2 / sum deg^2`` (pair work) and the measured blocks / buckets time, one row per float64 system
    size measured in both layouts."""
    by = {(r["system"], r["precision"], r["atoms"], r["path"]): r for r in result["rows"]}
    keys = sorted({k[:3] for k in by if k[3] == "graph-buckets" and k[:3] + ("graph",) in by},
                  key=lambda k: (list(SYSTEMS).index(k[0]), k[1], k[2]))
    if not keys:
        return []
    lines = ["What one-width blocks pad (row work `N max / Σ deg`, pair work `N max² / Σ deg²`) against the "
             "buckets' measured speed-up:", "",
             "| system | precision | atoms | `N max / Σ deg` | `N max² / Σ deg²` | graph / graph-buckets time |",
             "|---|---|---:|---:|---:|---:|"]
    for key in keys:
        blocks, buckets = by[key + ("graph",)], by[key + ("graph-buckets",)]
        top, mean = blocks["neighbors_max"], blocks["neighbors_mean"]
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {top / mean:.2f} | {top**2 / _sq_mean_degree(blocks):.2f} "
                     f"| {blocks['seconds'] / buckets['seconds']:.2f}x |")
    return lines + [""]


def floor_table(result: dict) -> list:
    """Each graphdesc row against the matmul floor of its run: its model FLOPs at the large-matmul rate."""
    rows = [r for r in result["rows"] if r["path"].partition("@")[0] in ("graph", "graph-pt2") and r["precision"] in
            result["meta"]["gemm_gflops"]]
    if not rows:
        return []
    lines = ["Against the matmul floor (the model's matmul FLOPs at this run's large-matmul rate):", "",
             "| system | precision | atoms | path | ms/atom | floor ms/atom | x floor |",
             "|---|---|---:|---|---:|---:|---:|"]
    for r in rows:
        floor = r["mflop_per_atom"] / result["meta"]["gemm_gflops"][r["precision"]]  # MFLOP / (GFLOP/s) = ms
        lines.append(f"| {r['system']} | {r['precision']} | {r['atoms']} | {r['path']} | {r['us_per_atom'] / 1e3:.2f} "
                     f"| {floor:.2f} | {r['us_per_atom'] / 1e3 / floor:.2f} |")
    return lines + [""]


def markdown(result: dict) -> str:
    meta = result["meta"]
    lines = [f"DPA1 energy+force, {meta['device_name']} ({meta['device']}, {meta['threads']} threads), "
             f"torch {meta['torch']}, DeePMD-kit {meta['deepmd']}, {meta['date']}. "
             f"Large-matmul rate: " + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in meta["gemm_gflops"].items()) + "."
             + (f" MKL: {meta['mkl']}." if meta.get("mkl") else ""),
             *(["", f"Note: {meta['note']}."] if meta.get("note") else []),
             "", summary(result), *padding_table(result), *floor_table(result), "All measurements:", "",
             "| system | precision | atoms | neighbors (mean/max) | path | µs/atom | peak MiB/atom | GFLOP/s "
             "| % of matmul rate | neighbor build (ms) | vs graph: |ΔE|/atom, max |ΔF| |",
             "|---|---|---:|---|---|---:|---:|---:|---:|---:|---|"]
    for r in result["rows"]:
        check = (f"{r['de_per_atom_vs_graph']:.1e}, {r['df_max_vs_graph']:.1e}"
                 if "de_per_atom_vs_graph" in r else "")
        lines.append(f"| {r['system']} | {r['precision']} | {r['atoms']} | {r['neighbors_mean']:.1f} / "
                     f"{r['neighbors_max']} | {r['path']} | {r['us_per_atom']:.1f} | "
                     f"{r['peak_kib_per_atom'] / 1024:.3f} | {r['gflops']:.1f} | {100 * r['gemm_fraction']:.0f} | "
                     f"{r['build_ms']:.1f} | {check} |")
    if result["skipped"]:
        lines += ["", "Not run: " + "; ".join(
            f"{s['system']} {s['precision']} {s['path']}" + (f" {s['atoms']} atoms" if "atoms" in s else "")
            + f" ({s['why']})" for s in result["skipped"])]
    return "\n".join(lines) + "\n"


def plot(result: dict, filename: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    systems = sorted({r["system"] for r in rows}, key=list(SYSTEMS).index)
    fig, axes = plt.subplots(2, len(systems), figsize=(6 * len(systems), 8), squeeze=False)
    colors = dict(zip(PATHS, ("C0", "C2", "C1", "C3", "C4", "C5")))
    for col, system in enumerate(systems):
        for precision, style in (("float64", "-o"), ("float32", "--s")):
            for path in sorted({r["path"] for r in rows}, key=path_key):
                pts = sorted((r["atoms"], r) for r in rows
                             if (r["system"], r["precision"], r["path"]) == (system, precision, path))
                if not pts:
                    continue
                x = [a for a, _ in pts]
                color = colors.get(path, "C6")  # (an older commit's path: C6)
                axes[0, col].plot(x, [r["us_per_atom"] / 1e3 for _, r in pts], style, color=color,
                                  label=f"{path} {precision}", markersize=4)
                axes[1, col].plot(x, [r["peak_kib_per_atom"] / 1024 for _, r in pts], style, color=color,
                                  label=f"{path} {precision}", markersize=4)
        nb = next(r for r in rows if r["system"] == system)
        axes[0, col].set_title(f"{system}: {nb['neighbors_mean']:.0f} neighbors, sel {nb['sel']}")
        axes[0, col].set_ylabel("energy+force time (ms/atom)")
        axes[1, col].set_ylabel("peak memory (MiB/atom)")
        for ax in axes[:, col]:
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("atoms")
            ax.grid(True, which="both", alpha=0.3)
        axes[0, col].legend(fontsize=7, ncol=2)
    meta = result["meta"]
    fig.suptitle(f"DPA1 energy+force, {meta['device_name']} ({meta['threads']} threads), torch {meta['torch']}")
    fig.tight_layout()
    fig.savefig(filename, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--systems", default="cu,diamond", help="comma list of: " + ", ".join(SYSTEMS))
    parser.add_argument("--precisions", default="float64,float32")
    parser.add_argument("--paths", default=",".join(PATHS), help="comma list of: " + ", ".join(PATHS))
    parser.add_argument("--quick", action="store_true", help="the smallest sizes only")
    parser.add_argument("--uneven", action="store_true",
                        help="the block-stage layouts on uneven systems and fcc Cu, float64 (results/dpa1_uneven)")
    parser.add_argument("--sizes", type=int, nargs="+", metavar="CELLS",
                        help="only these cells per side (with --into: only those points are replaced)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per point, at least (default 3)")
    parser.add_argument("--budget", type=float, default=10.0, help="more timed calls while under this many s")
    parser.add_argument("--max-mem", type=float, default=20.0, help="skip sizes predicted above this many GiB")
    parser.add_argument("--max-call", type=float, default=60.0, help="skip sizes predicted above this many s/call")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: 2 on CPU)")
    parser.add_argument("--out", default=None, help="output prefix (default results/dpa1_<device>)")
    parser.add_argument("--into", metavar="JSON", help="add the points run now to an earlier result file")
    parser.add_argument("--report", metavar="JSON", help="only re-render the .md and .png of an earlier run")
    parser.add_argument("--against", metavar="REV",
                        help="also run the graph path with graphdesc as of git revision REV (path graph@REV, a "
                             "worktree under benchmarks/.cache), right after today's at every size")
    parser.add_argument("--cache", default=os.path.join(HERE, ".cache"), help="models, packages, forces")
    parser.add_argument("--size", type=int, default=2048, help=argparse.SUPPRESS)
    # child mode (one point in a fresh process)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    for name in ("--system", "--precision", "--path", "--model", "--package", "--force-out"):
        parser.add_argument(name, help=argparse.SUPPRESS)
    parser.add_argument("--cells", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads is None:
        args.threads = 2 if args.device == "cpu" else 1
    if args.child:
        print(json.dumps(child(args)))
        return 0
    if args.uneven:  # its own defaults for the options left at theirs
        for name in ("systems", "paths", "precisions"):
            if getattr(args, name) == parser.get_default(name):
                setattr(args, name, UNEVEN[name])
        if not args.into:
            args.out = args.out or os.path.join(HERE, "results", "dpa1_uneven")
    args.systems = _choices(parser, "--systems", args.systems, SYSTEMS)
    args.precisions = _choices(parser, "--precisions", args.precisions, ("float64", "float32"))
    args.paths = _choices(parser, "--paths", args.paths, PATHS)
    if "graph" in args.paths:  # the reference of the cross-checks runs first
        args.paths = ["graph"] + [p for p in args.paths if p != "graph"]
    if args.against:  # labelled by its commit: a branch name or HEAD would not say which code ran
        args.paths.insert(1 if "graph" in args.paths else 0, f"graph@{commit(args.against)}")
    out = args.out or (args.into.removesuffix(".json") if args.into else
                       os.path.join(HERE, "results", f"dpa1_{args.device}"))
    if args.report:  # re-render the table and the plot of an earlier run
        with open(args.report) as f:
            result = json.load(f)
        out = args.out or args.report.removesuffix(".json")
    else:
        result = sweep(args)
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out + ".json", "w") as f:
            json.dump(result, f, indent=1)
    table = markdown(result)
    with open(out + ".md", "w") as f:
        f.write(table)
    print("\n" + table)
    if result["rows"]:
        plot(result, out + ".png")
    print(f"wrote {out}.json, {out}.md" + (f", {out}.png" if result["rows"] else ""))
    return 0


def _choices(parser, flag, value, allowed):
    items = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in allowed]
    if bad or not items:
        parser.error(f"{flag}: unknown {bad or value!r}; choose from {', '.join(allowed)}")
    return items


if __name__ == "__main__":
    sys.exit(main())
