"""Export an :class:`~graphdesc.torch.EnergyModel` as an AOTInductor ``.pt2`` package.

The recipe (DESIGN.md section 6): the energy + ``autograd.grad`` force function is
traced with ``make_fx(tracing_mode="symbolic")`` (``torch.export`` cannot trace
``autograd.grad`` itself), the resulting graph is exported with
``torch.export.export`` with N, E and nf dynamic, and
``torch._inductor.aoti_compile_and_package`` compiles it to a ``.pt2``.

The trace sample is a small synthetic 2-frame system (sizes >= 2, so nothing is
specialized to 0 or 1); the package then runs any N >= 1, E >= 0, nf >= 1.
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


def sample_inputs(model, *, device="cpu", n_atoms=(13, 11), seed=0):
    """A 2-frame periodic sample for tracing: ``(atype, edge_index, edge_vec, edge_mask, n_node)``."""
    import torch

    from ..graph import batch_graphs, build_graph

    rng = np.random.default_rng(seed)
    rcut = model.config.rcut
    dtype = next(model.buffers()).dtype
    graphs, types = [], []
    for n in n_atoms:
        cell = np.eye(3) * 0.9 * rcut
        pos = rng.uniform(0, 1, (n, 3)) @ cell
        graphs.append(build_graph(torch.as_tensor(pos, dtype=dtype), rcut, cell=torch.as_tensor(cell, dtype=dtype),
                                  pbc=True))
        types.append(np.arange(n) % model.config.ntypes)
    g = batch_graphs(graphs)
    atype = torch.as_tensor(np.concatenate(types), dtype=torch.int64)
    return tuple(x.to(device) for x in (atype, g.edge_index, g.edge_vec, g.edge_mask, g.n_node))


def trace_model(model, sample):
    """``make_fx`` symbolic trace of the flat energy/force function of ``model`` (frozen copy)."""
    import torch
    from torch.fx.experimental.proxy_tensor import make_fx

    from ..graph.container import NeighborGraph
    from ..torch import energy_and_forces

    frozen = copy.deepcopy(model).eval().requires_grad_(False)

    def flat(atype, edge_index, edge_vec, edge_mask, n_node):
        out = energy_and_forces(frozen, NeighborGraph(edge_index, edge_vec, edge_mask, n_node), atype)
        return tuple(out[k] for k in OUTPUTS)

    with torch.no_grad():  # energy_and_forces enables grad where it needs it
        return make_fx(flat, tracing_mode="symbolic", _allow_non_fake_inputs=True)(*sample)


def export_program(model, sample):
    """``torch.export.ExportedProgram`` of the model's energy/force function, N, E, nf dynamic."""
    import torch

    graph_module = trace_model(model, sample)

    class Flat(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.graph_module = graph_module

        def forward(self, atype, edge_index, edge_vec, edge_mask, n_node):
            return self.graph_module(atype, edge_index, edge_vec, edge_mask, n_node)

    n, e, nf = torch.export.Dim("N", min=1), torch.export.Dim("E", min=0), torch.export.Dim("nf", min=1)
    shapes = {"atype": {0: n}, "edge_index": {1: e}, "edge_vec": {0: e}, "edge_mask": {0: e}, "n_node": {0: nf}}
    # size-oblivious backed sizes: no 0/1 specialization, so N = 1, E = 0, nf = 1 stay valid
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
