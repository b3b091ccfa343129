"""Untrusted model files run no code: malicious pickles, YAML tags and HDF5 tricks are refused; real files load.

Each malicious file would create a marker file if anything in it ran; the
tests assert the marker is absent after the refusal, so a loader that ran
the payload and *then* raised would still fail here.
"""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
from test_model import deepmd_energy_model

from graphdesc import safe_io
from graphdesc.cli import main
from graphdesc.descriptor import load_deepmd, params_from_deepmd
from graphdesc.model import model_from_deepmd

torch = pytest.importorskip("torch")
from graphdesc.torch import EnergyModel  # noqa: E402


class _Shell:
    """A classic pickle payload: unpickling calls ``os.system(command)``."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class _Eval:
    def __init__(self, code):
        self.code = code

    def __reduce__(self):
        return eval, (self.code,)


class _SetAttrGadget:
    """Protocol-2 ``copyreg.__newobj__`` + BUILD with a non-numpy class."""

    def __init__(self, marker):
        self.marker = marker


def _payloads(marker):
    """``(name, bytes, forbidden global)``: pickles that would create ``marker`` if their payload ran."""
    touch = f"touch {marker}"
    yield "os.system", pickle.dumps({"model": _Shell(touch)}), "system"
    yield "os.system-protocol0", pickle.dumps([_Shell(touch)], protocol=0), "system"
    yield "eval-in-model", pickle.dumps({"descriptor": {"@variables": {"davg": _Eval(f"open({str(marker)!r}, 'w')")}},
                                         "fitting": {}}), "builtins.eval"
    yield "custom-class", pickle.dumps({"x": _SetAttrGadget(str(marker))}, protocol=2), "_SetAttrGadget"
    # a numpy helper that executes strings: numpy's own modules are not allowed wholesale
    yield "numpy-gadget", (b"cnumpy.testing._private.utils\nrunstring\n(V" + f"open({str(marker)!r}, 'w')".encode()
                           + b"\n(dtR."), "runstring"
    # the payload hidden inside an object array: its elements go through the same unpickler
    evil = np.empty(1, dtype=object)
    evil[0] = _Shell(touch)
    yield "object-array", pickle.dumps({"model": evil}), "system"


@pytest.fixture(scope="module")
def deepmd_model():
    pytest.importorskip("deepmd.dpmodel", reason="deepmd-kit is a test dependency (graphdesc[test])")
    return deepmd_energy_model(True, seed=5)[1]


@pytest.mark.parametrize("payload", list(range(6)))
@pytest.mark.parametrize("loader", ["load_deepmd", "model_from_deepmd", "EnergyModel.from_deepmd",
                                    "cli export", "cli eval", "cli train --init-model", "cli doctor"])
def test_malicious_pickle_runs_nothing(tmp_path, payload, loader, capsys):
    marker = tmp_path / "pwned"
    name, data, forbidden = list(_payloads(marker))[payload]
    path = tmp_path / f"{name}.pkl"
    path.write_bytes(data)
    calls = {
        "load_deepmd": lambda: load_deepmd(path),
        "model_from_deepmd": lambda: model_from_deepmd(path),
        "EnergyModel.from_deepmd": lambda: EnergyModel.from_deepmd(path),
        "cli export": lambda: main(["export", str(path), "-o", str(tmp_path / "x.pt2")]),
        "cli eval": lambda: main(["eval", str(path), str(tmp_path / "missing.xyz")]),
        "cli train --init-model": lambda: main(["train", "--demo", "--demo-frames", "4", "--init-model", str(path),
                                                "-o", str(tmp_path / "run"), "--steps", "1", "--no-progress"]),
        "cli doctor": lambda: main(["doctor", str(path), "--modes", "eager"]),
    }
    if loader.startswith("cli"):  # the command line prints one error line and exits 1
        assert calls[loader]() == 1
        message = capsys.readouterr().err
        assert message.startswith(f"graphdesc {loader.split()[1]}: error: {path}: refused to load")
    else:
        with pytest.raises(safe_io.UnsafeFileError) as info:
            calls[loader]()
        message = str(info.value)
    assert forbidden in message and str(path) in message and "nothing from the file was run" in message
    assert not marker.exists(), f"{name}: the payload ran before the refusal"


def test_error_text_names_the_global(tmp_path):
    path = tmp_path / "m.pkl"
    path.write_bytes(pickle.dumps({"model": _Shell("true")}))
    with pytest.raises(ValueError) as info:  # UnsafeFileError is a ValueError: callers catching that still do
        load_deepmd(path)
    assert str(info.value) == (
        f"{path}: refused to load: the pickle asks for the Python global '{os.system.__module__}.system'. "
        "A DeePMD-kit model holds only dicts, lists, tuples, str, numbers, bool, None and numpy arrays, so "
        "graphdesc never resolves other globals (nothing from the file was run)")


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_real_deepmd_pickles_load(tmp_path, deepmd_model, protocol):
    """DeePMD-kit's serialized dicts, pickled at every protocol numpy uses, load to the same numbers."""
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(deepmd_model, protocol=protocol))
    config, params = model_from_deepmd(path)
    ref_config, ref_params = model_from_deepmd(deepmd_model)
    assert config == ref_config
    _assert_same_tree(params, ref_params)
    _, desc = load_deepmd(path)
    _assert_same_tree(desc, params_from_deepmd(deepmd_model["descriptor"])[1])


