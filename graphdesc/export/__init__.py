"""``.pt2`` packages for MD codes: ``make_fx`` + ``torch.export`` + AOTInductor, and their loader.

* :func:`export_package` -- compile an :class:`~graphdesc.torch.EnergyModel` to ``.pt2`` (CPU or CUDA).
* :func:`load_package` -- a callable with the schema's named outputs.
* :mod:`graphdesc.export.schema` -- inputs, outputs, metadata.
"""

from .load import Package, load_package
from .package import export_package, export_program, sample_inputs, trace_model
from .schema import INPUTS, OUTPUTS, SCHEMA_VERSION

__all__ = ["export_package", "export_program", "trace_model", "sample_inputs", "load_package", "Package",
           "INPUTS", "OUTPUTS", "SCHEMA_VERSION"]
