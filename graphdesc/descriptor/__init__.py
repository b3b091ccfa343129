"""The DPA1 (se_atten) descriptor: config, parameters, graph path and dense reference path.

* :class:`DPA1Config` -- hyperparameters (DeePMD-kit names and defaults).
* :func:`init_params` -- a parameter pytree; :func:`cast_params` moves it between libraries.
* :func:`dpa1_graph` -- the descriptor on a :class:`~graphdesc.graph.NeighborGraph`.
* :func:`dpa1_dense` -- the independent dense reference on padded ``(N, sel)`` slots.
* :func:`params_from_deepmd` / :func:`params_to_deepmd` / :func:`load_deepmd` --
  DeePMD-kit ``DescrptDPA1.serialize()`` dicts and model files.
* :func:`compute_stats` -- ``davg``/``dstd`` from data, as DeePMD-kit computes them.
"""

from .config import DPA1Config
from .dense_path import dense_inputs, dpa1_dense
from .deepmd_io import load_deepmd, params_from_deepmd, params_to_deepmd
from .graph_path import dpa1_graph
from .params import cast_params, init_params
from .stats import compute_stats

__all__ = [
    "DPA1Config",
    "init_params",
    "cast_params",
    "dpa1_graph",
    "dpa1_dense",
    "dense_inputs",
    "params_from_deepmd",
    "params_to_deepmd",
    "load_deepmd",
    "compute_stats",
]
