"""Export an :class:`~graphdesc.torch.EnergyModel` as an AOTInductor ``.pt2`` package.

The recipe (DESIGN.md section 6): the energy + ``autograd.grad`` force function is
traced with ``make_fx(tracing_mode="symbolic")`` (``torch.export`` cannot trace
``autograd.grad`` itself), the resulting graph is exported with
``torch.export.export`` with L, G, E and nf dynamic, and
``torch._inductor.aoti_compile_and_package`` compiles it to a ``.pt2``.

The trace sample is a small synthetic 2-frame system with ghosts (sizes >= 2,
so nothing is specialized to 0 or 1); the package then runs any L >= 0,
G >= 0, E >= 0, nf >= 1 (schema 2, :mod:`graphdesc.export.schema`).
The package is compiled for the device the model sits on when exporting:
``device="cuda"`` traces and compiles on the GPU.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import numpy as np

from .. import __version__
from .schema import INPUTS, META_PREFIX, OUTPUTS, SCHEMA_VERSION

__all__ = ["trace_model", "export_program", "export_package", "sample_inputs"]


def sample_inputs(model, *, device="cpu", n_atoms=(13, 11), seed=0, ghosts: bool = True):
    """A 2-frame periodic sample for tracing.

    With ``ghosts`` (the package schema's six inputs): each frame is a random
    periodic box whose atoms in one half (by the first fractional coordinate)
    are local and whose halo of images within ``rcut`` are ghosts, as an MD
    engine passes them. Without: ``(atype, edge_index, edge_vec, edge_mask,
    n_node)`` of the two whole boxes, images as shifted edges (training).
    Every size is >= 2, so the trace specializes none of them to 0 or 1.
    """
    import torch

    from ..graph import batch_graphs, build_graph
    from ..graph.halo import batch_halos, halo_graph

    rng = np.random.default_rng(seed)
    rcut = model.config.rcut
    dtype = next(model.buffers()).dtype
    frames = []
    for n in n_atoms:
        cell = np.eye(3) * 0.9 * rcut
        frac = rng.uniform(0, 1, (n, 3))
        pos, types = frac @ cell, np.arange(n) % model.config.ntypes
        if ghosts:
            frames.append(halo_graph(pos, types, frac[:, 0] < 0.5, rcut, cell=cell, pbc=True, min_distance=0.0))
        else:
            frames.append((build_graph(pos, rcut, cell=cell, pbc=True, min_distance=0.0), types))
    if ghosts:
        h = batch_halos(frames)
        g, local, ghost = h.graph, h.atype[: h.num_local], h.atype[h.num_local:]
    else:
        g, local = batch_graphs(f[0] for f in frames), np.concatenate([f[1] for f in frames])
    out = (torch.as_tensor(local, dtype=torch.int64), torch.as_tensor(g.edge_index, dtype=torch.int64),
           torch.as_tensor(g.edge_vec, dtype=dtype), torch.as_tensor(g.edge_mask),
           torch.as_tensor(g.n_node, dtype=torch.int64))
    if ghosts:
        out += (torch.as_tensor(ghost, dtype=torch.int64),)
    return tuple(x.to(device) for x in out)


def trace_model(model, sample):
    """``make_fx`` symbolic trace of the flat energy/force function of ``model`` (frozen copy).

    The flat function takes the schema's inputs: local types, graph, ghost
    types; nodes are the locals then the ghosts, and ``num_local`` is the
    length of ``atype`` (a shape, so no size in the program depends on data).
    """
    import torch
    from torch.fx.experimental.proxy_tensor import make_fx

    from ..graph.container import NeighborGraph
    from ..torch import energy_and_forces

    frozen = copy.deepcopy(model).eval().requires_grad_(False)

    def flat(atype, edge_index, edge_vec, edge_mask, n_node, ghost_atype):
        nodes = torch.cat([atype, ghost_atype])
        out = energy_and_forces(frozen, NeighborGraph(edge_index, edge_vec, edge_mask, n_node), nodes,
                                num_local=atype.shape[0])
        return tuple(out[k] for k in OUTPUTS)

    with torch.no_grad():  # energy_and_forces enables grad where it needs it
        return make_fx(flat, tracing_mode="symbolic", _allow_non_fake_inputs=True)(*sample)


def export_program(model, sample):
    """``torch.export.ExportedProgram`` of the model's energy/force function, L, G, E, nf dynamic."""
    import torch

    graph_module = trace_model(model, sample)

    class Flat(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.graph_module = graph_module

        def forward(self, atype, edge_index, edge_vec, edge_mask, n_node, ghost_atype):
            return self.graph_module(atype, edge_index, edge_vec, edge_mask, n_node, ghost_atype)

    dim = torch.export.Dim
    n, g, e, nf = dim("L", min=0), dim("G", min=0), dim("E", min=0), dim("nf", min=1)
    shapes = {"atype": {0: n}, "edge_index": {1: e}, "edge_vec": {0: e}, "edge_mask": {0: e}, "n_node": {0: nf},
              "ghost_atype": {0: g}}
    # size-oblivious backed sizes: no 0/1 specialization, so L = 0, G = 0, E = 0, nf = 1 stay valid
    with torch.fx.experimental._config.patch(backed_size_oblivious=True):
        return torch.export.export(Flat(), sample, dynamic_shapes=shapes, strict=False)


def export_package(model, path, *, device: str = "cpu", dtype=None, progress=None) -> Path:
    """Compile ``model`` (an :class:`~graphdesc.torch.EnergyModel`) to an AOTInductor ``.pt2`` at ``path``.

    Args:
        model: the energy model (left unchanged; a frozen copy is traced).
        path: output file; ``.pt2`` is appended if missing.
        device: ``"cpu"`` or ``"cuda"`` (``"cuda:1"`` ...): where the package runs.
        dtype: ``torch.float64`` / ``torch.float32`` (or their names); default the model's.
        progress: ``callable(str)`` told about each step (the CLI prints them).

    Returns:
        the path written. Load it with :func:`graphdesc.export.load_package`.
    """
    import torch

    say = progress or (lambda msg: None)
    path = Path(path)
    if path.suffix != ".pt2":
        path = path.with_name(path.name + ".pt2")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' requested but torch.cuda.is_available() is False")
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    dtype = dtype or next(model.buffers()).dtype
    if dtype not in (torch.float64, torch.float32):
        raise ValueError(f"dtype must be float64 or float32, got {dtype}")
    model = copy.deepcopy(model).to(device=device, dtype=dtype)
    sample = sample_inputs(model, device=device)

    t0 = time.perf_counter()
    say("tracing energy + forces (make_fx) and exporting (torch.export) ...")
    program = export_program(model, sample)
    say(f"  done in {time.perf_counter() - t0:.1f} s")
    meta = {
        "schema": str(SCHEMA_VERSION), "version": __version__, "dtype": str(dtype).removeprefix("torch."),
        "device": device.type, "config": json.dumps(model.config.to_dict()),
        "inputs": ",".join(INPUTS), "outputs": ",".join(OUTPUTS),
    }
    t1 = time.perf_counter()
    say(f"compiling with AOTInductor for {device.type} (about a minute on a small CPU) ...")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch._inductor.aoti_compile_and_package(
        program, package_path=str(path),
        inductor_configs={"aot_inductor.metadata": {META_PREFIX + k: v for k, v in meta.items()},
                          # int32 sort indices: the default int16 ones cap E below 32767
                          "triton.decompose_sort_ops": True})
    say(f"  done in {time.perf_counter() - t1:.1f} s -> {path}")
    return path
