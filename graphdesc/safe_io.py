"""Reading untrusted model files: data only, no code runs.

Model files travel between groups and come from papers' supplements, so a
loader must never run what a file asks for. Python's ``pickle`` runs any
callable a file names; graphdesc therefore reads pickles with
:class:`SafeUnpickler`, which resolves only the globals that a DeePMD-kit
serialized model needs (numpy arrays, dtypes and scalars, the way numpy
pickles them) and refuses every other one *before* it is called. Dicts,
lists, tuples, str, bytes, numbers, bool and None need no global at all.

The other formats run no code by construction, and are read so that they
stay that way:

* JSON: :func:`json.loads`;
* YAML: ``yaml.safe_load`` (no Python tags);
* ``.dp`` / ``.hlo`` (DeePMD-kit's HDF5): the JSON attribute plus numeric
  datasets named by it; external storage, virtual datasets, soft/external
  links and filters outside HDF5's built-in set (an unknown filter makes
  HDF5 load a plugin library) are refused;
* ``.npz`` checkpoints: ``numpy.load(allow_pickle=False)``.

A ``.pt2`` package is different: it *is* compiled native code, and loading it
runs that code (as with any AOTInductor package). Load packages only from
sources you trust; see the README's trust model.

Every error is a :class:`ValueError` (:class:`UnsafeFileError` for a refused
global, link or filter) that names the file and what is wrong.
"""

from __future__ import annotations

import codecs
import io
import json
import pickle
from pathlib import Path

import numpy as np

__all__ = ["UnsafeFileError", "SafeUnpickler", "load_pickle", "load_json", "load_yaml", "load_hdf5_model"]


class UnsafeFileError(ValueError):
    """A file asked for something graphdesc never executes (a Python global, an HDF5 link or filter)."""


def _latin1_encode(text, encoding="latin1", errors="strict"):
    """Protocol-2 pickles store bytes as ``_codecs.encode(str, 'latin1')``; that and nothing else."""
    if not isinstance(text, str) or codecs.lookup(encoding).name != "iso8859-1":
        raise UnsafeFileError(f"_codecs.encode is allowed only as encode(str, 'latin1'), got encoding {encoding!r}")
    return text.encode("latin1", errors)


def _numpy_globals() -> dict:
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray, numeric

    table = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype, ("_codecs", "encode"): _latin1_encode}
    for core in ("numpy._core", "numpy.core"):  # numpy >= 2 pickles name _core; numpy 1.x files name core
        table[(f"{core}.multiarray", "_reconstruct")] = multiarray._reconstruct
        table[(f"{core}.multiarray", "scalar")] = multiarray.scalar
        table[(f"{core}.numeric", "_frombuffer")] = numeric._frombuffer
    table[("builtins", "complex")] = complex
    table[("__builtin__", "complex")] = complex  # protocols 0-2 write Python 2's module name
    return table


