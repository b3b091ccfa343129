"""Export an :class:`~graphdesc.torch.EnergyModel` as an AOTInductor ``.pt2`` package.

The recipe (DESIGN.md section 6), once per program of :mod:`graphdesc.export.stages`
(edge stage, block stage with its gradient, tail): the function, ``autograd.grad``
included, is traced with ``make_fx(tracing_mode="symbolic")`` (``torch.export``
cannot trace ``autograd.grad`` itself), the graph is exported with
``torch.export.export`` with every size dynamic, ``torch._inductor.aot_compile``
compiles it, and ``package_aoti`` puts the three into one ``.pt2``.

The trace sample is a small synthetic 2-frame system with ghosts (sizes >= 2,
so nothing is specialized to 0 or 1); the package then runs any L >= 0,
G >= 0, E >= 0, nf >= 1 (schema 3, :mod:`graphdesc.export.schema`).
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
from .stages import package_attention

__all__ = ["trace_model", "export_program", "export_programs", "export_package", "sample_inputs"]


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
    """``make_fx`` symbolic trace of the one-piece energy/force function of ``model`` (frozen copy).

    The flat function takes the schema's inputs (``sample``): local types ``atype (L,)`` int64, the graph
    (``edge_index (2, E)`` int64, ``edge_vec (E, 3)`` float in Å, ``edge_mask (E,)`` bool, ``n_node (nf,)``
    int64), ghost types ``(G,)`` int64; nodes are the locals then the ghosts, and ``num_local`` is the
    length of ``atype`` (a shape, so no size in the program depends on data).
    Packages use the three programs of :mod:`graphdesc.export.stages`
    instead; this one-piece program is what a single compiled call of the
    whole model looks like (compiled training traces the same function).
    """
    return _trace(_one_piece(model), sample)


def _one_piece(model):
    """The schema's flat function of a frozen copy of ``model``, in one piece."""
    import torch

    from ..graph.container import NeighborGraph
    from ..torch import energy_and_forces

    frozen = copy.deepcopy(model).eval().requires_grad_(False)

    def flat(atype, edge_index, edge_vec, edge_mask, n_node, ghost_atype):
        nodes = torch.cat([atype, ghost_atype])
        out = energy_and_forces(frozen, NeighborGraph(edge_index, edge_vec, edge_mask, n_node), nodes,
                                num_local=atype.shape[0])
        return tuple(out[k] for k in OUTPUTS)

    return flat


def _trace(fn, sample):
    """``make_fx`` symbolic trace of ``fn`` on ``sample``, one size symbol per input dimension."""
    import torch
    from torch.fx.experimental.proxy_tensor import make_fx

    # no duck shaping: two inputs' dimensions that happen to be equal in the sample
    # must stay two sizes (a block width equal to a chunk's row count, say)
    with torch.no_grad(), torch.fx.experimental._config.patch(use_duck_shape=False):
        return make_fx(fn, tracing_mode="symbolic", _allow_non_fake_inputs=True)(*sample)


