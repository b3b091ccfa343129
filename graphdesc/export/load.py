"""Load a graphdesc ``.pt2`` package as a callable with the schema's named outputs."""

from __future__ import annotations

import json
from pathlib import Path

from .schema import INPUTS, META_PREFIX, OUTPUTS, SCHEMA_VERSION

__all__ = ["load_package", "Package"]


class Package:
    """A loaded ``.pt2``: ``package(atype, edge_index, edge_vec, edge_mask, n_node) -> dict``.

    Attributes:
        path: the file.
        config: the model's :class:`~graphdesc.model.EnergyConfig`.
        dtype: ``torch.float64`` or ``torch.float32``; ``edge_vec`` must have it.
        device: ``torch.device`` the package was compiled for; inputs must live there.
        metadata: the raw ``graphdesc.*`` metadata strings.
    """

    def __init__(self, path, *, device_index: int = -1):
        import torch

        from ..model import EnergyConfig

        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"no such package: {self.path}")
        _check_archive(self.path)
        try:
            self._compiled = torch._inductor.aoti_load_package(str(self.path), device_index=device_index)
        except Exception as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise ValueError(f"{self.path} is not a loadable AOTInductor .pt2 package: {first}") from None
        raw = self._compiled.get_metadata()
        self.metadata = {k.removeprefix(META_PREFIX): v for k, v in raw.items() if k.startswith(META_PREFIX)}
        if "schema" not in self.metadata:
            raise ValueError(f"{self.path} is a .pt2 but not a graphdesc package (no {META_PREFIX}schema metadata)")
        schema = int(self.metadata["schema"])
        if schema > SCHEMA_VERSION:
            raise ValueError(f"{self.path} uses package schema {schema} (graphdesc {self.metadata.get('version')}); "
                             f"this graphdesc reads up to schema {SCHEMA_VERSION}. Upgrade graphdesc.")
        self.config = EnergyConfig.from_dict(json.loads(self.metadata["config"]))
        self.dtype = getattr(torch, self.metadata["dtype"])
        self.device = torch.device(self.metadata["device"])

    def __call__(self, atype, edge_index, edge_vec, edge_mask, n_node, *, check: bool = True) -> dict:
        """Energies, forces and virials (see :mod:`graphdesc.export.schema`).

        Args:
            check: validate the inputs first (shapes, dtypes, device, index
                ranges, finite ``edge_vec``, types); a bad input raises a
                ``ValueError``/``TypeError`` naming it instead of failing in the kernel.

        Returns:
            dict of torch tensors ``energy (nf,)``, ``atom_energy (N,)``,
            ``force (N, 3)``, ``virial (nf, 3, 3)``, ``atom_virial (N, 3, 3)``.
        """
        inputs = (atype, edge_index, edge_vec, edge_mask, n_node)
        if check:
            self._check(inputs)
        return dict(zip(OUTPUTS, self._compiled(*inputs), strict=True))

    def _check(self, inputs) -> None:
        import torch

        from ..graph.container import NeighborGraph
        from ..graph.validate import validate

        for name, x in zip(INPUTS, inputs, strict=True):
            if not isinstance(x, torch.Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
            if x.device.type != self.device.type:
                raise ValueError(f"{name} is on {x.device} but the package was compiled for {self.device.type}")
        atype, edge_index, edge_vec, edge_mask, n_node = inputs
        if edge_vec.dtype != self.dtype:
            raise TypeError(f"edge_vec must be {self.dtype} (the package's dtype), got {edge_vec.dtype}")
        for name, x in (("atype", atype), ("edge_index", edge_index), ("n_node", n_node)):
            if x.dtype != torch.int64:
                raise TypeError(f"{name} must be int64, got {x.dtype}")
        if atype.ndim != 1:
            raise ValueError(f"atype must have shape (N,), got {tuple(atype.shape)}")
        if atype.shape[0] == 0:
            raise ValueError("atype is empty: a package call needs at least one atom (N >= 1)")
        validate(NeighborGraph(edge_index, edge_vec, edge_mask, n_node), atype, ntypes=self.config.ntypes,
                 padding_zero=False)

    def __repr__(self) -> str:
        return f"Package({str(self.path)!r}, dtype={self.metadata['dtype']}, device={self.device.type})"


def _check_archive(path: Path) -> None:
    """A ``.pt2`` is a zip archive: refuse anything else, or a damaged one, before libtorch opens it."""
    import zipfile

    if not path.is_file() or not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is not a .pt2 package: a package is a zip archive written by "
                         "graphdesc export, and this file is not one (or is truncated)")
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, EOFError, OSError) as err:
        raise ValueError(f"{path}: corrupt or truncated .pt2 package ({type(err).__name__}: {err})") from None
    if bad is not None:
        raise ValueError(f"{path}: corrupt .pt2 package: member {bad!r} fails its CRC check")


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