_ALLOWED = _numpy_globals()
"""Every global a pickle may name: ``(module, name) -> object``. Numpy's array
constructors (``_reconstruct``, ``_frombuffer``), ``ndarray`` and ``dtype`` (the
classes themselves, as arguments of those constructors), numpy scalars, the
``latin1`` bytes encoder of protocol-2 pickles, and ``complex``."""


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that builds only plain data and numpy arrays.

    ``find_class`` is the one door through which a pickle reaches code (also
    for the extension registry); it opens only for :data:`_ALLOWED`.
    Persistent ids are refused as well.
    """

    def __init__(self, file, *, source: str = "pickle"):
        super().__init__(file)
        self._source = source

    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafeFileError(
                f"{self._source}: refused to load: the pickle asks for the Python global '{module}.{name}'. "
                "A DeePMD-kit model holds only dicts, lists, tuples, str, numbers, bool, None and numpy "
                "arrays, so graphdesc never resolves other globals (nothing from the file was run)"
            ) from None

    def persistent_load(self, pid):
        raise UnsafeFileError(f"{self._source}: refused to load: the pickle uses persistent ids")


def load_pickle(path) -> object:
    """The object in the pickle file ``path``, built by :class:`SafeUnpickler`.

    Raises:
        UnsafeFileError: the pickle names a global outside the allowed set.
        ValueError: the file is not a pickle, or is truncated.
    """
    path = Path(path)
    data = path.read_bytes()
    try:
        return SafeUnpickler(io.BytesIO(data), source=str(path)).load()
    except UnsafeFileError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError,
            MemoryError, UnicodeDecodeError, OverflowError) as err:
        what = "truncated" if isinstance(err, EOFError) or "truncated" in str(err) else "not a valid pickle"
        raise ValueError(f"{path}: cannot read the pickle ({what}): {type(err).__name__}: {err}") from None


def load_json(path) -> object:
    """The JSON document in ``path``; a syntax error names the file, line and column."""
    path = Path(path)
    try:
        return json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON: {err}") from None


def load_yaml(path) -> object:
    """The YAML document in ``path``, read with ``yaml.safe_load`` (plain data, no Python tags)."""
    try:
        import yaml
    except ImportError:
        raise ImportError("reading a .yaml model needs PyYAML: pip install pyyaml") from None
    path = Path(path)
    try:
        return yaml.safe_load(path.read_bytes())
    except yaml.constructor.ConstructorError as err:
        where = f" (line {err.problem_mark.line + 1})" if err.problem_mark else ""
        raise UnsafeFileError(f"{path}: refused to load: {err.problem}{where}; graphdesc reads YAML as plain "
                              "data only (yaml.safe_load), so nothing from the file was run") from None
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML: {' '.join(str(err).split())}") from None


_BUILTIN_FILTERS = frozenset({1, 2, 3, 4, 5, 6, 32000})
"""HDF5 filter ids read without loading a plugin: deflate, shuffle, fletcher32,
szip, nbit, scaleoffset, and LZF (built into h5py)."""


def open_hdf5(path, what: str = "HDF5 file"):
    """``h5py.File(path, "r")``, with errors that name ``path`` and ``what`` it should be."""
    try:
        import h5py
    except ImportError:
        raise ImportError(f"reading a {what} needs h5py: pip install h5py") from None
    try:
        return h5py.File(Path(path), "r")
    except OSError as err:
        raise ValueError(f"{path}: not a readable {what}, or truncated: {err}") from None


def hdf5_array(group, name: str, path, *, text: bool = False) -> np.ndarray:
    """The array stored at ``group[name]``, read only if it is plain data inside the file.

    Raises:
        UnsafeFileError: a soft or external link, external storage, a virtual
            dataset, or a filter HDF5 would load as a plugin.
        ValueError: not a dataset, or not numbers (byte strings too with ``text``).
    """
    import h5py

    link = group.get(name, getlink=True)
    if not isinstance(link, h5py.HardLink):
        raise UnsafeFileError(f"{path}: refused to load: {name!r} is a {type(link).__name__}, "
                              "not data stored in the file")
    d = group[name]
    if not isinstance(d, h5py.Dataset):
        raise ValueError(f"{path}: {name!r} is not a dataset")
    if d.external or d.is_virtual:
        raise UnsafeFileError(f"{path}: refused to load: dataset {name!r} reads storage outside the file")
    plist = d.id.get_create_plist()
    for k in range(plist.get_nfilters()):
        code = plist.get_filter(k)[0]
        if code not in _BUILTIN_FILTERS:
            raise UnsafeFileError(f"{path}: refused to load: dataset {name!r} uses HDF5 filter {code}, "
                                  "which HDF5 would load as a plugin library")
    if d.dtype.kind not in ("biufS" if text else "biuf"):
        raise ValueError(f"{path}: dataset {name!r} holds {d.dtype}, not {'text or ' if text else ''}numbers")
    try:
        return np.asarray(d[()]).copy()
    except OSError as err:  # a truncated dataset
        raise ValueError(f"{path}: corrupt or truncated HDF5 data in {name!r}: {err}") from None


def load_hdf5_model(path, decode):
    """A DeePMD-kit ``.dp`` file: ``decode(header, dataset)`` on its JSON header.

    Args:
        path: the file.
        decode: ``callable(header_dict, dataset)`` where ``dataset(name)``
            returns the numeric array stored under ``name``; it runs while
            the file is open.

    Raises:
        UnsafeFileError: a dataset with external storage, a virtual dataset,
            a soft or external link, or a filter that HDF5 would load as a plugin.
        ValueError: not HDF5, no ``json`` attribute, or a non-numeric dataset.
    """
    path = Path(path)
    with open_hdf5(path, "HDF5 (.dp) file") as f:
        if "json" not in f.attrs:
            raise ValueError(f"{path}: not a DeePMD-kit .dp model (no 'json' attribute)")
        raw = f.attrs["json"]
        try:
            header = json.loads(raw.decode() if isinstance(raw, bytes) else str(raw))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{path}: the 'json' attribute is not valid JSON: {err}") from None

        def dataset(name):
            if not isinstance(name, str) or name not in f:
                raise ValueError(f"{path}: the model refers to a dataset {name!r} the file does not hold")
            return hdf5_array(f, name, path)

        try:
            return decode(header, dataset)
        except OSError as err:  # a truncated dataset
            raise ValueError(f"{path}: corrupt or truncated HDF5 data: {err}") from None
