"""One-file model checkpoints: config + parameters + statistics, with a format version.

The file is a numpy ``.npz`` (no pickle): one array per parameter leaf, keyed
by its dotted name, plus ``__graphdesc__``, a JSON header::

    {"format": "graphdesc-model", "format_version": 1, "graphdesc_version": "...",
     "config": EnergyConfig.to_dict(), "extra": {...}}

A file whose ``format_version`` is newer than this library's is refused with
a message saying so; it is never half-read.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .. import _backend as B
from ..descriptor.params import tree_from_leaves, tree_leaves
from .config import EnergyConfig

__all__ = ["save_model", "load_model", "FORMAT_VERSION"]

FORMAT = "graphdesc-model"
FORMAT_VERSION = 1
_HEADER = "__graphdesc__"


def save_model(path, config: EnergyConfig, params: dict, *, extra: dict | None = None) -> Path:
    """Write ``config`` and ``params`` (any array library) to ``path`` (``.npz`` appended if missing).

    Args:
        extra: JSON-able metadata kept beside the model (e.g. training history).

    Returns:
        the path written.
    """
    from .. import __version__

    if not isinstance(config, EnergyConfig):
        raise TypeError(f"config must be an EnergyConfig, got {type(config).__name__}")
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    header = {"format": FORMAT, "format_version": FORMAT_VERSION, "graphdesc_version": __version__,
              "config": config.to_dict(), "extra": extra or {}}
    arrays = {name: np.asarray(B.to_numpy(value)) for name, value in tree_leaves(params)}
    if _HEADER in arrays:
        raise ValueError(f"parameter name {_HEADER!r} is reserved")
    arrays[_HEADER] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    return path


def load_model(path):
    """``(config, params, extra)`` from a checkpoint written by :func:`save_model` (numpy params)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such model checkpoint: {path}")
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception as err:  # zipfile/format errors: say what the file is not
        raise ValueError(f"{path} is not a graphdesc model checkpoint (.npz): {err}") from None
    with archive:
        if _HEADER not in archive.files:
            raise ValueError(f"{path} is not a graphdesc model checkpoint (no {_HEADER} header)")
        header = json.loads(archive[_HEADER].tobytes().decode())
        if header.get("format") != FORMAT:
            raise ValueError(f"{path}: unknown format {header.get('format')!r}, expected {FORMAT!r}")
        version = header.get("format_version")
        if not isinstance(version, int) or version < 1:
            raise ValueError(f"{path}: invalid format_version {version!r}")
        if version > FORMAT_VERSION:
            raise ValueError(
                f"{path} was written with checkpoint format version {version} (graphdesc "
                f"{header.get('graphdesc_version', '?')}); this graphdesc reads versions up to "
                f"{FORMAT_VERSION}. Upgrade graphdesc to load it."
            )
        params = tree_from_leaves((name, archive[name]) for name in archive.files if name != _HEADER)
    return EnergyConfig.from_dict(header["config"]), params, header.get("extra", {})
