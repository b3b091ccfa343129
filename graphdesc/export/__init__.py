"""``.pt2`` packages for MD codes: ``make_fx`` + ``torch.export`` + AOTInductor, and their loader.

* :func:`export_package` -- compile an :class:`~graphdesc.torch.EnergyModel` to ``.pt2`` (CPU or CUDA).
* :func:`load_package` -- a callable with the schema's named outputs.
* :mod:`graphdesc.export.schema` -- inputs, outputs, metadata.
* :mod:`graphdesc.export.stages` -- the package's three programs and the loop that runs them.
* :func:`include_dir` -- the folder of ``graphdesc/package.hpp``, the same loop for C++ callers.
"""

from pathlib import Path

from .load import Package, load_package
from .package import export_package, export_program, export_programs, sample_inputs, trace_model
from .schema import INPUTS, OUTPUTS, SCHEMA_VERSION

__all__ = ["export_package", "export_program", "export_programs", "trace_model", "sample_inputs", "load_package",
           "Package", "include_dir", "INPUTS", "OUTPUTS", "SCHEMA_VERSION"]


def include_dir() -> str:
    """The folder to put on a C++ compiler's include path for ``#include "graphdesc/package.hpp"``
    (:class:`graphdesc::Package`, which runs a package's programs as one call)."""
    return str(Path(__file__).resolve().parent.parent / "include")
