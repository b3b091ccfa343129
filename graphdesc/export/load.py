"""Load a graphdesc ``.pt2`` package as a callable with the schema's named outputs."""

from __future__ import annotations

import json
from pathlib import Path

from .schema import INPUTS, META_PREFIX, OUTPUTS, SCHEMA_VERSION, STAGES
from .stages import run_stages

__all__ = ["load_package", "Package"]


class Package:
    """A loaded ``.pt2``: ``package(atype, edge_index, edge_vec, edge_mask, n_node, ghost_atype=None) -> dict``.

    Attributes:
        path: the file.
        config: the model's :class:`~graphdesc.model.EnergyConfig`.
        dtype: ``torch.float64`` or ``torch.float32``; ``edge_vec`` must have it.
        device: ``torch.device`` the package was compiled for; inputs must live there.
        metadata: the raw ``graphdesc.*`` metadata strings.
        chunk_elements: schema 3: the block program runs on chunks of centers whose
            largest temporary holds about this many floats (0: all centers at once).
            Default: the package's (4 MiB on CPU, one chunk on CUDA); the
            ``GRAPHDESC_CHUNK_ELEMENTS`` environment variable overrides it, here
            and in ``graphdesc/package.hpp``.
    """

    def __init__(self, path, *, device_index: int = -1):
        import torch
        from torch._inductor.package import load_package as load

        from ..model import EnergyConfig

        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"no such package: {self.path}")
        models = _check_archive(self.path)
        names = STAGES if set(STAGES) <= models else ("model",)  # schema 3, or one program (schema 1-2)
        try:
            self._programs = [load(str(self.path), name, device_index=device_index) for name in names]
        except Exception as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise ValueError(f"{self.path} is not a loadable AOTInductor .pt2 package: {first}") from None
        raw = self._programs[0].get_metadata()
        self.metadata = {k.removeprefix(META_PREFIX): v for k, v in raw.items() if k.startswith(META_PREFIX)}
        if "schema" not in self.metadata:
            raise ValueError(f"{self.path} is a .pt2 but not a graphdesc package (no {META_PREFIX}schema metadata)")
        schema = int(self.metadata["schema"])
        if schema > SCHEMA_VERSION:
            raise ValueError(f"{self.path} uses package schema {schema} (graphdesc {self.metadata.get('version')}); "
                             f"this graphdesc reads up to schema {SCHEMA_VERSION}. Upgrade graphdesc.")
        if (len(self._programs) == 3) != (schema >= 3):
            raise ValueError(f"{self.path}: schema {schema} package with programs {', '.join(names)} "
                             f"(schema 3 has {', '.join(STAGES)}; 1 and 2 one 'model')")
        self.schema = schema
        self.config = EnergyConfig.from_dict(json.loads(self.metadata["config"]))
        self.dtype = getattr(torch, self.metadata["dtype"])
        self.device = torch.device(self.metadata["device"])
        self.chunk_elements = _chunk_elements(self.metadata.get("chunk_elements", "0"))

    def __call__(self, atype, edge_index, edge_vec, edge_mask, n_node, ghost_atype=None, *,
                 check: bool = True) -> dict:
        """Energies, forces and virials (see :mod:`graphdesc.export.schema`).

        Args:
            atype: ``(L,)`` int64 types of the local atoms (nodes ``[0, L)``).
            edge_index, edge_vec, edge_mask: the graph over ``N = L + G``
                nodes; every ``dst`` is local.
            n_node: ``(nf,)`` int64 local atoms per frame.
            ghost_atype: ``(G,)`` int64 types of the ghosts (nodes ``[L, N)``);
                default none.
            check: validate the inputs first (shapes, dtypes, device, index
                ranges, finite ``edge_vec``, types, local centers); a bad input
                raises a ``ValueError``/``TypeError`` naming it instead of
                failing in the kernel.

        Returns:
            dict of torch tensors ``energy (nf,)``, ``atom_energy (N,)``
            (0 on ghosts), ``force (N, 3)``, ``virial (nf, 3, 3)``, ``atom_virial (N, 3, 3)``.
        """
        import torch

        if ghost_atype is None:
            device = atype.device if isinstance(atype, torch.Tensor) else self.device
            ghost_atype = torch.zeros(0, dtype=torch.int64, device=device)
        inputs = (atype, edge_index, edge_vec, edge_mask, n_node, ghost_atype)
        if check:
            self._check(inputs)
        # the compiled program reads its inputs with the strides it was traced with (contiguous): a
        # transposed or sliced edge_index would be read as other numbers, so hand it contiguous copies
        inputs = tuple(x.contiguous() for x in inputs)
        if self.schema == 1:  # no ghost input: those packages run local atoms only
            if ghost_atype.shape[0]:
                raise ValueError(f"{self.path} uses package schema 1, which has no ghost atoms; re-export it "
                                 f"with this graphdesc (graphdesc export MODEL.npz -o {self.path.name}) to pass "
                                 "ghost_atype")
            inputs = inputs[:5]
        if self.schema < 3:
            return dict(zip(OUTPUTS, self._programs[0](*inputs), strict=True))
        meta = self.metadata
        out = run_stages(*self._programs, inputs, n_grads=int(meta["grads"]), attn=int(meta["attn"]),
                         chunk_elements=self.chunk_elements, attention=meta.get("attention", "blocks"),
                         keys=meta["parts"].split(","), ng=self.config.descriptor.ng)
        return dict(zip(OUTPUTS, out, strict=True))

    def _check(self, inputs) -> None:
        import torch

        from ..graph.container import NeighborGraph
        from ..graph.validate import validate

        for name, x in zip(INPUTS, inputs, strict=True):
            if not isinstance(x, torch.Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
            if x.device.type != self.device.type:
                raise ValueError(f"{name} is on {x.device} but the package was compiled for {self.device.type}")
        atype, edge_index, edge_vec, edge_mask, n_node, ghost_atype = inputs
        if edge_vec.dtype != self.dtype:
            raise TypeError(f"edge_vec must be {self.dtype} (the package's dtype), got {edge_vec.dtype}")
        for name, x in (("atype", atype), ("edge_index", edge_index), ("n_node", n_node),
                        ("ghost_atype", ghost_atype)):
            if x.dtype != torch.int64:
                raise TypeError(f"{name} must be int64, got {x.dtype}")
        for name, x in (("atype", atype), ("ghost_atype", ghost_atype)):
            if x.ndim != 1:
                raise ValueError(f"{name} must be 1-D, got shape {tuple(x.shape)}")
        nodes = torch.cat([atype, ghost_atype])
        validate(NeighborGraph(edge_index, edge_vec, edge_mask, n_node), nodes, ntypes=self.config.ntypes,
                 padding_zero=False, num_local=atype.shape[0])

    def __repr__(self) -> str:
        return f"Package({str(self.path)!r}, dtype={self.metadata['dtype']}, device={self.device.type})"


def _chunk_elements(default: str) -> int:
    """``GRAPHDESC_CHUNK_ELEMENTS`` if set, else the package's value: a count >= 0."""
    import os

    text = os.environ.get("GRAPHDESC_CHUNK_ELEMENTS", default)
    if not text.strip().isdigit():
        raise ValueError(f"GRAPHDESC_CHUNK_ELEMENTS must be an integer >= 0 (floats per block-stage chunk, "
                         f"0 = one chunk), got {text!r}")
    return int(text)


def _check_archive(path: Path) -> set:
    """A ``.pt2`` is a zip archive: refuse anything else, or a damaged one, before libtorch opens it.

    Returns the names of the compiled programs it holds."""
    import zipfile

    if not path.is_file() or not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is not a .pt2 package: a package is a zip archive written by "
                         "graphdesc export, and this file is not one (or is truncated)")
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
            members = archive.namelist()
    except (zipfile.BadZipFile, EOFError, OSError) as err:
        raise ValueError(f"{path}: corrupt or truncated .pt2 package ({type(err).__name__}: {err})") from None
    if bad is not None:
        raise ValueError(f"{path}: corrupt .pt2 package: member {bad!r} fails its CRC check")
    # members of a compiled program: <archive>/data/aotinductor/<program>/<file>
    return {m.split("/")[-2] for m in members if m.split("/")[-3:-2] == ["aotinductor"]}


def load_package(path, *, device_index: int = -1) -> Package:
    """Load a ``.pt2`` written by :func:`graphdesc.export.export_package`.

    Trust: a ``.pt2`` holds compiled native code (a shared library), and
    loading it runs that code, as with any AOTInductor package. Load only
    packages you built or got from a source you trust. graphdesc checks that
    the file is an intact archive with graphdesc metadata; it cannot check
    what the compiled code does.

    Returns:
        a callable ``f(atype, edge_index, edge_vec, edge_mask, n_node) -> dict`` of
        ``energy``, ``atom_energy``, ``force``, ``virial``, ``atom_virial`` (torch tensors).
    """
    return Package(path, device_index=device_index)
