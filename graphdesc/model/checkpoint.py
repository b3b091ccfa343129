"""One-file model checkpoints: config + parameters + statistics, with a format version.

The file is a numpy ``.npz`` (no pickle): one array per parameter leaf, keyed
by its dotted name, plus ``__graphdesc__``, a JSON header::

    {"format": "graphdesc-model", "format_version": 1, "graphdesc_version": "...",
     "config": EnergyConfig.to_dict(), "extra": {...}}

A training checkpoint (``checkpoint.npz``, written by the trainer for
``--restart``) is the same file with the training state beside the model:
JSON under ``extra["train_state"]`` and arrays (the optimizer's moments)
named ``__state__/...``. :func:`load_model` leaves those out, so any
training checkpoint is also a model checkpoint.

Files are written atomically: to a temporary file in the same directory, then
renamed over the target, so a process killed mid-write leaves the previous
file intact, never half of a new one.

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

__all__ = ["save_model", "load_model", "load_state_arrays", "atomic_write", "FORMAT_VERSION"]

FORMAT = "graphdesc-model"
FORMAT_VERSION = 1
_HEADER = "__graphdesc__"
_STATE = "__state__/"


def atomic_write(path, write) -> Path:
    """Call ``write(file_object)`` on a temporary file beside ``path``, then rename it to ``path``.

    The rename is atomic on POSIX: readers (and a restart after a kill) see the
    old file or the new one, never a partial write.
    """
    import os
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_model(path, config: EnergyConfig, params: dict, *, extra: dict | None = None,
               state: dict | None = None) -> Path:
    """Write ``config`` and ``params`` (any array library) to ``path`` (``.npz`` appended if missing), atomically.

    Args:
        extra: JSON-able metadata kept beside the model (e.g. training history).
        state: ``{name: numeric array}`` stored as ``__state__/name`` (a
            training checkpoint's optimizer state; see :func:`load_state_arrays`).

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
    if _HEADER in arrays or any(name.startswith(_STATE) for name in arrays):
        raise ValueError(f"parameter names {_HEADER!r} and {_STATE!r}... are reserved")
    arrays.update({_STATE + name: np.asarray(value) for name, value in (state or {}).items()})
    arrays[_HEADER] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    return atomic_write(path, lambda fh: np.savez(fh, **arrays))


def load_model(path):
    """``(config, params, extra)`` from a checkpoint written by :func:`save_model` (numpy params).

    A training checkpoint's state arrays are left out (:func:`load_state_arrays` reads them).

    The file is read with ``numpy.load(allow_pickle=False)``: a checkpoint
    never holds pickled data, so nothing in it can run.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a graphdesc checkpoint, corrupt or truncated, or
            written by a newer format version; the message names the file.
    """
    import zipfile

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such model checkpoint: {path}")
    if not path.is_file() or not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is not a graphdesc model checkpoint: a checkpoint is an .npz (zip) archive "
                         "written by EnergyModel.save, and this file is not one (or is truncated)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            if _HEADER not in archive.files:
                raise ValueError(f"{path} is an .npz archive but not a graphdesc model checkpoint "
                                 f"(no {_HEADER} header)")
            header = json.loads(archive[_HEADER].tobytes().decode())
            _check_header(path, header)
            leaves = [(name, archive[name]) for name in archive.files
                      if name != _HEADER and not name.startswith(_STATE)]
    except (zipfile.BadZipFile, EOFError, OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: corrupt or truncated model checkpoint ({type(err).__name__}: {err})") from None
    except ValueError as err:
        if str(err).startswith(str(path)):
            raise
        # numpy's own messages (e.g. an object array) would suggest allow_pickle: never right for a checkpoint
        raise ValueError(f"{path}: corrupt model checkpoint: an entry is not a plain numeric array") from None
    for name, value in leaves:
        if value.dtype.kind not in "biuf":
            raise ValueError(f"{path}: corrupt model checkpoint: parameter {name!r} holds {value.dtype}, not numbers")
    try:
        config = EnergyConfig.from_dict(header["config"])
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{path}: the checkpoint's config is invalid: {err}") from None
    _check_leaves(path, config, leaves)
    return config, tree_from_leaves(leaves), header.get("extra", {})


def load_state_arrays(path) -> dict:
    """``{name: array}`` of the ``state`` a training checkpoint was saved with (empty for a plain model
    checkpoint); call after :func:`load_model` has checked the file."""
    with np.load(Path(path), allow_pickle=False) as archive:
        state = {name[len(_STATE):]: archive[name] for name in archive.files if name.startswith(_STATE)}
    for name, value in state.items():
        if value.dtype.kind not in "biuf":
            raise ValueError(f"{path}: corrupt training checkpoint: state {name!r} holds {value.dtype}, not numbers")
    return state


def _check_leaves(path: Path, config: EnergyConfig, leaves) -> None:
    """Every parameter the config needs is there, with its shape, and nothing else."""
    from .energy import init_model_params

    expected = {name: np.shape(value) for name, value in tree_leaves(init_model_params(config))}
    found = {name: value.shape for name, value in leaves}
    missing, unknown = sorted(expected.keys() - found.keys()), sorted(found.keys() - expected.keys())
    if missing or unknown:
        raise ValueError(f"{path}: the checkpoint's parameters do not match its config: "
                         f"missing {missing[:5]}, unexpected {unknown[:5]}")
    for name, shape in expected.items():
        if found[name] != shape:
            raise ValueError(f"{path}: parameter {name!r} has shape {found[name]}, its config needs {shape}")


def _check_header(path: Path, header) -> None:
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        fmt = header.get("format") if isinstance(header, dict) else None
        raise ValueError(f"{path}: unknown format {fmt!r}, expected {FORMAT!r}")
    version = header.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise ValueError(f"{path}: invalid format_version {version!r}")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{path} was written with checkpoint format version {version} (graphdesc "
            f"{header.get('graphdesc_version', '?')}); this graphdesc reads versions up to "
            f"{FORMAT_VERSION}. Upgrade graphdesc to load it."
        )