def test_numpy1_pickles_load(tmp_path, deepmd_model):
    """Files written under numpy 1.x name ``numpy.core``; they load as numpy 2's ``numpy._core``."""
    data = pickle.dumps(deepmd_model, protocol=2)
    old = data.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
    assert old != data and b"numpy._core" not in old
    path = tmp_path / "old.pkl"
    path.write_bytes(old)
    _assert_same_tree(model_from_deepmd(path)[1], model_from_deepmd(deepmd_model)[1])


def test_numpy_scalars_and_complex_load(tmp_path):
    data = {"a": np.float64(1.5), "b": np.int32(3), "c": 1 + 2j, "d": np.arange(3, dtype=np.float32), "e": b"raw"}
    path = tmp_path / "x.pkl"
    path.write_bytes(pickle.dumps(data, protocol=2))
    got = safe_io.load_pickle(path)
    assert got["a"] == 1.5 and got["b"] == 3 and got["c"] == 1 + 2j and got["e"] == b"raw"
    np.testing.assert_array_equal(got["d"], data["d"])


def _assert_same_tree(a, b):
    from graphdesc.descriptor.params import tree_leaves

    la, lb = tree_leaves(a), tree_leaves(b)
    assert [n for n, _ in la] == [n for n, _ in lb]
    for (name, x), (_, y) in zip(la, lb):
        np.testing.assert_array_equal(x, y, err_msg=name)


def test_yaml_python_tags_are_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "m.yaml"
    path.write_text(f"model: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(safe_io.UnsafeFileError, match="refused to load"):
        load_deepmd(path)
    assert not marker.exists()


@pytest.fixture
def dp_file(tmp_path, deepmd_model):
    from deepmd.dpmodel.utils.serialization import save_dp_model

    path = tmp_path / "model.dp"
    save_dp_model(str(path), {"model": deepmd_model})
    return path


def _first_variable(f):
    header = json.loads(f.attrs["json"])
    return header["model"]["fitting"]["@variables"]["bias_atom_e"]


def test_dp_file_loads(dp_file, deepmd_model):
    _assert_same_tree(model_from_deepmd(dp_file)[1], model_from_deepmd(deepmd_model)[1])


@pytest.mark.parametrize("trick", ["soft link", "external link", "external storage", "plugin filter", "strings"])
def test_dp_tricks_are_refused(dp_file, tmp_path, trick):
    h5py = pytest.importorskip("h5py")
    other = tmp_path / "secret.bin"
    other.write_bytes(np.arange(8, dtype=np.float64).tobytes())
    with h5py.File(dp_file, "a") as f:
        name = _first_variable(f)
        shape = f[name].shape
        del f[name]
        if trick == "soft link":
            f.create_dataset("elsewhere", data=np.zeros(shape))
            f[name] = h5py.SoftLink("/elsewhere")
        elif trick == "external link":
            f[name] = h5py.ExternalLink(str(tmp_path / "other.h5"), "/x")
        elif trick == "external storage":
            f.create_dataset(name, shape=shape, dtype="f8", external=[(str(other), 0, 8 * int(np.prod(shape)))])
        elif trick == "plugin filter":  # 307 = bzip2: not built in, HDF5 would look for a plugin library
            f.create_dataset(name, data=np.zeros(shape), compression=307, allow_unknown_filter=True)
        else:
            f.create_dataset(name, data=np.array(["a"] * int(np.prod(shape)), dtype=object),
                             dtype=h5py.string_dtype())
    error = ValueError if trick == "strings" else safe_io.UnsafeFileError
    with pytest.raises(error, match="refused to load" if error is safe_io.UnsafeFileError else "not numbers") as info:
        model_from_deepmd(dp_file)
    assert str(dp_file) in str(info.value)


CORRUPT = {
    ".pkl": [b"", b"\x80\x05\x95garbage", b"not a pickle at all"],
    ".json": [b"", b"{\"model\": ", b"\xff\xfe"],
    ".yaml": [b"model: [1, 2", b"{"],
    ".dp": [b"", b"\x89HDF\r\n\x1a\n" + b"\x00" * 40, b"plain text"],
}


@pytest.mark.parametrize("suffix,data", [(s, d) for s, ds in CORRUPT.items() for d in ds])
def test_corrupt_deepmd_files_name_the_file(tmp_path, suffix, data):
    path = tmp_path / f"model{suffix}"
    path.write_bytes(data)
    with pytest.raises(ValueError) as info:
        model_from_deepmd(path)
    assert str(path) in str(info.value) and "allow_pickle" not in str(info.value)


def test_truncated_real_files(tmp_path, deepmd_model, dp_file):
    blob = pickle.dumps(deepmd_model)
    for suffix, data in ((".pkl", blob[: len(blob) // 2]), (".dp", dp_file.read_bytes()[:4096])):
        path = tmp_path / f"cut{suffix}"
        path.write_bytes(data)
        with pytest.raises(ValueError, match="truncated") as info:
            model_from_deepmd(path)
        assert str(path) in str(info.value)


def test_wrong_structure_names_the_file(tmp_path, deepmd_model):
    broken = {**deepmd_model, "fitting": {**deepmd_model["fitting"]}}
    del broken["fitting"]["nets"]
    path = tmp_path / "broken.pkl"
    path.write_bytes(pickle.dumps(broken))
    with pytest.raises(ValueError, match="not a usable DeePMD-kit model: missing entry 'nets'") as info:
        model_from_deepmd(path)
    assert str(info.value).startswith(str(path))
    path.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(ValueError, match="holds a list, not a DeePMD-kit model dict"):
        model_from_deepmd(path)