def _export(fn, sample, dynamic_shapes):
    """``torch.export.ExportedProgram`` of ``fn`` (traced by :func:`_trace`) with ``dynamic_shapes``
    (a tuple with one ``{axis: Dim}`` dict per positional input)."""
    import torch

    graph_module = _trace(fn, sample)

    class Flat(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.graph_module = graph_module

        def forward(self, *inputs):
            return self.graph_module(*inputs)

    # size-oblivious backed sizes: no 0/1 specialization, so L = 0, G = 0, E = 0, nf = 1 stay valid
    with torch.fx.experimental._config.patch(backed_size_oblivious=True):
        return torch.export.export(Flat(), tuple(sample), dynamic_shapes=(dynamic_shapes,), strict=False)


def _input_dims():
    """The schema's dynamic sizes, and the ``dynamic_shapes`` of its six inputs."""
    from torch.export import Dim

    dims = {"L": Dim("L", min=0), "G": Dim("G", min=0), "E": Dim("E", min=0), "nf": Dim("nf", min=1)}
    shapes = ({0: dims["L"]}, {1: dims["E"]}, {0: dims["E"]}, {0: dims["E"]}, {0: dims["nf"]}, {0: dims["G"]})
    return dims, shapes


def export_program(model, sample):
    """``torch.export.ExportedProgram`` of the one-piece energy/force function (:func:`trace_model`).

    ``sample``: the schema's six inputs as for :func:`export_programs` (``atype (L,)`` int64 ... ``ghost_atype
    (G,)`` int64, :func:`sample_inputs`); the program's sizes ``L``, ``E``, ``nf`` and ``G`` are dynamic."""
    _, shapes = _input_dims()
    return _export(_one_piece(model), sample, shapes)


def export_programs(model, sample) -> tuple:
    """The package's three programs (:mod:`graphdesc.export.stages`) as ``ExportedProgram`` s.

    ``sample``: the schema's six inputs, ``(atype (L,) int64, edge_index (2, E) int64, edge_vec (E, 3) float (Å),
    edge_mask (E,) bool, n_node (nf,) int64, ghost_atype (G,) int64)`` (:func:`sample_inputs`).

    Returns ``({"edges": ..., "block": ..., "tail": ...}, keys, n_grads)``.
    The block program's sample is a slice of the sample's parts with a row
    count unlike any other size, so chunk rows ``C`` and block width ``W``
    stay two free sizes (``C >= 1``, ``W >= 2``).
    """
    import torch
    from torch.export import Dim

    from .stages import stage_functions

    edges, block, tail, keys, n_grads = stage_functions(model)
    attention = package_attention(model, sample[2].device)
    dims, shapes = _input_dims()
    # contiguous samples: a compiled program reads its inputs with the strides of its
    # sample (a gradient of autograd's is often a transposed view), and callers pass contiguous ones
    with torch.no_grad():
        parts = tuple(p.contiguous() for p in edges(*sample))
        grads = tuple(g.contiguous() for g in block(*parts))
    taken = {int(s) for p in parts for s in p.shape}
    num_local = sample[0].shape[0]
    rows = next(c for c in range(3, num_local) if c not in taken)
    chunk, width = Dim("C", min=1), Dim("W", min=2)
    if attention == "blocks":
        piece = tuple(p[:rows].contiguous() for p in parts)

        def part_shapes(rows_dim, edge_dim):
            return tuple({0: rows_dim, 1: width} if p.ndim == 3 or k == "valid" else {0: rows_dim}
                         for k, p in zip(keys, parts))
    else:  # ragged: edge rows, then center rows; the sample piece is centers [0, rows) with their edges
        from ..descriptor.ragged import EDGE_ROWS

        edge_rows = int(parts[keys.index("slots")][:rows].sum())
        piece = tuple(p[:edge_rows if k in EDGE_ROWS else rows].contiguous() for k, p in zip(keys, parts))

        def part_shapes(rows_dim, edge_dim):
            return tuple({0: edge_dim if k in EDGE_ROWS else rows_dim} for k in keys)

    edge_dim = Dim("R", min=0)
    tail_sample = (*sample, *grads)
    tail_shapes = (*shapes, {0: dims["L"]}, *part_shapes(dims["L"], edge_dim)[:n_grads])
    if attention != "blocks":  # the ragged parts' edge of each row and node of each center row
        tail_sample += tuple(parts[keys.index(k)] for k in ("edge", "center"))
        tail_shapes += ({0: edge_dim}, {0: dims["L"]})
    programs = {
        "edges": _export(edges, sample, shapes),
        "block": _export(block, piece, part_shapes(chunk, Dim("Rc", min=0))),
        "tail": _export(tail, tail_sample, tail_shapes),
    }
    return programs, keys, n_grads


def export_package(model, path, *, device: str = "cpu", dtype=None, progress=None) -> Path:
    """Compile ``model`` (an :class:`~graphdesc.torch.EnergyModel`) to an AOTInductor ``.pt2`` at ``path``.

    The package holds three programs (edge stage, block stage, tail; see
    :mod:`graphdesc.export.stages`) that :func:`~graphdesc.export.load_package`
    and the C++ helper ``graphdesc/package.hpp`` run as one call.

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
    from torch._inductor.package import package_aoti

    from ..descriptor.graph_path import chunk_elements as budget
    from ..descriptor.ragged import BUCKET_GROWTH

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
    say("tracing the edge stage, block stage and tail (make_fx) and exporting them (torch.export) ...")
    programs, keys, n_grads = export_programs(model, sample)
    say(f"  done in {time.perf_counter() - t0:.1f} s")
    # eager's rule: chunks of centers on CPU; on accelerators one piece of one-width blocks, ragged ones in chunks
    chunk_elements = budget(sample[2], package_attention(model, device))
    meta = {
        "schema": str(SCHEMA_VERSION), "version": __version__, "dtype": str(dtype).removeprefix("torch."),
        "device": device.type, "config": json.dumps(model.config.to_dict()),
        "inputs": ",".join(INPUTS), "outputs": ",".join(OUTPUTS),
        "programs": ",".join(programs), "parts": ",".join(keys), "grads": str(n_grads),
        "attn": str(model.config.descriptor.attn), "chunk_elements": str(chunk_elements),
        "attention": package_attention(model, device), "ng": str(model.config.descriptor.ng),
        "bucket_growth": repr(BUCKET_GROWTH),
    }
    options = {"aot_inductor.package": True,
               "aot_inductor.metadata": {META_PREFIX + k: v for k, v in meta.items()},
               # int32 sort indices: the default int16 ones cap E below 32767
               "triton.decompose_sort_ops": True}
    path.parent.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, program in programs.items():
        t1 = time.perf_counter()
        say(f"compiling the {name} program with AOTInductor for {device.type} ...")
        args, kwargs = program.example_inputs
        files[name] = torch._inductor.aot_compile(program.module(check_guards=False), args, kwargs,
                                                  options=dict(options))
        say(f"  done in {time.perf_counter() - t1:.1f} s")
    package_aoti(str(path), files)
    say(f"wrote {path}")
    return path
