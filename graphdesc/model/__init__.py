"""The DPA1 energy model: descriptor + DeePMD-kit's energy fitting net, functional.

* :class:`EnergyConfig` -- hyperparameters.
* :func:`init_model_params` -- a parameter pytree ``{"descriptor", "fitting"}``.
* :func:`atom_energy`, :func:`frame_energy` -- energies on a NeighborGraph (any backend).
* :func:`model_from_deepmd` -- a DeePMD-kit 3.2 ``EnergyModel`` dict or file.
* :func:`save_model`, :func:`load_model` -- one-file checkpoints with a format version.
"""

from .checkpoint import load_model, save_model
from .config import EnergyConfig
from .deepmd_io import model_from_deepmd
from .energy import atom_energy, atom_energy_stages, frame_energy, init_model_params, with_ghosts
from .fitting import fitting_energy, init_fitting

__all__ = [
    "EnergyConfig",
    "init_model_params",
    "init_fitting",
    "fitting_energy",
    "atom_energy",
    "atom_energy_stages",
    "frame_energy",
    "with_ghosts",
    "model_from_deepmd",
    "save_model",
    "load_model",
]
