"""From the contracted environment ``gr`` to DPA1's outputs (shared by both paths)."""

from __future__ import annotations

from .. import _backend as B
from .config import DPA1Config

__all__ = ["readout"]


def readout(gr, table, atype, config: DPA1Config):
    """``gr (N, ng, 4)`` -> ``(descriptor (N, ng*M [+ dt]), rot_mat (N, ng, 3))``.

    ``grrg[i, a, b] = sum_c gr[i, a, c] gr[i, b, c]`` for ``b < M``, flattened
    row-major (``a*M + b``); the center's type embedding is appended when
    ``concat_output_tebd``. ``rot_mat = gr[..., 1:4]``.
    """
    xp = B.namespace(gr)
    n = gr.shape[0]
    gr1 = xp.permute_dims(gr[:, : config.axis_neuron, :], (0, 2, 1))  # (N, 4, M)
    grrg = xp.reshape(gr @ gr1, (n, config.ng * config.axis_neuron))
    if config.concat_output_tebd:
        grrg = xp.concat([grrg, xp.take(table, atype, axis=0)], axis=-1)
    return grrg, gr[:, :, 1:4]
